"""Dask clusters for the ``dask`` engine: connecting, starting a LocalCluster, checking workers.

:class:`DaskClient` yields a ``distributed.Client``: to the scheduler at ``engine.address``, or to
a ``LocalCluster`` on 127.0.0.1 started for the run. Before the first task it checks that the
scheduler and every worker import ``satpipe``, share this process's working directory (paths in
``dvc.yaml`` are relative) and have the same numpy, rasterio and GDAL, which decide the bytes
written; any difference stops the run with one line naming the worker. ``distributed`` is
imported only here, and only when the ``dask`` engine is used.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Any

from satpipe.core.errors import EngineError, ParamsError
from satpipe.engines.spec import EngineSpec

log = logging.getLogger(__name__)


class DaskClient(AbstractContextManager):
    """A ``distributed.Client`` for the spec: to ``address``, or to a LocalCluster we start."""

    def __init__(self, spec: EngineSpec):
        self.spec = spec
        self.stack = ExitStack()

    def __enter__(self) -> Any:
        try:
            import distributed  # noqa: F401 - only to fail early with a clear message
        except ImportError as exc:
            raise ParamsError(
                "engine.name='dask' needs the 'distributed' package: pip install distributed"
            ) from exc
        try:
            # Scheduler and nanny chatter (INFO per worker and connection) is not ours to log.
            self.stack.enter_context(_logger_level("distributed", logging.WARNING))
            client = self._connect() if self.spec.address else self._start_local()
            _check_workers(client, self.spec.address or "dask LocalCluster")
        except BaseException:
            self.stack.close()
            raise
        return client

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    def _start_local(self) -> Any:
        """A client of a LocalCluster on 127.0.0.1, closed with this context."""
        from distributed import Client, LocalCluster

        n = self.spec.worker_count
        try:
            cluster = LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
                # The scheduler serves /health and metrics even without a dashboard: on a free
                # port, not :8787, so that concurrent runs do not collide.
                scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                silence_logs=logging.WARNING,
                # Plain workers, no nanny processes: on 2 cores the nannies' event loops cost the
                # tile stage of an 8192^2 scene 4.7-4.9 s instead of 3.1-3.5 s (local: 2.5 s).
                # Without a nanny a dead worker is not restarted: the run fails with EngineError,
                # which is what a cluster started for one stage run should do anyway.
                worker_class="distributed.Worker",
            )
        except (OSError, RuntimeError) as exc:
            raise EngineError(
                f"dask: could not start a LocalCluster of {n} workers on 127.0.0.1 ({exc})"
            ) from exc
        self.stack.enter_context(cluster)
        client = self.stack.enter_context(Client(cluster, set_as_default=False))
        # The workers' stderr is ours: a failed task is re-raised here, not reported twice.
        client.run(_quiet_worker_logs)
        log.info("dask: started a LocalCluster with %d workers", n)
        return client

    def _connect(self) -> Any:
        """A client of the scheduler at ``spec.address``; EngineError if none answers in time."""
        import dask
        from distributed import Client

        address = self.spec.address or ""
        timeout = dask.config.get("distributed.comm.timeouts.connect")
        _check_address(address)
        log.info("dask: connecting to scheduler %s", address)
        try:
            client = Client(address, timeout=timeout, set_as_default=False)
        except OSError as exc:  # TimeoutError is an OSError
            raise EngineError(
                f"engine.address={address!r}: cannot reach a Dask scheduler there ({exc}); "
                "expected a running scheduler such as tcp://scheduler:8786 (connect timeout "
                f"{timeout}: dask config distributed.comm.timeouts.connect)"
            ) from exc
        self.stack.enter_context(client)
        workers = len(client.nthreads())
        log.info("dask: connected to %s, %d workers", address, workers)
        if not workers:
            log.warning("dask: scheduler %s has no worker yet; tasks wait for one", address)
        return client


class _RepeatedByClient(logging.Filter):
    """Worker log records that only repeat what the client raises, or that closing causes."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not (
            message.startswith("Compute Failed")  # the task's exception, re-raised by the client
            or (message.startswith("Async instruction") and message.endswith("CancelledError"))
        )


def _quiet_worker_logs() -> None:
    """On a worker: drop the records :class:`_RepeatedByClient` names."""
    for name in ("distributed.worker", "distributed.worker.state_machine"):
        logging.getLogger(name).addFilter(_RepeatedByClient())


def _check_address(address: str) -> None:
    """Reject an address Dask cannot parse before a client is made (a bad one hangs in close).

    Raises:
        EngineError: unknown scheme, or no port where one is needed.
    """
    from distributed.comm import get_address_host_port, parse_address
    from distributed.comm.registry import get_backend

    try:
        scheme, _ = parse_address(address)
        get_backend(scheme)
        if scheme in ("tcp", "tls", "ws", "wss"):
            get_address_host_port(address)
    except ValueError as exc:
        raise EngineError(
            f"engine.address={address!r}: not a Dask scheduler address ({exc}); expected one "
            "such as tcp://scheduler:8786"
        ) from exc


@contextmanager
def _logger_level(name: str, level: int) -> Iterator[None]:
    """Raise logger ``name`` to at least ``level`` for the duration of the block."""
    logger = logging.getLogger(name)
    old = logger.level
    if logger.getEffectiveLevel() < level:
        logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(old)


def _worker_environment() -> dict[str, str]:
    """What must match between this process and every Dask worker.

    The working directory (tasks carry paths relative to it) and the versions that decide the
    bytes of every file written. Runs on each worker; that it runs at all shows the worker can
    import ``satpipe``.
    """
    import numpy
    import rasterio

    return {
        "working directory": os.getcwd(),
        "numpy": numpy.__version__,
        "rasterio": rasterio.__version__,
        "GDAL": rasterio.__gdal_version__,
    }


def _check_workers(client: Any, where: str) -> None:
    """Fail with one clear message unless every worker matches :func:`_worker_environment`.

    Raises:
        EngineError: a worker cannot import satpipe, or differs from this process.
    """
    # The scheduler unpickles task graphs too, so it needs the package as well.
    specs = client.run(importlib.util.find_spec, "satpipe")
    specs["the scheduler"] = client.run_on_scheduler(importlib.util.find_spec, "satpipe")
    missing = sorted(worker for worker, spec in specs.items() if spec is None)
    if missing:
        raise EngineError(
            f"{where}: {', '.join(missing)} cannot import satpipe; start the scheduler and every "
            "worker in the repository directory with it on PYTHONPATH (see README, Engines)"
        )
    found = client.run(_worker_environment)
    here = _worker_environment()
    problems = [
        f"{worker} has {key} {theirs.get(key)!r}, this process {value!r}"
        for worker, theirs in sorted(found.items())
        for key, value in here.items()
        if theirs.get(key) != value
    ]
    if problems:
        raise EngineError(
            f"{where}: workers differ from this process: {'; '.join(problems)}; start workers "
            "in the repository directory with the pinned requirements (see README, Engines)"
        )
