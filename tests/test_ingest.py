"""Ingest: sources, metadata JSON, determinism, and no output left behind by a rejected scene."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from satpipe.core.errors import (
    AcquisitionTimeError,
    ChecksumError,
    EmptySceneError,
    GeoreferencingError,
    NotGeoTIFFError,
    RasterReadError,
    UnsupportedDtypeError,
)
from satpipe.core.params import IngestParams
from satpipe.scenes import synthetic
from satpipe.scenes.ingest import ingest

TIME = "2024-06-01T10:30:21Z"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(params: IngestParams, out: Path, root: Path) -> tuple[dict, Path, Path]:
    """Ingest one scene; its metadata as the stage writes it (JSON), and the two paths."""
    scene, meta = out / "scene.tif", out / "scene.json"
    result = ingest(params, scene, meta, root).to_json()
    return result, scene, meta


# --- synthetic ----------------------------------------------------------------------------------


def test_synthetic_is_byte_identical_across_runs(tmp_path: Path):
    params = IngestParams(source="synthetic", width=300, height=257, seed=7)
    _, scene_a, meta_a = run(params, tmp_path / "a", tmp_path)
    _, scene_b, meta_b = run(params, tmp_path / "b", tmp_path)
    assert scene_a.read_bytes() == scene_b.read_bytes()
    assert meta_a.read_bytes() == meta_b.read_bytes()


def test_synthetic_seed_changes_the_scene(tmp_path: Path):
    a, _, _ = run(IngestParams(width=300, height=257, seed=7), tmp_path / "a", tmp_path)
    b, _, _ = run(IngestParams(width=300, height=257, seed=8), tmp_path / "b", tmp_path)
    assert a["sha256"] != b["sha256"]


def test_synthetic_metadata(tmp_path: Path):
    params = IngestParams(source="synthetic", width=300, height=257, seed=7)
    result, scene, meta_path = run(params, tmp_path / "out", tmp_path)
    meta = json.loads(meta_path.read_text())
    assert meta == json.loads(json.dumps(result))  # what is returned is what is written
    assert meta["source"] == {"kind": "synthetic", "seed": 7, "width": 300, "height": 257}
    assert meta["sha256"] == sha256_of(scene)
    assert (meta["width"], meta["height"], meta["count"]) == (300, 257, 4)
    assert meta["dtypes"] == ["uint16"] * 4
    assert meta["epsg"] == synthetic.CRS_EPSG
    assert meta["transform"][0] == synthetic.PIXEL_SIZE
    assert meta["transform"][4] == -synthetic.PIXEL_SIZE
    assert meta["nodata"] == 0
    assert meta["band_descriptions"] == list(synthetic.BANDS)
    assert meta["acquisition_time"] == synthetic.acquisition_time(7)
    assert meta["acquisition_time_source"] == "tag:ACQUISITION_TIME"
    assert 0.5 < meta["valid_fraction"] < 1.0  # the slanted nodata strip
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "scene.json",
        "scene.labels.tif",
        "scene.preview.tif",
        "scene.tif",
    ]


# --- file ---------------------------------------------------------------------------------------


def test_file_source_relative_path_is_copied_byte_identically(tmp_path: Path, make_raster):
    source = make_raster(
        "inputs/my scene.tif",
        count=3,
        nodata=0,
        descriptions=["red", "green", None],
        tags={"TIFFTAG_DATETIME": "2019:03:04 05:06:07"},
    )
    params = IngestParams(source="file", path="inputs/my scene.tif")
    result, scene, meta_path = run(params, tmp_path / "data", tmp_path)
    assert scene.read_bytes() == source.read_bytes()
    meta = json.loads(meta_path.read_text())
    assert meta["source"] == {"kind": "file", "path": "inputs/my scene.tif"}
    assert meta["sha256"] == sha256_of(source) == result["sha256"]
    assert meta["driver"] == "GTiff"
    assert (meta["width"], meta["height"], meta["count"]) == (97, 83, 3)
    assert meta["dtypes"] == ["uint16"] * 3
    assert meta["crs"] == "EPSG:32633" and meta["epsg"] == 32633
    assert meta["transform"] == [10.0, 0.0, 399960.0, 0.0, -10.0, 5900040.0]
    assert meta["nodata"] == 0
    assert meta["acquisition_time"] == "2019-03-04T05:06:07Z"
    assert meta["band_descriptions"] == ["red", "green", None]


def test_file_source_absolute_path_keeps_only_the_name(tmp_path: Path, make_raster):
    source = make_raster("elsewhere/abs.tif")
    result, _, _ = run(IngestParams(source="file", path=str(source)), tmp_path / "d", tmp_path)
    assert result["source"] == {"kind": "file", "path": "abs.tif"}


def test_file_source_matching_sha256(tmp_path: Path, make_raster):
    source = make_raster()
    params = IngestParams(source="file", path=str(source), sha256=sha256_of(source).upper())
    result, _, _ = run(params, tmp_path / "d", tmp_path)
    assert result["sha256"] == sha256_of(source)


def assert_no_output(out: Path) -> None:
    left = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert left == [], f"a rejected scene left files behind: {left}"


def test_file_source_wrong_sha256_leaves_nothing(tmp_path: Path, make_raster):
    source = make_raster()
    params = IngestParams(source="file", path=str(source), sha256="0" * 64)
    with pytest.raises(ChecksumError, match=r"ingest\.sha256") as info:
        run(params, tmp_path / "d", tmp_path)
    assert sha256_of(source) in str(info.value)
    assert_no_output(tmp_path / "d")


def test_file_not_found(tmp_path: Path):
    params = IngestParams(source="file", path="inputs/missing.tif")
    with pytest.raises(RasterReadError, match=r"inputs/missing\.tif: file not found"):
        run(params, tmp_path / "d", tmp_path)
    assert_no_output(tmp_path / "d")


def test_time_from_params(tmp_path: Path, make_raster):
    source = make_raster(tags=None)
    params = IngestParams(
        source="file", path=str(source), acquisition_time="2020-02-03T05:06:07+01:00"
    )
    result, _, _ = run(params, tmp_path / "d", tmp_path)
    assert result["acquisition_time"] == "2020-02-03T04:06:07Z"
    assert result["acquisition_time_source"] == "params:ingest.acquisition_time"


def test_time_tag_wins_over_params(tmp_path: Path, make_raster):
    source = make_raster()
    params = IngestParams(source="file", path=str(source), acquisition_time="2000-01-01")
    result, _, _ = run(params, tmp_path / "d", tmp_path)
    assert result["acquisition_time"] == TIME


def test_nodata_override_param(tmp_path: Path, make_raster):
    data = np.full((1, 83, 97), 500, dtype=np.uint16)
    data[0, :, :30] = 65535
    source = make_raster(data=data)
    params = IngestParams(source="file", path=str(source), nodata=65535.0)
    _, _, meta_path = run(params, tmp_path / "d", tmp_path)
    meta = json.loads(meta_path.read_text())
    assert meta["nodata"] == 65535.0
    assert meta["nodata_source"] == "params"
    assert meta["valid_fraction"] == pytest.approx(67 / 97)


def test_nan_nodata_is_written_as_a_json_string(tmp_path: Path, make_raster):
    data = np.full((1, 83, 97), 2.5, dtype=np.float32)
    data[0, :40] = np.nan
    source = make_raster(dtype="float32", nodata=float("nan"), data=data)
    result, _, meta_path = run(
        IngestParams(source="file", path=str(source)), tmp_path / "d", tmp_path
    )
    text = meta_path.read_text()
    assert json.loads(text)["nodata"] == "NaN"  # JSON has no NaN; the tile stage reads this back
    assert "NaN," in text or 'NaN"' in text
    assert result["valid_fraction"] == pytest.approx(43 / 83)


def test_custom_crs_metadata(tmp_path: Path, make_raster):
    crs = "+proj=laea +lat_0=52.3 +lon_0=10.1 +x_0=4321000 +y_0=3210000 +ellps=GRS80 +units=m"
    source = make_raster(crs=crs)
    _, _, meta_path = run(IngestParams(source="file", path=str(source)), tmp_path / "d", tmp_path)
    meta = json.loads(meta_path.read_text())
    assert meta["epsg"] is None
    assert meta["crs"] == meta["crs_wkt"]


# --- every rejected kind of file: its error class, the user's file named, nothing written ------


def _truncated(make_raster) -> Path:
    path = make_raster(
        "bad.tif",
        driver="COG",
        width=301,
        height=257,
        count=3,
        data=lambda c, h, w: np.random.default_rng(1).integers(1, 60000, (c, h, w)),
        blocksize=128,
        compress="deflate",
    )
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    return path


def _truncated_gtiff(make_raster) -> Path:
    # GDAL's GTiff driver writes the header last: the truncated file does not even open.
    path = make_raster("bad.tif", width=301, height=257, tiled=True, compress="deflate")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    return path


def _junk(make_raster) -> Path:
    path = make_raster("bad.tif")
    path.write_bytes(b"<html>404 Not Found</html>\n")
    return path


BAD_SCENES = {
    "png": (
        lambda mk: mk("bad.tif", driver="PNG", dtype="uint8", crs=None, transform=None),
        NotGeoTIFFError,
    ),
    "junk": (_junk, NotGeoTIFFError),
    "truncated": (_truncated, RasterReadError),
    "truncated-header": (_truncated_gtiff, RasterReadError),
    "no-crs": (lambda mk: mk("bad.tif", crs=None), GeoreferencingError),
    "identity": (lambda mk: mk("bad.tif", transform=None), GeoreferencingError),
    "gcp-only": (
        lambda mk: mk("bad.tif", gcps=[(0, 0, 16, 48), (0, 96, 17, 48), (82, 0, 16, 47)]),
        GeoreferencingError,
    ),
    "rpc-only": (
        lambda mk: mk("bad.tif", crs=None, transform=None, rpcs=True),
        GeoreferencingError,
    ),
    "rotated": (
        lambda mk: mk("bad.tif", transform=Affine(10, 1, 399960, 1, -10, 5900040)),
        GeoreferencingError,
    ),
    "complex64": (lambda mk: mk("bad.tif", dtype="complex64"), UnsupportedDtypeError),
    "all-nodata": (lambda mk: mk("bad.tif", nodata=0, data=0), EmptySceneError),
    "all-nan": (lambda mk: mk("bad.tif", dtype="float32", data=np.nan), EmptySceneError),
    "no-time": (lambda mk: mk("bad.tif", tags=None), AcquisitionTimeError),
}


@pytest.mark.parametrize("kind", sorted(BAD_SCENES))
def test_rejected_scene_names_the_input_and_leaves_nothing(tmp_path: Path, make_raster, kind):
    build, error = BAD_SCENES[kind]
    build(make_raster)  # written as tmp_path/bad.tif
    out = tmp_path / "data"
    with pytest.raises(error) as info:
        run(IngestParams(source="file", path="bad.tif"), out, tmp_path)
    message = str(info.value)
    assert message.startswith("bad.tif: "), message  # the user's path, not a temporary copy
    assert "\n" not in message
    assert_no_output(out)


def test_rejected_scene_keeps_earlier_outputs_untouched(tmp_path: Path, make_raster):
    out = tmp_path / "data"
    good = make_raster("good.tif")
    run(IngestParams(source="file", path=str(good)), out, tmp_path)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    make_raster("bad.tif", crs=None)
    with pytest.raises(GeoreferencingError):
        run(IngestParams(source="file", path="bad.tif"), out, tmp_path)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_ingested_file_opens_with_its_georeferencing(tmp_path: Path, make_raster):
    source = make_raster(count=2, nodata=0)
    _, scene, _ = run(IngestParams(source="file", path=str(source)), tmp_path / "d", tmp_path)
    with rasterio.open(scene) as src, rasterio.open(source) as ref:
        assert src.crs == ref.crs
        assert src.transform == ref.transform
        assert np.array_equal(src.read(), ref.read())
