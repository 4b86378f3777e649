"""/segment: an upload gives the batch stage's classes byte for byte; a bbox gives the COG's window.

On the small committed per-pixel run (``segmentation_repo``, read-only) and, for the refusal of a
tile-label model, the tile pipeline (``pipeline_repo``). Limits are checked before decoding: a
60000 x 60000 sparse GeoTIFF of ~440 KB is refused from its header at once.
"""

# Fixtures are imported from tests.serve_fixtures; pytest injects them as same-named arguments.
# ruff: noqa: F811

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyproj
import pytest
import rasterio
import shapely
import yaml
from affine import Affine
from fastapi.testclient import TestClient
from httpx import Response
from rasterio.crs import CRS
from rasterio.features import rasterize
from rasterio.io import MemoryFile
from rasterio.warp import transform_bounds
from rasterio.windows import Window
from shapely.geometry import shape

from serve.app import create_app
from serve.errors import SettingsError
from serve.settings import Settings
from tests.serve_fixtures import make_client, pipeline_repo, segmentation_repo  # noqa: F401

pytestmark = pytest.mark.slow

SCENE = "synthetic-42"
COG = f"data/segments/{SCENE}.class.tif"
BOX = (400123.4, 5894567.8, 401234.5, 5895432.1)  # edges inside pixels: they take them whole
BANDS = ["B02", "B03", "B04", "B08"]


@pytest.fixture(scope="module")
def seg(segmentation_repo: Path) -> Iterator[TestClient]:
    """A client of the service on the per-pixel run."""
    with TestClient(create_app(Settings(repo=segmentation_repo))) as started:
        yield started


def _upload(client: TestClient, data: bytes, query: str = "", **headers: str) -> Response:
    files = {"file": ("scene.tif", data, "image/tiff")}
    return client.post(f"/segment{query}", files=files, headers=headers)


def _decoded(content: bytes) -> tuple[np.ndarray, Affine, CRS, dict[str, str]]:
    with MemoryFile(content) as mem, mem.open() as src:
        assert src.count == 1 and src.dtypes[0] == "uint8" and src.nodata == 255
        return src.read(1), src.transform, src.crs, src.tags()


def _cog_window(repo: Path, box: tuple[float, ...]) -> tuple[np.ndarray, Affine, Window]:
    """The pixels of the pinned COG whose area ``box`` (scene CRS) overlaps: computed here."""
    with rasterio.open(repo / COG) as src:
        t = src.transform
        c0, c1 = math.floor((box[0] - t.c) / t.a), math.ceil((box[2] - t.c) / t.a)
        r0, r1 = math.floor((box[3] - t.f) / t.e), math.ceil((box[1] - t.f) / t.e)
        c0, r0, c1, r1 = max(c0, 0), max(r0, 0), min(c1, src.width), min(r1, src.height)
        win = Window(c0, r0, c1 - c0, r1 - r0)
        return src.read(1, window=win), src.window_transform(win), win


def test_a_whole_scene_uploaded_gives_the_batch_class_cog_byte_for_byte(
    seg: TestClient, segmentation_repo: Path
) -> None:
    got = _upload(seg, (segmentation_repo / "data" / "scenes" / f"{SCENE}.tif").read_bytes())
    assert got.status_code == 200, got.text
    assert got.headers["content-type"] == "image/tiff"
    batch = (segmentation_repo / COG).read_bytes()
    classes, transform, crs, tags = _decoded(got.content)
    want, want_transform, want_crs, want_tags = _decoded(batch)
    assert np.array_equal(classes, want) and classes.shape == (600, 700)
    assert (transform, crs) == (want_transform, want_crs)
    assert tags == want_tags and tags["CLASS_0"] == "water"
    assert got.content == batch  # the same writer, settings and pixels: the same file
    model = json.loads((segmentation_repo / "data" / "model.json").read_text())
    assert got.headers["x-model-version"] == model["version"] == tags["MODEL_VERSION"]
    assert got.headers["x-model-md5"] == tags["MODEL_MD5"]
    with MemoryFile(got.content) as mem, mem.open() as src:
        assert src.colormap(1)[255] == (0, 0, 0, 0) and len(src.overviews(1)) >= 1


