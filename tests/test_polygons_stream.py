"""Class polygons streamed: features go out block by block, in an order no block height changes.

The raster is :mod:`tests.polygon_data`'s; a few small arrays add what it lacks (a hole closed
across a block edge at a corner where two pixels of one region touch, percolating speckle).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio.io
import shapely
from affine import Affine
from scipy import ndimage

from satpipe.outputs.polygons import (
    ClassRasterError,
    PolygonSettings,
    array_features,
    array_polygons,
    geojson_bytes,
    raster_features,
    raster_polygons,
    write_features,
    write_flatgeobuf,
)
from tests.polygon_data import ARRAY, CLASSES, FOUR, UTM, UTM_GRID, WIDTH, write_raster


@pytest.fixture(scope="module")
def utm_raster(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_raster(tmp_path_factory.mktemp("stream") / "classes.tif", ARRAY, UTM, UTM_GRID)


def _last_pixels(geometries: list[shapely.Polygon], grid: Affine = UTM_GRID) -> list[int]:
    """Each feature's last pixel in row-major order, as ``row * WIDTH + column``."""
    found = []
    for geometry in geometries:
        corners = np.rint([~grid @ xy for xy in geometry.exterior.coords]).astype(int)
        bottom = corners[:, 1].max()
        right = corners[corners[:, 1] == bottom, 0].max()
        found.append(int((bottom - 1) * WIDTH + right - 1))
    return found


@pytest.mark.parametrize(
    "settings", [{}, {"opening": 1, "min_area": 300.0}], ids=["exact", "opening"]
)
def test_bytes_do_not_depend_on_block_rows_or_the_run(
    utm_raster: Path, tmp_path: Path, settings: dict
) -> None:
    outputs = set()
    for i, block_rows in enumerate([7, 5, 64, 7]):
        chosen = PolygonSettings(block_rows=block_rows, **settings)
        fgb, geojson = tmp_path / f"{i}.fgb", tmp_path / f"{i}.geojson"
        summary = write_features(raster_features(utm_raster, CLASSES, chosen), fgb, geojson)
        held = raster_polygons(utm_raster, CLASSES, chosen)
        assert (summary.features, summary.areas_m2) == (len(held.features), held.areas_m2)
        write_flatgeobuf(held, tmp_path / "held.fgb")  # the held features: the same bytes
        assert (tmp_path / "held.fgb").read_bytes() == fgb.read_bytes()
        assert geojson_bytes(held) == geojson.read_bytes()
        outputs.add((fgb.read_bytes(), geojson.read_bytes()))
    assert len(outputs) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["held.fgb", *(f"{i}.{ext}" for i in range(4) for ext in ("fgb", "geojson"))]
    )  # GDAL's and the GeoJSON's temporary files are gone


def test_features_are_in_row_major_order_of_their_last_pixel(utm_raster: Path) -> None:
    polygons = raster_polygons(utm_raster, CLASSES, PolygonSettings(block_rows=5))
    expected = []
    for code in range(len(CLASSES)):
        labels, count = ndimage.label(ARRAY == code, structure=FOUR)
        last = ndimage.maximum(
            np.arange(labels.size).reshape(labels.shape), labels, range(1, count + 1)
        )
        expected.extend((int(i), code) for i in np.atleast_1d(last))
    got = list(
        zip(
            _last_pixels([f.geometry for f in polygons.features]),
            [f.code for f in polygons.features],
            strict=True,
        )
    )
    assert got == sorted(expected)


def test_an_openings_pieces_follow_their_regions_last_pixel(utm_raster: Path) -> None:
    polygons = raster_polygons(utm_raster, CLASSES, PolygonSettings(opening=1, block_rows=5))
    regions = np.zeros(ARRAY.shape, np.int64)  # each pixel: its region's last pixel
    for code in range(len(CLASSES)):
        labels, count = ndimage.label(ARRAY == code, structure=FOUR)
        last = ndimage.maximum(
            np.arange(labels.size).reshape(labels.shape), labels, range(1, count + 1)
        )
        regions[labels > 0] = np.asarray(last, dtype=np.int64)[labels[labels > 0] - 1]
    keys = []
    for feature, own in zip(
        polygons.features, _last_pixels([f.geometry for f in polygons.features]), strict=True
    ):
        col, row = (int(v) for v in ~UTM_GRID @ feature.geometry.representative_point().coords[0])
        keys.append((int(regions[row, col]), own))
    assert len(keys) > 20 and keys == sorted(keys) and len(set(keys)) == len(keys)


