"""The service under real uvicorn on 127.0.0.1, over HTTP, with concurrent clients."""

# Fixtures are imported from tests.serve_fixtures; pytest injects them as same-named arguments.
# ruff: noqa: F811

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.serve_fixtures import live_server, pipeline_repo, tile_bytes  # noqa: F401

pytestmark = pytest.mark.slow


def _records(repo: Path) -> list[dict]:
    return json.loads((repo / "data" / "predictions.json").read_text())["predictions"]


def test_live_server_is_ready_and_answers_over_http(live_server: str, pipeline_repo: Path) -> None:
    with httpx.Client(base_url=live_server, timeout=10) as http:
        assert http.get("/health/live").json() == {"status": "alive"}
        ready = http.get("/health/ready").json()
        record = _records(pipeline_repo)[0]
        got = http.post("/infer", json={"tile_path": record["path"]}).json()
        assert (got["prediction"], got["score"]) == (
            record["prediction"],
            record["score"],
        )
        assert got["model_md5"] == ready["model_md5"]
        upload = http.post("/infer/upload", files={"file": ("t.tif", tile_bytes(), "image/tiff")})
        assert upload.status_code == 200
        refused = http.post("/infer", json={"tile_path": "../../dvc.lock"})
        assert refused.status_code == 400 and "'..'" in refused.json()["detail"]
        assert "text/plain" in http.get("/metrics").headers["content-type"]
        assert http.get("/docs").status_code == 200


def test_concurrent_requests_all_get_their_own_right_answer(
    live_server: str, pipeline_repo: Path
) -> None:
    records = _records(pipeline_repo)
    upload = tile_bytes()

    def worker(k: int) -> list[tuple[str, str, float]]:
        out = []
        with httpx.Client(base_url=live_server, timeout=30) as http:
            for i in range(k, k + 3 * len(records) // 2, 3):
                record = records[i % len(records)]
                if i % 5 == 0:
                    http.post("/infer/upload", files={"file": ("t.tif", upload, "image/tiff")})
                got = http.post("/infer", json={"tile_path": record["path"]})
                body = got.json()
                out.append((record["path"], body["prediction"], body["score"]))
        return out

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = [r for chunk in pool.map(worker, range(8)) for r in chunk]
    expected = {r["path"]: (r["prediction"], r["score"]) for r in records}
    assert len(results) == sum(len(range(k, k + 3 * len(records) // 2, 3)) for k in range(8))
    for path, prediction, mean in results:
        assert (prediction, mean) == expected[path], path
