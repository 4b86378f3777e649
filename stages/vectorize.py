"""Stage vectorize: each segmented scene's class raster as polygons, one feature per region.

Usage: ``python -m stages.vectorize <model.json> <segments_dir> <polygons_dir> <report.json>``;
reads ``vectorize`` (:class:`satpipe.outputs.polygons.PolygonSettings`). For each scene the
segment stage's ``<segments_dir>/index.json`` lists, writes ``<polygons_dir>/<id>.fgb``
(FlatGeobuf, the scene CRS) and ``<id>.geojson`` (EPSG:4326, for the web), one feature per
4-connected region of a class with its ``class``, ``code`` and ``area_m2``, and
``<polygons_dir>/index.json``: the settings and, per scene, the two files, the number of features
and the area of each class in m². A tile-label model has no class raster: the index says so and
lists no scene. The directory appears only when every file is written. The report holds the same
figures; timings go to the log only. Memory: the features stream from the blocks to both files
as they are completed (:func:`satpipe.outputs.polygons.write_features`), so it goes with the
block height and the regions open across a block edge, not with the number of features
(except with ``simplify > 0``, which needs the whole coverage at once).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path
from typing import Any

from satpipe.core import logs
from satpipe.core.errors import ModelError
from satpipe.core.files import atomic_dir, read_json, write_json
from satpipe.core.params import load_params
from satpipe.models import model as model_lib
from satpipe.outputs.polygons_types import PolygonSettings
from stages import _cli

log = logging.getLogger(__name__)

INDEX = "index.json"


def _segment_index(segments: Path, version: str) -> dict[str, Any]:
    """The segment stage's index, checked against the model."""
    path = segments / INDEX
    try:
        index = read_json(path)
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"{path}: cannot read the segment index ({exc.__class__.__name__}); expected the "
            "segment stage's index.json"
        ) from exc
    if not isinstance(index, dict) or index.get("model_version") != version:
        found = index.get("model_version") if isinstance(index, dict) else index
        raise ModelError(f"{path}: model_version {found!r}; expected {version!r} (the model)")
    return index


def main(args: argparse.Namespace) -> None:
    """Vectorise every segmented scene (or, for a tile-label model, write an empty index)."""
    params = load_params(args.params)
    model = model_lib.load(args.model)
    logs.set_model(model.version)
    segments = Path(args.segments_dir)
    listed = _segment_index(segments, model.version)
    settings = PolygonSettings(**params.vectorize.model_dump())
    index: dict[str, Any] = {
        "output": model.output,
        "model_version": model.version,
        "settings": dataclasses.asdict(settings),
        "scenes": [],
    }
    with atomic_dir(args.polygons_dir) as tmp:
        if model.output == "pixels":
            # shapely, pyproj, pyogrio, pyarrow and scipy: only a per-pixel model has polygons
            from satpipe.outputs.polygons import raster_features, write_features

            for scene in listed["scenes"]:
                started = time.perf_counter()
                stream = raster_features(segments / scene["class"], model.classes, settings)
                names = {"flatgeobuf": f"{scene['id']}.fgb", "geojson": f"{scene['id']}.geojson"}
                written = write_features(
                    stream, tmp / names["flatgeobuf"], tmp / names["geojson"]
                )  # one pass, batch by batch: the scene's features are never held together
                index["scenes"].append(
                    {
                        "id": scene["id"],
                        **names,
                        "features": written.features,
                        "areas_m2": written.areas_m2,
                    }
                )
                log.info(
                    "vectorised %s: %d features in %.1f s",
                    scene["id"],
                    written.features,
                    time.perf_counter() - started,
                )
        else:
            log.info("model %s labels tiles: nothing to vectorise", model.version)
        write_json(tmp / INDEX, index)
    report = {**index, "scenes": {s["id"]: s for s in index["scenes"]}}
    write_json(args.report, report)


if __name__ == "__main__":
    p = _cli.parser("vectorize", __doc__)
    for name, text in [
        ("model", "model JSON"),
        ("segments_dir", "segment stage's output (class COGs and index.json)"),
        ("polygons_dir", "output directory of FlatGeobuf and GeoJSON polygons"),
        ("report", "output vectorize report JSON"),
    ]:
        p.add_argument(name, help=text)
    sys.exit(_cli.run("vectorize", main, p.parse_args()))