def test_a_bbox_in_the_scene_crs_answers_the_cog_window(
    seg: TestClient, segmentation_repo: Path
) -> None:
    bbox = ",".join(str(v) for v in BOX)
    got = seg.get(f"/segment/{SCENE}", params={"bbox": bbox})
    assert got.status_code == 200, got.text
    classes, transform, crs, tags = _decoded(got.content)
    want, want_transform, win = _cog_window(segmentation_repo, BOX)
    assert (win.col_off, win.row_off, win.width, win.height) == (16, 460, 112, 88)
    assert np.array_equal(classes, want) and transform == want_transform
    assert crs.to_epsg() == 32633 and "CLASS_1" in tags and "MODEL_MD5" in tags
    assert got.headers["content-disposition"] == f'attachment; filename="{SCENE}.class.tif"'


def test_a_bbox_in_lon_lat_answers_the_window_of_its_extent_in_the_scene_crs(
    seg: TestClient, segmentation_repo: Path
) -> None:
    lonlat = transform_bounds("EPSG:32633", "EPSG:4326", *BOX)
    bbox = ",".join(f"{v:.8f}" for v in lonlat)
    got = seg.get(f"/segment/{SCENE}", params={"bbox": bbox, "bbox_crs": "EPSG:4326"})
    assert got.status_code == 200, got.text
    back = transform_bounds("EPSG:4326", "EPSG:32633", *map(float, bbox.split(",")), densify_pts=21)
    want, want_transform, win = _cog_window(segmentation_repo, back)
    classes, transform, _, _ = _decoded(got.content)
    assert np.array_equal(classes, want) and transform == want_transform
    assert win.width >= 112 and win.height >= 88  # at least the box it was made from


def test_the_json_summary_counts_the_window_and_names_the_model(
    seg: TestClient, segmentation_repo: Path
) -> None:
    bbox = ",".join(str(v) for v in BOX)
    got = seg.get(
        f"/segment/{SCENE}", params={"bbox": bbox}, headers={"accept": "application/json"}
    )
    assert got.status_code == 200 and got.headers["content-type"] == "application/json"
    body = got.json()
    want, _, _ = _cog_window(segmentation_repo, BOX)
    counts = np.bincount(want.ravel(), minlength=256)
    assert [c["pixels"] for c in body["classes"]] == counts[: len(body["classes"])].tolist()
    assert [c["area_m2"] for c in body["classes"]] == [100.0 * c["pixels"] for c in body["classes"]]
    assert body["valid_pixels"] + body["nodata_pixels"] == body["pixels"] == want.size
    assert body["nodata_pixels"] == counts[255]
    assert body["window"] == {"col_off": 16, "row_off": 460, "width": 112, "height": 88}
    assert body["scene"] == SCENE and body["area_method"] == "projected"
    assert body["settings"] == {"window": 256, "overlap": 64, "blend": "hann", "batch": 4}
    assert body["model_md5"] == got.headers["x-model-md5"]


def test_the_geojson_answer_rasterises_back_to_the_classes(
    seg: TestClient, segmentation_repo: Path
) -> None:
    data = (segmentation_repo / "data" / "scenes" / f"{SCENE}.tif").read_bytes()
    got = _upload(seg, data, accept="application/geo+json")
    assert got.status_code == 200, got.text
    assert got.headers["content-type"] == "application/geo+json"
    features = got.json()["features"]
    to_scene = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True)
    shapes = [
        (shapely.transform(shape(f["geometry"]), to_scene.transform, interleaved=False), code)
        for f in features
        if (code := f["properties"]["code"]) is not None
    ]
    with rasterio.open(segmentation_repo / COG) as src:
        want, transform = src.read(1), src.transform
    back = rasterize(shapes, out_shape=want.shape, transform=transform, fill=255, dtype="uint8")
    assert np.array_equal(back, want)


