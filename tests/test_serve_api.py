"""The REST endpoints on a real pipeline run: answers, model info, batch, metrics, auth, CORS."""

# Fixtures are imported from tests.serve_fixtures; pytest injects them as same-named arguments.
# ruff: noqa: F811

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from satpipe.core import lockfile
from serve.app import create_app
from serve.errors import SettingsError
from serve.schemas import MAX_BATCH
from serve.settings import Settings
from tests.helpers import indexed_tile
from tests.serve_fixtures import (  # noqa: F401
    client,
    make_client,
    pipeline_repo,
    repo_copy,
)

pytestmark = pytest.mark.slow


def _index(repo: Path) -> dict:
    return json.loads((repo / "data" / "tile_index.json").read_text())


def test_liveness_and_readiness(client: TestClient, pipeline_repo: Path) -> None:
    assert client.get("/health/live").json() == {"status": "alive"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    pin = lockfile.pin(lockfile.read_lock(pipeline_repo / "dvc.lock"))
    assert ready.json()["model_md5"] == pin.model.md5
    assert ready.json()["origin"] == "workspace:data/model.json"


def test_infer_answers_with_the_tile_its_place_and_the_model(
    client: TestClient,
    pipeline_repo: Path,
) -> None:
    index = _index(pipeline_repo)
    tile = index["tiles"][-1]
    got = client.post("/infer", json={"tile_path": tile["file"]})
    assert got.status_code == 200
    body = got.json()
    assert body["tile_id"] == tile["id"] and body["in_index"] is True
    assert body["window"] == tile["window"]
    assert body["bounds"] == tile["bounds"]
    assert body["crs"] == index["scenes"][tile["scene"]]["crs"]
    assert body["prediction"] in ("dark", "bright")
    model = json.loads((pipeline_repo / "data" / "model.json").read_text())
    assert body["model_version"] == model["version"]
    expected = (
        "bright" if body["features"]["mean_intensity"] > model["model"]["threshold"] else "dark"
    )
    assert body["prediction"] == expected


def test_model_reports_the_lock_entry_params_reference_and_versions(
    client: TestClient,
    pipeline_repo: Path,
) -> None:
    info = client.get("/model").json()
    lock = yaml.safe_load((pipeline_repo / "dvc.lock").read_text())
    assert info["lock_entry"] == lock["stages"]["train"]
    assert info["training_params"] == {
        "model": "threshold",
        "classes": ["dark", "bright"],
        "method": "mean",
        "logistic": {"features": None, "l2": 1.0, "iterations": 500},
        "onnx": None,
        "pixels": {
            "classes": [
                {"name": "water", "codes": [1], "colour": "#1f78b4"},
                {"name": "vegetation", "codes": [2], "colour": "#33a02c"},
                {"name": "soil", "codes": [3], "colour": "#b15928"},
                {"name": "cloud", "codes": [4], "colour": "#f0f0f0"},
            ],
            "samples": 20000,
        },
        "pixel_logistic": {"features": ["bands", "ndwi", "ndvi"], "l2": 1.0, "iterations": 100},
        "fraction": 0.7,
        "seed": 0,
        "histogram_bins": 20,
    }
    assert info["tile_params"]["size"] == 64
    model = json.loads((pipeline_repo / "data" / "model.json").read_text())
    assert info["reference"] == model["reference"]
    assert info["kind"] == "threshold"
    assert info["details"] == model["model"]
    assert info["upload_expectations"] == {
        "width": 64,
        "height": 64,
        "partial_tiles_allowed": False,
        "count": 4,
        "dtype": "uint16",
        "crs_required": True,
    }
    assert set(info["versions"]) >= {"service", "rasterio", "gdal", "proj", "numpy"}
    assert info["rev"] is None


def test_training_params_come_from_the_lock_not_params_yaml(
    repo_copy: Path,
    make_client: Callable[..., TestClient],
) -> None:
    params = yaml.safe_load((repo_copy / "params.yaml").read_text())
    params["train"]["fraction"] = 0.1
    params["tile"]["size"] = 128
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(params))
    info = make_client(repo_copy).get("/model").json()
    assert info["training_params"]["fraction"] == 0.7
    assert info["upload_expectations"]["width"] == 64


