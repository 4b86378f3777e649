"""Ingest and tiling on the real GeoTIFF corpus in ``../shared/data/real`` (see its MANIFEST.md).

Valid scenes run through ingest and tiling with a tile size that fits them, and the tiles are
checked against invariants; the others fail with their specific error, naming the file. Skipped
where the corpus is absent.
"""

from __future__ import annotations

import hashlib
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio import windows
from rasterio.windows import Window

from satpipe.core.errors import (
    EmptySceneError,
    GeoreferencingError,
    NotGeoTIFFError,
    RasterReadError,
    TilingError,
)
from satpipe.core.params import IngestParams, TileParams
from satpipe.core.records import SceneRecord
from satpipe.scenes.ingest import ingest
from satpipe.tiles.features import FeatureSpec
from satpipe.tiles.packs import vsi_path
from satpipe.tiles.tiling import cut_tiles
from tests.helpers import indexed_tile

TIME = "2020-01-01T00:00:00Z"
NAN = float("nan")

# name: (tile size, width, height, count, dtype, epsg, nodata) as listed in MANIFEST.md
VALID = {
    "RGB.byte.tif": (256, 791, 718, 3, "uint8", 32618, 0.0),
    "TCI.tif": (256, 1098, 1098, 3, "uint8", 32634, 0.0),
    "rgb16.tif": (128, 438, 500, 3, "uint16", 32620, None),
    "m_3607824_se_17_1_20160620_sub.tif": (128, 300, 300, 4, "uint8", 26917, None),
    "cog_int16.tif": (512, 2658, 2667, 1, "int16", 32621, -32768.0),
    "dem.tif": (128, 400, 400, 1, "float32", 2056, -9999.0),
    "cog_with_nan.tif": (128, 532, 423, 1, "float32", 4326, NAN),
    "goes.tif": (256, 542, 542, 3, "uint8", None, None),
}


