"""satpipe.core.lockfile: parsing dvc.lock, the pin, and finding pinned bytes by md5."""

# Fixtures are imported from tests.serve_fixtures; pytest injects them as same-named arguments.
# ruff: noqa: F811

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import yaml

from satpipe.core import lockfile
from satpipe.core.errors import LockfileError
from tests.serve_fixtures import pipeline_repo, repo_copy, run  # noqa: F401

MODEL_MD5 = "e62e36b189ba3e12ae46b09b718fabf5"
INDEX_MD5 = "31e619cf48659b4aaa0f95d840ace6a5"
LOCK = f"""\
schema: '2.0'
stages:
  tile:
    cmd: python -m stages.tile
    params:
      params.yaml:
        tile:
          size: 64
          stride:
          keep_partial: false
    outs:
    - path: data/tile_index.json
      hash: md5
      md5: {INDEX_MD5}
      size: 10
    - path: data/tiles
      hash: md5
      md5: 257071480ae4efacbd4ac3432bbc18db.dir
      size: 100
      nfiles: 3
  train:
    cmd: python -m stages.train
    params:
      params.yaml:
        train:
          fraction: 0.5
          seed: 0
    outs:
    - path: data/model.json
      hash: md5
      md5: {MODEL_MD5}
      size: 4957
"""


def test_params_declared_key_by_key_read_as_a_section() -> None:
    text = LOCK.replace(
        "        train:\n          fraction: 0.5\n          seed: 0\n",
        "        train.fraction: 0.5\n        train.seed: 0\n",
    )
    assert "train.fraction" in text
    assert lockfile.pin(lockfile.parse_lock(text)).train_params == {"fraction": 0.5, "seed": 0}


def test_pin_reads_model_params_and_tiling_from_the_lock() -> None:
    pin = lockfile.pin(lockfile.parse_lock(LOCK))
    assert pin.model == lockfile.LockedOutput("data/model.json", MODEL_MD5, 4957)
    assert pin.tile_index.md5 == INDEX_MD5
    assert pin.train_params == {"fraction": 0.5, "seed": 0}
    assert pin.tile_params["size"] == 64
    assert pin.train.entry["cmd"] == "python -m stages.train"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("stages: [unclosed", "not valid YAML at line 1"),
        ("just a string", "no 'stages' mapping"),
        ("schema: '1.0'\nstages: {}", "expected '2.0'"),
        (LOCK.replace("  train:", "  trained:"), "no stage 'train'"),
        (LOCK.replace("data/model.json", "data/other.json"), "no output 'data/model.json'"),
        (LOCK.replace(MODEL_MD5, "xyz"), "md5 'xyz'"),
        (LOCK.replace("        train:\n", "        trainer:\n"), "no params section 'train'"),
        (LOCK.replace("        train:\n", "        train_x:\n"), "no params section 'train'"),
    ],
)
def test_malformed_locks_fail_with_one_line_naming_the_file(text: str, message: str) -> None:
    with pytest.raises(LockfileError) as info:
        lockfile.pin(lockfile.parse_lock(text, "some/dvc.lock"), "some/dvc.lock")
    assert message in str(info.value)
    assert str(info.value).startswith("some/dvc.lock")
    assert "\n" not in str(info.value)


def test_missing_lock_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(LockfileError, match=r"dvc.lock: not found; run `dvc pull`"):
        lockfile.read_lock(tmp_path / "dvc.lock")


def test_cache_object_path_is_the_dvc3_layout(tmp_path: Path) -> None:
    got = lockfile.cache_object_path(tmp_path, MODEL_MD5)
    assert got == tmp_path / "files" / "md5" / MODEL_MD5[:2] / MODEL_MD5[2:]
    for bad in ("E62E36B189BA3E12AE46B09B718FABF5", "abc", f"{INDEX_MD5}.dir", "../" * 11):
        with pytest.raises(LockfileError):
            lockfile.cache_object_path(tmp_path, bad)


def _fake_cache(tmp_path: Path, data: bytes) -> tuple[Path, lockfile.LockedOutput]:
    md5 = hashlib.md5(data).hexdigest()
    obj = lockfile.cache_object_path(tmp_path / "cache", md5)
    obj.parent.mkdir(parents=True)
    obj.write_bytes(data)
    return tmp_path / "cache", lockfile.LockedOutput("data/model.json", md5)


