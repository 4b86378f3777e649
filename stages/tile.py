"""Stage tile: cut every scene into georeferenced tiles and write the tile index.

Usage: ``python -m stages.tile <scenes_dir> <manifest.json> <tiles_dir> <tile_index.json>
<metrics.json>``; reads ``tile`` and ``features`` (and ``engine``, not a DVC param). Tiles of
scene ``<id>`` go to ``<tiles_dir>/<id>/``; the directory appears only when all are written.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

from satpipe import logs
from satpipe.features import FeatureSpec
from satpipe.files import read_json, write_json
from satpipe.params import load_params
from satpipe.tileindex import build_index
from satpipe.tiling import TilingParams, cut_scenes
from stages import _cli, _engine

log = logging.getLogger(__name__)


def main(args: argparse.Namespace) -> None:
    """Tile the scenes of the manifest."""
    params = load_params(args.params)
    tp = params.tile
    bands = params.features.bands
    spec = FeatureSpec(None if bands is None else tuple(bands))
    tiling = TilingParams(
        tp.size,
        tp.step,
        tp.keep_partial,
        tp.max_nodata_fraction,
        tp.compress,
        spec,
        tp.min_labelled_fraction,
    )
    scenes = read_json(args.manifest)["scenes"]
    scenes_dir, out_dir = Path(args.scenes_dir), Path(args.tiles_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix=f".{out_dir.name}.", dir=out_dir.parent) as tmp,
        _engine.engine(params.engine) as engine,
    ):
        inputs = [(scenes_dir / f"{m['id']}.tif", m, m["id"]) for m in scenes]
        results = cut_scenes(inputs, Path(tmp), tiling, engine, logs.show_progress())
        entries = [e for scene_entries, _ in results for e in scene_entries]
        skipped = [skips for _, skips in results]
        tiling_record = {
            "size": tp.size,
            "stride": tp.step,
            "keep_partial": tp.keep_partial,
            "max_nodata_fraction": tp.max_nodata_fraction,
            "compress": tp.compress,
            "min_labelled_fraction": tp.min_labelled_fraction,
        }
        index = build_index(scenes, tiling_record, spec.to_dict(), entries, skipped)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        Path(tmp).rename(out_dir)
        out_dir.chmod(0o755)
    write_json(args.index, index)
    totals = {reason: sum(s[reason] for s in skipped) for reason in ("partial", "nodata", "empty")}
    with_reference = sum(e["reference"] is not None for e in entries)
    write_json(
        args.metrics,
        {
            "tiles_written": len(entries),
            "tiles_with_reference": with_reference,
            "tiles_without_reference": len(entries) - with_reference,
            "tiles_skipped": totals,
            "tile_size": tp.size,
            "stride": tp.step,
            "scenes": {
                m["id"]: {"tiles_written": index["scenes"][m["id"]]["tiles"], "tiles_skipped": s}
                for m, s in zip(scenes, skipped, strict=True)
            },
        },
    )
    elapsed = time.perf_counter() - start
    log.info(
        "wrote %d tiles from %d scenes (skipped %s) in %.2fs (%.0f tiles/s)",
        len(entries),
        len(scenes),
        totals,
        elapsed,
        len(entries) / elapsed if elapsed else 0.0,
    )


if __name__ == "__main__":
    p = _cli.parser("tile", __doc__)
    for name, text in [
        ("scenes_dir", "directory of scene GeoTIFFs (from ingest)"),
        ("manifest", "scenes JSON (from ingest)"),
        ("tiles_dir", "output directory of tile GeoTIFFs"),
        ("index", "output tile index JSON"),
        ("metrics", "output metrics JSON"),
    ]:
        p.add_argument(name, help=text)
    sys.exit(_cli.run("tile", main, p.parse_args()))
