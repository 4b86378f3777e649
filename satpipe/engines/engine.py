"""Engines: where the per-block work of a stage runs.

A stage splits its work into independent *tasks* (a band of tile rows, a chunk of tiles) and an
engine runs ``fn(task)`` for each, returning results **in task order**, so outputs never depend on
the engine or the number of workers. At most ``ahead`` tasks per worker are in flight, so memory
stays bounded whatever the number of tasks. A task that raises stops the run with that same
exception (class and message), whichever engine ran it; the tasks still queued are cancelled.

- ``local`` with one worker runs the tasks inline, in this process.
- ``local`` with more workers uses a process pool: processes, unlike threads, do not serialise on
  the GIL around GDAL calls and numpy glue. Workers are forked when this process runs a single
  thread, else started from a ``forkserver`` with the library preloaded. Tasks open their own
  datasets, so nothing open is shared across the fork.
- ``dask`` submits the tasks to a Dask distributed cluster: the scheduler at ``engine.address``,
  or a ``LocalCluster`` on 127.0.0.1 started for the run (its worker processes inherit this
  process's ``sys.path`` and working directory). Tasks carry paths and import this package, so
  before the first task every worker present is checked: it imports ``satpipe``, runs in the same
  working directory and has the same numpy, rasterio and GDAL as this process (they decide the
  bytes written).

The engine is chosen in ``params.yaml`` (``engine``) but is not a DVC param of any stage: it
changes how fast outputs appear, never their bytes.
"""

from __future__ import annotations

import logging
import multiprocessing
import pickle
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import BrokenExecutor, Executor, Future, ProcessPoolExecutor
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from typing import Any, TypeVar

from satpipe.core.errors import EngineError, ParamsError
from satpipe.engines.dask_cluster import DaskClient
from satpipe.engines.spec import EngineSpec

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
_PRELOAD = [
    "numpy",
    "rasterio",
    "satpipe.tiles.tiling",
    "satpipe.inference.predict",
    "satpipe.scenes.validation",
]


class Engine(AbstractContextManager):
    """Runs tasks and yields results in task order (see the module docstring)."""

    def __init__(self, spec: EngineSpec):
        self.spec = spec
        self._stack = ExitStack()
        self._executor: Executor | None = None
        self._client: Any = None
        self._lost: tuple[type[BaseException], ...] = (BrokenExecutor,)

    def __enter__(self) -> Engine:
        spec = self.spec
        if spec.name not in ("local", "dask"):
            raise ParamsError(f"engine.name={spec.name!r}: expected 'local' or 'dask'")
        try:
            if spec.name == "local" and spec.worker_count > 1:
                self._executor = self._stack.enter_context(
                    ProcessPoolExecutor(max_workers=spec.worker_count, mp_context=_mp_context())
                )
            elif spec.name == "dask":
                self._client = self._stack.enter_context(DaskClient(spec))
                import distributed

                self._lost = (distributed.KilledWorker, distributed.CancelledError)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    @property
    def workers(self) -> int:
        """How many tasks can run at once."""
        if self._client is not None:
            return max(1, sum(self._client.nthreads().values()))
        return self.spec.worker_count if self._executor is not None else 1

    def map(self, fn: Callable[[T], R], tasks: Iterable[T], ahead: int = 2) -> Iterator[R]:
        """Yield ``fn(task)`` for every task, in order, with ``ahead`` tasks per worker queued.

        ``tasks`` is consumed lazily: at most ``ahead * workers`` tasks are taken from it before
        the first result is yielded.

        Raises:
            EngineError: a worker process died, or the Dask scheduler went away, mid-run.
            Exception: whatever ``fn`` raised for a task, with its class and message.
        """
        if self._executor is None and self._client is None:
            yield from map(fn, tasks)
            return
        limit = max(1, ahead * self.workers)
        pending: deque[Any] = deque()
        try:
            for task in tasks:
                pending.append(self._submit(fn, task))
                if len(pending) >= limit:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        except self._lost as exc:
            where = self.spec.address or f"{self.spec.name} engine"
            raise EngineError(
                f"{where}: a worker was lost while running a task ({type(exc).__name__}: "
                f"{exc}); it may have run out of memory (lower engine.workers)"
            ) from exc
        finally:
            # On an error, or when the consumer stops early, do not wait for queued tasks.
            for future in pending:
                future.cancel()

    def _submit(self, fn: Callable[[T], R], task: T) -> Future | Any:
        """Submit one task (a concurrent or a Dask future; both have ``.result()``)."""
        if self._client is not None:
            from dask.utils import funcname

            # A unique key named after the function (``run_job-...``) as Dask would name it.
            key = f"{funcname(fn)}-{uuid.uuid4().hex}"
            return self._client.submit(_Portable(fn), task, key=key)
        assert self._executor is not None  # map() runs tasks inline when there is neither
        return self._executor.submit(fn, task)


@dataclass(frozen=True)
class _Portable:
    """``fn``, with its exceptions made to survive the trip back from a Dask worker.

    Dask pickles a task's exception together with its ``__cause__`` chain; GDAL errors from
    rasterio (``CPLE_*``) cannot be unpickled that way, and Dask then sends a bare
    ``Exception(repr)``. When that would happen the chain is dropped, so the exception arrives
    with its own class and message (ours carry GDAL's reason in the message).
    """

    fn: Callable[[Any], Any]

    def __call__(self, task: Any) -> Any:
        try:
            return self.fn(task)
        except Exception as exc:
            if not _pickles_with_chain(exc):
                exc.__cause__ = exc.__context__ = None
            raise


def _pickles_with_chain(exc: BaseException) -> bool:
    """Whether ``exc`` unpickles with its chain, pickled as Dask does (tblib)."""
    from tblib import pickling_support

    chain: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and link not in chain:
        chain.append(link)
        link = link.__cause__ or link.__context__
    pickling_support.install(*chain)
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # any failure means Dask would send a bare Exception instead
        return False
    return True


def _mp_context() -> multiprocessing.context.BaseContext:
    """The start method for worker processes.

    ``fork`` when this process runs a single thread (safe, and ~0.2 s faster to start), else
    ``forkserver`` with the library preloaded (forking a threaded process can copy held locks).
    """
    if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    return ctx
