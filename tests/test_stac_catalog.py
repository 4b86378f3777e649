"""The STAC catalog of a run's outputs: valid offline, faithful to the files, byte-stable."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
import yaml
from affine import Affine
from pystac.validation import JsonSchemaSTACValidator, RegisteredValidator, set_validator
from rasterio.crs import CRS

from satpipe.core.files import write_json
from satpipe.core.records import SceneRecord, manifest_json
from satpipe.outputs.cog import write_class_cog, write_score_cog
from satpipe.outputs.maps import map_grid
from satpipe.outputs.quicklook import encode_png
from satpipe.outputs.segmentation import SegmentWriter
from satpipe.outputs.stac_assets import class_name
from satpipe.outputs.stac_catalog import (
    CatalogError,
    RunOutputs,
    build_catalog,
    footprint,
    save_catalog,
)
from tests.helpers import stage
from tests.models import threshold_model
from tests.records import scene_record
from tests.serve_fixtures import segmentation_repo  # noqa: F401

SCHEMAS = Path(__file__).parent / "data" / "stac_schemas"
EXTENSIONS = "https://stac-extensions.github.io"
WIDTH, HEIGHT = 37, 23
TRANSFORM = (10.0, 0.0, 500000.0, 0.0, -10.0, 4000230.0)
BOUNDS = (500000.0, 4000000.0, 500370.0, 4000230.0)
TIME = "2024-07-13T10:30:21Z"
MODEL_MD5 = "0123456789abcdef0123456789abcdef"


@dataclass(frozen=True)
class StubModel:
    """What the catalog reads of a model."""

    version: str = "model-v1"
    classes: tuple[str, ...] = ("water", "bare soil", "cloud")
    colours: tuple[tuple[int, int, int], ...] = ((0, 0, 255), (160, 82, 45), (255, 255, 255))
    output: str = "pixels"


MODEL = StubModel()


def vendored() -> dict[str, dict[str, Any]]:
    """The vendored extension schemas, by the URI items name them with."""
    return {
        f"{EXTENSIONS}/{p.parts[-3]}/{p.parts[-2]}/schema.json": json.loads(p.read_text())
        for p in sorted(SCHEMAS.glob("*/v*/schema.json"))
    }


@pytest.fixture(scope="module")
def offline_validator() -> Iterator[JsonSchemaSTACValidator]:
    """The JSON-schema validator of pystac, every schema preloaded: nothing is fetched.

    Core schemas come bundled with pystac, the extensions' from tests/data/stac_schemas.
    """
    validator = JsonSchemaSTACValidator()
    validator.schema_cache.update(vendored())
    previous = RegisteredValidator.get_validator()
    set_validator(validator)
    yield validator
    set_validator(previous)


def scene(sid: str) -> SceneRecord:
    return scene_record(
        sid,
        width=WIDTH,
        height=HEIGHT,
        crs_wkt=CRS.from_epsg(32633).to_wkt(),
        transform=TRANSFORM,
        bounds=BOUNDS,
        acquisition_time=TIME,
    )


def write_segments(directory: Path, sid: str, probability: bool) -> dict[str, str]:
    """A class COG (and a winner-probability COG) of a small scene; its index entry."""
    rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH]
    classes = ((rows + cols) % 3).astype(np.uint8)
    valid = (rows + cols) % 7 != 0
    probs = (100 + classes * 50)[None].astype(np.uint8)
    entry = {"id": sid, "class": f"{sid}.class.tif", "summary": f"{sid}.json"}
    prob_path = None
    if probability:
        entry["probability"] = f"{sid}.probability.tif"
        prob_path = directory / entry["probability"]
    colours = ["#{:02x}{:02x}{:02x}".format(*c) for c in MODEL.colours]
    with SegmentWriter(
        directory / entry["class"], scene(sid), MODEL.classes, colours, probability_path=prob_path
    ) as writer:
        writer.write(0, classes, probs, valid)
    write_json(directory / entry["summary"], {"valid_pixels": int(valid.sum())})
    return entry


def write_maps(maps: Path, quicklook: Path, sid: str) -> None:
    """Tile class and score maps (8-pixel tiles) and the quick-look PNGs of a scene."""
    grid = map_grid(Affine(*TRANSFORM), WIDTH, HEIGHT, 8, 8)
    codes = (np.arange(grid.width * grid.height) % 4).reshape(grid.height, grid.width)
    crs = CRS.from_epsg(32633)
    write_class_cog(maps / f"{sid}.classes.tif", codes, grid, crs, MODEL.classes, MODEL.colours)
    write_score_cog(maps / f"{sid}.scores.tif", codes / 4.0, grid, crs)
    picture = np.zeros((5, 7, 3), np.uint8)
    for name in (f"{sid}.png", f"{sid}.classes.png"):
        (quicklook / name).write_bytes(encode_png(picture))


def make_run(
    root: Path, scenes: dict[str, dict[str, bool]], version: str = MODEL.version
) -> tuple[list[SceneRecord], RunOutputs]:
    """A run's outputs under ``root/data``.

    ``scenes`` maps a scene id to what it has (``probability``, ``polygons``: default True).
    """
    data = root / "data"
    outputs = RunOutputs(
        segments=data / "segments",
        maps=data / "maps",
        quicklook=data / "quicklook",
        polygons=data / "polygons",
    )
    for directory in (outputs.segments, outputs.maps, outputs.quicklook, outputs.polygons):
        assert directory is not None
        directory.mkdir(parents=True)
    segments, polygons = [], []
    for sid, has in scenes.items():
        segments.append(write_segments(outputs.segments, sid, has.get("probability", True)))
        write_maps(outputs.maps, outputs.quicklook, sid)
        if has.get("polygons", True):
            entry = {"id": sid, "flatgeobuf": f"{sid}.fgb", "geojson": f"{sid}.geojson"}
            (data / "polygons" / entry["flatgeobuf"]).write_bytes(b"fgb\x03" + sid.encode())
            (data / "polygons" / entry["geojson"]).write_text('{"type": "FeatureCollection"}')
            polygons.append({**entry, "features": 0, "areas_m2": {}})
    head = {"output": "pixels", "model_version": version}
    write_json(outputs.segments / "index.json", {**head, "scenes": segments})
    assert outputs.polygons is not None
    write_json(outputs.polygons / "index.json", {**head, "settings": {}, "scenes": polygons})
    records = [scene(sid) for sid in scenes]
    write_json(data / "scenes.json", manifest_json(records))
    return records, outputs


def saved(root: Path, scenes: list[SceneRecord], outputs: RunOutputs) -> pystac.Catalog:
    """Build and save the catalog at ``root/data/catalog``; read it back from disk."""
    catalog = build_catalog(scenes, MODEL, MODEL_MD5, outputs)
    save_catalog(catalog, root / "data" / "catalog")
    return pystac.Catalog.from_file(str(root / "data" / "catalog" / "catalog.json"))


@pytest.fixture
def run(tmp_path: Path) -> tuple[pystac.Catalog, RunOutputs]:
    """Two scenes: ``a-1`` has everything, ``b.2`` neither probabilities nor polygons."""
    records, outputs = make_run(
        tmp_path, {"a-1": {}, "b.2": {"probability": False, "polygons": False}}
    )
    return saved(tmp_path, records, outputs), outputs


def items(catalog: pystac.Catalog) -> dict[str, pystac.Item]:
    return {item.id: item for item in catalog.get_items()}


def asset_path(item: pystac.Item, key: str) -> Path:
    return Path(item.assets[key].get_absolute_href() or "")


def test_catalog_validates_offline_against_vendored_schemas(
    run: tuple[pystac.Catalog, RunOutputs], offline_validator: JsonSchemaSTACValidator
) -> None:
    catalog, _ = run
    assert catalog.validate_all() == 2
    for item in catalog.get_items():
        checked = item.validate()
        assert set(item.stac_extensions) <= set(vendored()), "a schema is not vendored"
        assert set(checked) == {
            "https://schemas.stacspec.org/v1.1.0/item-spec/json-schema/item.json",
            *item.stac_extensions,
        }
    assert len(items(catalog)["a-1"].stac_extensions) == 4


def test_validation_rejects_a_broken_item(
    run: tuple[pystac.Catalog, RunOutputs], offline_validator: JsonSchemaSTACValidator
) -> None:
    item = items(run[0])["a-1"].to_dict()
    for path, value in [
        (("assets", "class", "classification:classes", 0, "color_hint"), "#0000ff"),
        (("assets", "class", "raster:bands", 0, "data_type"), "byte"),
        (("properties", "proj:shape"), [HEIGHT]),
        (("assets", "class", "file:size"), "big"),
    ]:
        broken = copy.deepcopy(item)
        target: Any = broken
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        with pytest.raises(pystac.STACValidationError):
            pystac.validation.validate_dict(broken)


def test_classes_are_the_models_with_codes_names_and_colours(
    run: tuple[pystac.Catalog, RunOutputs],
) -> None:
    item = items(run[0])["a-1"]
    for key, first, nodata in [("class", 0, 255), ("tile_classes", 1, 0)]:
        classes = item.assets[key].extra_fields["classification:classes"]
        assert [c["value"] for c in classes] == [first, first + 1, first + 2, nodata]
        assert [c.get("title", c["name"]) for c in classes[:3]] == list(MODEL.classes)
        assert [c["name"] for c in classes[:3]] == ["water", "bare_soil", "cloud"]
        assert [c["color_hint"] for c in classes[:3]] == ["0000ff", "a0522d", "ffffff"]
        assert classes[3]["nodata"] is True
        with rasterio.open(asset_path(item, key)) as src:
            assert src.nodata == nodata
            colormap = src.colormap(1)
            for c in classes[:3]:
                assert "{:02x}{:02x}{:02x}".format(*colormap[c["value"]][:3]) == c["color_hint"]


def test_proj_and_raster_fields_are_the_files(run: tuple[pystac.Catalog, RunOutputs]) -> None:
    item = items(run[0])["a-1"]
    assert item.properties["proj:bbox"] == list(BOUNDS)
    for key in ("class", "probability", "tile_classes", "tile_scores"):
        fields = {**item.properties, **item.assets[key].extra_fields}
        with rasterio.open(asset_path(item, key)) as src:
            assert fields["proj:code"] == "EPSG:32633" == f"EPSG:{src.crs.to_epsg()}"
            assert fields["proj:shape"] == [src.height, src.width]
            assert fields["proj:transform"] == list(src.transform)[:6]
            bands = fields["raster:bands"]
            assert [b["data_type"] for b in bands] == list(src.dtypes)
            assert bands[0]["spatial_resolution"] == src.res[0]
    bands = item.assets["class"].extra_fields["raster:bands"]
    assert bands == [
        {"data_type": "uint8", "nodata": 255, "sampling": "area", "spatial_resolution": 10.0}
    ]
    assert item.assets["probability"].extra_fields["raster:bands"][0]["scale"] == 1 / 255
    assert item.assets["tile_scores"].extra_fields["raster:bands"][0]["nodata"] == "nan"
    assert item.assets["tile_classes"].extra_fields["proj:shape"] == [
        3,
        5,
    ]  # ceil(23/8), ceil(37/8)


def test_footprint_is_the_scene_in_wgs84(run: tuple[pystac.Catalog, RunOutputs]) -> None:
    item = items(run[0])["a-1"]
    west, south, east, north = rasterio.warp.transform_bounds("EPSG:32633", "EPSG:4326", *BOUNDS)
    assert item.bbox == pytest.approx([west, south, east, north], abs=1e-6)
    ring = item.geometry["coordinates"][0]
    assert item.geometry["type"] == "Polygon" and ring[0] == ring[-1] and len(ring) == 81
    area = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in itertools.pairwise(ring))
    assert area > 0  # counter-clockwise, as RFC 7946 wants
    assert item.datetime is not None and item.properties["datetime"] == TIME


def test_footprint_across_the_antimeridian_is_cut() -> None:
    # UTM zone 60N, a box reaching past 180 degrees east.
    geometry, bbox = footprint(CRS.from_epsg(32660), (700000.0, 5000000.0, 900000.0, 5100000.0))
    assert geometry["type"] == "MultiPolygon"
    assert bbox[0] == pytest.approx(-180) and bbox[2] == pytest.approx(180)


def test_checksums_and_sizes_are_the_files(run: tuple[pystac.Catalog, RunOutputs]) -> None:
    seen = 0
    for item in run[0].get_items():
        for key, asset in item.assets.items():
            data = asset_path(item, key).read_bytes()
            assert asset.extra_fields["file:checksum"] == "d510" + hashlib.md5(data).hexdigest()
            assert asset.extra_fields["file:size"] == len(data)
            seen += 1
    assert seen == 8 + 5


def test_hrefs_are_relative_and_resolve_to_the_outputs(
    run: tuple[pystac.Catalog, RunOutputs], tmp_path: Path
) -> None:
    catalog, outputs = run
    for path in (tmp_path / "data" / "catalog").rglob("*.json"):
        text = path.read_text()
        assert str(tmp_path) not in text and '"created"' not in text and '"updated"' not in text
        assert '"rel": "self"' not in text
    item = items(catalog)["a-1"]
    assert item.assets["class"].href == "../../segments/a-1.class.tif"
    expected = {
        "class": outputs.segments / "a-1.class.tif",
        "probability": outputs.segments / "a-1.probability.tif",
        "tile_classes": outputs.maps / "a-1.classes.tif",
        "tile_scores": outputs.maps / "a-1.scores.tif",
        "polygons": tmp_path / "data" / "polygons" / "a-1.fgb",
        "polygons_geojson": tmp_path / "data" / "polygons" / "a-1.geojson",
        "quicklook": outputs.quicklook / "a-1.png",
        "quicklook_classes": outputs.quicklook / "a-1.classes.png",
    }
    assert {key: asset_path(item, key) for key in item.assets} == expected
    assert item.assets["polygons"].media_type == "application/vnd.flatgeobuf"
    assert item.assets["polygons_geojson"].extra_fields["proj:code"] == "EPSG:4326"
    assert item.assets["quicklook"].roles == ["overview"]


def test_a_scene_without_probabilities_or_polygons_has_no_such_assets(
    run: tuple[pystac.Catalog, RunOutputs],
) -> None:
    item = items(run[0])["b.2"]
    assert set(item.assets) == {
        "class",
        "tile_classes",
        "tile_scores",
        "quicklook",
        "quicklook_classes",
    }
    assert item.properties["satpipe:model_version"] == MODEL.version
    assert item.properties["satpipe:model_md5"] == MODEL_MD5


def test_same_outputs_give_the_same_bytes_wherever_they_are(tmp_path: Path) -> None:
    scenes = {"a-1": {}, "b.2": {"probability": False}}
    texts = []
    for place in ("one", "two/deeper"):
        records, outputs = make_run(tmp_path / place, scenes)
        saved(tmp_path / place, records, outputs)
        root = tmp_path / place / "data" / "catalog"
        texts.append({str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*.json")})
    assert texts[0] == texts[1]
    assert sorted(texts[0]) == ["a-1/a-1.json", "b.2/b.2.json", "catalog.json"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: (d / "segments" / "a-1.class.tif").unlink(), r"a-1\.class\.tif: listed in .*"),
        (lambda d: (d / "polygons" / "a-1.fgb").unlink(), r"a-1\.fgb: listed in .*a-1"),
        (lambda d: (d / "segments" / "index.json").unlink(), r"index\.json: not found"),
        (
            lambda d: write_json(d / "polygons" / "index.json", {"model_version": "old"}),
            r"polygons/index\.json: expected an object with a 'scenes' list",
        ),
        (
            lambda d: write_json(
                d / "segments" / "index.json", {"model_version": "old", "scenes": []}
            ),
            r"model_version 'old'; expected 'model-v1'",
        ),
        (
            lambda d: write_json(
                d / "segments" / "index.json",
                {"model_version": "model-v1", "scenes": [{"id": "a-1", "class": "../x.tif"}]},
            ),
            r"scene 'a-1' names '\.\./x\.tif'; expected a file name",
        ),
        (
            lambda d: write_json(
                d / "segments" / "index.json",
                {"model_version": "model-v1", "scenes": [{"id": "z"}]},
            ),
            r"scene 'z' is not in the scene manifest",
        ),
    ],
)
def test_bad_outputs_are_one_line_errors_naming_the_file(
    tmp_path: Path, change: Callable[[Path], None], message: str
) -> None:
    records, outputs = make_run(tmp_path, {"a-1": {}})
    change(tmp_path / "data")
    with pytest.raises(CatalogError, match=message) as caught:
        build_catalog(records, MODEL, MODEL_MD5, outputs)
    assert "\n" not in str(caught.value)


def test_a_scene_without_acquisition_time_is_refused(tmp_path: Path) -> None:
    records, outputs = make_run(tmp_path, {"a-1": {}})
    undated = [SceneRecord(**{**vars(records[0]), "acquisition_time": None})]
    with pytest.raises(CatalogError, match=r"scene 'a-1': acquisition_time None; expected"):
        build_catalog(undated, MODEL, MODEL_MD5, outputs)


def test_class_names_fit_the_schema() -> None:
    assert class_name("bare soil", 1) == "bare_soil"
    assert class_name("cloud/shadow", 2) == "cloud_shadow"
    assert class_name("***", 3) == "class_3"
    assert class_name("snow-ice_2", 4) == "snow-ice_2"


def test_stage_writes_the_catalog_or_one_error_line(tmp_path: Path) -> None:
    model = threshold_model([0.1, 0.2, 0.8, 0.9])
    make_run(tmp_path, {"a-1": {}}, version=model.version)
    write_json(tmp_path / "data" / "model.json", model.to_dict())
    args = [
        f"data/{name}"
        for name in ("scenes.json", "model.json", "segments", "polygons", "maps", "quicklook")
    ]
    done = stage("catalog", *args, "data/catalog", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    item = json.loads((tmp_path / "data" / "catalog" / "a-1" / "a-1.json").read_text())
    model_bytes = (tmp_path / "data" / "model.json").read_bytes()
    assert item["properties"]["satpipe:model_md5"] == hashlib.md5(model_bytes).hexdigest()
    assert item["properties"]["satpipe:output"] == "tile"
    assert [c["name"] for c in item["assets"]["class"]["classification:classes"]] == [
        "dark",
        "bright",
        "nodata",
    ]
    before = sorted(os.listdir(tmp_path / "data"))
    (tmp_path / "data" / "quicklook" / "a-1.png").unlink()  # fine: no quick-look asset
    (tmp_path / "data" / "polygons" / "a-1.geojson").unlink()
    done = stage("catalog", *args, "data/catalog", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: data/polygons/a-1.geojson: listed in data/polygons/index.json for scene 'a-1' "
        "but missing"
    ]
    assert sorted(os.listdir(tmp_path / "data")) == before  # the old catalog stays, whole


def dir_listings(repo: Path) -> dict[str, dict[str, str]]:
    """Each directory output's files and md5s, as DVC's cache lists them (``.dir`` objects)."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    listings = {}
    for entry in lock["stages"].values():
        for out in entry.get("outs", []):
            md5 = out.get("md5", "")
            if md5.endswith(".dir"):
                listing = repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
                files = json.loads(listing.read_text())
                listings[out["path"]] = {f["relpath"]: f["md5"] for f in files}
    return listings


