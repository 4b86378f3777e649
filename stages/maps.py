"""Stage maps: draw each scene's predictions as maps and a quick-look image.

Usage: ``python -m stages.maps <scenes_dir> <tile_index.json> <predictions.json> <model.json>
<maps_dir> <quicklook_dir>``. For each scene with predictions, writes
``<maps_dir>/<id>.classes.tif`` and ``<id>.scores.tif`` (Cloud-Optimized GeoTIFFs, one pixel per
tile position) and ``<quicklook_dir>/<id>.png`` (true colour with the predictions over it, wrongly
classified tiles outlined). For a per-pixel model (``--segments``: the segment stage's output),
also ``<quicklook_dir>/<id>.classes.png`` (the class raster in the classes' colours) and, for a
scene with labels, ``<id>.errors.png`` (held-out pixels: correct, false positive, false negative
of the first class, other mistakes).
Each directory appears only when all its files are written. A scene's quick-look whose inputs
are unchanged since the last run is kept from it (the directory is a persistent DVC output; see
:mod:`satpipe.core.reuse`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import cast

from satpipe.core.files import atomic_dir, read_json
from satpipe.core.records import TileIndex, read_index, read_predictions
from satpipe.core.reuse import Reuse
from satpipe.evaluation.held_out import held_out_pixels
from satpipe.models import model as model_lib
from satpipe.models.kinds.base import PixelKind
from satpipe.models.model import Model
from satpipe.outputs.maps import render_maps
from satpipe.outputs.mask_quicklook import class_quicklook, error_quicklook
from satpipe.tiles.index import index_hash
from stages import _cli

log = logging.getLogger(__name__)


def _mask_pictures(args: argparse.Namespace, model: Model, index: TileIndex, look: Path) -> None:
    """A per-pixel model: each scene's class quick-look and, with labels, its error quick-look."""
    kind = cast(PixelKind, model.kind)
    segments = Path(args.segments)
    index_sha = index_hash(args.index)
    for listed in read_json(segments / "index.json")["scenes"]:
        sid, classes = listed["id"], segments / listed["class"]
        class_quicklook(classes, look / f"{sid}.classes.png", kind.colours, model.classes)
        scene = index.scenes.get(sid)
        if scene is None or scene.labels is None:
            continue
        held = held_out_pixels(model, index, index_sha, sid)
        error_quicklook(
            classes,
            Path(args.scenes_dir) / scene.labels["file"],
            kind.label_codes,
            look / f"{sid}.errors.png",
            mask=lambda rows, cols, held=held: held.at(rows, cols),
        )


def main(args: argparse.Namespace) -> None:
    """Render every scene's maps into fresh output directories."""
    model = model_lib.load(args.model)
    index = read_index(args.index)
    predictions = read_predictions(args.predictions)
    reuse = Reuse.open("quicklook", args.quicklook_dir)
    with atomic_dir(args.maps_dir) as maps_tmp, atomic_dir(args.quicklook_dir) as look_tmp:
        summaries = render_maps(
            Path(args.scenes_dir), index, predictions, model, maps_tmp, look_tmp, reuse
        )
        if model.output == "pixels" and args.segments is not None:
            _mask_pictures(args, model, index, look_tmp)
    reuse.save()
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
    p.add_argument("--segments", default=None, help="segment stage's output (per-pixel models)")
    sys.exit(_cli.run("maps", main, p.parse_args()))
