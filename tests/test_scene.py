"""Scene validation: every kind of unusable input fails with its own clear error."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from satpipe.core.errors import (
    AcquisitionTimeError,
    EmptySceneError,
    GeoreferencingError,
    NotGeoTIFFError,
    RasterReadError,
    SceneError,
    UnsupportedDtypeError,
)
from satpipe.scenes.validation import find_acquisition_time, inspect_scene, parse_time_tag

TIME = "2024-06-01T10:30:21Z"


# --- acquisition time ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-07-15T10:30:00Z", "2024-07-15T10:30:00+00:00"),
        ("2024-07-15T12:30:00+02:00", "2024-07-15T10:30:00+00:00"),
        ("2024-07-15T10:30:00", "2024-07-15T10:30:00+00:00"),  # naive means UTC
        ("2019:03:04 05:06:07", "2019-03-04T05:06:07+00:00"),  # TIFF DateTime
        (" 2019:03:04 05:06:07 ", "2019-03-04T05:06:07+00:00"),
    ],
)
def test_parse_time_tag(text, expected):
    parsed = parse_time_tag(text)
    assert parsed is not None
    assert parsed.isoformat() == expected


@pytest.mark.parametrize("text", ["", "unknown", "2019:13:04 05:06:07", "04/03/2019"])
def test_parse_time_tag_rejects_junk(text):
    assert parse_time_tag(text) is None


def test_time_from_acquisition_time_tag_wins_over_datetime_and_params():
    tags = {"TIFFTAG_DATETIME": "2019:03:04 05:06:07", "ACQUISITION_TIME": "2021-05-06T07:08:09Z"}
    assert find_acquisition_time(tags, "2000-01-01T00:00:00Z", "s.tif") == (
        "2021-05-06T07:08:09Z",
        "tag:ACQUISITION_TIME",
    )


def test_time_tag_names_are_case_insensitive():
    assert find_acquisition_time({"acquisition_time": TIME}, None, "s.tif")[0] == TIME


def test_unparseable_tag_falls_through_to_the_next_tag():
    tags = {"ACQUISITION_TIME": "sometime", "TIFFTAG_DATETIME": "2019:03:04 05:06:07"}
    assert find_acquisition_time(tags, None, "s.tif") == (
        "2019-03-04T05:06:07Z",
        "tag:TIFFTAG_DATETIME",
    )


def test_landsat_date_acquired_and_centre_time():
    tags = {"DATE_ACQUIRED": "2020-08-01", "SCENE_CENTER_TIME": "15:41:07.2Z"}
    assert find_acquisition_time(tags, None, "s.tif")[0] == "2020-08-01T15:41:07Z"


def test_fallback_from_params_is_normalised_to_utc():
    assert find_acquisition_time({}, "2024-07-15T12:30:00+02:00", "s.tif") == (
        "2024-07-15T10:30:00Z",
        "params:ingest.acquisition_time",
    )


def test_no_time_anywhere_names_file_and_param():
    with pytest.raises(AcquisitionTimeError) as info:
        find_acquisition_time({"ACQUISITION_TIME": "sometime"}, None, "inputs/s.tif")
    message = str(info.value)
    assert message.startswith("inputs/s.tif: ")
    assert "ingest.acquisition_time" in message
    assert "TIFFTAG_DATETIME" in message


def test_time_from_tiff_datetime_tag_in_file(make_raster):
    path = make_raster(tags={"TIFFTAG_DATETIME": "2019:03:04 05:06:07"})
    meta = inspect_scene(path)
    assert meta["acquisition_time"] == "2019-03-04T05:06:07Z"
    assert meta["acquisition_time_source"] == "tag:TIFFTAG_DATETIME"


def test_time_from_params_when_file_has_no_tag(make_raster):
    meta = inspect_scene(make_raster(tags=None), acquisition_time="2020-02-03T04:05:06Z")
    assert meta["acquisition_time"] == "2020-02-03T04:05:06Z"
    assert meta["acquisition_time_source"] == "params:ingest.acquisition_time"


def test_missing_time_in_file_and_params(make_raster):
    path = make_raster(tags=None)
    with pytest.raises(AcquisitionTimeError, match=r"ingest\.acquisition_time") as info:
        inspect_scene(path)
    assert str(path) in str(info.value)


def test_tiff_datetime_tag_of_a_real_file(real_file):
    with rasterio.open(real_file("all-nodata.tif")) as src:
        tags = src.tags()
    assert find_acquisition_time(tags, None, "all-nodata.tif") == (
        "2022-01-17T10:43:43Z",
        "tag:TIFFTAG_DATETIME",
    )


def test_real_file_without_time_tag_needs_params(real_file):
    path = real_file("RGB.byte.tif")
    with pytest.raises(AcquisitionTimeError) as info:
        inspect_scene(path)
    assert "RGB.byte.tif" in str(info.value)


# --- a valid scene ------------------------------------------------------------------------------


def test_metadata_of_a_valid_scene(make_raster):
    data = np.arange(3 * 83 * 97, dtype=np.uint16).reshape(3, 83, 97) % 500 + 1
    data[:, :10, :] = 0  # 10 nodata rows
    path = make_raster(count=3, nodata=0, data=data, descriptions=["B02", "B03", "B04"])
    meta = inspect_scene(path)
    assert meta["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert meta["size_bytes"] == path.stat().st_size
    assert meta["driver"] == "GTiff"
    assert (meta["width"], meta["height"], meta["count"]) == (97, 83, 3)
    assert meta["dtypes"] == ["uint16"] * 3
    assert meta["epsg"] == 32633
    assert meta["crs"] == "EPSG:32633"
    assert "UTM zone 33N" in meta["crs_wkt"]
    assert meta["transform"] == [10.0, 0.0, 399960.0, 0.0, -10.0, 5900040.0]
    assert meta["bounds"] == [399960.0, 5900040.0 - 830.0, 399960.0 + 970.0, 5900040.0]
    assert meta["nodata"] == 0
    assert meta["nodata_source"] == "file"
    assert meta["band_descriptions"] == ["B02", "B03", "B04"]
    assert meta["valid_fraction"] == pytest.approx(73 / 83)
    assert meta["acquisition_time"] == TIME


def test_custom_crs_has_no_epsg(make_raster):
    crs = "+proj=laea +lat_0=52.3 +lon_0=10.1 +x_0=4321000 +y_0=3210000 +ellps=GRS80 +units=m"
    meta = inspect_scene(make_raster(crs=crs))
    assert meta["epsg"] is None
    assert meta["crs"] == meta["crs_wkt"]
    assert "Lambert_Azimuthal_Equal_Area" in meta["crs_wkt"]


def test_pixel_is_valid_only_if_valid_in_every_band(make_raster):
    data = np.full((2, 83, 97), 5, dtype=np.uint16)
    data[0, 0, :] = 9  # nodata in band 1 only: the whole row is invalid
    meta = inspect_scene(make_raster(count=2, nodata=9, data=data))
    assert meta["valid_fraction"] == pytest.approx(82 / 83)


def test_nan_counts_as_invalid_with_nan_nodata(make_raster):
    data = np.full((1, 83, 97), 1.5, dtype=np.float32)
    data[0, :20, :] = np.nan
    meta = inspect_scene(make_raster(dtype="float32", nodata=float("nan"), data=data))
    assert np.isnan(meta["nodata"])
    assert meta["valid_fraction"] == pytest.approx(63 / 83)


def test_nan_counts_as_invalid_without_nodata(make_raster):
    data = np.full((1, 83, 97), -3.25, dtype=np.float32)  # negative values are real data
    data[0, :, :7] = np.nan
    meta = inspect_scene(make_raster(dtype="float32", data=data))
    assert meta["nodata"] is None
    assert meta["valid_fraction"] == pytest.approx(90 / 97)


def test_nodata_override(make_raster):
    data = np.full((1, 83, 97), 7, dtype=np.uint16)
    data[0, :, :47] = 3
    meta = inspect_scene(make_raster(data=data), nodata_override=3)
    assert meta["nodata"] == 3
    assert meta["nodata_source"] == "params"
    assert meta["valid_fraction"] == pytest.approx(50 / 97)


def test_multi_block_scene_is_read_whole(make_raster):
    # Tiled, compressed, with partial edge blocks: every block is read and counted once.
    data = np.ones((2, 257, 301), dtype=np.int16)
    data[:, 200:, 250:] = -1
    path = make_raster(
        width=301, height=257, count=2, dtype="int16", nodata=-1, data=data, blocksize=64
    )
    meta = inspect_scene(path, name="my scene")
    assert meta["block_shape"] == [64, 64]
    assert meta["valid_fraction"] == pytest.approx(1 - (57 * 51) / (257 * 301))


# --- not a GeoTIFF ------------------------------------------------------------------------------


def test_png_named_tif_is_judged_by_driver(make_raster):
    path = make_raster("looks_like.tif", driver="PNG", dtype="uint8", crs=None, transform=None)
    with pytest.raises(NotGeoTIFFError) as info:
        inspect_scene(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert "driver is PNG" in message


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"this is not a GeoTIFF, just text\n", NotGeoTIFFError),
        (b"", NotGeoTIFFError),
        (b"II*\x00junk", RasterReadError),  # a TIFF signature, then garbage: unreadable
    ],
)
def test_junk_bytes(tmp_path: Path, content: bytes, error: type[Exception]):
    path = tmp_path / "junk.tif"
    path.write_bytes(content)
    with pytest.raises(error) as info:
        inspect_scene(path)
    assert str(info.value).startswith(f"{path}: ")


def test_missing_file(tmp_path: Path):
    with pytest.raises(RasterReadError, match="file not found"):
        inspect_scene(tmp_path / "nope.tif")


# --- truncated or corrupt pixel data ------------------------------------------------------------


def truncate(path: Path, fraction: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def noisy(count: int, height: int, width: int) -> np.ndarray:
    return np.random.default_rng(0).integers(1, 60000, (count, height, width))


def test_truncated_pixel_data_names_file_and_window(make_raster):
    # A COG has its header first, so the truncated file opens and the block reads fail.
    path = make_raster(
        driver="COG", width=301, height=257, count=3, data=noisy, blocksize=128, compress="deflate"
    )
    truncate(path, 0.6)
    with rasterio.open(path) as src:  # the header survived: this is a pixel-data failure
        assert (src.width, src.height) == (301, 257)
    with pytest.raises(RasterReadError) as info:
        inspect_scene(path)
    message = str(info.value)
    assert message.startswith(f"{path}: unreadable pixel data in window rows ")
    assert "See previous exception" not in message


def test_truncated_file_with_trailing_header(make_raster):
    # GDAL's GTiff driver writes the header last: truncation makes the file unopenable.
    path = make_raster(width=301, height=257, count=3, data=noisy, tiled=True, compress="deflate")
    truncate(path, 0.6)
    with pytest.raises(RasterReadError) as info:
        inspect_scene(path)
    assert str(info.value).startswith(f"{path}: ")


def test_messages_use_the_given_name(make_raster):
    path = make_raster(
        driver="COG", width=301, height=257, data=noisy, blocksize=128, compress="deflate"
    )
    truncate(path, 0.5)
    with pytest.raises(RasterReadError) as info:
        inspect_scene(path, name="inputs/user.tif")
    assert str(info.value).startswith("inputs/user.tif: ")
    assert path.name not in str(info.value)


# --- georeferencing -----------------------------------------------------------------------------


def georef_error(path: Path, *fragments: str) -> str:
    with pytest.raises(GeoreferencingError) as info:
        inspect_scene(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    for fragment in fragments:
        assert fragment in message
    return message


def test_no_crs(make_raster):
    georef_error(make_raster(crs=None), "no CRS")


def test_identity_transform_with_crs(make_raster):
    georef_error(make_raster(transform=None), "identity geotransform")


def test_not_georeferenced_at_all(make_raster):
    georef_error(make_raster(crs=None, transform=None), "not georeferenced")


def test_gcp_only(make_raster):
    gcps = [(0, 0, 16.0, 48.0), (0, 96, 17.0, 48.0), (82, 0, 16.0, 47.0), (82, 96, 17.0, 47.0)]
    message = georef_error(make_raster(gcps=gcps), "4 GCPs", "warp")
    assert "EPSG:4326" in message


def test_rpc_only(make_raster):
    georef_error(make_raster(crs=None, transform=None, rpcs=True), "only by RPCs", "gdalwarp")


@pytest.mark.parametrize(
    ("transform", "fragment"),
    [
        (Affine(10.0, 2.0, 399960.0, 0.0, -10.0, 5900040.0), "b=2.0"),  # rotated/sheared in x
        (Affine(10.0, 0.0, 399960.0, -1.5, -10.0, 5900040.0), "d=-1.5"),  # sheared in y
        (Affine.rotation(30.0) @ Affine(10.0, 0.0, 0.0, 0.0, -10.0, 0.0), "rotated"),
    ],
)
def test_rotated_or_sheared(make_raster, transform, fragment):
    georef_error(make_raster(transform=transform), "rotated or sheared", fragment)


def test_south_up(make_raster):
    georef_error(
        make_raster(transform=Affine(10.0, 0.0, 399960.0, 0.0, 10.0, 5900040.0)), "north-up"
    )


# --- pixel types and empty scenes ---------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["complex64", "int64", "uint64"])
def test_unsupported_dtype(make_raster, dtype):
    try:
        path = make_raster(dtype=dtype)
    except (TypeError, ValueError, rasterio.errors.RasterioError) as exc:
        pytest.skip(f"GDAL cannot write {dtype}: {exc}")
    with pytest.raises(UnsupportedDtypeError) as info:
        inspect_scene(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert dtype in message
    assert "uint16" in message  # what is expected


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "uint32", "int32", "float64"])
def test_supported_dtypes(make_raster, dtype):
    assert inspect_scene(make_raster(dtype=dtype))["dtypes"] == [dtype]


def test_all_nodata(make_raster):
    path = make_raster(count=2, nodata=0, data=0)
    with pytest.raises(EmptySceneError) as info:
        inspect_scene(path)
    message = str(info.value)
    assert message.startswith(f"{path}: no valid pixel")
    assert "97x83" in message and "nodata (0.0)" in message


def test_all_nan_without_nodata(make_raster):
    path = make_raster(dtype="float32", data=np.nan)
    with pytest.raises(EmptySceneError, match="NaN"):
        inspect_scene(path)


def test_nodata_override_can_empty_a_scene(make_raster):
    path = make_raster(data=7)
    assert inspect_scene(path)["valid_fraction"] == 1.0
    with pytest.raises(EmptySceneError, match=r"nodata \(7"):
        inspect_scene(path, nodata_override=7)


def test_errors_are_also_builtin_exceptions():
    assert issubclass(GeoreferencingError, SceneError)
    assert issubclass(SceneError, ValueError)
    assert issubclass(RasterReadError, OSError)
