"""Outputs move between machines through a DVC remote, and the service starts from a pulled model.

A first clone of the repository runs a small pipeline (700x600 scene, 64-pixel tiles) and pushes
its outputs to a local-directory remote. Fresh clones of that first clone stand for other
machines: each has its own empty DVC cache and only git and the remote to go on. What they pull
must be exactly what ``dvc.lock`` pins, and the REST service must serve it. Expected outputs are
read from each stage's ``outs`` in ``dvc.lock``, never listed here.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from satpipe.core import lockfile
from serve.app import create_app
from serve.settings import Settings
from tests.helpers import clone_working_tree, indexed_tile
from tests.helpers import output as run

SMALL = {"ingest": {"width": 700, "height": 600}, "tile": {"size": 64}}

pytestmark = pytest.mark.slow


def _another_machine(origin: Path, dest: Path) -> Path:
    """A fresh git clone of ``origin``: its own, empty, DVC cache; no outputs."""
    run(["git", "clone", "--quiet", "--no-hardlinks", str(origin), str(dest)], origin)
    return dest


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def _object(root: Path, md5: str) -> Path:
    """Where DVC 3 keeps the object ``md5`` (file, or ``.dir`` listing) under a cache or remote."""
    return root / "files" / "md5" / md5[:2] / md5[2:]


@dataclass(frozen=True)
class Pushed:
    """The first machine after ``dvc repro`` and ``dvc push``: its clone, remote and lock."""

    repo: Path
    remote: Path
    lock: dict[str, Any]

    def outs(self) -> list[dict[str, Any]]:
        """Every output ``dvc.lock`` pins, of every stage."""
        return [o for entry in self.lock["stages"].values() for o in entry.get("outs") or []]

    def uncached(self) -> set[str]:
        """Outputs ``dvc.yaml`` declares with ``cache: false``: git tracks them, not DVC."""
        stages = yaml.safe_load((self.repo / "dvc.yaml").read_text())["stages"]
        return {
            path
            for stage in stages.values()
            for kind in ("outs", "metrics", "plots")
            for item in stage.get(kind) or []
            if isinstance(item, dict)
            for path, flags in item.items()
            if (flags or {}).get("cache") is False
        }

    def out(self, stage: str, suffix: str) -> dict[str, Any]:
        """The output of ``stage`` whose path ends with ``suffix``."""
        outs = self.lock["stages"][stage]["outs"]
        found = [o for o in outs if o["path"].rstrip("/").endswith(suffix)]
        assert len(found) == 1, f"stage {stage!r}: outputs ending {suffix!r}: {found}"
        return found[0]

    def manifest(self, md5: str) -> dict[str, str]:
        """A directory output's listing in the remote: relpath -> md5."""
        listing = json.loads(_object(self.remote, md5).read_text())
        return {entry["relpath"]: entry["md5"] for entry in listing}


@pytest.fixture(scope="module")
def pushed(tmp_path_factory: pytest.TempPathFactory) -> Pushed:
    """A small pipeline run in a clone, committed, and pushed to a local-directory remote."""
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    base = tmp_path_factory.mktemp("remote")
    repo = clone_working_tree(base / "first")
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, values in SMALL.items():
        params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    run(["dvc", "repro", "--quiet"], repo)
    remote = base / "storage"
    run(["dvc", "remote", "add", "-d", "storage", str(remote)], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "--quiet", "-m", "small pipeline, remote"], repo)
    run(["dvc", "push"], repo)
    return Pushed(repo, remote, lockfile.read_lock(repo / "dvc.lock"))


