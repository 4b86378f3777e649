"""Benchmark the engines: floor, local with 1 worker and with every core, and Dask, per workload.

Usage::

    python benchmarks/engines.py                      # the three workloads of issue 4
    python benchmarks/engines.py --workloads b c      # a subset

Workloads (synthetic 4-band uint16 deflate scenes, tile.size 256):
  a: one 10980x10980 scene   b: one 4096x4096 scene   c: eight 4096x4096 scenes

For each workload the scenes are ingested once; then the floor (read every scene once and write
its tiles with the same settings, on one thread) and, for each engine, the tile and batch_infer
stages are run as separate processes (``python -m stages.<name>``, the dvc.yaml commands) and
timed, with peak memory of the whole process tree (PSS, see pipeline.py). Outputs of every engine
are compared byte for byte with those of local/1 worker. Targets (issue 4, 2 cores): local with
every worker within 1.3x the floor; 2 workers at least 1.7x faster than 1 on tile and on
batch_infer; Dask LocalCluster within 1.5x of local; (c) at most 9x the time of (b).
"""

from __future__ import annotations

import argparse
import filecmp
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import FLOOR, ROOT, run  # a sibling script, not a package

WORKLOADS = {"a": (1, 10980), "b": (1, 4096), "c": (8, 4096)}
CORES = os.cpu_count() or 1
ENGINES = {
    "local/1": {"name": "local", "workers": 1, "address": None},
    f"local/{CORES}": {"name": "local", "workers": None, "address": None},
    f"dask/{CORES}": {"name": "dask", "workers": None, "address": None},
}


def _params(workdir: Path, count: int, size: int, engine: dict) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    scenes = [
        {"source": "synthetic", "seed": 100 + i, "width": size, "height": size}
        for i in range(count)
    ]
    params["ingest"]["scenes"] = scenes
    params["engine"] = engine
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    return params


def _same_tree(a: Path, b: Path) -> bool:
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or cmp.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    return not mismatch and not errors and all(_same_tree(a / d, b / d) for d in cmp.common_dirs)


def _logged_seconds(log: list[str], what: str) -> float:
    """The seconds a stage logged for its own work (``wrote``/``inferred ... in 1.23s``)."""
    found = re.search(rf"{what} \d+ tiles .*? in (\d+\.\d+)s", log[-1])
    return float(found.group(1)) if found else float("nan")


def bench(key: str, workdir: Path) -> dict[str, float]:
    """Run the floor and every engine on workload ``key``; print and return the times."""
    count, size = WORKLOADS[key]
    py = sys.executable
    params = _params(workdir, count, size, ENGINES["local/1"])
    run([py, "-m", "stages.ingest", "scenes", "scenes.json", "ingest.json", "r.json"], workdir)
    floor = run(
        [
            py,
            "-c",
            FLOOR,
            "scenes",
            "scenes.json",
            "floor_tiles",
            str(params["tile"]["size"]),
            params["tile"]["compress"],
            "1",
        ],
        workdir,
    )
    shutil.rmtree(workdir / "floor_tiles")
    rows: dict[str, tuple[float, float, float]] = {}
    work: dict[str, tuple[float, float]] = {}
    reference: Path | None = None
    for label, engine in ENGINES.items():
        _params(workdir, count, size, engine)
        out = workdir / label.replace("/", "-")
        out.mkdir()
        log: list[str] = []
        tile = run(
            [
                py,
                "-m",
                "stages.tile",
                "../scenes",
                "../scenes.json",
                "tiles",
                "index.json",
                "tile.json",
                "tile_report.json",
                "--params",
                "../params.yaml",
            ],
            out,
            log,
        )
        tile_work = _logged_seconds(log, "wrote")
        run(
            [
                py,
                "-m",
                "stages.train",
                "index.json",
                "model.json",
                "train.json",
                "train_report.json",
                "--params",
                "../params.yaml",
            ],
            out,
        )
        infer = run(
            [
                py,
                "-m",
                "stages.batch_infer",
                "model.json",
                "index.json",
                "tiles",
                "predictions.json",
                "predictions.geojson",
                "--params",
                "../params.yaml",
            ],
            out,
            log,
        )
        rows[label] = (tile[0], infer[0], max(tile[1], infer[1]))
        work[label] = (tile_work, _logged_seconds(log, "inferred"))
        if reference is None:
            reference = out
        elif not _same_tree(reference, out):
            sys.exit(f"error: outputs of {label} differ from local/1")
    tiles = sum(1 for _ in (reference or workdir).rglob("*.tif"))
    print(f"\nworkload {key}: {count} x {size}x{size} 4-band uint16, {tiles} tiles, {CORES} cores")
    print(f"{'run':<12}{'tile s':>8}{'infer s':>9}{'tile+infer s':>14}{'peak MiB (PSS)':>16}")
    print(f"{'floor':<12}{floor[0]:>8.2f}{'':>9}{floor[0]:>14.2f}{floor[1]:>16.0f}")
    for label, (t, i, mem) in rows.items():
        print(f"{label:<12}{t:>8.2f}{i:>9.2f}{t + i:>14.2f}{mem:>16.0f}")
    one, many, dask = (rows[k] for k in ENGINES)
    print(
        f"outputs byte-identical across engines: yes; local/{CORES} tile+infer = "
        f"{(many[0] + many[1]) / floor[0]:.2f}x floor (target <= 1.3); speed-up {CORES} vs 1 "
        f"worker: tile {one[0] / many[0]:.2f}x, infer {one[1] / many[1]:.2f}x (target >= 1.7); "
        f"dask/local: {(dask[0] + dask[1]) / (many[0] + many[1]):.2f}x (target <= 1.5)"
    )
    (one_t, one_i), (many_t, many_i) = work["local/1"], work[f"local/{CORES}"]
    print(
        "  in-stage time (from each stage's log: after interpreter start-up, imports and params; "
        f"batch_infer's excludes writing its outputs): local/1 tile {one_t:.2f}s infer "
        f"{one_i:.2f}s, local/{CORES} tile {many_t:.2f}s infer {many_i:.2f}s: speed-up tile "
        f"{one_t / many_t:.2f}x, infer {one_i / many_i:.2f}x"
    )
    return {"floor": floor[0], "local": many[0] + many[1]}


def main() -> None:
    """Run the chosen workloads and compare (c) with (b)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workloads", nargs="+", choices=sorted(WORKLOADS), default=["a", "b", "c"]
    )
    args = parser.parse_args()
    results = {}
    for key in args.workloads:
        workdir = Path(tempfile.mkdtemp(prefix=f"satpipe-engines-{key}-"))
        try:
            results[key] = bench(key, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    if "b" in results and "c" in results:
        ratio = results["c"]["local"] / results["b"]["local"]
        print(f"\n(c)/(b) local tile+infer time: {ratio:.2f}x for 8x the pixels (target <= 9x)")


if __name__ == "__main__":
    main()