def test_a_tile_outside_the_index_is_classified_without_a_window(
    repo_copy: Path,
    make_client: Callable[..., TestClient],
) -> None:
    entry = _index(repo_copy)["tiles"][0]
    first = entry["file"]
    tiles = repo_copy / "data" / "tiles"
    (tiles / "extra.tif").write_bytes(indexed_tile(tiles, entry))  # a loose file, not in a pack
    client = make_client(repo_copy)
    got = client.post("/infer", json={"tile_path": "extra.tif"}).json()
    indexed = client.post("/infer", json={"tile_path": first}).json()
    assert got["in_index"] is False and got["window"] is None and got["bounds"] is None
    assert got["tile_id"] == "extra"
    assert (got["prediction"], got["score"]) == (
        indexed["prediction"],
        indexed["score"],
    )


def test_batch_gives_one_result_or_one_error_per_item(
    client: TestClient,
    pipeline_repo: Path,
) -> None:
    tiles = [t["file"] for t in _index(pipeline_repo)["tiles"][:3]]
    paths = [tiles[0], "../dvc.lock", "missing.tif", tiles[1], "x.txt", tiles[2]]
    got = client.post("/infer/batch", json={"tile_paths": paths})
    assert got.status_code == 200
    body = got.json()
    assert [r["tile_path"] for r in body["results"]] == paths
    assert [r["status"] for r in body["results"]] == [200, 400, 404, 200, 400, 200]
    assert (body["succeeded"], body["failed"]) == (3, 3)
    for item in body["results"]:
        assert (item["result"] is None) == (item["status"] != 200)
        assert (item["detail"] is None) == (item["status"] == 200)
    single = client.post("/infer", json={"tile_path": tiles[1]}).json()
    assert body["results"][3]["result"] == single


@pytest.mark.parametrize("paths", [[], ["a.tif"] * (MAX_BATCH + 1)])
def test_batch_length_is_bounded(client: TestClient, paths: list[str]) -> None:
    got = client.post("/infer/batch", json={"tile_paths": paths})
    assert got.status_code == 422


@pytest.mark.parametrize(
    "body",
    [{}, {"tile_path": ""}, {"tile_path": 3}, {"tile_path": "a.tif", "extra": 1}, [1]],
)
def test_malformed_request_bodies_are_422(client: TestClient, body: object) -> None:
    assert client.post("/infer", json=body).status_code == 422


