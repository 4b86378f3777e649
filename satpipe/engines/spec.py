"""The engine spec: which engine runs a stage's tasks, with how many workers, and where.

It comes from ``params.yaml`` (``engine``) and is read by the engine and by its backends, so it
lives below both of them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class EngineSpec:
    """Which engine, how many workers (None: every core), and a Dask scheduler address."""

    name: str = "local"
    workers: int | None = None
    address: str | None = None

    @property
    def worker_count(self) -> int:
        """The number of workers to use (``workers`` or the CPU count)."""
        return self.workers or os.cpu_count() or 1
