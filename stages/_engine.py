"""The engine of the stages that spread work (ingest, tile, batch_infer), and only theirs.

Kept apart from :mod:`stages._cli` so that the stages that never use an engine do not import
(and so do not depend on) :mod:`satpipe.engines.engine` and the Dask client: editing those re-runs
only the stages that use them.
"""

from __future__ import annotations

from satpipe.core.params import EngineParams
from satpipe.engines.engine import Engine
from satpipe.engines.spec import EngineSpec


def engine(params: EngineParams) -> Engine:
    """The engine ``params.yaml`` asks for (use it as a context manager)."""
    return Engine(EngineSpec(params.name, params.workers, params.address))
