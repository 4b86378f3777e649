"""One code path: /infer gives exactly what batch inference recorded in predictions.json."""

# Fixtures are imported from tests.serve_fixtures; pytest injects them as same-named arguments.
# ruff: noqa: F811

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.serve_fixtures import client, pipeline_repo  # noqa: F401

pytestmark = pytest.mark.slow


def _batch(repo: Path) -> dict:
    return json.loads((repo / "data" / "predictions.json").read_text())


def test_every_tile_gets_exactly_the_batch_prediction_and_feature(
    client: TestClient, pipeline_repo: Path
) -> None:
    batch = _batch(pipeline_repo)
    assert batch["metadata"]["tiles_failed"] == 0 and len(batch["predictions"]) > 50
    md5 = batch["metadata"]["model"]["md5"]
    assert client.get("/health/ready").json()["model_md5"] == md5
    for record in batch["predictions"]:
        got = client.post("/infer", json={"tile_path": record["path"]})
        assert got.status_code == 200, got.text
        body = got.json()
        assert body["model_md5"] == md5
        assert body["model_version"] == record["model_version"]
        assert body["prediction"] == record["prediction"], record["id"]
        assert body["score"] == record["score"], record["id"]  # exact
        assert (body["tile_id"], body["window"], body["bounds"]) == (
            record["id"],
            record["window"],
            record["bounds"],
        )


def test_the_batch_endpoint_agrees_with_batch_inference(
    client: TestClient, pipeline_repo: Path
) -> None:
    records = _batch(pipeline_repo)["predictions"]
    got = client.post("/infer/batch", json={"tile_paths": [r["path"] for r in records]}).json()
    assert got["failed"] == 0
    answers = [(i["result"]["prediction"], i["result"]["score"]) for i in got["results"]]
    assert answers == [(r["prediction"], r["score"]) for r in records]
