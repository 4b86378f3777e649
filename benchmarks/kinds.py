"""Benchmark every model kind side by side: batch inference tiles/s and ``/infer`` req/s.

Usage::

    python benchmarks/kinds.py                  # 8192x8192 synthetic scene, tile.size 256
    python benchmarks/kinds.py --size 4096 --duration 5

Builds one DVC project in a temporary directory (the pipeline's code, a synthetic scene of
``--size`` pixels), runs ``dvc repro`` once, then for each kind switches ``train.*`` params and
reproduces (only ``train`` onwards reruns): ``threshold``; ``logistic``; ``onnx`` on features (a
graph computing the threshold rule, built with ``tests/onnx_models.py``); ``onnx`` on pixels (the
mean of a tile's pixels against the same threshold, ``batch`` 64 tiles per ONNX Runtime call).
For each it reports batch inference throughput (from the stage's own run record, so interpreter
start-up is not counted) and the REST service's ``/infer`` throughput and p99 from
``benchmarks/load_serve.py`` (one uvicorn process, 4 connections), all in the same run so the
ratios to the threshold kind are comparable on a noisy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.onnx_models import pixel_mean_graph, threshold_graph  # noqa: E402

PIPELINE = ("dvc.yaml", "params.yaml", ".gitignore", ".dvcignore")
DIRS = ("stages", "satpipe", "models")


def sh(cmd: list[str], cwd: Path) -> str:
    """Run a command that must succeed; return its standard output."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def set_train(repo: Path, values: dict) -> None:
    """Set ``train.*`` params (the others as committed)."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["train"].update({"model": "threshold", "onnx": None, **values})
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def build(repo: Path, size: int) -> None:
    """A DVC project with the pipeline's code and a ``size`` x ``size`` synthetic scene."""
    repo.mkdir(parents=True)
    for name in PIPELINE:
        shutil.copy2(ROOT / name, repo / name)
    for name in DIRS:
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["ingest"].update(width=size, height=size)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(["git", "init", "--quiet"], repo)
    sh(["dvc", "init", "--quiet"], repo)
    sh(["dvc", "config", "core.analytics", "false"], repo)
    sh(["dvc", "repro", "--quiet"], repo)


def serve_rate(repo: Path, duration: float) -> str:
    """``/infer`` throughput and p99 from load_serve.py."""
    out = sh(
        [
            sys.executable,
            str(ROOT / "benchmarks/load_serve.py"),
            "--repo",
            str(repo),
            "--duration",
            str(duration),
            "--no-upload",
        ],
        ROOT,
    )
    line = next((x for x in out.splitlines() if x.startswith("infer")), out.strip())
    match = re.search(r"= (\d+) req/s .*p99 ([\d.]+)", line)
    return f"{match.group(1):>7} req/s  p99 {match.group(2):>6} ms" if match else line


def main() -> None:
    """Build the project, then measure each kind."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of /infer load")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="satpipe-kinds-"))
    try:
        repo = work / "repo"
        build(repo, args.size)
        threshold = json.loads((repo / "data/model.json").read_text())["model"]["threshold"]
        tile = yaml.safe_load((repo / "params.yaml").read_text())["tile"]["size"]
        threshold_graph(repo / "models/threshold.onnx", threshold, dtype=np.float64)
        pixel_mean_graph(repo / "models/pixels.onnx", 4, tile, 2048.0)
        kinds = {
            "threshold": {},
            "logistic": {"model": "logistic"},
            "onnx (features)": {
                "model": "onnx",
                "onnx": {
                    "path": "models/threshold.onnx",
                    "input": "features",
                    "features": ["mean_intensity"],
                    "classes": ["dark", "bright"],
                },
            },
            "onnx (pixels, 64/run)": {
                "model": "onnx",
                "onnx": {
                    "path": "models/pixels.onnx",
                    "input": "pixels",
                    "classes": ["dark", "bright"],
                    "bands": 4,
                    "size": tile,
                    "batch": 64,
                },
            },
        }
        rows = []
        for name, values in kinds.items():
            set_train(repo, values)
            sh(["dvc", "repro", "--quiet"], repo)
            record = json.loads((repo / "runs/batch_infer.json").read_text())
            rows.append((name, record["tiles_inferred"], record["tiles_per_second"]))
            rows[-1] += (serve_rate(repo, args.duration),)
        base = rows[0][2]
        print(f"\nscene {args.size}x{args.size}, tile.size {tile}, {rows[0][1]} tiles inferred")
        print(f"{'kind':<24}{'batch tiles/s':>14}{'x threshold':>12}   /infer (1 process, 4 conn)")
        for name, _, rate, serve in rows:
            print(f"{name:<24}{rate:>14.0f}{rate / base:>12.2f}   {serve}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
