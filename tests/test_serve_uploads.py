"""POST /infer/upload: same answers as by path; 415, 413 and 422 naming what was expected."""

# Fixtures are imported from tests.serve_fixtures; pytest injects them as same-named arguments.
# ruff: noqa: F811

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import rasterio
from affine import Affine
from fastapi.testclient import TestClient
from rasterio.io import MemoryFile

from satpipe.core.errors import RasterReadError
from serve.expectations import tiff_shape
from tests.helpers import indexed_tile
from tests.serve_fixtures import (  # noqa: F401
    TILE,
    client,
    make_client,
    pipeline_repo,
    tile_bytes,
)

pytestmark = pytest.mark.slow


def _upload(client: TestClient, data: bytes, name: str = "t.tif") -> dict:
    got = client.post("/infer/upload", files={"file": (name, data, "image/tiff")})
    return {"status": got.status_code, **got.json()}


def test_an_uploaded_tile_gets_the_same_answer_as_the_same_tile_by_path(
    client: TestClient, pipeline_repo: Path
) -> None:
    index = json.loads((pipeline_repo / "data" / "tile_index.json").read_text())
    for tile in index["tiles"][:5]:
        data = indexed_tile(pipeline_repo / "data" / "tiles", tile)
        up = _upload(client, data, tile["file"])
        by_path = client.post("/infer", json={"tile_path": tile["file"]}).json()
        assert up["status"] == 200
        for key in ("prediction", "score", "features", "valid_fraction", "model_md5", "bounds"):
            assert up[key] == by_path[key], key
        assert up["crs"] == "EPSG:32633"
        assert up["tile_id"] is None and up["window"] is None and up["in_index"] is False


def test_a_synthetic_tile_like_the_training_tiles_is_classified(client: TestClient) -> None:
    got = _upload(client, tile_bytes())
    assert got["status"] == 200 and got["prediction"] in ("dark", "bright")
    assert got["bounds"] == [399960.0, 5900040.0 - 10 * TILE, 399960.0 + 10 * TILE, 5900040.0]


@pytest.mark.parametrize(
    "data",
    [b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, b"just text", b"", b"GIF89a...."],
    ids=["png", "text", "empty", "gif"],
)
def test_a_file_that_is_not_a_tiff_is_415(client: TestClient, data: bytes) -> None:
    got = _upload(client, data, "picture.png")
    assert got["status"] == 415
    assert "upload 'picture.png'" in got["detail"] and "expected a GeoTIFF" in got["detail"]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"width": 32, "height": 32}, ["32x32 pixels, expected 64x64"]),
        ({"width": 64, "height": 63}, ["64x63 pixels, expected 64x64"]),
        ({"count": 3}, ["3 bands, expected 4"]),
        ({"dtype": "float32"}, ["dtype float32, expected uint16"]),
        ({"crs": None}, ["no CRS, expected a georeferenced GeoTIFF"]),
        ({"width": 65, "count": 1, "dtype": "uint8"}, ["65x64 pixels", "1 bands, expected 4"]),
        ({"dtype": "uint8", "crs": None}, ["dtype uint8, expected uint16", "no CRS"]),
    ],
)
def test_a_tile_unlike_the_training_tiles_is_422_naming_the_expectation(
    client: TestClient, options: dict, expected: list[str]
) -> None:
    got = _upload(client, tile_bytes(**options))
    assert got["status"] == 422
    for text in expected:
        assert text in got["detail"]
    assert "dvc.lock" in got["detail"]


def _sparse_tiff(width: int, height: int) -> bytes:
    """A GeoTIFF whose header declares a huge image but stores no block at all."""
    profile = {"driver": "GTiff", "width": width, "height": height, "count": 4}
    profile.update(dtype="uint16", crs="EPSG:32633", tiled=True, sparse_ok=True)
    profile["transform"] = Affine(10.0, 0.0, 399960.0, 0.0, -10.0, 5900040.0)
    with rasterio.Env(), MemoryFile() as mem:
        with mem.open(**profile):
            pass
        return mem.read()


def test_a_decompression_bomb_is_refused_from_its_header(client: TestClient) -> None:
    bomb = _sparse_tiff(20000, 20000)
    assert len(bomb) < 1024 * 1024  # 3.2 GB of pixels in a small upload
    got = _upload(client, bomb)
    assert got["status"] == 422 and "20000x20000 pixels, expected 64x64" in got["detail"]


def test_tiff_header_shapes_are_read_for_classic_and_bigtiff() -> None:
    assert tiff_shape(tile_bytes(width=70, height=65, count=3), "x") == (70, 65, 3)
    assert tiff_shape(tile_bytes(width=9, height=8, count=2, BIGTIFF="YES"), "x") == (9, 8, 2)
    assert tiff_shape(b"not a tiff", "x") is None
    with pytest.raises(RasterReadError):
        tiff_shape(tile_bytes()[:12], "x")


def test_an_undecodable_or_empty_tile_is_422(client: TestClient) -> None:
    truncated = tile_bytes()[:500]
    assert _upload(client, truncated)["status"] == 422
    nodata = _upload(client, tile_bytes(fill=0))
    assert nodata["status"] == 422 and "no valid pixel" in nodata["detail"]


def test_a_request_without_a_file_is_422(client: TestClient) -> None:
    assert client.post("/infer/upload", data={"other": "x"}).status_code == 422


def test_bodies_over_the_limits_are_413(
    pipeline_repo: Path, make_client: Callable[..., TestClient]
) -> None:
    small = make_client(pipeline_repo, max_upload_bytes=4096, max_json_bytes=1024)
    # A declared Content-Length over the limit is answered by Starlette before the body is read.
    got = small.post("/infer/upload", files={"file": ("t.tif", tile_bytes(), "image/tiff")})
    assert got.status_code == 413
    declared = got.request.headers["content-length"]
    assert got.json() == {
        "detail": f"request body of {declared} bytes too large: the limit is 4096 bytes"
    }

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        for _ in range(10):
            yield b"x" * 1000

    streamed = small.post(
        "/infer/upload",
        content=chunks(),
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert streamed.status_code == 413
    assert streamed.json()["detail"] == "request body too large: the limit is 4096 bytes"
    long_path = {"tile_paths": ["a" * 600 + ".tif"] * 2}
    batch = small.post("/infer/batch", json=long_path)
    assert batch.status_code == 413 and "the limit is 1024 bytes" in batch.json()["detail"]
