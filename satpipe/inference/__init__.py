"""Inference: running a model over tiles, one tile for the service or a whole index in batch.

One code path from a tile's bytes to a prediction (verify, decode, measure, predict), shared by
batch inference and the REST service; the batch run that classifies every inference tile on an
engine and describes itself; and the allocator tuning for processes that decode in threads.
"""