def _samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_requests_predictions_and_name_the_model(
    client: TestClient,
    pipeline_repo: Path,
) -> None:
    tile = _index(pipeline_repo)["tiles"][0]["file"]
    before = _samples(client.get("/metrics").text)
    prediction = client.post("/infer", json={"tile_path": tile}).json()["prediction"]
    client.post("/infer", json={"tile_path": "missing.tif"})
    client.get("/no/such/route")
    after = _samples(client.get("/metrics").text)
    md5 = lockfile.pin(lockfile.read_lock(pipeline_repo / "dvc.lock")).model.md5
    version = json.loads((pipeline_repo / "data" / "model.json").read_text())["version"]

    def grew(name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return after.get(key, 0.0) - before.get(key, 0.0)

    requests = "satpipe_http_requests_total"
    assert grew(requests, method="POST", route="/infer", status="200") == 1
    assert grew(requests, method="POST", route="/infer", status="404") == 1
    assert grew(requests, method="GET", route="unmatched", status="404") == 1
    duration = "satpipe_http_request_duration_seconds_count"
    assert grew(duration, method="POST", route="/infer") == 2
    predictions = "satpipe_predictions_total"
    assert grew(predictions, prediction=prediction, model_version=version) == 1
    info = (
        "satpipe_model_info",
        frozenset(
            {
                "model_version": version,
                "model_md5": md5,
                "origin": "workspace:data/model.json",
            }.items()
        ),
    )
    assert after[info] == 1
    assert after[("satpipe_model_ready", frozenset())] == 1


def test_docs_and_openapi_describe_every_endpoint(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths) >= {
        "/infer",
        "/infer/upload",
        "/infer/batch",
        "/health/live",
        "/health/ready",
        "/model",
        "/metrics",
    }


def test_api_key_is_off_by_default_and_checked_when_set(
    pipeline_repo: Path,
    make_client: Callable[..., TestClient],
) -> None:
    tile = _index(pipeline_repo)["tiles"][0]["file"]
    client = make_client(pipeline_repo, api_key="s3cret")
    for headers in ({}, {"X-API-Key": "wrong"}):
        got = client.post("/infer", json={"tile_path": tile}, headers=headers)
        assert got.status_code == 401 and "X-API-Key" in got.json()["detail"]
        assert client.get("/model", headers=headers).status_code == 401
    ok = client.post("/infer", json={"tile_path": tile}, headers={"X-API-Key": "s3cret"})
    assert ok.status_code == 200
    assert client.get("/health/ready").status_code == 200
    assert client.get("/metrics").status_code == 200


def test_cors_is_off_by_default_and_allows_configured_origins(
    client: TestClient,
    pipeline_repo: Path,
    make_client: Callable[..., TestClient],
) -> None:
    origin = {"Origin": "https://maps.example.org"}
    assert "access-control-allow-origin" not in client.get("/health/live", headers=origin).headers
    cors = make_client(pipeline_repo, cors_origins=("https://maps.example.org",))
    got = cors.get("/health/live", headers=origin)
    assert got.headers["access-control-allow-origin"] == "https://maps.example.org"
    other = cors.get("/health/live", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_settings_come_from_satpipe_variables() -> None:
    got = Settings.from_env(
        {
            "SATPIPE_REPO": "/srv/pipeline",
            "SATPIPE_REV": "v1",
            "SATPIPE_CORS_ORIGINS": "https://a.example, https://b.example",
            "SATPIPE_MAX_UPLOAD_BYTES": "2048",
            "SATPIPE_CLASSIFY_THREADS": "3",
            "OTHER": "ignored",
        }
    )
    assert got.repo == Path("/srv/pipeline") and got.rev == "v1"
    assert got.cors_origins == ("https://a.example", "https://b.example")
    assert got.max_upload_bytes == 2048 and got.api_key is None
    assert got.classify_threads == 3 and got.switch_interval_ms == 0.05


def test_the_gil_switch_interval_is_set_while_serving_and_restored(pipeline_repo: Path) -> None:
    before = sys.getswitchinterval()
    app = create_app(Settings(repo=pipeline_repo, switch_interval_ms=0.5, classify_threads=1))
    with TestClient(app) as started:
        assert sys.getswitchinterval() == pytest.approx(0.0005)
        assert app.state.limiter.total_tokens == 1
        tile = next(iter(_index(pipeline_repo)["tiles"]))["file"]
        assert started.post("/infer", json={"tile_path": tile}).status_code == 200
    assert sys.getswitchinterval() == before


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SATPIPE_MAX_UPLOAD_BYTE": "1"}, "unknown setting SATPIPE_MAX_UPLOAD_BYTE"),
        ({"SATPIPE_MAX_UPLOAD_BYTES": "lots"}, "SATPIPE_MAX_UPLOAD_BYTES='lots'"),
        ({"SATPIPE_LOG_LEVEL": "LOUD"}, "SATPIPE_LOG_LEVEL='LOUD'"),
        ({"SATPIPE_CLASSIFY_THREADS": "0"}, "SATPIPE_CLASSIFY_THREADS='0'"),
        ({"SATPIPE_SWITCH_INTERVAL_MS": "0"}, "SATPIPE_SWITCH_INTERVAL_MS='0'"),
    ],
)
def test_bad_settings_fail_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)
