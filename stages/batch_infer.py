"""Stage batch_infer: classify every tile of the index with the model.

Usage: ``python -m stages.batch_infer <model.json> <tile_index.json> <tiles_dir>
<predictions.json> <predictions.geojson> [--run-record runs/batch_infer.json]``;
reads ``batch_infer``. Timings go to the log and the untracked run record only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import time
from pathlib import Path

import numpy as np
from rasterio.crs import CRS

from satpipe import logs
from satpipe import model as model_lib
from satpipe.errors import InferenceError
from satpipe.files import json_digest, md5_file, sha256_file, write_json
from satpipe.footprints import feature_collection
from satpipe.inference import batch_predict, monitoring
from satpipe.params import load_params
from satpipe.tileindex import group_by_scene, is_inference_tile, load_index
from stages import _cli

log = logging.getLogger(__name__)


def main(args: argparse.Namespace) -> None:
    """Classify all tiles; fail only if the failed fraction exceeds the param."""
    params = load_params(args.params)
    bp = params.batch_infer
    model = model_lib.load(args.model)
    logs.set_model(model.version)
    index = load_index(args.index)
    roles = {sid: scene["role"] for sid, scene in index["scenes"].items()}
    tiles = [t for t in index["tiles"] if is_inference_tile(roles[t["scene"]])]
    if not tiles:
        raise InferenceError(
            f"{args.index}: no tile to classify: no scene has the role 'infer' or 'both' "
            f"(roles: {roles})"
        )
    model_md5, index_sha = md5_file(args.model), sha256_file(args.index)
    start = time.perf_counter()
    with _cli.engine(params.engine) as engine:
        records, failures, latencies = batch_predict(
            {"tiles": tiles},
            Path(args.tiles_dir),
            model,
            engine=engine,
            progress=logs.show_progress(),
        )
    elapsed = time.perf_counter() - start
    total = len(tiles)
    failed_fraction = len(failures) / total if total else 0.0
    metadata = {
        "run_key": json_digest(
            {"model_md5": model_md5, "tile_index_sha256": index_sha, "params": bp.model_dump()}
        ),
        "model": {"version": model.version, "md5": model_md5, "kind": model.kind.name},
        "tile_index_sha256": index_sha,
        "params": bp.model_dump(),
        "tiles_total": total,
        "tiles_inferred": len(records),
        "tiles_failed": len(failures),
        "failed": failures,
        "monitoring": monitoring(records, model.classes, model.monitored),
    }
    _record(args.run_record, latencies, elapsed, metadata)
    if failed_fraction > bp.max_failed_fraction:
        raise InferenceError(
            f"{args.tiles_dir}: {len(failures)} of {total} tiles failed ({failed_fraction:.1%}), "
            f"above batch_infer.max_failed_fraction {bp.max_failed_fraction}; first: "
            f"{failures[0]['error']}"
        )
    write_json(args.predictions, {"metadata": metadata, "predictions": records})
    features = []
    by_scene = group_by_scene(records)
    for sid, scene in index["scenes"].items():  # records are grouped by scene, in this order
        mine = by_scene.get(sid, [])
        if mine:
            fc = feature_collection(
                CRS.from_wkt(scene["crs_wkt"]),
                mine,
                ("scene", "prediction", "score", "features", "model_version", "path"),
            )
            features.extend(fc["features"])
    geojson = {"type": "FeatureCollection", "features": features}
    write_json(args.geojson, geojson, indent=None)


def _record(path: str | None, latencies: list[float], elapsed: float, metadata: dict) -> None:
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


if __name__ == "__main__":
    p = _cli.parser("batch_infer", __doc__)
    for name, text in [
        ("model", "model JSON"),
        ("index", "tile index JSON"),
        ("tiles_dir", "directory of tile GeoTIFFs"),
        ("predictions", "output predictions JSON"),
        ("geojson", "output tile footprints GeoJSON (EPSG:4326)"),
    ]:
        p.add_argument(name, help=text)
    p.add_argument("--run-record", default=None, help="untracked JSON run record with timings")
    sys.exit(_cli.run("batch_infer", main, p.parse_args()))
