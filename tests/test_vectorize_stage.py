"""The vectorize stage: in a real pipeline run, and at its CLI edge.

In the run (per-pixel model, through ``dvc repro``), the polygons it wrote, read back with
pyogrio and burnt into the scene grid, are the segment stage's class raster; the index's areas
are pixel counts times the pixel area; what it streamed to the files is what the features held
together give.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
import yaml
from rasterio.crs import CRS
from rasterio.features import rasterize

from satpipe.core.files import write_json
from satpipe.outputs.polygons import PolygonSettings, geojson_bytes, raster_polygons
from tests.helpers import REPO, stage
from tests.models import threshold_model
from tests.serve_fixtures import segmentation_repo  # noqa: F401

ARGS = ["model.json", "segments", "polygons", "report.json"]


def _model(directory: Path) -> Any:
    """A tile-label model in ``directory/model.json``, beside the project's ``params.yaml``."""
    model = threshold_model([10.0, 2000.0], bins=2)
    write_json(directory / "model.json", model.to_dict())
    (directory / "params.yaml").write_text((REPO / "params.yaml").read_text())
    return model


@pytest.mark.slow
def test_polygons_burn_back_into_the_class_raster(segmentation_repo: Path) -> None:  # noqa: F811
    data = segmentation_repo / "data"
    index = json.loads((data / "polygons" / "index.json").read_text())
    segments = json.loads((data / "segments" / "index.json").read_text())
    model = json.loads((data / "model.json").read_text())
    assert index["output"] == "pixels"
    assert index["model_version"] == segments["model_version"]
    assert [s["id"] for s in index["scenes"]] == [s["id"] for s in segments["scenes"]]
    params = yaml.safe_load((segmentation_repo / "params.yaml").read_text())["vectorize"]
    assert index["settings"] == params
    classes = model["classes"]
    for scene, listed in zip(index["scenes"], segments["scenes"], strict=True):
        with rasterio.open(data / "segments" / listed["class"]) as src:
            pixels, transform, crs = src.read(1), src.transform, src.crs
            pixel_area = abs(src.res[0] * src.res[1])
        meta, _, wkb, fields = pyogrio.raw.read(data / "polygons" / scene["flatgeobuf"])
        assert CRS.from_user_input(meta["crs"]) == crs
        assert len(wkb) == scene["features"] > 0
        shapes = list(zip(shapely.from_wkb(wkb), fields[1].tolist(), strict=True))
        burnt = rasterize(shapes, pixels.shape, fill=255, transform=transform, dtype=np.uint8)
        np.testing.assert_array_equal(burnt, pixels)
        counts = np.bincount(pixels[pixels != 255], minlength=len(classes))
        expected = {name: float(counts[i]) * pixel_area for i, name in enumerate(classes)}
        assert scene["areas_m2"] == pytest.approx(expected, abs=1e-6)
        geojson = json.loads((data / "polygons" / scene["geojson"]).read_text())
        assert len(geojson["features"]) == scene["features"]
        # Streamed by the stage, the same as the features held together would give.
        held = raster_polygons(
            data / "segments" / listed["class"], classes, PolygonSettings(**params)
        )
        assert (data / "polygons" / scene["geojson"]).read_bytes() == geojson_bytes(held)
        assert (scene["features"], scene["areas_m2"]) == (len(held.features), held.areas_m2)
    report = json.loads((data / "reports" / "vectorize.json").read_text())
    assert {sid: s["features"] for sid, s in report["scenes"].items()} == {
        s["id"]: s["features"] for s in index["scenes"]
    }


def test_a_tile_label_model_gets_an_index_without_scenes(tmp_path: Path) -> None:
    model = _model(tmp_path)
    segments = {"output": "tile", "model_version": model.version, "scenes": []}
    write_json(tmp_path / "segments" / "index.json", segments)
    done = stage("vectorize", *ARGS, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "polygons").iterdir()) == ["index.json"]
    index = json.loads((tmp_path / "polygons" / "index.json").read_text())
    assert index["output"] == "tile" and index["scenes"] == []
    assert index["settings"]["block_rows"] == 1024
    assert json.loads((tmp_path / "report.json").read_text())["scenes"] == {}


@pytest.mark.parametrize(
    ("index", "fragment"),
    [
        (None, "cannot read the segment index"),
        ({"output": "tile", "model_version": "m-old", "scenes": []}, "model_version 'm-old'"),
    ],
)
def test_a_missing_or_stale_segment_index_is_one_error_line(
    tmp_path: Path, index: dict | None, fragment: str
) -> None:
    _model(tmp_path)
    if index is not None:
        write_json(tmp_path / "segments" / "index.json", index)
    done = stage("vectorize", *ARGS, cwd=tmp_path, timeout=120)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ")
    assert fragment in done.stderr and "index.json" in done.stderr
    assert not (tmp_path / "polygons").exists()
