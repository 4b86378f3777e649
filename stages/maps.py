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
import sys
from pathlib import Path

from satpipe.core.files import atomic_dir
from satpipe.core.records import read_index, read_predictions
from satpipe.models import model as model_lib
from satpipe.outputs.maps import render_maps
from stages import _cli

log = logging.getLogger(__name__)


def main(args: argparse.Namespace) -> None:
    """Render every scene's maps into fresh output directories."""
    model = model_lib.load(args.model)
    index = read_index(args.index)
    predictions = read_predictions(args.predictions)
    with atomic_dir(args.maps_dir) as maps_tmp, atomic_dir(args.quicklook_dir) as look_tmp:
        summaries = render_maps(
            Path(args.scenes_dir), index, predictions, model, maps_tmp, look_tmp
        )
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
