"""Stage tile: cut every scene into georeferenced tiles and write the tile index.

Usage: ``python -m stages.tile <scenes_dir> <manifest.json> <tiles_dir> <tile_index.json>
<metrics.json> <report.json>``; reads ``tile`` and ``features`` (and ``engine``, not a DVC
param). Tiles of scene ``<id>`` are the members ``<id>/r..._c....tif`` of the pack
``<tiles_dir>/<id>.zip`` (see :mod:`satpipe.tiles.packs`); the directory appears only when all
are written. The metrics count the tiles written; the report adds those with and without a
reference, the skips by reason, the tile size and stride, and the same per scene. A scene
unchanged since the last run keeps its pack and entries from it: the directory is a persistent
DVC output (see :mod:`satpipe.core.reuse`).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from satpipe.core import logs
from satpipe.core.files import atomic_dir, write_json
from satpipe.core.params import load_params
from satpipe.core.records import read_manifest
from satpipe.core.reuse import Reuse
from satpipe.tiles.run import tile_metrics, tile_scenes
from stages import _cli, _engine

log = logging.getLogger(__name__)


def main(args: argparse.Namespace) -> None:
    """Tile the scenes of the manifest; the tiles directory appears only when complete."""
    params = load_params(args.params)
    scenes = read_manifest(args.manifest)
    start = time.perf_counter()
    reuse = Reuse.open("tile", args.tiles_dir)
    with atomic_dir(args.tiles_dir) as tmp, _engine.engine(params.engine) as engine:
        index, report = tile_scenes(
            scenes,
            Path(args.scenes_dir),
            tmp,
            params.tile,
            params.features,
            engine,
            logs.show_progress(),
            reuse,
        )
    reuse.save()
    write_json(args.index, index.to_json())
    write_json(args.report, report)
    write_json(args.metrics, tile_metrics(report))
    elapsed = time.perf_counter() - start
    log.info(
        "wrote %d tiles from %d scenes (skipped %s) in %.2fs (%.0f tiles/s)",
        report["tiles_written"],
        len(scenes),
        report["tiles_skipped"],
        elapsed,
        report["tiles_written"] / elapsed if elapsed else 0.0,
    )


if __name__ == "__main__":
    p = _cli.parser("tile", __doc__)
    for name, text in [
        ("scenes_dir", "directory of scene GeoTIFFs (from ingest)"),
        ("manifest", "scenes JSON (from ingest)"),
        ("tiles_dir", "output directory of tile packs (one ZIP of GeoTIFFs per scene)"),
        ("index", "output tile index JSON"),
        ("metrics", "output tile metrics JSON (a DVC metrics file)"),
        ("report", "output tiling report JSON (skips by reason, per scene)"),
    ]:
        p.add_argument(name, help=text)
    sys.exit(_cli.run("tile", main, p.parse_args()))
