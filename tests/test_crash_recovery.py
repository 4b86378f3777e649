"""A stage killed mid-write: the next ``dvc repro`` cleans up after it and gives the same lock."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from satpipe.core.files import TEMP_MARK
from tests.helpers import run, tool_env
from tests.serve_fixtures import pipeline_repo, repo_copy  # noqa: F401

pytestmark = pytest.mark.slow


def _temporaries(repo: Path) -> list[Path]:
    return sorted((repo / "data").rglob(f"*{TEMP_MARK}*"))


def _writing_tiles(repo: Path) -> bool:
    """Whether the tile stage's temporary directory holds a pack with a tile in it yet.

    Polled while DVC and the stage run: DVC removes ``data/tiles`` and the stage renames its
    temporary away, so a directory may vanish mid-scan.
    """
    for tmp in (repo / "data").glob(f".tiles.{TEMP_MARK}*"):
        try:
            if any(p.suffix == ".zip" and p.stat().st_size > 0 for p in tmp.rglob("*")):
                return True
        except FileNotFoundError:
            continue
    return False


def test_tile_stage_killed_mid_write_leaves_nothing_after_the_rerun(
    repo_copy: Path,  # noqa: F811
) -> None:
    lock = (repo_copy / "dvc.lock").read_bytes()
    proc = subprocess.Popen(
        ["dvc", "repro", "--force", "--single-item", "tile"],
        cwd=repo_copy,
        env=tool_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: dvc and the stage die together
    )
    deadline = time.monotonic() + 120
    try:
        # Kill once the tile stage is writing: its temporary directory holds a tile file.
        while not _writing_tiles(repo_copy):
            assert proc.poll() is None, "the stage finished before it could be killed"
            assert time.monotonic() < deadline, "the tile stage never started writing"
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    litter = _temporaries(repo_copy)
    assert any(p.name.startswith(f".tiles.{TEMP_MARK}") for p in litter), litter
    run(
        ["dvc", "repro", "--force", "--single-item", "tile"], repo_copy
    )  # fails the test if it fails
    assert _temporaries(repo_copy) == []
    assert (repo_copy / "dvc.lock").read_bytes() == lock
    run(["dvc", "status", "--quiet"], repo_copy)  # exit 0: every output matches the lock
