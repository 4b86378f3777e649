"""Class polygons: features of a class raster, block by block, merged across block edges.

The raster (:mod:`tests.polygon_data`) is 61 columns by 47 rows (odd, so blocks of 5 and 7 rows
end mid-feature), with three noisy classes, nodata speckle, a one-pixel stripe of a fourth class
through every block, a ring of one class around another (a hole) and two pixels that touch only
at a corner. Streaming, order and bytes: :mod:`tests.test_polygons_stream`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyogrio
import pyproj
import pytest
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.features import rasterize
from rasterio.windows import Window
from scipy import ndimage

from satpipe.core.errors import RasterReadError, SatpipeError
from satpipe.outputs import polygons_stitch
from satpipe.outputs.polygons import (
    ClassRasterError,
    PolygonSettings,
    PolygonSettingsError,
    array_polygons,
    geojson_bytes,
    raster_polygons,
    write_flatgeobuf,
)
from tests.polygon_data import (
    ARRAY,
    CLASSES,
    DEGREE_GRID,
    DEGREES,
    HEIGHT,
    STRIPE,
    UTM,
    UTM_GRID,
    WIDTH,
    components,
    rasterised,
    write_raster,
)


@pytest.fixture(scope="module")
def utm_raster(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_raster(tmp_path_factory.mktemp("polygons") / "classes.tif", ARRAY, UTM, UTM_GRID)


@pytest.mark.parametrize("block_rows", [5, 7, 1024])
@pytest.mark.parametrize(("crs", "grid"), [(UTM, UTM_GRID), (DEGREES, DEGREE_GRID)])
def test_polygons_rasterise_back_to_the_class_raster(
    tmp_path: Path, block_rows: int, crs: CRS, grid: Affine
) -> None:
    path = write_raster(tmp_path / "c.tif", ARRAY, crs, grid)
    polygons = raster_polygons(path, CLASSES, PolygonSettings(block_rows=block_rows))
    np.testing.assert_array_equal(rasterised(polygons, grid), ARRAY)
    assert len(polygons.features) == len(components(ARRAY))
    assert all(f.geometry.geom_type == "Polygon" and f.geometry.is_valid for f in polygons.features)


def test_a_region_through_every_block_is_one_feature(utm_raster: Path) -> None:
    polygons = raster_polygons(utm_raster, CLASSES, PolygonSettings(block_rows=5))
    x = UTM_GRID.c + (STRIPE + 0.5) * UTM_GRID.a
    line = shapely.LineString([(x, UTM_GRID.f), (x, UTM_GRID.f + HEIGHT * UTM_GRID.e)])
    crossing = [f for f in polygons.features if f.code == 3 and f.geometry.intersects(line)]
    assert len(crossing) == 1
    assert crossing[0].area_m2 == HEIGHT * 100.0


def test_corner_contacts_are_separate_features_and_holes_are_kept(utm_raster: Path) -> None:
    polygons = raster_polygons(utm_raster, CLASSES, PolygonSettings(block_rows=7))
    cells = [UTM_GRID @ (5.5, 40.5), UTM_GRID @ (6.5, 41.5)]
    clouds = [f for f in polygons.features if f.code == 3 and f.area_m2 == 100.0]
    assert sorted(f.geometry.centroid.coords[0] for f in clouds) == sorted(cells)
    ring = next(
        f for f in polygons.features if f.geometry.contains(shapely.Point(UTM_GRID @ (40.5, 10.5)))
    )
    assert ring.name == "vegetation" and len(ring.geometry.interiors) == 1
    assert ring.area_m2 == (49 - 9) * 100.0


def test_array_and_window_give_the_raster_features(utm_raster: Path) -> None:
    settings = PolygonSettings(block_rows=5)
    whole = raster_polygons(utm_raster, CLASSES, settings)
    assert array_polygons(ARRAY, UTM_GRID, UTM, CLASSES, settings) == whole
    window = Window(3, 8, 40, 25)
    part = raster_polygons(utm_raster, CLASSES, settings, window=window)
    sub = ARRAY[8:33, 3:43]
    assert array_polygons(sub, UTM_GRID @ Affine.translation(3, 8), UTM, CLASSES, settings) == part


def test_projected_areas_are_pixel_counts_times_pixel_area(utm_raster: Path) -> None:
    polygons = raster_polygons(utm_raster, CLASSES, PolygonSettings(block_rows=7))
    assert polygons.areas_m2 == {
        n: float((ARRAY == i).sum()) * 100.0 for i, n in enumerate(CLASSES)
    }
    assert sorted(f.area_m2 for f in polygons.features) == sorted(
        float(mask.sum()) * 100.0 for _, mask in components(ARRAY)
    )


def test_geographic_areas_are_geodesic(tmp_path: Path) -> None:
    path = write_raster(tmp_path / "deg.tif", ARRAY, DEGREES, DEGREE_GRID)
    polygons = raster_polygons(path, CLASSES, PolygonSettings(block_rows=5))
    geod = pyproj.Geod(ellps="WGS84")
    # The corner-touching cloud pixel at row 40, column 5: one cell, 0.001° square.
    lon, lat = DEGREE_GRID @ (5, 40)
    cell, _ = geod.polygon_area_perimeter(
        [lon, lon + 0.001, lon + 0.001, lon], [lat, lat, lat - 0.001, lat - 0.001]
    )
    clouds = [f for f in polygons.features if f.code == 3 and f.geometry.area < 1.5e-6]
    corner = next(f for f in clouds if f.geometry.contains(shapely.Point(lon + 5e-4, lat - 5e-4)))
    assert corner.area_m2 == pytest.approx(abs(cell), abs=1e-3)
    assert 7000 < corner.area_m2 < 8000  # about 111 m by 70 m at 51°N
    per_row = [abs(geod.polygon_area_perimeter(*_cell(r))[0]) for r in range(HEIGHT)]
    expected = sum(per_row[r] * int((ARRAY[r] == 0).sum()) for r in range(HEIGHT))
    # Long edges are single geodesics, not rows of cells: close, not equal.
    assert polygons.areas_m2["water"] == pytest.approx(expected, rel=1e-3)


def _cell(row: int) -> tuple[list[float], list[float]]:
    lon, lat = DEGREE_GRID @ (0, row)
    return [lon, lon + 0.001, lon + 0.001, lon], [lat, lat, lat - 0.001, lat - 0.001]


def test_min_area_drops_exactly_the_smaller_regions(utm_raster: Path) -> None:
    polygons = raster_polygons(utm_raster, CLASSES, PolygonSettings(min_area=400.0, block_rows=5))
    expected = np.full_like(ARRAY, 255)
    for code, mask in components(ARRAY):
        if mask.sum() >= 4:
            expected[mask] = code
    np.testing.assert_array_equal(rasterised(polygons, UTM_GRID), expected)
    assert min(f.area_m2 for f in polygons.features) == 400.0


def test_opening_removes_one_pixel_spurs() -> None:
    arr = np.full((HEIGHT, WIDTH), 0, np.uint8)
    arr[5:20, 5:20] = 1
    arr[12, 20:30] = 1  # a one-pixel spur
    arr[30:33, 40:41] = 1  # a one-pixel line: gone
    settings = PolygonSettings(opening=1, block_rows=7)
    polygons = array_polygons(arr, UTM_GRID, UTM, CLASSES, settings)
    got = rasterised(polygons, UTM_GRID)
    assert (got[12, 20:30] != 1).all() and (got[30:33, 40] != 1).all()
    assert (got[5:20, 5:20] == 1).all()
    square = np.ones((3, 3), bool)
    for code in (0, 1):  # exactly the raster opening of each class by a 3x3 square
        np.testing.assert_array_equal(got == code, ndimage.binary_opening(arr == code, square))


def test_simplification_keeps_a_valid_coverage(utm_raster: Path) -> None:
    exact = raster_polygons(utm_raster, CLASSES, PolygonSettings(block_rows=7))
    simple = raster_polygons(utm_raster, CLASSES, PolygonSettings(simplify=1.5, block_rows=7))
    geometries = np.array([f.geometry for f in simple.features])
    assert shapely.is_valid(geometries).all()
    assert shapely.coverage_is_valid(geometries)  # no overlaps, shared edges match
    vertices = shapely.get_num_coordinates
    assert (
        vertices(geometries).sum() < vertices(np.array([f.geometry for f in exact.features])).sum()
    )
    # No gaps, no overlaps: the union covers what the exact features cover, once.
    union = shapely.union_all(geometries)
    assert union.area == pytest.approx(shapely.union_all([f.geometry for f in exact.features]).area)
    assert sum(g.area for g in geometries) == pytest.approx(union.area)
    assert simple == raster_polygons(utm_raster, CLASSES, PolygonSettings(simplify=1.5))


def test_nodata_gives_no_polygon() -> None:
    arr = np.full((HEIGHT, WIDTH), 255, np.uint8)
    polygons = array_polygons(arr, UTM_GRID, UTM, CLASSES, PolygonSettings(block_rows=5))
    assert polygons.features == ()
    assert polygons.areas_m2 == dict.fromkeys(CLASSES, 0.0)
    assert json.loads(geojson_bytes(polygons)) == {"type": "FeatureCollection", "features": []}


def test_geojson_is_wgs84_lon_lat(utm_raster: Path) -> None:
    polygons = raster_polygons(utm_raster, CLASSES, PolygonSettings())
    collection = json.loads(geojson_bytes(polygons))
    to_wgs84 = pyproj.Transformer.from_crs(UTM, DEGREES, always_xy=True)
    assert len(collection["features"]) == len(polygons.features)
    for item, feature in zip(collection["features"], polygons.features, strict=True):
        assert item["properties"] == {
            "class": feature.name,
            "code": feature.code,
            "area_m2": feature.area_m2,
        }
        geometry = shapely.geometry.shape(item["geometry"])
        assert geometry.exterior.is_ccw  # RFC 7946: exterior counter-clockwise
        lon, lat = np.array(geometry.exterior.coords).T
        assert (2.9 < lon).all() and (lon < 3.1).all() and (53 < lat).all() and (lat < 55).all()
        expected = shapely.transform(
            feature.geometry, lambda xy: np.column_stack(to_wgs84.transform(*xy.T))
        )
        assert shapely.normalize(geometry).equals_exact(shapely.normalize(expected), 1e-8)


def test_flatgeobuf_reads_back_in_the_scene_crs(utm_raster: Path, tmp_path: Path) -> None:
    polygons = raster_polygons(utm_raster, CLASSES, PolygonSettings())
    write_flatgeobuf(polygons, tmp_path / "c.fgb")
    meta, _, geometry, fields = pyogrio.raw.read(tmp_path / "c.fgb")
    assert CRS.from_user_input(meta["crs"]) == UTM
    assert list(meta["fields"]) == ["class", "code", "area_m2"]
    read = shapely.from_wkb(geometry)
    shapes = list(zip(read, fields[1].tolist(), strict=True))
    np.testing.assert_array_equal(
        rasterize(shapes, (HEIGHT, WIDTH), fill=255, transform=UTM_GRID, dtype=np.uint8), ARRAY
    )
    assert sorted(fields[2].tolist()) == sorted(f.area_m2 for f in polygons.features)


def test_a_code_outside_the_classes_names_file_value_and_range(tmp_path: Path) -> None:
    arr = ARRAY.copy()
    arr[20, 11] = 7
    path = write_raster(tmp_path / "bad.tif", arr, UTM, UTM_GRID)
    with pytest.raises(ClassRasterError) as caught:
        raster_polygons(path, CLASSES, PolygonSettings(block_rows=7))
    message = str(caught.value)
    assert "\n" not in message
    for fragment in (
        str(path),
        "class code 7",
        "row 20, column 11",
        "expected 0 to 3",
        "nodata 255",
    ):
        assert fragment in message


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (np.stack([ARRAY, ARRAY]), "2 bands; expected one band"),
        (ARRAY.astype(np.float32), "dtype float32; expected integer class codes"),
    ],
)
def test_rasters_that_are_not_class_rasters_are_refused(
    tmp_path: Path, data: np.ndarray, fragment: str
) -> None:
    path = write_raster(tmp_path / "bad.tif", data, UTM, UTM_GRID)
    with pytest.raises(ClassRasterError, match=fragment) as caught:
        raster_polygons(path, CLASSES, PolygonSettings())
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    "call",
    [
        lambda: array_polygons(ARRAY[None], UTM_GRID, UTM, CLASSES, PolygonSettings()),
        lambda: array_polygons(ARRAY.astype(bool), UTM_GRID, UTM, CLASSES, PolygonSettings()),
        lambda: PolygonSettings(min_area=-1.0),
        lambda: PolygonSettings(block_rows=0),
        lambda: PolygonSettings(precision=99),
    ],
)
def test_bad_arrays_and_settings_are_one_line_errors(call: object) -> None:
    with pytest.raises((ClassRasterError, PolygonSettingsError)) as caught:
        call()  # type: ignore[operator]
    assert isinstance(caught.value, SatpipeError) and "\n" not in str(caught.value)


def test_a_window_outside_the_raster_is_refused(utm_raster: Path) -> None:
    with pytest.raises(ClassRasterError, match="window"):
        raster_polygons(utm_raster, CLASSES, PolygonSettings(), window=Window(50, 0, 20, 10))


def test_precision_rounds_the_coordinates(tmp_path: Path) -> None:
    grid = Affine(10.123456, 0.0, 500000.0, 0.0, -10.123456, 6000000.0)
    polygons = array_polygons(ARRAY, grid, UTM, CLASSES, PolygonSettings(precision=1))
    coords = shapely.get_coordinates([f.geometry for f in polygons.features])
    np.testing.assert_array_equal(coords, np.round(coords, 1))
    default = array_polygons(ARRAY, grid, UTM, CLASSES, PolygonSettings())
    coords = shapely.get_coordinates([f.geometry for f in default.features])
    np.testing.assert_array_equal(coords, np.round(coords, 3))
    assert not np.array_equal(coords, np.round(coords, 2))


def test_a_code_error_in_a_window_names_the_raster_row_and_column(tmp_path: Path) -> None:
    arr = ARRAY.copy()
    arr[20, 11] = 9
    path = write_raster(tmp_path / "bad.tif", arr, UTM, UTM_GRID)
    with pytest.raises(ClassRasterError, match="class code 9 at row 20, column 11;"):
        raster_polygons(path, CLASSES, PolygonSettings(block_rows=4), window=Window(5, 3, 20, 30))


def test_unreadable_or_ungeoreferenced_rasters_are_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.tif"
    garbage.write_bytes(b"II*\x00" + b"\x00" * 64)
    with pytest.raises(RasterReadError, match=r"garbage\.tif: cannot read the class raster"):
        raster_polygons(garbage, CLASSES, PolygonSettings())
    no_crs = write_raster(tmp_path / "no_crs.tif", ARRAY, None, UTM_GRID)
    with pytest.raises(ClassRasterError, match=r"no_crs\.tif: no CRS; expected a georeferenced"):
        raster_polygons(no_crs, CLASSES, PolygonSettings())


def test_chunked_steps_give_the_same_features(
    utm_raster: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = raster_polygons(utm_raster, CLASSES, PolygonSettings(block_rows=7))
    monkeypatch.setattr(polygons_stitch, "CHUNK_COORDINATES", 50)
    assert len(polygons_stitch.chunks(np.array([f.geometry for f in whole.features]))) > 10
    assert raster_polygons(utm_raster, CLASSES, PolygonSettings(block_rows=7)) == whole
