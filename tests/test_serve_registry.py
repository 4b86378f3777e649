"""Serving by registry stage: GTO assigns versions to stages; the service serves that pin."""

# Fixtures are imported from tests.serve_fixtures; pytest injects them as same-named arguments.
# ruff: noqa: F811

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from satpipe.core import lockfile
from serve.errors import SettingsError
from serve.service import Service
from serve.settings import Settings
from tests.serve_fixtures import first_tile, make_client, pipeline_repo, run  # noqa: F401

pytestmark = pytest.mark.slow
ARTIFACT = "threshold-model"


def _md5_at(repo: Path, rev: str) -> str:
    return lockfile.pin(
        lockfile.parse_lock(run(["git", "show", f"{rev}:dvc.lock"], repo))
    ).model.md5


def _commit(repo: Path, rev: str) -> str:
    return run(["git", "rev-parse", f"{rev}^{{commit}}"], repo).strip()


@pytest.fixture(scope="module")
def registered(pipeline_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the pipeline with v0.0.1 (tag v1) in prod and v0.0.2 (HEAD) in staging.

    Built once per module (the gto commands take seconds); tests that add tags or commits
    take their own copy through :func:`registry`.
    """
    repo = tmp_path_factory.mktemp("registry") / "repo"
    shutil.copytree(pipeline_repo, repo, symlinks=True)
    run(["gto", "register", ARTIFACT, "v1", "--version", "v0.0.1"], repo)
    run(["gto", "register", ARTIFACT, "HEAD", "--version", "v0.0.2"], repo)
    run(["gto", "assign", ARTIFACT, "--version", "v0.0.1", "--stage", "prod"], repo)
    run(["gto", "assign", ARTIFACT, "--version", "v0.0.2", "--stage", "staging"], repo)
    return repo


@pytest.fixture
def registry(registered: Path, tmp_path: Path) -> Path:
    """A private copy of :func:`registered` to add tags or commits to."""
    dest = tmp_path / "repo"
    shutil.copytree(registered, dest, symlinks=True)
    return dest


def test_serves_the_version_assigned_to_each_stage(
    registered: Path, make_client: Callable[..., TestClient]
) -> None:
    registry = registered
    for stage, version, rev in (("prod", "v0.0.1", "v1"), ("staging", "v0.0.2", "HEAD")):
        served = make_client(registry, artifact=ARTIFACT, stage=stage, reload_interval=0)
        info = served.get("/model").json()
        assert info["registry"] == {
            "artifact": ARTIFACT,
            "version": version,
            "stage": stage,
            "rev": _commit(registry, rev),
        }
        assert info["rev"] == _commit(registry, rev)
        assert info["model_md5"] == _md5_at(registry, rev)
        got = served.post("/infer", json={"tile_path": first_tile(registry)}).json()
        assert got["model_md5"] == _md5_at(registry, rev)


def test_a_new_assignment_is_picked_up_without_a_restart(
    registry: Path, make_client: Callable[..., TestClient]
) -> None:
    served = make_client(registry, artifact=ARTIFACT, stage="prod", reload_interval=0)
    service: Service = served.app.state.service  # type: ignore[attr-defined]
    assert served.get("/model").json()["registry"]["version"] == "v0.0.1"
    service.check_pin()  # no new tag: nothing to do
    assert served.get("/model").json()["registry"]["version"] == "v0.0.1"
    run(["gto", "assign", ARTIFACT, "--version", "v0.0.2", "--stage", "prod"], registry)
    service.check_pin()
    info = served.get("/model").json()
    assert info["registry"]["version"] == "v0.0.2"
    assert info["model_md5"] == _md5_at(registry, "HEAD") != _md5_at(registry, "v1")


@pytest.mark.parametrize(
    ("artifact", "stage", "named"),
    [
        ("no-such-model", "prod", "registry: no artifact 'no-such-model' (artifacts: threshold"),
        (ARTIFACT, "qa", "stage 'qa' of 'threshold-model' has no assignment (stages assigned: "),
    ],
)
def test_unknown_artifact_or_unassigned_stage_is_not_ready(
    registered: Path, make_client: Callable[..., TestClient], artifact: str, stage: str, named: str
) -> None:
    served = make_client(registered, artifact=artifact, stage=stage, reload_interval=0)
    for got in (served.get("/health/ready"), served.post("/infer", json={"tile_path": "x.tif"})):
        assert got.status_code == 503
        assert named in got.json()["detail"] and "\n" not in got.json()["detail"]


def test_a_revision_whose_lock_pins_no_model_is_not_ready(
    registry: Path, make_client: Callable[..., TestClient]
) -> None:
    run(["git", "rm", "--quiet", "dvc.lock"], registry)
    run(["git", "commit", "--quiet", "-m", "no lock"], registry)
    run(["gto", "register", ARTIFACT, "HEAD", "--version", "v0.0.3"], registry)
    run(["gto", "assign", ARTIFACT, "--version", "v0.0.3", "--stage", "broken"], registry)
    served = make_client(registry, artifact=ARTIFACT, stage="broken", reload_interval=0)
    got = served.get("/health/ready")
    assert got.status_code == 503
    assert (
        f"dvc.lock at revision '{_commit(registry, 'HEAD')}': cannot read" in got.json()["detail"]
    )


def test_artifact_and_stage_go_together_and_exclude_rev() -> None:
    with pytest.raises(SettingsError, match="set both SATPIPE_ARTIFACT and SATPIPE_STAGE"):
        Settings.from_env({"SATPIPE_ARTIFACT": ARTIFACT})
    with pytest.raises(SettingsError, match="exclude each other"):
        Settings.from_env({"SATPIPE_ARTIFACT": ARTIFACT, "SATPIPE_STAGE": "a", "SATPIPE_REV": "v1"})