def test_features_go_out_as_soon_as_their_block_is_read(
    utm_raster: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = []
    read = rasterio.io.DatasetReader.read

    def counted(self: rasterio.io.DatasetReader, *args: object, **kwargs: object) -> np.ndarray:
        reads.append(kwargs.get("window"))
        return read(self, *args, **kwargs)

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", counted)
    stream = raster_features(utm_raster, CLASSES, PolygonSettings(block_rows=5))
    assert reads == []  # nothing read until the features are asked for
    batches = 0
    for batch in stream.batches:
        blocks_read = len(reads)
        rows = [i // WIDTH for i in _last_pixels(list(batch.geometries))]
        # Completed by the last block read (rows 5k - 5 to 5k - 1): the last row of each region
        # is in that block, or is the row above it (a region that stopped at the block edge).
        assert min(rows) >= 5 * (blocks_read - 1) - 1 and max(rows) <= 5 * blocks_read - 1
        batches += 1
    assert len(reads) == math.ceil(ARRAY.shape[0] / 5) and batches >= len(reads) - 1


def test_with_simplification_the_coverage_comes_whole_at_the_end(utm_raster: Path) -> None:
    batches = list(
        raster_features(utm_raster, CLASSES, PolygonSettings(simplify=1.5, block_rows=5)).batches
    )
    exact = raster_polygons(utm_raster, CLASSES, PolygonSettings(block_rows=5))
    assert len(batches) == 1 and len(batches[0]) == len(exact.features)


def test_an_error_in_a_later_block_leaves_no_file(tmp_path: Path) -> None:
    arr = ARRAY.copy()
    arr[40, 11] = 9
    path = write_raster(tmp_path / "bad.tif", arr, UTM, UTM_GRID)
    stream = raster_features(path, CLASSES, PolygonSettings(block_rows=7))
    with pytest.raises(ClassRasterError, match="class code 9 at row 40, column 11;"):
        write_features(stream, tmp_path / "c.fgb", tmp_path / "c.geojson")
    assert [p.name for p in tmp_path.iterdir()] == ["bad.tif"]


def test_a_hole_closed_across_block_edges_at_a_corner_is_one_valid_polygon() -> None:
    # A ring of one region closed where two of its pixels touch only at a corner: the hole
    # touches the exterior there. Block edges at every row, so the ring is stitched at the corner.
    arr = np.full((7, 7), 255, np.uint8)
    arr[1, 1:4] = arr[4, 1:5] = 1
    arr[1:5, 1] = 1
    arr[2, 3] = arr[3, 4] = 1  # (2, 3) and (3, 4) touch only at a corner
    grid = Affine(10.0, 0.0, 0.0, 0.0, -10.0, 70.0)
    whole = array_polygons(arr, grid, UTM, CLASSES, PolygonSettings())
    (feature,) = whole.features
    assert feature.geometry.is_valid and len(feature.geometry.interiors) == 1
    assert (
        feature.geometry.interiors[0]
        .intersection(feature.geometry.exterior)
        .equals(shapely.Point(grid @ (4, 3)))
    )
    assert feature.area_m2 == (arr == 1).sum() * 100.0
    for block_rows in range(1, 7):
        assert (
            array_polygons(arr, grid, UTM, CLASSES, PolygonSettings(block_rows=block_rows)) == whole
        )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_speckled_rasters_give_the_same_features_in_any_blocks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    arr = (rng.random((41, 37)) < 0.55).astype(np.uint8)  # one class percolates, full of holes
    arr[rng.random(arr.shape) < 0.05] = 255
    whole = array_polygons(arr, UTM_GRID, UTM, CLASSES, PolygonSettings(block_rows=64))
    assert all(f.geometry.is_valid for f in whole.features)
    for block_rows in (1, 2, 3):
        settings = PolygonSettings(block_rows=block_rows)
        assert array_polygons(arr, UTM_GRID, UTM, CLASSES, settings) == whole
    batches = array_features(arr, UTM_GRID, UTM, CLASSES, PolygonSettings(block_rows=2)).batches
    assert sum(len(b) for b in batches) == len(whole.features)