def ingest_real(real_file, name: str, out: Path, *, time: str | None = TIME) -> SceneRecord:
    source = real_file(name)
    params = IngestParams(source="file", path=name, acquisition_time=time)
    return ingest(params, out / "scene.tif", out / "scene.json", source.parent)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def same_nodata(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return (math.isnan(a) and math.isnan(b)) or a == b


def n_full(length: int, size: int, stride: int) -> int:
    return (length - size) // stride + 1


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_real_scene_ingests_and_tiles(real_file, tmp_path: Path, name: str):
    size, width, height, count, dtype, epsg, nodata = VALID[name]
    meta = ingest_real(real_file, name, tmp_path / "data")
    scene = tmp_path / "data" / "scene.tif"

    assert scene.read_bytes() == real_file(name).read_bytes()
    assert meta.sha256 == sha256_of(real_file(name))
    assert (meta.width, meta.height, meta.count) == (width, height, count)
    assert meta.dtypes == (dtype,) * count
    assert meta.epsg == epsg
    assert same_nodata(meta.nodata_value, nodata)
    assert meta.acquisition_time == TIME
    assert 0.0 < meta.valid_fraction <= 1.0

    params = TileParams(size=size)
    tiles_dir = tmp_path / "tiles"
    tiles_dir.mkdir()
    entries, skipped = cut_tiles(
        scene,
        meta,
        tiles_dir,
        size=size,
        stride=params.step,
        keep_partial=params.keep_partial,
        max_nodata_fraction=params.max_nodata_fraction,
        compress=params.compress,
        spec=FeatureSpec(),
    )
    entries = [e.to_json() for e in entries]

    # Exact counts: every full grid position is either written or skipped for nodata/emptiness;
    # every partial edge position is skipped.
    full = n_full(width, size, size) * n_full(height, size, size)
    grid = math.ceil(width / size) * math.ceil(height / size)
    assert len(entries) > 0
    assert len(entries) + skipped["nodata"] + skipped["empty"] == full
    assert skipped["partial"] == grid - full
    assert sorted(p.name for p in tiles_dir.iterdir()) == ["tiles.zip"]
    with zipfile.ZipFile(tiles_dir / "tiles.zip") as pack:  # grid order, as the index
        assert pack.namelist() == [e["file"] for e in entries]
    assert len({e["id"] for e in entries}) == len(entries)

    with rasterio.open(scene) as src:
        scene_crs, scene_transform = src.crs, src.transform
        pixels = src.read()
    for entry in entries:
        w = entry["window"]
        window = Window(w["col_off"], w["row_off"], w["width"], w["height"])
        assert (w["width"], w["height"]) == (size, size)
        assert 0 <= w["col_off"] and w["col_off"] + w["width"] <= width
        assert 0 <= w["row_off"] and w["row_off"] + w["height"] <= height
        assert entry["file"] == f"r{w['row_off']:06d}_c{w['col_off']:06d}.tif"
        assert entry["bounds"] == pytest.approx(list(windows.bounds(window, scene_transform)))
        assert 1.0 - entry["valid_fraction"] <= params.max_nodata_fraction

        blob = indexed_tile(tiles_dir, entry)
        assert entry["sha256"] == hashlib.sha256(blob).hexdigest()
        with rasterio.open(vsi_path(tiles_dir / "tiles.zip", entry["file"])) as tile:
            assert tile.driver == "GTiff"
            assert tile.crs == scene_crs
            expected = scene_transform @ Affine.translation(w["col_off"], w["row_off"])
            assert tile.transform.almost_equals(expected)
            assert (tile.count, tile.height, tile.width) == (count, size, size)
            assert tile.dtypes[0] == dtype
            assert same_nodata(tile.nodata, nodata)
            data = tile.read()
        region = pixels[
            :, window.row_off : window.row_off + size, window.col_off : window.col_off + size
        ]
        np.testing.assert_array_equal(data, region)


# --- files that must be refused -----------------------------------------------------------------


def refused(real_file, tmp_path: Path, name: str, error: type[Exception]) -> str:
    out = tmp_path / "data"
    with pytest.raises(error) as info:
        ingest_real(real_file, name, out)
    message = str(info.value)
    assert message.startswith(f"{name}: "), message
    assert "\n" not in message
    assert not out.exists() or not any(out.iterdir()), "a refused scene left files behind"
    return message


def test_gcp_only_scene(real_file, tmp_path: Path):
    message = refused(real_file, tmp_path, "cog_gcps.tif", GeoreferencingError)
    assert "210 GCPs" in message


def test_scene_without_georeferencing(real_file, tmp_path: Path):
    message = refused(real_file, tmp_path, "tinymarble.tif", GeoreferencingError)
    assert "not georeferenced" in message


def test_corrupt_block_is_named(real_file, tmp_path: Path):
    message = refused(real_file, tmp_path, "corrupt.tif", RasterReadError)
    # MANIFEST.md: full-resolution block (1, 1) of the 512x512 blocks is the corrupt one.
    assert "window rows 512-1023, cols 512-1023" in message


def test_not_a_tiff(real_file, tmp_path: Path):
    message = refused(real_file, tmp_path, "not_a_tiff.TIF", NotGeoTIFFError)
    assert "not a GeoTIFF" in message


def test_all_nodata_scene(real_file, tmp_path: Path):
    message = refused(real_file, tmp_path, "all-nodata.tif", EmptySceneError)
    assert "71x2475" in message


def test_scene_smaller_than_the_tile(real_file, tmp_path: Path):
    meta = ingest_real(real_file, "B01.tif", tmp_path / "data")
    tiles_dir = tmp_path / "tiles"
    tiles_dir.mkdir()
    with pytest.raises(TilingError) as info:
        cut_tiles(
            tmp_path / "data" / "scene.tif",
            meta,
            tiles_dir,
            size=256,
            stride=256,
            keep_partial=False,
            max_nodata_fraction=0.5,
            compress="zstd",
            spec=FeatureSpec(),
        )
    message = str(info.value)
    assert "183x183" in message and "256" in message
    assert list(tiles_dir.iterdir()) == []


def test_b01_tiles_with_a_size_that_fits(real_file, tmp_path: Path):
    meta = ingest_real(real_file, "B01.tif", tmp_path / "data")
    tiles_dir = tmp_path / "tiles"
    tiles_dir.mkdir()
    entries, skipped = cut_tiles(
        tmp_path / "data" / "scene.tif",
        meta,
        tiles_dir,
        size=64,
        stride=64,
        keep_partial=False,
        max_nodata_fraction=0.5,
        compress="zstd",
        spec=FeatureSpec(),
    )
    assert 0 < len(entries) <= 4
    assert skipped["partial"] == 9 - 4