def pipeline_catalog(repo: Path, tmp_path: Path) -> Path:
    """The pipeline's ``data/catalog``, or the stage run on a copy of the outputs.

    The copy is for while dvc.yaml has no catalog stage; without a vectorize stage either, the
    copy gets an empty polygons index.
    """
    if (repo / "data" / "catalog").is_dir():
        return repo / "data" / "catalog"
    data = tmp_path / "data"
    for name in ("segments", "maps", "quicklook", "polygons"):
        if (repo / "data" / name).is_dir():
            shutil.copytree(repo / "data" / name, data / name)
    for name in ("scenes.json", "model.json"):
        shutil.copy2(repo / "data" / name, data / name)
    if not (data / "polygons").is_dir():
        head = json.loads((data / "segments" / "index.json").read_text())
        write_json(data / "polygons" / "index.json", {**head, "settings": {}, "scenes": []})
    args = ["scenes.json", "model.json", "segments", "polygons", "maps", "quicklook", "catalog"]
    done = stage("catalog", *[f"data/{a}" for a in args], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return data / "catalog"


@pytest.mark.slow
def test_pipeline_catalog_checksums_are_dvcs_and_it_validates(
    segmentation_repo: Path,  # noqa: F811
    tmp_path: Path,
    offline_validator: JsonSchemaSTACValidator,
) -> None:
    root = pipeline_catalog(segmentation_repo, tmp_path)
    catalog = pystac.Catalog.from_file(str(root / "catalog.json"))
    assert catalog.validate_all() == 1
    listings = dir_listings(segmentation_repo)
    (item,) = catalog.get_items()
    checked: dict[str, set[str]] = {}
    for key, asset in item.assets.items():
        up, up2, directory, name = Path(asset.href).parts
        assert (up, up2) == ("..", "..") and (root.parent / directory / name).is_file(), key
        dvc_md5 = listings[f"data/{directory}"][name]
        assert asset.extra_fields["file:checksum"] == "d510" + dvc_md5, key
        checked.setdefault(directory, set()).add(key)
    assert checked["segments"] == {"class", "probability"}
    assert checked["maps"] == {"tile_classes", "tile_scores"}
    assert checked["quicklook"] == {"quicklook", "quicklook_classes", "quicklook_errors"}
    if "data/polygons" in listings:
        assert checked["polygons"] == {"polygons", "polygons_geojson"}
