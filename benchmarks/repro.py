"""Benchmark what a user waits for: ``dvc repro`` end to end, against the floor, with its split.

Usage::

    python benchmarks/repro.py              # (a) one 8192^2 scene and (b) eight 4096^2 scenes
    python benchmarks/repro.py --cases a    # only (a)

For each case, in one run and side by side: the input scenes are written once (4-band uint16
synthetic GeoTIFFs, outside the repository); a fresh ``git clone`` of this repository gets
params pointing at them (``source: file``); then it times

- the *floor*: read every scene once with threads and write its tiles once (the tile stage's
  work and nothing else; ``benchmarks/pipeline.py``'s floor, run on the ingested scenes);
- ``dvc repro`` on the fresh clone, and its split: time inside the stage commands (itself split
  into interpreter start-up and imports, measured per stage as ``python -c "import
  stages.<name>"``, and the rest, the stage's work), DVC hashing outputs and dependencies
  (``Stage.save``), DVC cache transfer (``Stage.commit`` and the run-cache), writing
  ``dvc.lock`` (``Stage.dump``), and everything else DVC does (graph, locks, removing old
  outputs, git). The split comes from a second fresh clone run under DVC's cProfile: the stage
  commands are child processes, timed as they are, while DVC's own Python runs several times
  slower under the profiler, so DVC's parts are scaled to the unprofiled run's
  ``wall - stage commands``, in the profiled proportions;
- a no-op ``dvc repro`` and a no-op ``dvc status`` (the median of five runs each);
- ``dvc exp run -S tile.size=512`` on the warm repository (experiment bookkeeping included);

with the peak memory (PSS) of the whole process tree of ``dvc repro``.

Targets (issue 11): ``dvc repro`` within 1.5x of the floor; a no-op ``dvc repro`` under 2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import shutil
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

CASES = {"a": [(8192, 42)], "b": [(4096, seed) for seed in range(1, 9)]}
STAGES = ("check_params", "ingest", "tile", "train", "batch_infer", "health", "evaluate", "maps")
# DVC functions whose cumulative time makes each part of the split (file suffix, function).
PARTS = {
    "stage commands": [("dvc/stage/run.py", "cmd_run")],
    "DVC hashing": [
        ("dvc/stage/__init__.py", "save_deps"),
        ("dvc/stage/__init__.py", "save_outs"),
    ],
    "DVC cache transfer": [("dvc/stage/__init__.py", "commit"), ("dvc/stage/cache.py", "save")],
    "writing dvc.lock": [("dvc/stage/__init__.py", "dump")],
}


def timed(cmd: list[str], cwd: Path) -> float:
    """Wall seconds of ``cmd`` run in ``cwd`` with :func:`tests.helpers.tool_env`; must succeed."""
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=tool_env(), check=True, capture_output=True)
    return time.perf_counter() - start


def _cumulative(stats: pstats.Stats, targets: list[tuple[str, str]]) -> float:
    total = 0.0
    for (path, _, name), row in stats.stats.items():  # type: ignore[attr-defined]
        if any(path.endswith(p) and name == n for p, n in targets):
            total += row[3]  # cumulative time
    return total


def _scenes(inputs: Path, case: str) -> list[Path]:
    paths = []
    for size, seed in CASES[case]:
        path = inputs / f"scene-{size}-{seed}.tif"
        if not path.exists():
            synthetic.write_scene(path, width=size, height=size, seed=seed)
        paths.append(path)
    return paths


def _repo(work: Path, scenes: list[Path], name: str, cache_type: str | None) -> Path:
    repo = work / name
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(repo)], check=True, env=tool_env())
    params = yaml.safe_load((repo / "params.yaml").read_text())
    items = [
        {"source": "file", "path": str(p), "id": p.stem, "acquisition_time": "2024-07-13T10:30:00Z"}
        for p in scenes
    ]
    if len(items) == 1:
        params["ingest"].update(items[0])
    else:
        params["ingest"]["scenes"] = items
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if cache_type:
        subprocess.run(
            [str(Path(sys.executable).parent / "dvc"), "config", "cache.type", cache_type],
            cwd=repo,
            check=True,
            env=tool_env(),
        )
    subprocess.run(
        ["git", "commit", "--quiet", "-am", "bench params"], cwd=repo, check=True, env=tool_env()
    )
    return repo


def bench(case: str, inputs: Path, work: Path, cache_type: str | None) -> None:
    """Run case ``case`` and print its table."""
    scenes = _scenes(inputs, case)
    dvc = [str(Path(sys.executable).parent / "dvc")]
    profiled = _repo(work, scenes, "profiled", cache_type)
    profile = work / "repro.prof"
    measured([*dvc, "repro", "--quiet", "--cprofile-dump", str(profile)], profiled)
    shutil.rmtree(profiled)
    stats = pstats.Stats(str(profile))
    raw = {name: _cumulative(stats, targets) for name, targets in PARTS.items()}
    repo = _repo(work, scenes, "repo", cache_type)
    wall, peak, _ = measured([*dvc, "repro", "--quiet"], repo)
    tiles = json.loads((repo / "data/tile_index.json").read_text())["tile_count"]
    dvc_raw = stats.total_tt - raw["stage commands"]  # type: ignore[attr-defined]
    scale = (wall - raw["stage commands"]) / dvc_raw if dvc_raw > 0 else 1.0
    parts = {k: v if k == "stage commands" else v * scale for k, v in raw.items()}
    startup = sum(timed([sys.executable, "-c", f"import stages.{name}"], repo) for name in STAGES)
    floor_out = work / "floor_tiles"
    size = str(yaml.safe_load((repo / "params.yaml").read_text())["tile"]["size"])
    floor, _, _ = measured(
        [
            sys.executable,
            "-c",
            FLOOR,
            "data/scenes",
            "data/scenes.json",
            str(floor_out),
            size,
            "zstd",
            str(os.cpu_count() or 1),
        ],
        repo,
    )
    shutil.rmtree(floor_out)
    # Second-long commands on a noisy machine: the median of five runs, with the range.
    noops = sorted(timed([*dvc, "repro", "--quiet"], repo) for _ in range(5))
    statuses = sorted(timed([*dvc, "status", "--quiet"], repo) for _ in range(5))
    noop, status = noops[2], statuses[2]
    exp = timed([*dvc, "exp", "run", "--quiet", "-S", "tile.size=512"], repo)
    described = ", ".join(f"{n}x{s}^2" for s, n in _counts(CASES[case]).items())
    print(
        f"\n({case}) {described} 4-band uint16 scenes, {tiles} tiles of 256^2, cache.type "
        f"{cache_type or 'default (reflink,copy)'}"
    )
    print(f"{'':<44}{'seconds':>9}{'x floor':>9}")
    other = wall - sum(parts.values())
    rows = [
        ("floor: read scenes once, write tiles once", floor),
        ("dvc repro, fresh clone", wall),
        ("  stage commands", parts["stage commands"]),
        ("    interpreter start-up and imports", startup),
        ("    the stages' work", parts["stage commands"] - startup),
        ("  DVC hashing (Stage.save)", parts["DVC hashing"]),
        ("  DVC cache transfer (commit, run-cache)", parts["DVC cache transfer"]),
        ("  writing dvc.lock (Stage.dump)", parts["writing dvc.lock"]),
        ("  DVC, everything else", other),
        ("no-op dvc repro (median of 5)", noop),
        ("no-op dvc status (median of 5)", status),
        ("dvc exp run -S tile.size=512, warm", exp),
    ]
    for name, seconds in rows:
        print(f"{name:<44}{seconds:>9.2f}{seconds / floor:>9.2f}")
    print(
        f"no-op dvc repro {noops[0]:.2f}-{noops[-1]:.2f} s, no-op dvc status "
        f"{statuses[0]:.2f}-{statuses[-1]:.2f} s over 5 runs each"
    )
    print(f"peak memory of dvc repro's process tree (PSS): {peak:.0f} MiB")
    print(
        f"dvc repro / floor: {wall / floor:.2f}x (target <= 1.5x); no-op dvc repro {noop:.2f} s "
        "(target < 2 s)"
    )


def _counts(items: list[tuple[int, int]]) -> dict[int, int]:
    out: dict[int, int] = {}
    for size, _ in items:
        out[size] = out.get(size, 0) + 1
    return out


def main() -> None:
    """Run the chosen cases."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="ab", help="which cases: a, b or ab")
    p.add_argument("--cache-type", help="dvc config cache.type for the clones, e.g. hardlink")
    args = p.parse_args()
    os.environ.update(tool_env())  # dvc and the stages it runs use this virtualenv's python
    os.environ.pop("PYTHONPATH", None)
    with tempfile.TemporaryDirectory(prefix="repro-bench-") as tmp:
        inputs = Path(tmp) / "inputs"
        inputs.mkdir()
        for case in args.cases:
            work = Path(tmp) / case
            work.mkdir()
            bench(case, inputs, work, args.cache_type)


if __name__ == "__main__":
    main()
