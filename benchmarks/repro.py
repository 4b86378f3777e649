"""Benchmark ``dvc repro``'s fixed cost and its marginal cost per pixel, against the floor.

Usage::

    python benchmarks/repro.py                      # tile-label and segmentation, 1 and 4 scenes
    python benchmarks/repro.py --runs tile --counts 1 4 --side 4096
    python benchmarks/repro.py --side 1024          # a quick look

Two workloads that differ only in size: ``--counts`` (default 1 and 4) 4-band uint16 synthetic
GeoTIFF scenes of ``--side``² pixels (default 4096), each with its reference labels, written once
outside the repository. For each run kind and each workload, a fresh ``git clone`` of this
repository (its committed HEAD) gets params pointing at the scenes (``source: file``) and runs
``dvc repro`` cold; the floor runs on the same ingested scenes in the same process tree budget:

- ``tile`` (the default tile-label model): the floor reads every scene once with threads and
  writes its tiles once (``benchmarks/pipeline.py``'s floor);
- ``segment`` (``train.model: pixel_logistic``): the floor is the fitted model's bare compute,
  every pixel of every scene read once (512-row windows, threads) and scored
  (``kind.scores``), nothing written.

The slope between the two workloads is the marginal cost per pixel (shown per 4096² scene), the
intercept the fixed cost. Also: the median of five no-op ``dvc repro`` and ``dvc status`` on the
larger workload, and the interpreter start-up and imports of every stage (``python -c "import
stages.<name>"``, summed).

``--incremental N``: instead, a cold run of N scenes, then scene N + 1 added to ``ingest.scenes``
and ``dvc repro`` timed, against a cold one-scene run; with the no-op ``dvc repro`` and ``dvc
status`` at N + 1 scenes (e.g. ``--incremental 99 --side 512`` for status at 100 scenes).

Targets (issue 23): adding one scene to ten at most 1.3x a one-scene run; marginal slope
<= 1.3x the floor's; fixed cost <= 6 s; no-op dvc repro median <= 1.0 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.pipeline import FLOOR  # noqa: E402
from benchmarks.pipeline import run as measured  # noqa: E402
from satpipe.scenes import synthetic  # noqa: E402
from tests.helpers import tool_env  # noqa: E402

# The segmentation floor: the fitted pixel_logistic model's bare compute over every pixel.
SEGMENT_FLOOR = """
import os, sys, numpy as np, rasterio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from rasterio.windows import Window
from satpipe.core.files import read_json
from satpipe.models import model as models
os.environ.setdefault("GDAL_CACHEMAX", "16")
scenes_dir, manifest, model_path, workers = sys.argv[1:5]
kind = models.load(model_path).kind
positions = list(kind._positions)
jobs = []
for meta in read_json(manifest)["scenes"]:
    path = Path(scenes_dir) / f"{meta['id']}.tif"
    with rasterio.open(path) as src:
        jobs += [(path, r, min(512, src.height - r), src.width) for r in range(0, src.height, 512)]

def job(task):
    path, row, rows, width = task
    with rasterio.open(path) as src:
        data = src.read(window=Window(0, row, width, rows))
    return int(np.argmax(kind.scores(data[None, positions]), axis=1).sum())

with ThreadPoolExecutor(int(workers)) as pool:
    list(pool.map(job, jobs))
