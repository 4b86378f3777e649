"""The API contract: every status a route answers is documented, with the body it documents.

Generated clients trust ``/openapi.json``. These tests check FastAPI's own refusals (a missing
body, invalid JSON, a missing upload field) answer the documented ``{"detail": str}``, that the
rules the service applies are declared (the tile path's pattern, uploads as non-empty
``image/tiff`` files), and run a schema-driven fuzzer (schemathesis, every check, with
``positive_data_acceptance`` configured in ``tests/schemathesis.toml``) against real uvicorn
serving the per-pixel run, so every route, ``/segment`` included, is fuzzed with realistic tile
paths, uploads, scene ids and bboxes (:mod:`tests.fuzz_hooks`) that reach its code.
"""

# Fixtures are imported from tests.serve_fixtures; pytest injects them as same-named arguments.
# ruff: noqa: F811

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import morecantile
import pytest
import rasterio
from fastapi.testclient import TestClient
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from serve.errors import TilePathError
from serve.paths import check_tile_path
from serve.schemas import TILE_PATH_PATTERN
from tests.helpers import REPO, indexed_tile, tool_env
from tests.serve_fixtures import (  # noqa: F401
    client,
    pipeline_repo,
    segmentation_repo,
    uvicorn_server,
)

pytestmark = pytest.mark.slow

ERROR_REF = "#/components/schemas/ErrorBody"


