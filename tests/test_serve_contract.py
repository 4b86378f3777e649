"""The API contract: every status a route answers is documented, with the body it documents.

Generated clients trust ``/openapi.json``. These tests check FastAPI's own refusals (a missing
body, invalid JSON, a missing upload field) answer the documented ``{"detail": str}``, and run
a schema-driven fuzzer (schemathesis) against real uvicorn, with realistic tile paths and
uploads (:mod:`tests.fuzz_hooks`) so its requests reach the classification code.
"""

# Fixtures are imported from tests.serve_fixtures; pytest injects them as same-named arguments.
# ruff: noqa: F811

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.helpers import REPO, indexed_tile, tool_env
from tests.serve_fixtures import client, live_server, pipeline_repo  # noqa: F401

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


def test_fuzzer_finds_no_server_error_and_no_contract_violation(
    live_server: str, pipeline_repo: Path, tmp_path: Path
) -> None:
    index = json.loads((pipeline_repo / "data" / "tile_index.json").read_text())
    files = [t["file"] for t in index["tiles"]]
    tiles = tmp_path / "tiles.json"
    uploads = []
    for i, entry in enumerate(index["tiles"][:3]):
        upload = tmp_path / f"upload-{i}.tif"
        upload.write_bytes(indexed_tile(pipeline_repo / "data" / "tiles", entry))
        uploads.append(str(upload))
    tiles.write_text(json.dumps({"paths": files[:20], "uploads": uploads}))
    env = dict(
        tool_env(),
        PYTHONPATH=str(REPO),
        SCHEMATHESIS_HOOKS="tests.fuzz_hooks",
        SATPIPE_FUZZ_TILES=str(tiles),
    )
    checks = [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "unsupported_method",
    ]
    cmd = [sys.executable, "-m", "schemathesis.cli", "run", f"{live_server}/openapi.json"]
    cmd += ["--checks", ",".join(checks), "--max-examples", "150", "--seed", "11"]
    cmd += ["--phases", "examples,coverage,fuzzing", "--workers", "2", "--no-color"]
    cmd += ["--generation-database", "none", "--report", "ndjson"]
    cmd += ["--report-dir", str(tmp_path / "report")]
    before = _classified(live_server)
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    # The fuzzer's requests reached the classification code: tiles were classified by path,
    # in batches and as uploads.
    after = _classified(live_server)
    for route in ("/infer", "/infer/batch", "/infer/upload"):
        assert after[route] > before[route], (route, before, after)


def _classified(base: str) -> dict[str, float]:
    """200 answers per classifying route, from the server's own request counter."""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    counts = dict.fromkeys(("/infer", "/infer/batch", "/infer/upload"), 0.0)
    for route in counts:
        found = re.search(
            rf'^satpipe_http_requests_total{{method="POST",route="{re.escape(route)}",'
            rf'status="200"}} (\S+)$',
            text,
            re.MULTILINE,
        )
        counts[route] = float(found.group(1)) if found else 0.0
    return counts
