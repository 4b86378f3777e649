"""Serving exactly the pinned model: tampered, missing, cached, re-pinned, another revision."""

# Fixtures are imported from tests.serve_fixtures; pytest injects them as same-named arguments.
# ruff: noqa: F811

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from satpipe.core import lockfile
from tests.serve_fixtures import (  # noqa: F401
    client,
    first_tile,
    make_client,
    pipeline_repo,
    repo_copy,
    run,
    tile_bytes,
)

pytestmark = pytest.mark.slow


def _pin(repo: Path) -> lockfile.Pin:
    return lockfile.pin(lockfile.read_lock(repo / "dvc.lock"))


def _tamper(repo: Path) -> None:
    path = repo / "data" / "model.json"
    model = json.loads(path.read_text())
    model["model"]["threshold"] = 0.0  # everything "bright"
    path.chmod(0o644)
    path.write_text(json.dumps(model))


def _drop_cached_model(repo: Path) -> None:
    lockfile.cache_object_path(repo / ".dvc" / "cache", _pin(repo).model.md5).unlink()


def _assert_nothing_served(client: TestClient, repo: Path, *reason: str) -> None:
    tile = first_tile(repo)
    upload = tile_bytes()
    calls = [
        client.get("/health/ready"),
        client.get("/model"),
        client.post("/infer", json={"tile_path": tile}),
        client.post("/infer/batch", json={"tile_paths": [tile]}),
        client.post("/infer/upload", files={"file": ("t.tif", upload, "image/tiff")}),
    ]
    for got in calls:
        assert got.status_code == 503, got.text
        detail = got.json()["detail"]
        assert detail.startswith("model not ready: ")
        for part in reason:
            assert part in detail
    assert client.get("/health/live").status_code == 200
    metrics = client.get("/metrics").text
    assert "satpipe_model_ready 0.0" in metrics and "satpipe_model_info{" not in metrics


def test_tampered_model_with_its_cache_object_is_served_from_the_cache(
    repo_copy: Path, make_client: Callable[..., TestClient], client: TestClient
) -> None:
    _tamper(repo_copy)
    served = make_client(repo_copy)
    ready = served.get("/health/ready").json()
    assert ready["model_md5"] == _pin(repo_copy).model.md5
    assert ready["origin"].startswith("cache:")
    body = {"tile_path": first_tile(repo_copy)}
    assert served.post("/infer", json=body).json() == client.post("/infer", json=body).json()


def test_tampered_model_without_a_cache_copy_is_not_served(
    repo_copy: Path, make_client: Callable[..., TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    _tamper(repo_copy)
    _drop_cached_model(repo_copy)
    with caplog.at_level(logging.ERROR):
        served = make_client(repo_copy)
    pinned = _pin(repo_copy).model.md5
    _assert_nothing_served(served, repo_copy, f"not the pinned {pinned}", "dvc pull", "dvc repro")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("not ready")]
    assert len(lines) == 1 and "\n" not in lines[0] and "data/model.json has md5" in lines[0]


def test_missing_model_is_loaded_from_the_dvc_cache(
    repo_copy: Path, make_client: Callable[..., TestClient]
) -> None:
    (repo_copy / "data" / "model.json").unlink()
    served = make_client(repo_copy)
    ready = served.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["model_md5"] == _pin(repo_copy).model.md5
    assert ready.json()["origin"].startswith("cache:")
    assert served.post("/infer", json={"tile_path": first_tile(repo_copy)}).status_code == 200


def test_missing_model_and_cache_object_says_how_to_get_it(
    repo_copy: Path, make_client: Callable[..., TestClient]
) -> None:
    (repo_copy / "data" / "model.json").unlink()
    _drop_cached_model(repo_copy)
    served = make_client(repo_copy)
    _assert_nothing_served(
        served, repo_copy, "data/model.json is missing", "not in the DVC cache", "dvc pull"
    )


def test_missing_lock_is_not_ready(repo_copy: Path, make_client: Callable[..., TestClient]) -> None:
    (repo_copy / "dvc.lock").unlink()
    _assert_nothing_served(make_client(repo_copy), repo_copy, "dvc.lock: not found")


def test_serves_the_model_pinned_at_another_revision(
    pipeline_repo: Path, make_client: Callable[..., TestClient], client: TestClient
) -> None:
    old_lock = lockfile.parse_lock(run(["git", "show", "v1:dvc.lock"], pipeline_repo))
    old = lockfile.pin(old_lock)
    assert old.model.md5 != _pin(pipeline_repo).model.md5
    served = make_client(pipeline_repo, rev="v1")
    info = served.get("/model").json()
    assert info["model_md5"] == old.model.md5
    assert info["origin"] == "rev:v1:data/model.json"
    assert info["rev"] == "v1" and info["training_params"]["fraction"] == 0.5
    assert (
        info["lock_entry"]
        == yaml.safe_load(run(["git", "show", "v1:dvc.lock"], pipeline_repo))["stages"]["train"]
    )
    body = {"tile_path": first_tile(pipeline_repo)}
    got = served.post("/infer", json=body).json()
    assert got["model_md5"] == old.model.md5 and got["in_index"] is True
    assert got["model_version"] != client.post("/infer", json=body).json()["model_version"]


def test_an_unknown_revision_is_not_ready_and_names_it(
    pipeline_repo: Path, make_client: Callable[..., TestClient]
) -> None:
    served = make_client(pipeline_repo, rev="no-such-tag")
    got = served.get("/health/ready")
    assert got.status_code == 503 and "'no-such-tag'" in got.json()["detail"]
