"""Batch runs: classifying every inference tile of an index and describing the run.

A run classifies the tiles of the scenes whose role is ``infer`` or ``both`` (through
:func:`satpipe.inference.predict.batch_predict`, on any engine), and describes itself in the
predictions document's ``metadata``: a run key (a hash of the model md5, the tile-index hash and the
params), the model, the counts, every failed tile with its reason, and monitoring statistics.
Timings never enter tracked files: they go to the log and to an untracked run record. The tile
footprints (GeoJSON in EPSG:4326) are :mod:`satpipe.outputs.footprints`'.

Given the index's feature definition, a run trusts the tile index for a model that reads
features defined as the index's: their values come from the index entries, and those tiles are
neither read nor checked against their sha256 (DVC records the hash of ``data/tiles``, an output of
the ``tile`` stage like the index, and the REST service verifies every tile it serves; see
:mod:`satpipe.inference.predict`). The predictions document is the same either way.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from satpipe.core.errors import InferenceError
from satpipe.core.files import json_digest, write_json
from satpipe.core.params import BatchInferParams
from satpipe.core.records import PredictionSet, TileEntry, TileIndex
from satpipe.engines.engine import Engine
from satpipe.inference.predict import batch_predict, monitoring
from satpipe.models.model import Model
from satpipe.tiles.features import FeatureSpec
from satpipe.tiles.index import is_inference_tile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchRun:
    """A finished run: the predictions document, and timings (untracked)."""

    predictions: PredictionSet
    latencies: list[float]
    elapsed: float


def inference_tiles(index: TileIndex, source: str) -> list[TileEntry]:
    """The tiles of scenes with the role ``infer`` or ``both``.

    Raises:
        InferenceError: there is none.
        ModelError: a tile names a scene the index header does not list.
    """
    tiles = [t for t in index.tiles if is_inference_tile(index.role_of(t))]
    if not tiles:
        raise InferenceError(
            f"{source}: no tile to classify: no scene has the role 'infer' or 'both' "
            f"(roles: {index.roles})"
        )
    return tiles


def run_batch(
    model: Model,
    model_md5: str,
    tiles: list[TileEntry],
    index_sha256: str,
    tiles_dir: Path,
    bp: BatchInferParams,
    engine: Engine | None = None,
    progress: bool = False,
    index_spec: FeatureSpec | None = None,
) -> BatchRun:
    """Classify ``tiles`` and describe the run (see the module docstring).

    ``index_spec`` is the tile index's feature definition (None: unknown, every tile is read).

    Raises:
        InferenceError: more tiles failed than ``batch_infer.max_failed_fraction`` allows.
    """
    start = time.perf_counter()
    records, failures, latencies = batch_predict(
        tiles, tiles_dir, model, engine=engine, progress=progress, index_spec=index_spec
    )
    elapsed = time.perf_counter() - start
    metadata = {
        "run_key": json_digest(
            {"model_md5": model_md5, "tile_index_sha256": index_sha256, "params": bp.model_dump()}
        ),
        "model": {"version": model.version, "md5": model_md5, "kind": model.kind.name},
        "tile_index_sha256": index_sha256,
        "params": bp.model_dump(),
        "tiles_total": len(tiles),
        "tiles_inferred": len(records),
        "tiles_failed": len(failures),
        "monitoring": monitoring(records, model.classes, model.monitored),
    }
    predictions = PredictionSet(
        metadata=metadata, predictions=tuple(records), failures=tuple(failures)
    )
    return BatchRun(predictions, latencies, elapsed)


def check_failures(run: BatchRun, bp: BatchInferParams, tiles_dir: Path | str) -> None:
    """Fail when more tiles failed than allowed, naming the first failure.

    Raises:
        InferenceError: the failed fraction is above ``batch_infer.max_failed_fraction``.
    """
    total = run.predictions.metadata["tiles_total"]
    failures = run.predictions.failures
    failed = len(failures)
    fraction = failed / total if total else 0.0
    if fraction > bp.max_failed_fraction:
        raise InferenceError(
            f"{tiles_dir}: {failed} of {total} tiles failed ({fraction:.1%}), above "
            f"batch_infer.max_failed_fraction {bp.max_failed_fraction}; first: "
            f"{failures[0].error}"
        )


def write_run_record(path: Path | str | None, run: BatchRun) -> None:
    """Log the run's speed and, when ``path`` is given, write it to the untracked run record."""
    latencies, elapsed, metadata = run.latencies, run.elapsed, run.predictions.metadata
    lat = np.array(latencies) * 1e3 if latencies else np.zeros(1)
    p50, p95, p99 = np.percentile(lat, [50, 95, 99])
    rate = metadata["tiles_inferred"] / elapsed if elapsed else 0.0
    log.info(
        "inferred %d tiles (%d failed) in %.2fs: %.0f tiles/s, latency p50 %.2f ms "
        "p95 %.2f ms p99 %.2f ms",
        metadata["tiles_inferred"],
        metadata["tiles_failed"],
        elapsed,
        rate,
        p50,
        p95,
        p99,
    )
    if path:
        write_json(
            path,
            {
                "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "run_key": metadata["run_key"],
                "model_version": metadata["model"]["version"],
                "seconds": elapsed,
                "tiles_per_second": rate,
                "latency_ms": {"p50": p50, "p95": p95, "p99": p99},
                "tiles_inferred": metadata["tiles_inferred"],
                "tiles_failed": metadata["tiles_failed"],
            },
        )