"""

STAGES = (
    "check_params",
    "ingest",
    "tile",
    "train",
    "batch_infer",
    "segment",
    "vectorize",
    "evaluate",
    "health",
    "maps",
    "catalog",
)
RUNS = {
    "tile": {"train": {"model": "threshold"}},
    "segment": {"train": {"model": "pixel_logistic"}},
}
# Label codes of the synthetic scenes (satpipe.scenes.synthetic.SURFACES) as each run's classes.
LABELS = {
    "tile": {"dark": [1], "bright": [2, 3, 4]},
    "segment": {"water": [1], "vegetation": [2], "soil": [3], "cloud": [4]},
}


def timed(cmd: list[str], cwd: Path) -> float:
    """Wall seconds of ``cmd`` run in ``cwd`` with :func:`tests.helpers.tool_env`; must succeed."""
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=tool_env(), check=True, capture_output=True)
    return time.perf_counter() - start


def scenes(inputs: Path, count: int, side: int) -> list[Path]:
    """``count`` synthetic scenes of ``side``² (seeds 1..count) and their labels, written once."""
    paths = []
    for seed in range(1, count + 1):
        path = inputs / f"scene-{side}-{seed}.tif"
        if not path.exists():
            labels = path.with_suffix(".labels.tif")
            synthetic.write_scene(path, width=side, height=side, seed=seed, labels_path=labels)
        paths.append(path)
    return paths


REV = "HEAD"  # the revision cloned (--rev)


def scene_items(paths: list[Path], run: str) -> list[dict]:
    """``ingest`` params for the scenes at ``paths`` (files with their labels) in run ``run``."""
    return [
        {
            "source": "file",
            "path": str(p),
            "id": p.stem,
            "acquisition_time": "2024-07-13T10:30:00Z",
            "labels": {"path": str(p.with_suffix(".labels.tif")), "classes": LABELS[run]},
        }
        for p in paths
    ]


def clone(work: Path, paths: list[Path], run: str, name: str) -> Path:
    """A fresh clone of this repository at ``REV`` with params for ``paths`` and run ``run``."""
    repo = work / name
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(repo)], check=True, env=tool_env())
    subprocess.run(["git", "checkout", "--quiet", REV], cwd=repo, check=True, env=tool_env())
    params = yaml.safe_load((repo / "params.yaml").read_text())
    items = scene_items(paths, run)
    if len(items) == 1:
        params["ingest"].update(items[0])
    else:
        params["ingest"]["scenes"] = items
    for section, values in RUNS[run].items():
        params[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(
        ["git", "commit", "--quiet", "-am", "bench params"], cwd=repo, check=True, env=tool_env()
    )
    return repo


def floor(repo: Path, run: str, work: Path) -> float:
    """Seconds of the floor of ``run`` on ``repo``'s ingested scenes."""
    workers = str(os.cpu_count() or 1)
    if run == "tile":
        out = work / "floor_tiles"
        size = str(yaml.safe_load((repo / "params.yaml").read_text())["tile"]["size"])
        args = ["data/scenes", "data/scenes.json", str(out), size, "zstd", workers]
        seconds, _, _ = measured([sys.executable, "-c", FLOOR, *args], repo)
        subprocess.run(["rm", "-rf", str(out)], check=True)
        return seconds
    args = ["data/scenes", "data/scenes.json", "data/model.json", workers]
    seconds, _, _ = measured([sys.executable, "-c", SEGMENT_FLOOR, *args], repo)
    return seconds


def fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Slope and intercept of the least-squares line through ``(xs, ys)`` (two points: exact)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return slope, my - slope * mx


def bench(run: str, counts: list[int], side: int, inputs: Path, work: Path) -> None:
    """Print the fixed/marginal table of run kind ``run``."""
    dvc = [str(Path(sys.executable).parent / "dvc")]
    walls, floors, peaks = [], [], []
    repo = work
    for count in counts:
        paths = scenes(inputs, count, side)
        repo = clone(work, paths, run, f"{run}-{count}")
        wall, peak, _ = measured([*dvc, "repro", "--quiet"], repo)
        walls.append(wall)
        peaks.append(peak)
        floors.append(floor(repo, run, work))
        print(
            f"  {run}: {count} x {side}^2: dvc repro {wall:.2f} s (peak PSS {peak:.0f} MiB), "
            f"floor {floors[-1]:.2f} s",
            flush=True,
        )
    noops = sorted(timed([*dvc, "repro", "--quiet"], repo) for _ in range(5))
    statuses = sorted(timed([*dvc, "status", "--quiet"], repo) for _ in range(5))
    startup = {
        name: timed([sys.executable, "-c", f"import stages.{name}"], repo) for name in STAGES
    }
    slope, fixed = fit([float(c) for c in counts], walls)
    fslope, ffixed = fit([float(c) for c in counts], floors)
    lock_lines = len((repo / "dvc.lock").read_text().splitlines())
    print(f"\n{run} run: {', '.join(str(c) for c in counts)} scenes of {side}^2, cold dvc repro")
    print(f"{'':<40}{'dvc repro':>11}{'floor':>9}{'ratio':>8}")
    for count, wall, fl in zip(counts, walls, floors, strict=True):
        print(f"{f'{count} scene(s), s':<40}{wall:>11.2f}{fl:>9.2f}{wall / fl:>8.2f}")
    print(
        f"{f'marginal, s per {side}^2 scene':<40}{slope:>11.2f}{fslope:>9.2f}{slope / fslope:>8.2f}"
    )
    print(f"{'fixed (intercept), s':<40}{fixed:>11.2f}{ffixed:>9.2f}")
    print(
        f"no-op dvc repro median {noops[2]:.2f} s ({noops[0]:.2f}-{noops[-1]:.2f}), no-op dvc "
        f"status median {statuses[2]:.2f} s ({statuses[0]:.2f}-{statuses[-1]:.2f}), 5 runs each"
    )
    print(
        f"stage imports (python -c 'import stages.<name>'): {sum(startup.values()):.2f} s in all; "
        + ", ".join(f"{k} {v:.2f}" for k, v in startup.items())
    )
    print(f"dvc.lock: {lock_lines} lines; peak PSS of dvc repro: {max(peaks):.0f} MiB")
    print(
        f"targets: slope {slope / fslope:.2f}x the floor's (<= 1.3), fixed {fixed:.2f} s (<= 6), "
        f"no-op dvc repro {noops[2]:.2f} s (<= 1.0)"
    )