def test_every_documented_error_is_the_error_body(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            for status, response in op["responses"].items():
                if int(status) < 400:
                    continue
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": ERROR_REF}, (method, path, status)
            if "requestBody" in op:
                assert "422" in op["responses"], (method, path)
    assert spec["components"]["schemas"]["ErrorBody"]["properties"]["detail"]["type"] == "string"


@pytest.mark.parametrize(
    ("route", "kwargs", "named"),
    [
        ("/infer", {}, "body: Field required"),
        ("/infer", {"json": {}}, "body.tile_path: Field required"),
        ("/infer", {"json": {"tile_path": 3}}, "body.tile_path: Input should be a valid string"),
        ("/infer", {"json": {"tile_path": "a", "x": 1}}, "body.x: Extra inputs"),
        (
            "/infer",
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            "JSON decode error",
        ),
        ("/infer/batch", {"json": {"tile_paths": []}}, "body.tile_paths: List should have"),
        ("/infer/upload", {}, "body.file: Field required"),
        ("/infer/upload", {"files": {"other": ("t.tif", b"II*\0")}}, "body.file: Field required"),
    ],
)
def test_refused_requests_answer_one_line_in_the_documented_shape(
    client: TestClient, route: str, kwargs: dict, named: str
) -> None:
    got = client.post(route, **kwargs)
    assert got.status_code == 422
    body = got.json()
    assert set(body) == {"detail"} and isinstance(body["detail"], str)
    assert body["detail"].startswith("invalid request: ") and "\n" not in body["detail"]
    assert named in body["detail"]


@pytest.mark.parametrize(
    ("route", "kwargs", "named"),
    [
        (
            "/infer/batch",
            {"content": b"\xff", "headers": {"content-type": "application/json"}},
            "invalid request: There was an error parsing the body",
        ),
        (
            "/infer/upload",
            {
                "content": b"--b\r\nNone--b--\r\n",
                "headers": {"content-type": "multipart/form-data; boundary=b"},
            },
            "invalid request: Invalid multipart data",
        ),
    ],
)
def test_bodies_that_cannot_be_parsed_are_documented_400s(
    client: TestClient, route: str, kwargs: dict, named: str
) -> None:
    # Both found by the fuzzer: FastAPI answers these 400 itself, which was undocumented.
    got = client.post(route, **kwargs)
    assert got.status_code == 400 and got.json() == {"detail": named}
    spec = client.get("/openapi.json").json()
    assert "400" in spec["paths"][route]["post"]["responses"]


CHECKS = "all"  # every check schemathesis has, positive_data_acceptance included
FUZZ_CONFIG = Path(__file__).with_name("schemathesis.toml")
CLASSIFYING = (
    "/infer",
    "/infer/batch",
    "/infer/upload",
    "/segment",
    "/segment/{scene}",
    "/maps/{scene}/point",
    "/maps/{scene}/{layer}/{md5}/{z}/{x}/{y}.png",
)


@pytest.fixture(scope="module")
def segmented_server(
    segmentation_repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Real uvicorn serving the per-pixel run: every route, /segment included, reaches its code."""
    log = tmp_path_factory.mktemp("uvicorn") / "server.log"
    with uvicorn_server(segmentation_repo, log) as base:
        yield base


def _scene_crops(scene: Path, out: Path) -> list[str]:
    """Small GeoTIFFs cut from ``scene``, with its band names: uploads /segment can segment."""
    paths = []
    with rasterio.open(scene) as src:
        for i, window in enumerate([Window(0, 0, 97, 83), Window(301, 250, 64, 61)]):
            profile = dict(src.profile, width=window.width, height=window.height, tiled=False)
            profile.update(transform=src.window_transform(window), compress="deflate")
            path = out / f"scene-{i}.tif"
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(src.read(window=window))
                dst.descriptions = src.descriptions
            paths.append(str(path))
    return paths


def _map_tiles(base: str) -> list[dict[str, Any]]:
    """Map tiles over every served layer at its current version (zooms 0 to 14 over the scene)."""
    tiles = []
    for scene in httpx.get(f"{base}/maps", timeout=30).json()["scenes"]:
        west, south, east, north = scene["bounds"]
        for layer in scene["layers"]:
            for z in (0, 8, 12, 14):
                for t in morecantile.tms.get("WebMercatorQuad").tiles(
                    west, south, east, north, [z]
                ):
                    tiles.append(
                        {"scene": scene["id"], "layer": layer["name"], "md5": layer["md5"]}
                        | {"z": t.z, "x": t.x, "y": t.y}
                    )
    return tiles


def _fuzz_data(repo: Path, out: Path, base: str) -> Path:
    """The real tile paths, uploads and scenes the hooks mix in (:mod:`tests.fuzz_hooks`)."""
    index = json.loads((repo / "data" / "tile_index.json").read_text())
    uploads = []
    for i, entry in enumerate(index["tiles"][:3]):
        upload = out / f"upload-{i}.tif"
        upload.write_bytes(indexed_tile(repo / "data" / "tiles", entry))
        uploads.append(str(upload))
    scenes = []
    for cog in sorted((repo / "data" / "segments").glob("*.class.tif")):
        with rasterio.open(cog) as src:
            bounds = list(src.bounds)
            lonlat = list(transform_bounds(src.crs, "EPSG:4326", *bounds))
        scenes.append(
            {"id": cog.name.removesuffix(".class.tif"), "bounds": bounds, "lonlat": lonlat}
        )
    data = {
        "paths": [t["file"] for t in index["tiles"]][:20],
        "uploads": uploads,
        "scene_uploads": _scene_crops(repo / "data" / "scenes" / "synthetic-42.tif", out),
        "scenes": scenes,
        "map_tiles": _map_tiles(base),
    }
    path = out / "fuzz.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    "path",
    [
        "a.tif",
        "synthetic-42/r000064_c000128.TIFF",
        ".hidden/a.tif",
        ".../a.tif",
        "..a/b.tif",
        "a/.tif",
        "x" * 250 + ".tif",
        "../a.tif",
        "./a.tif",
        "a/../b.tif",
        "a/./b.tif",
        "/a.tif",
        "~/a.tif",
        "c:/a.tif",
        "a//b.tif",
        "a.tif/",
        "a.png",
        "a.tif.aux.xml",
        "a b.tif",
        "a%2e.tif",
        "a\\b.tif",
        "a.tif\x00",
    ],
)
def test_the_declared_tile_path_pattern_is_the_services_rule(path: str) -> None:
    # The schema's pattern admits exactly the paths serve.paths accepts (up to 255-character
    # segments, a file name's limit), so what the fuzzer draws from it is never a 400.
    try:
        check_tile_path(path)
    except TilePathError:
        accepted = False
    else:
        accepted = True
    assert (re.fullmatch(TILE_PATH_PATTERN, path) is not None) == accepted


def test_uploads_are_declared_non_empty_tiffs(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for route in ("/infer/upload", "/segment"):
        body = spec["paths"][route]["post"]["requestBody"]["content"]["multipart/form-data"]
        assert body["encoding"] == {"file": {"contentType": "image/tiff"}}
        name = body["schema"]["$ref"].rsplit("/", 1)[1]
        part = spec["components"]["schemas"][name]["properties"]["file"]
        assert part["format"] == "binary" and part["contentMediaType"] == "image/tiff"
        assert part["minLength"] == 1


def test_fuzzer_finds_no_server_error_and_no_contract_violation(
    segmented_server: str, segmentation_repo: Path, tmp_path: Path
) -> None:
    env = dict(
        tool_env(),
        PYTHONPATH=str(REPO),
        SCHEMATHESIS_HOOKS="tests.fuzz_hooks",
        SATPIPE_FUZZ_TILES=str(_fuzz_data(segmentation_repo, tmp_path, segmented_server)),
    )
    cmd = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(FUZZ_CONFIG), "run"]
    cmd += [f"{segmented_server}/openapi.json", "--checks", CHECKS]
    cmd += ["--max-examples", "150", "--seed", "11"]
    cmd += ["--phases", "examples,coverage,fuzzing", "--workers", "2", "--no-color"]
    cmd += ["--generation-database", "none", "--report", "ndjson"]
    cmd += ["--report-dir", str(tmp_path / "report")]
    before = _classified(segmented_server)
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    counts = fuzz_counts(tmp_path / "report")
    print(f"fuzz counts: {counts}")  # noqa: T201 (shown with -s: the figures the note reports)
    assert counts["failures"] == counts["errors"] == 0 and counts["requests"] > 1000, counts
    assert set(counts["operations"]) >= {"POST /segment", "GET /segment/{scene}"}, counts
    # The fuzzer's requests reached the code: tiles classified by path, in batches and as
    # uploads, scenes segmented as uploads and windows cut from the pinned scenes, map tiles drawn
    # and points looked up.
    after = _classified(segmented_server)
    for route in CLASSIFYING:
        assert after[route] > before[route], (route, before, after)


def fuzz_counts(report_dir: Path) -> dict[str, Any]:
    """Requests, checks and failed checks of a schemathesis run, from its NDJSON report."""
    counts: dict[str, Any] = {"requests": 0, "checks": 0, "failures": 0, "errors": 0}
    operations: dict[str, int] = {}
    failing: set[str] = set()
    for report in report_dir.glob("*.ndjson"):
        for line in report.read_text().splitlines():
            event = json.loads(line)
            counts["errors"] += "NonFatalError" in event
            recorder = event.get("ScenarioFinished", {}).get("recorder")
            if recorder is None:
                continue
            label = recorder["label"]
            operations[label] = operations.get(label, 0) + len(recorder.get("interactions", {}))
            counts["requests"] += len(recorder.get("interactions", {}))
            for checks in recorder.get("checks", {}).values():
                counts["checks"] += len(checks)
                failed = sum(c["status"] == "failure" for c in checks)
                counts["failures"] += failed
                if failed:
                    failing.add(label)
    return {**counts, "operations": operations, "failing": sorted(failing)}


def _classified(base: str) -> dict[str, float]:
    """200 answers per classifying route, from the server's own request counter."""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    counts = dict.fromkeys(CLASSIFYING, 0.0)
    for route in counts:
        method = "GET" if "{" in route else "POST"
        found = re.search(
            rf'^satpipe_http_requests_total{{method="{method}",route="{re.escape(route)}",'
            rf'status="200"}} (\S+)$',
            text,
            re.MULTILINE,
        )
        counts[route] = float(found.group(1)) if found else 0.0
    return counts