def test_the_format_parameter_wins_and_an_unmatched_accept_is_406(seg: TestClient) -> None:
    bbox = ",".join(str(v) for v in BOX)
    url = f"/segment/{SCENE}"
    as_json = seg.get(
        url, params={"bbox": bbox, "format": "json"}, headers={"accept": "image/tiff"}
    )
    assert as_json.headers["content-type"] == "application/json"
    preferred = seg.get(
        url, params={"bbox": bbox}, headers={"accept": "image/tiff;q=0.5, */*;q=0.1"}
    )
    assert preferred.headers["content-type"] == "image/tiff"
    geo = seg.get(url, params={"bbox": bbox}, headers={"accept": "application/geo+json"})
    assert geo.headers["content-type"] == "application/geo+json"
    not_tiff = seg.get(url, params={"bbox": bbox}, headers={"accept": "image/tiff;q=0, */*"})
    assert not_tiff.headers["content-type"] == "application/json"  # the specific range wins
    for accept in ("text/html", "image/tiff;q=0"):
        refused = seg.get(url, params={"bbox": bbox}, headers={"accept": accept})
        assert refused.status_code == 406 and "image/tiff" in refused.json()["detail"]


@pytest.mark.parametrize(
    ("bbox", "status", "named"),
    [
        ("0,0,1,1", 422, "does not overlap the scene"),
        ("401000,5895000,400000,5896000", 422, "minx < maxx"),
        ("400000,5895000", 422, "bbox"),
        ("a,b,c,d", 422, "bbox"),
    ],
)
def test_a_bbox_outside_the_scene_or_malformed_is_422(
    seg: TestClient, bbox: str, status: int, named: str
) -> None:
    got = seg.get(f"/segment/{SCENE}", params={"bbox": bbox})
    assert got.status_code == status and named in got.json()["detail"]


@pytest.mark.parametrize(
    "scene",
    [
        "..",
        ".hidden",
        "%2e%2e",
        "..%2F..%2Fdvc.lock",
        "..%2Fsegments%2Fsynthetic-42",
        "synthetic-42.class.tif",
    ],
)
def test_scene_ids_that_are_not_pinned_scenes_are_refused(seg: TestClient, scene: str) -> None:
    got = seg.get(f"/segment/{scene}", params={"bbox": "400000,5894100,401000,5895000"})
    assert got.status_code in (404, 422), (scene, got.status_code)
    assert set(got.json()) == {"detail"}


def test_an_unknown_scene_is_404_naming_the_pinned_ones(seg: TestClient) -> None:
    got = seg.get("/segment/elsewhere", params={"bbox": "0,0,1,1"})
    assert got.status_code == 404 and "synthetic-42" in got.json()["detail"]


def _sparse_tiff(size: int = 60000) -> bytes:
    profile = dict(driver="GTiff", width=size, height=size, count=1, dtype="uint8")
    profile.update(crs="EPSG:32633", transform=Affine(10, 0, 399960, 0, -10, 5900040))
    profile.update(tiled=True, blockxsize=256, blockysize=256, compress="deflate", sparse_ok=True)
    with MemoryFile() as mem:
        with mem.open(**profile):
            pass  # no block written: sparse
        return mem.read()


def test_a_huge_sparse_tiff_is_refused_from_its_header_naming_the_limit(seg: TestClient) -> None:
    data = _sparse_tiff()
    assert len(data) < 500_000  # ~440 KB of tile offsets; 3.6 GB decoded
    started = time.perf_counter()
    got = _upload(seg, data)
    elapsed = time.perf_counter() - started
    assert got.status_code == 413
    detail = got.json()["detail"]
    assert "60000x60000 pixels x 1 bands = 3600000000 samples" in detail
    assert "limit of 67108864 (SATPIPE_MAX_SEGMENT_SAMPLES)" in detail
    assert elapsed < 1.0  # decoding would take minutes and gigabytes