@pytest.fixture(scope="module")
def pulled(pushed: Pushed, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second machine: a fresh clone of the first, after ``dvc pull``."""
    repo = _another_machine(pushed.repo, tmp_path_factory.mktemp("second") / "repo")
    assert not (repo / ".dvc" / "cache").exists()
    run(["dvc", "pull"], repo)
    # Pulling fills the clone's own cache, then checks the outputs out of it.
    assert _object(repo / ".dvc" / "cache", _model_md5(pushed)).is_file()
    return repo


def _model_md5(pushed: Pushed) -> str:
    return lockfile.pin(pushed.lock).model.md5


def _predictions(pushed: Pushed, repo: Path) -> list[dict[str, Any]]:
    path = repo / pushed.out("batch_infer", "predictions.json")["path"]
    records = json.loads(path.read_text())["predictions"]
    assert records, f"{path}: no prediction"
    return records


def _assert_serves_like_batch(client: TestClient, pushed: Pushed, repo: Path) -> None:
    md5 = _model_md5(pushed)
    ready = client.get("/health/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["model_md5"] == md5
    assert client.get("/model").json()["model_md5"] == md5
    records = _predictions(pushed, repo)
    one = client.post("/infer", json={"tile_path": records[0]["path"]})
    assert one.status_code == 200, one.text
    assert (one.json()["prediction"], one.json()["score"]) == (
        records[0]["prediction"],
        records[0]["score"],
    )
    batch = client.post("/infer/batch", json={"tile_paths": [r["path"] for r in records]}).json()
    assert batch["failed"] == 0 and batch["model_md5"] == md5
    got = [(i["result"]["prediction"], i["result"]["score"]) for i in batch["results"]]
    assert got == [(r["prediction"], r["score"]) for r in records]


def test_push_sends_exactly_the_cached_outputs_to_the_remote(pushed: Pushed) -> None:
    model = _object(pushed.remote, _model_md5(pushed))
    assert model.is_file() and _md5(model) == _model_md5(pushed)
    tiles = pushed.out("tile", Path(Settings().tiles_dir).name)
    assert tiles["md5"].endswith(".dir")
    manifest = pushed.manifest(tiles["md5"])
    assert len(manifest) == tiles["nfiles"] >= 1  # one pack per scene
    # Every cached output is in the remote under its md5: files, directory listings and each
    # file of a directory; outputs with `cache: false` stay in git; nothing else is sent.
    expected: dict[str, str] = {}
    uncached = pushed.uncached()
    assert uncached, "dvc.yaml declares no `cache: false` output; the check below means less"
    for out in pushed.outs():
        if out["path"] in uncached:
            continue
        expected[out["md5"]] = out["path"]
        if out["md5"].endswith(".dir"):
            for relpath, md5 in pushed.manifest(out["md5"]).items():
                expected[md5] = f"{out['path']}/{relpath}"
    stored = {
        p.parent.name + p.name for p in (pushed.remote / "files" / "md5").rglob("*") if p.is_file()
    }
    assert stored == set(expected)
    for md5, path in expected.items():  # a listing's md5 is that of its own bytes, too
        assert _md5(_object(pushed.remote, md5)) == md5.removesuffix(".dir"), path
    assert "Everything is up to date" in run(["dvc", "push"], pushed.repo)


def test_pull_restores_every_pinned_output_on_another_machine(pushed: Pushed, pulled: Path) -> None:
    assert "up to date" in run(["dvc", "status"], pulled)
    assert "in sync" in run(["dvc", "status", "--cloud"], pulled)
    outs = pushed.outs()
    paths = {o["path"] for o in outs}
    served = Settings()
    assert {served.model_path, served.tile_index_path, served.tiles_dir} <= paths, paths
    for out in outs:
        path = pulled / out["path"]
        if out["md5"].endswith(".dir"):
            manifest = pushed.manifest(out["md5"])
            files = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
            assert files == set(manifest), out["path"]
            for relpath, md5 in manifest.items():
                assert _md5(path / relpath) == md5, f"{out['path']}/{relpath}"
                assert (path / relpath).read_bytes() == (
                    pushed.repo / out["path"] / relpath
                ).read_bytes()
        else:
            assert _md5(path) == out["md5"], out["path"]
            assert path.read_bytes() == (pushed.repo / out["path"]).read_bytes()


def test_repro_after_pull_runs_nothing(pulled: Path) -> None:
    result = run(["dvc", "repro"], pulled)
    assert "Running stage" not in result, result
    assert "up to date" in result


def test_service_serves_the_pulled_model(pushed: Pushed, pulled: Path) -> None:
    with TestClient(create_app(Settings(repo=pulled))) as client:
        _assert_serves_like_batch(client, pushed, pulled)
        origin = client.get("/health/ready").json()["origin"]
        assert origin == f"workspace:{Settings().model_path}"


def test_service_serves_from_the_cache_when_the_workspace_model_is_gone(
    pushed: Pushed, pulled: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(pulled, repo, symlinks=True)
    (repo / Settings().model_path).unlink()
    with TestClient(create_app(Settings(repo=repo))) as client:
        ready = client.get("/health/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json()["origin"].startswith("cache:")
        _assert_serves_like_batch(client, pushed, repo)


def test_service_without_pull_is_not_ready_and_says_dvc_pull(
    pushed: Pushed, tmp_path: Path
) -> None:
    repo = _another_machine(pushed.repo, tmp_path / "repo")
    with TestClient(create_app(Settings(repo=repo))) as client:
        got = client.get("/health/ready")
        assert got.status_code == 503, got.text
        detail = got.json()["detail"]
        assert f"{Settings().model_path} is missing" in detail and "`dvc pull`" in detail
        assert client.get("/health/live").status_code == 200


def test_pulling_single_outputs(pushed: Pushed, tmp_path: Path) -> None:
    paths = Settings()
    repo = _another_machine(pushed.repo, tmp_path / "repo")
    run(["dvc", "pull", paths.model_path], repo)
    assert _md5(repo / paths.model_path) == _model_md5(pushed)
    assert not (repo / paths.tile_index_path).exists()
    assert not (repo / paths.tiles_dir).exists()
    # The model alone is not enough: the service also verifies the pinned tile index, which
    # says what a tile the model can classify looks like.
    with TestClient(create_app(Settings(repo=repo))) as client:
        got = client.get("/health/ready")
        assert got.status_code == 503, got.text
        detail = got.json()["detail"]
        assert f"{paths.tile_index_path} is missing" in detail and "`dvc pull`" in detail

    # Model and tile index: ready; uploads are classified, tiles by path are not there yet.
    run(["dvc", "pull", paths.tile_index_path], repo)
    assert not (repo / paths.tiles_dir).exists()
    record = _predictions(pushed, pushed.repo)[0]
    index = json.loads((pushed.repo / paths.tile_index_path).read_text())
    entry = next(t for t in index["tiles"] if t["file"] == record["path"])
    tile = indexed_tile(pushed.repo / paths.tiles_dir, entry)
    with TestClient(create_app(Settings(repo=repo))) as client:
        assert client.get("/health/ready").status_code == 200
        by_path = client.post("/infer", json={"tile_path": record["path"]})
        assert by_path.status_code == 404, by_path.text
        assert "is not in the tiles directory (run `dvc pull`" in by_path.json()["detail"]
        upload = client.post("/infer/upload", files={"file": ("t.tif", tile, "image/tiff")})
        assert upload.status_code == 200, upload.text
        assert (upload.json()["prediction"], upload.json()["score"]) == (
            record["prediction"],
            record["score"],
        )

    # And the tiles: everything /infer by path needs.
    run(["dvc", "pull", paths.tiles_dir], repo)
    with TestClient(create_app(Settings(repo=repo))) as client:
        by_path = client.post("/infer", json={"tile_path": record["path"]})
        assert by_path.status_code == 200, by_path.text
        assert by_path.json()["prediction"] == record["prediction"]
        assert by_path.json()["score"] == record["score"]