def test_read_pinned_prefers_a_matching_workspace_file(tmp_path: Path) -> None:
    cache, out = _fake_cache(tmp_path, b"pinned")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "model.json").write_bytes(b"pinned")
    got = lockfile.read_pinned(tmp_path, out, cache)
    assert (got.data, got.md5, got.origin) == (b"pinned", out.md5, "workspace:data/model.json")


@pytest.mark.parametrize("workspace", [None, b"edited after training"])
def test_read_pinned_falls_back_to_the_cache_object(
    tmp_path: Path, workspace: bytes | None, caplog: pytest.LogCaptureFixture
) -> None:
    cache, out = _fake_cache(tmp_path, b"pinned")
    if workspace is not None:
        (tmp_path / "data").mkdir()
        (tmp_path / "data" / "model.json").write_bytes(workspace)
    got = lockfile.read_pinned(tmp_path, out, cache)
    assert got.data == b"pinned"
    assert got.origin.startswith("cache:")
    assert ("not the pinned" in caplog.text) == (workspace is not None)


def test_read_pinned_without_any_copy_says_what_is_missing_and_how_to_get_it(
    tmp_path: Path,
) -> None:
    cache, out = _fake_cache(tmp_path, b"pinned")
    lockfile.cache_object_path(cache, out.md5).write_bytes(b"bit rot")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "model.json").write_bytes(b"tampered")
    with pytest.raises(LockfileError) as info:
        lockfile.read_pinned(tmp_path, out, cache)
    text = str(info.value)
    assert "data/model.json has md5" in text and "is corrupt" in text
    assert "dvc pull" in text and "dvc repro" in text
    shutil.rmtree(cache)
    with pytest.raises(LockfileError, match="is not in the DVC cache"):
        lockfile.read_pinned(tmp_path, out, cache)


def test_pin_of_a_real_run_points_at_real_cache_objects(pipeline_repo: Path) -> None:
    pin = lockfile.pin(lockfile.read_lock(pipeline_repo / "dvc.lock"))
    cache = lockfile.cache_dir(pipeline_repo)
    assert cache == pipeline_repo / ".dvc" / "cache"
    for out in (pin.model, pin.tile_index):
        obj = lockfile.cache_object_path(cache, out.md5)
        assert hashlib.md5(obj.read_bytes()).hexdigest() == out.md5
        assert obj.read_bytes() == (pipeline_repo / out.path).read_bytes()
    params = yaml.safe_load((pipeline_repo / "params.yaml").read_text())
    assert pin.train_params == params["train"]
    assert pin.tile_params == params["tile"]


def test_cache_dir_follows_dvc_config(repo_copy: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere-cache"
    run(["dvc", "cache", "dir", str(elsewhere)], repo_copy)
    assert lockfile.cache_dir(repo_copy) == elsewhere


def test_cache_dir_outside_a_dvc_project_fails(tmp_path: Path) -> None:
    with pytest.raises(LockfileError, match="not a DVC project"):
        lockfile.cache_dir(tmp_path)


def test_reads_the_pin_of_another_revision(pipeline_repo: Path) -> None:
    old = lockfile.pin(lockfile.parse_lock(lockfile.read_at_rev(pipeline_repo, "dvc.lock", "v1")))
    new = lockfile.pin(lockfile.read_lock(pipeline_repo / "dvc.lock"))
    assert old.model.md5 != new.model.md5
    assert old.train_params["fraction"] == 0.5 and new.train_params["fraction"] == 0.7
    got = lockfile.read_pinned_at_rev(pipeline_repo, old.model, "v1")
    assert got.md5 == old.model.md5 and got.origin == "rev:v1:data/model.json"


def test_unknown_revision_is_a_one_line_error(pipeline_repo: Path) -> None:
    with pytest.raises(LockfileError) as info:
        lockfile.read_at_rev(pipeline_repo, "dvc.lock", "no-such-tag")
    assert "no-such-tag" in str(info.value) and "\n" not in str(info.value)