def test_uploads_over_the_byte_limit_and_windows_over_the_pixel_limit_are_413(
    make_client: Callable[..., TestClient], segmentation_repo: Path
) -> None:
    client = make_client(segmentation_repo, max_segment_bytes=4096, max_window_pixels=1000)
    data = (segmentation_repo / "data" / "scenes" / f"{SCENE}.tif").read_bytes()
    # A declared Content-Length over the limit is refused before the body is read, in the
    # documented JSON shape (serve.body_limit).
    declared = _upload(client, data)
    assert declared.status_code == 413
    assert declared.json()["detail"].endswith("too large: the limit is 4096 bytes")

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        yield from (b"x" * 1000 for _ in range(10))

    boundary = {"Content-Type": "multipart/form-data; boundary=b"}
    streamed = client.post("/segment", content=chunks(), headers=boundary)
    assert streamed.status_code == 413
    assert streamed.json()["detail"] == "request body too large: the limit is 4096 bytes"
    bbox = ",".join(str(v) for v in BOX)
    got = client.get(f"/segment/{SCENE}", params={"bbox": bbox})
    assert got.status_code == 413
    assert "112x88 = 9856 pixels" in got.json()["detail"]
    assert "limit of 1000 (SATPIPE_MAX_WINDOW_PIXELS)" in got.json()["detail"]
    small = client.get(f"/segment/{SCENE}", params={"bbox": "400000,5894100,400200,5894300"})
    assert small.status_code == 200  # 20x20 pixels


def test_both_routes_need_the_api_key_when_one_is_set(
    make_client: Callable[..., TestClient], segmentation_repo: Path
) -> None:
    client = make_client(segmentation_repo, api_key="s3cret")
    bbox = "400000,5894100,400200,5894300"
    for headers in ({}, {"X-API-Key": "wrong"}):
        got = client.get(f"/segment/{SCENE}", params={"bbox": bbox}, headers=headers)
        assert got.status_code == 401 and got.headers["www-authenticate"] == "APIKey"
        assert _upload(client, b"II*\x00", **headers).status_code == 401
    ok = client.get(f"/segment/{SCENE}", params={"bbox": bbox}, headers={"X-API-Key": "s3cret"})
    assert ok.status_code == 200


@pytest.mark.parametrize(
    ("options", "status", "named"),
    [
        ({"crs": None}, 422, "no CRS"),
        ({"count": 3, "descriptions": ["B02", "B03", "B04"]}, 422, "B08"),
        ({"dtype": "complex64"}, 422, "expected one of"),
    ],
)
def test_uploads_the_model_cannot_read_are_refused_naming_why(
    seg: TestClient, make_raster: Callable[..., Path], options: dict, status: int, named: str
) -> None:
    options = {"count": 4, "descriptions": BANDS, **options}
    got = _upload(seg, make_raster(tags=None, **options).read_bytes())
    assert got.status_code == status, got.text
    assert got.json()["detail"].startswith("upload 'scene.tif': ") and named in got.json()["detail"]


@pytest.mark.parametrize(
    "data", [b"", b"\x89PNG\r\n\x1a\n", b"not a tiff"], ids=["empty", "png", "text"]
)
def test_an_upload_that_is_not_a_tiff_is_415(seg: TestClient, data: bytes) -> None:
    got = _upload(seg, data)
    assert got.status_code == 415 and "expected a GeoTIFF" in got.json()["detail"]


def test_an_odd_sized_upload_is_segmented_on_its_own_grid(
    seg: TestClient, make_raster: Callable[..., Path]
) -> None:
    path = make_raster(count=4, nodata=0, descriptions=BANDS)
    got = _upload(seg, path.read_bytes(), "?format=json")
    assert got.status_code == 200, got.text
    body = got.json()
    assert (body["width"], body["height"], body["pixels"]) == (97, 83, 97 * 83)
    assert body["valid_pixels"] == sum(c["pixels"] for c in body["classes"]) == 97 * 83
    tiff = _upload(seg, path.read_bytes())
    classes, transform, _, _ = _decoded(tiff.content)
    assert classes.shape == (83, 97) and transform == Affine(10, 0, 399960, 0, -10, 5900040)


