"""Stage catalog: a static STAC catalog of the run's outputs, one item per scene.

Usage: ``python -m stages.catalog <scenes.json> <model.json> <segments_dir> <polygons_dir>
<maps_dir> <quicklook_dir> <catalog_dir>``. Writes ``<catalog_dir>/catalog.json`` and
``<catalog_dir>/<id>/<id>.json`` for each scene with an output: the class and probability COGs
(from the segments index), the tile class and score maps, the polygons (from the polygons
index) and the quick-looks, with their classes, grids, bands and md5s (see
:mod:`satpipe.outputs.stac_catalog`). Hrefs are relative to ``<catalog_dir>``, which must sit
beside the output directories as in ``data/``. The directory appears only when complete.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from satpipe.core import logs
from satpipe.core.files import atomic_dir, md5_file
from satpipe.core.records import read_manifest
from satpipe.models import model as model_lib
from satpipe.outputs.stac_catalog import RunOutputs, build_catalog, save_catalog
from stages import _cli

log = logging.getLogger(__name__)


def main(args: argparse.Namespace) -> None:
    """Describe the run's outputs as a STAC catalog in a fresh ``catalog_dir``."""
    model = model_lib.load(args.model)
    logs.set_model(model.version)
    outputs = RunOutputs(
        segments=Path(args.segments_dir),
        maps=Path(args.maps_dir),
        quicklook=Path(args.quicklook_dir),
        polygons=Path(args.polygons_dir),
    )
    catalog = build_catalog(read_manifest(args.manifest), model, md5_file(args.model), outputs)
    with atomic_dir(args.catalog_dir) as tmp:
        save_catalog(catalog, Path(args.catalog_dir), tmp)
    items = list(catalog.get_items())
    log.info("catalog of %d scenes, %d assets", len(items), sum(len(item.assets) for item in items))


if __name__ == "__main__":
    p = _cli.parser("catalog", __doc__)
    for name, text in [
        ("manifest", "scenes manifest JSON (from ingest)"),
        ("model", "model JSON"),
        ("segments_dir", "segment stage's output directory (with its index.json)"),
        ("polygons_dir", "vectorize stage's output directory (with its index.json)"),
        ("maps_dir", "maps stage's directory of prediction map COGs"),
        ("quicklook_dir", "maps stage's directory of quick-look PNGs"),
        ("catalog_dir", "output directory of the STAC catalog"),
    ]:
        p.add_argument(name, help=text)
    sys.exit(_cli.run("catalog", main, p.parse_args()))
