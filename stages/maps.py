"""Stage maps: draw each scene's predictions as maps and a quick-look image.

Usage: ``python -m stages.maps <scenes_dir> <tile_index.json> <predictions.json> <model.json>
<maps_dir> <quicklook_dir>``. For each scene with predictions, writes
``<maps_dir>/<id>.classes.tif`` and ``<id>.scores.tif`` (Cloud-Optimized GeoTIFFs, one pixel per
tile position) and ``<quicklook_dir>/<id>.png`` (true colour with the predictions over it, wrongly
classified tiles outlined).
Each directory appears only when all its files are written.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
from pathlib import Path

from satpipe import model as model_lib
from satpipe.files import read_json
from satpipe.maps import render_maps
from satpipe.tileindex import load_index
from stages import _cli

log = logging.getLogger(__name__)


def main(args: argparse.Namespace) -> None:
    """Render every scene's maps into fresh output directories."""
    model = model_lib.load(args.model)
    index = load_index(args.index)
    predictions = read_json(args.predictions)
    outs = [Path(args.maps_dir), Path(args.quicklook_dir)]
    for out in outs:
        out.parent.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix=f".{outs[0].name}.", dir=outs[0].parent) as maps_tmp,
        tempfile.TemporaryDirectory(prefix=f".{outs[1].name}.", dir=outs[1].parent) as look_tmp,
    ):
        summaries = render_maps(
            Path(args.scenes_dir), index, predictions, model, Path(maps_tmp), Path(look_tmp)
        )
        for tmp, out in zip((maps_tmp, look_tmp), outs, strict=True):
            if out.exists():
                shutil.rmtree(out)
            Path(tmp).rename(out)
            out.chmod(0o755)
    for sid, summary in summaries.items():
        log.info("maps of %s: %s", sid, summary)


if __name__ == "__main__":
    p = _cli.parser("maps", __doc__)
    for name, text in [
        ("scenes_dir", "directory of scenes and their previews (from ingest)"),
        ("index", "tile index JSON"),
        ("predictions", "predictions JSON"),
        ("model", "model JSON"),
        ("maps_dir", "output directory of prediction maps (COGs)"),
        ("quicklook_dir", "output directory of quick-look PNGs"),
    ]:
        p.add_argument(name, help=text)
    sys.exit(_cli.run("maps", main, p.parse_args()))