def test_areas_in_a_geographic_crs_are_the_polygons_geodesic_areas(
    seg: TestClient, make_raster: Callable[..., Path]
) -> None:
    transform = Affine(0.0001, 0, 13.5, 0, -0.0001, 53.2)  # ~6.7 m x 11.1 m pixels
    path = make_raster(count=4, nodata=0, crs="EPSG:4326", transform=transform, descriptions=BANDS)
    summary = _upload(seg, path.read_bytes(), "?format=json").json()
    features = _upload(seg, path.read_bytes(), "?format=geojson").json()["features"]
    assert summary["area_method"] == "geodesic" and summary["crs"] == "EPSG:4326"
    by_class: dict[str, float] = {}
    for f in features:
        name = f["properties"]["class"]
        by_class[name] = by_class.get(name, 0.0) + f["properties"]["area_m2"]
    geod = pyproj.Geod(ellps="WGS84")
    pixel = abs(
        geod.polygon_area_perimeter([13.5, 13.5001, 13.5001, 13.5], [53.2] * 2 + [53.1999] * 2)[0]
    )
    for c in summary["classes"]:
        assert c["area_m2"] == pytest.approx(by_class.get(c["name"], 0.0), abs=1e-6)
        assert c["area_m2"] == pytest.approx(c["pixels"] * pixel, rel=1e-3)


def test_the_pinned_bytes_are_served_even_when_the_workspace_cog_was_changed(
    make_client: Callable[..., TestClient], segmentation_repo: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(segmentation_repo, repo, symlinks=True)
    cog = repo / COG
    pinned = cog.read_bytes()
    cog.unlink()
    cog.write_bytes(pinned[:-100] + bytes(100))  # not the pinned md5: the cache copy is used
    client = make_client(repo)
    bbox = ",".join(str(v) for v in BOX)
    got = client.get(f"/segment/{SCENE}", params={"bbox": bbox})
    assert got.status_code == 200
    want, _, _ = _cog_window(segmentation_repo, BOX)
    assert np.array_equal(_decoded(got.content)[0], want)


def test_segments_made_by_another_model_are_not_served(
    make_client: Callable[..., TestClient], segmentation_repo: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(segmentation_repo, repo, symlinks=True)
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    model = next(d for d in lock["stages"]["segment"]["deps"] if d["path"] == "data/model.json")
    served, model["md5"] = model["md5"], "0" * 32
    (repo / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    client = make_client(repo)
    got = client.get(f"/segment/{SCENE}", params={"bbox": "400000,5894100,400200,5894300"})
    assert got.status_code == 503
    assert f"md5 {'0' * 32}, not the served model's {served}" in got.json()["detail"]
    assert (
        _upload(client, (repo / "data" / "scenes" / f"{SCENE}.tif").read_bytes()).status_code == 503
    )


def test_the_limits_are_read_from_the_environment() -> None:
    env = {
        "SATPIPE_MAX_SEGMENT_BYTES": "2048",
        "SATPIPE_MAX_SEGMENT_SAMPLES": "1000",
        "SATPIPE_MAX_WINDOW_PIXELS": "99",
    }
    settings = Settings.from_env(env)
    assert (settings.max_segment_bytes, settings.max_segment_samples) == (2048, 1000)
    assert settings.max_window_pixels == 99
    with pytest.raises(SettingsError, match="SATPIPE_MAX_WINDOW_PIXELS='0'"):
        Settings.from_env({"SATPIPE_MAX_WINDOW_PIXELS": "0"})


def test_a_model_that_labels_tiles_has_no_segmentation_409(
    make_client: Callable[..., TestClient], pipeline_repo: Path
) -> None:
    client = make_client(pipeline_repo)
    for got in (
        client.get(f"/segment/{SCENE}", params={"bbox": "400000,5894100,400200,5894300"}),
        _upload(client, b"II*\x00"),
    ):
        assert got.status_code == 409
        assert "labels whole tiles" in got.json()["detail"] and "per-pixel" in got.json()["detail"]
