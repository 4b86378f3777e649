"""Engines: where a stage's independent tasks run (inline, a process pool, or a Dask cluster).

An engine runs ``fn(task)`` for each task and returns the results in task order, so outputs never
depend on the engine or the number of workers. A new backend goes here, beside the local pool and
the Dask cluster.
"""