def _set_scenes(repo: Path, items: list[dict]) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["ingest"]["scenes"] = items
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def incremental(run: str, count: int, side: int, inputs: Path, work: Path, reps: int) -> None:
    """Add one scene to ``count`` and time ``dvc repro``, against a cold one-scene run.

    ``reps`` times each: a cold one-scene run on a fresh clone; and, on one repository of
    ``count`` scenes, the last scene removed (``dvc repro``, untimed) then added again (timed).
    Medians are compared.
    """
    dvc = [str(Path(sys.executable).parent / "dvc")]
    paths = scenes(inputs, count + 1, side)
    ones = [
        measured([*dvc, "repro", "--quiet"], clone(work, paths[:1], run, f"{run}-one-{i}"))[0]
        for i in range(reps)
    ]
    repo = clone(work, paths[:count], run, f"{run}-{count}")
    t_cold, _, _ = measured([*dvc, "repro", "--quiet"], repo)
    every = scene_items(paths, run)
    adds, kept = [], []
    for i in range(reps):
        if i:
            _set_scenes(repo, every[:count])
            measured([*dvc, "repro", "--quiet"], repo)
        _set_scenes(repo, every)
        log: list[str] = []
        adds.append(measured([*dvc, "repro", "--quiet"], repo, log)[0])
        kept = [
            line.split("INFO ")[-1].split(": ", 1)[-1]
            for line in "".join(log).splitlines()
            if "reused" in line or "kept the" in line
        ]
    noops = sorted(timed([*dvc, "repro", "--quiet"], repo) for _ in range(5))
    statuses = sorted(timed([*dvc, "status", "--quiet"], repo) for _ in range(5))
    one, add = statistics.median(ones), statistics.median(adds)
    print(f"\n{run} run, scenes of {side}^2: one scene added to {count} ({reps} times each)")
    print(
        f"  cold dvc repro, 1 scene: median {one:.2f} s ({', '.join(f'{t:.2f}' for t in ones)}); "
        f"{count} scenes: {t_cold:.2f} s"
    )
    print(
        f"  dvc repro after adding scene {count + 1}: median {add:.2f} s "
        f"({', '.join(f'{t:.2f}' for t in adds)}) = {add / one:.2f}x the one-scene run "
        "(target <= 1.3x)"
    )
    for line in kept:
        print(f"    {line.strip()}")
    print(
        f"  at {count + 1} scenes: no-op dvc repro median {noops[2]:.2f} s "
        f"({noops[0]:.2f}-{noops[-1]:.2f}), no-op dvc status median {statuses[2]:.2f} s "
        f"({statuses[0]:.2f}-{statuses[-1]:.2f})"
    )


def main() -> None:
    """Run the chosen run kinds."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    p.add_argument("--counts", nargs=2, type=int, default=[1, 4])
    p.add_argument("--side", type=int, default=4096)
    p.add_argument("--keep", help="work in this directory and keep it")
    p.add_argument(
        "--incremental",
        type=int,
        metavar="N",
        help="instead: add one scene to N (run kinds --runs, scenes of --side)",
    )
    p.add_argument("--reps", type=int, default=3, help="--incremental: runs of each (medians)")
    p.add_argument("--rev", default="HEAD", help="the revision to clone (e.g. an older commit)")
    args = p.parse_args()
    global REV
    REV = args.rev
    os.environ.update(tool_env())  # dvc and the stages it runs use this virtualenv's python
    os.environ.pop("PYTHONPATH", None)
    with tempfile.TemporaryDirectory(prefix="repro-bench-") as tmp:
        base = Path(args.keep) if args.keep else Path(tmp)
        inputs = base / "inputs"
        inputs.mkdir(parents=True, exist_ok=True)
        for run in args.runs:
            work = base / run
            work.mkdir()
            if args.incremental:
                incremental(run, args.incremental, args.side, inputs, work, args.reps)
            else:
                bench(run, args.counts, args.side, inputs, work)


if __name__ == "__main__":
    main()
