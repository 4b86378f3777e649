"""Stage tile: cut the scene into georeferenced tiles and write the tile index.

Usage: ``python -m stages.tile <scene.tif> <scene.json> <tiles_dir> <tile_index.json>
<metrics.json>``; reads ``tile`` and ``features`` from params.yaml.
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
from satpipe.tiling import cut_tiles
from stages import _cli

log = logging.getLogger(__name__)


def main(args: argparse.Namespace) -> None:
    """Tile the scene; tiles appear in ``tiles_dir`` only when all are written."""
    params = load_params(args.params)
    tp, spec = (
        params.tile,
        FeatureSpec(None if params.features.bands is None else tuple(params.features.bands)),
    )
    meta = read_json(args.metadata)
    meta["nodata"] = float("nan") if meta["nodata"] == "NaN" else meta["nodata"]
    out_dir = Path(args.tiles_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix=f".{out_dir.name}.", dir=out_dir.parent) as tmp,
        _cli.engine(params.engine) as engine,
    ):
        entries, skipped = cut_tiles(
            Path(args.scene),
            meta,
            Path(tmp),
            size=tp.size,
            stride=tp.step,
            keep_partial=tp.keep_partial,
            max_nodata_fraction=tp.max_nodata_fraction,
            compress=tp.compress,
            spec=spec,
            engine=engine,
            progress=logs.show_progress(),
        )
        tiling = {
            "size": tp.size,
            "stride": tp.step,
            "keep_partial": tp.keep_partial,
            "max_nodata_fraction": tp.max_nodata_fraction,
            "compress": tp.compress,
        }
        index = build_index(meta, tiling, spec.to_dict(), entries)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        Path(tmp).rename(out_dir)
        out_dir.chmod(0o755)
    write_json(args.index, index)
    write_json(
        args.metrics,
        {
            "tiles_written": len(entries),
            "tiles_skipped": skipped,
            "tile_size": tp.size,
            "stride": tp.step,
        },
    )
    elapsed = time.perf_counter() - start
    log.info(
        "wrote %d tiles (skipped %s) in %.2fs (%.0f tiles/s)",
        len(entries),
        skipped,
        elapsed,
        len(entries) / elapsed if elapsed else 0.0,
    )


if __name__ == "__main__":
    p = _cli.parser("tile", __doc__)
    for name, text in [
        ("scene", "scene GeoTIFF"),
        ("metadata", "scene metadata JSON"),
        ("tiles_dir", "output directory of tile GeoTIFFs"),
        ("index", "output tile index JSON"),
        ("metrics", "output metrics JSON"),
    ]:
        p.add_argument(name, help=text)
    sys.exit(_cli.run("tile", main, p.parse_args()))
