"""Subprocess helpers shared by the tests that run stages, git or dvc."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from satpipe.tiles.packs import read_member

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def tool_env() -> dict[str, str]:
    """Environment for git and dvc: this venv first on PATH, a git identity, no SATPIPE_*."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    env.update(
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.invalid",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.invalid",
        DVC_NO_ANALYTICS="1",
    )
    env.pop("PYTHONPATH", None)
    for key in [k for k in env if k.startswith("SATPIPE_")]:
        env.pop(key)
    return env


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command in ``cwd`` with :func:`tool_env`; fail the test if ``check`` and it fails."""
    done = subprocess.run(
        cmd, cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=600, check=False
    )
    if check and done.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def output(cmd: list[str], cwd: Path) -> str:
    """The standard output of a command that must succeed."""
    return run(cmd, cwd).stdout


def clone_working_tree(dest: Path) -> Path:
    """Clone the committed HEAD, plus the working tree's uncommitted changes for local runs."""
    output(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(dest)], REPO)
    diff = output(["git", "diff", "HEAD", "--binary"], REPO)
    if diff:
        subprocess.run(
            ["git", "apply", "--whitespace=nowarn"], input=diff, text=True, cwd=dest, check=True
        )
    untracked = output(["git", "ls-files", "--others", "--exclude-standard"], REPO)
    for rel in untracked.splitlines():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dest / rel)
    output(["git", "add", "-A"], dest)
    output(["git", "commit", "--quiet", "--allow-empty", "-m", "working tree"], dest)
    return dest


def stage(name: str, *args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m stages.<name> *args`` in ``cwd`` with this repository importable."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", f"stages.{name}", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# Every stage after check_params, with the paths a test directory uses (relative to it).
STAGES: list[tuple[str, list[str]]] = [
    ("ingest", ["scenes", "scenes.json", "ingest.json", "reports/ingest.json"]),
    ("tile", ["scenes", "scenes.json", "tiles", "index.json", "tile.json", "reports/tile.json"]),
    (
        "train",
        ["index.json", "model.json", "train.json", "reports/train.json", "--scenes", "scenes"],
    ),
    (
        "segment",
        ["model.json", "scenes.json", "scenes", "segments", "reports/segment.json"],
    ),
    ("vectorize", ["model.json", "segments", "polygons", "reports/vectorize.json"]),
    (
        "batch_infer",
        ["model.json", "index.json", "tiles", "predictions.json", "predictions.geojson"],
    ),
    (
        "health",
        [
            "model.json",
            "predictions.json",
            "health.json",
            "reports/health.json",
            "--segments",
            "segments",
        ],
    ),
    (
        "evaluate",
        [
            "model.json",
            "index.json",
            "predictions.json",
            "evaluate.json",
            "reports/evaluate.json",
            "plots",
            "--scenes",
            "scenes",
            "--segments",
            "segments",
        ],
    ),
    (
        "maps",
        [
            "scenes",
            "index.json",
            "predictions.json",
            "model.json",
            "maps",
            "quicklook",
            "--segments",
            "segments",
        ],
    ),
]


def run_stages(cwd: Path, until: str = "maps") -> None:
    """Run :data:`STAGES` in ``cwd`` (with its ``params.yaml``) up to ``until``; fail on error."""
    for name, args in STAGES:
        result = stage(name, *args, cwd=cwd)
        if result.returncode != 0:
            pytest.fail(f"stage {name} failed ({result.returncode}):\n{result.stderr}")
        if name == until:
            return


def indexed_tile(tiles_dir: Path, entry: Mapping[str, Any]) -> bytes:
    """A tile's bytes, read from its pack in ``tiles_dir`` where its index entry says."""
    data, _ = read_member(tiles_dir / entry["pack"], entry["offset"], entry["length"])
    return data


def overwrite_indexed_tile(tiles_dir: Path, entry: Mapping[str, Any], data: bytes) -> None:
    """Overwrite a tile's bytes in place in its pack (same length: a tampered tile)."""
    assert len(data) == entry["length"], "a tampered tile keeps its length"
    with open(tiles_dir / entry["pack"], "r+b") as fh:
        fh.seek(entry["offset"])
        fh.write(data)
