"""Benchmark the pipeline stages on a large synthetic scene: wall time and peak RSS per stage.

Usage::

    python benchmarks/pipeline.py                 # 8192x8192, 4-band uint16, deflate
    python benchmarks/pipeline.py --size 10980    # memory must stay flat in scene size
    python benchmarks/pipeline.py --size 8192 10980

Each stage runs as its own process (``python -m stages.<name>``, exactly the command in dvc.yaml,
without DVC's own hashing), so peak RSS is that stage's alone (``wait4`` rusage). The *floor* is
measured in the same run, also in its own process: read each scene once with rasterio (same
block-aligned windows, same GDAL settings) and write the same tiles with the same GeoTIFF
profile, computing nothing else; once on one thread and once on as many threads as there are
cores. The ratio is taken against the threaded floor, the stricter of the two.
Targets (issue 2): every stage under 300 MiB; tile + train + batch_infer within 1.5x the floor.
Target (issue 8): evaluate + maps together at most 15% of the whole pipeline's wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]

FLOOR = """
import os, sys, numpy as np
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from rasterio import windows
from rasterio.windows import Window
from satpipe.core.files import read_json
from satpipe.core.raster import encode_tile, open_scene, read_window, tile_profile
from satpipe.tiles.tiling import plan_jobs
os.environ.setdefault("GDAL_CACHEMAX", "16")
scenes_dir, manifest, out, size, compress, workers = sys.argv[1:7]
size, workers = int(size), int(workers)
tasks = []
for meta in read_json(manifest)["scenes"]:
    scene = Path(scenes_dir) / f"{meta['id']}.tif"
    dest = Path(out) / meta["id"]; dest.mkdir(parents=True)
    with open_scene(scene) as src:
        jobs, _ = plan_jobs(src.width, src.height, size, size, False, src.block_shapes[0][0])
        profile = tile_profile(src.count, src.dtypes[0], size, src.crs, meta["nodata"], compress)
        tasks += [(scene, dest, profile, src.transform, job) for job in jobs]

def job_run(task):
    scene, dest, profile, scene_transform, job = task
    with open_scene(scene) as src:
        data = read_window(src, Window(0, job.row_off, src.width, job.rows))
    for win in job.windows:
        r0 = win.row_off - job.row_off
        tile = np.ascontiguousarray(
            data[:, r0:r0 + win.height, win.col_off:win.col_off + win.width])
        blob = encode_tile(tile, windows.transform(win, scene_transform), profile)
        (dest / f"{win.row_off}_{win.col_off}.tif").write_bytes(blob)

with ThreadPoolExecutor(workers) as pool:
    list(pool.map(job_run, tasks))
"""


def _pss(pid: int) -> int:
    """PSS in bytes from /proc/<pid>/smaps_rollup (much cheaper than parsing smaps)."""
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def run(cmd: list[str], cwd: Path, log: list[str] | None = None) -> tuple[float, float, float]:
    """Run ``cmd``; return (wall s, peak memory MiB of its process tree, peak RSS of one process).

    The command's stderr (its log) is appended to ``log`` when one is given.

    The tree (the stage and its worker processes) is sampled every 25 ms. The tree's
    total is the sum of PSS (proportional set size: a page shared by forked workers is split
    between them, not counted once per process); the single-process figure is plain RSS.
    """
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    # stderr to a file, not a pipe: a pipe read only at the end fills up (64 KiB) and blocks
    # a chatty command (dvc repro over a hundred scenes) for good.
    err = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stderr=err, text=True)
    root = psutil.Process(proc.pid)
    peak_total = peak_one = 0
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
            pss = [_pss(p.pid) for p in procs]
            rss = [p.memory_info().rss for p in procs]
        except (psutil.Error, OSError):
            pss, rss = [], []
        peak_total, peak_one = max(peak_total, sum(pss)), max([peak_one, *rss])
        time.sleep(0.025)
    elapsed = time.perf_counter() - start
    err.seek(0)
    stderr = err.read()
    err.close()
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{stderr}")
    if log is not None:
        log.append(stderr)
    return elapsed, peak_total / 2**20, peak_one / 2**20


def bench(size: int, workdir: Path) -> None:
    """Run every stage and the floor on a ``size`` x ``size`` synthetic scene."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["ingest"].update(source="synthetic", width=size, height=size)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    py = sys.executable
    compress = params["tile"]["compress"]
    stages = [
        (
            "ingest",
            [
                py,
                "-m",
                "stages.ingest",
                "scenes",
                "scenes.json",
                "ingest.json",
                "reports/ingest.json",
            ],
        ),
        (
            "tile",
            [
                py,
                "-m",
                "stages.tile",
                "scenes",
                "scenes.json",
                "tiles",
                "index.json",
                "tile_metrics.json",
                "reports/tile.json",
            ],
        ),
        (
            "train",
            [
                py,
                "-m",
                "stages.train",
                "index.json",
                "model.json",
                "train_metrics.json",
                "reports/train.json",
            ],
        ),
        (
            "batch_infer",
            [
                py,
                "-m",
                "stages.batch_infer",
                "model.json",
                "index.json",
                "tiles",
                "predictions.json",
                "predictions.geojson",
            ],
        ),
        (
            "health",
            [
                py,
                "-m",
                "stages.health",
                "model.json",
                "predictions.json",
                "health.json",
                "reports/health.json",
            ],
        ),
        (
            "evaluate",
            [
                py,
                "-m",
                "stages.evaluate",
                "model.json",
                "index.json",
                "predictions.json",
                "evaluate.json",
                "reports/evaluate.json",
                "plots",
            ],
        ),
        (
            "maps",
            [
                py,
                "-m",
                "stages.maps",
                "scenes",
                "index.json",
                "predictions.json",
                "model.json",
                "maps",
                "quicklook",
            ],
        ),
    ]
    results = {name: run(cmd, workdir) for name, cmd in stages}
    scene = f"scenes/synthetic-{params['ingest']['seed']}.tif"
    floor_args = ["scenes", "scenes.json", "floor_tiles", str(params["tile"]["size"]), compress]
    floor1 = run([py, "-c", FLOOR, *floor_args, "1"], workdir)
    shutil.rmtree(workdir / "floor_tiles")
    floor = run([py, "-c", FLOOR, *floor_args, str(os.cpu_count() or 1)], workdir)
    tiles = json.loads((workdir / "index.json").read_text())["tile_count"]
    scene_mib = (workdir / scene).stat().st_size / 2**20
    print(
        f"\nscene {size}x{size}, 4-band uint16 deflate ({scene_mib:.0f} MiB on disk), "
        f"tile.size {params['tile']['size']}, {tiles} tiles, {os.cpu_count()} cores"
    )
    print(f"{'stage':<16}{'wall s':>8}{'peak MiB, all processes (PSS)':>30}{'(largest one)':>15}")
    rows = {**results, "floor, 1 thread": floor1, "floor, threads": floor}
    for name, (secs, total, one) in rows.items():
        print(f"{name:<16}{secs:>8.2f}{total:>30.0f}{one:>15.0f}")
    core = sum(results[n][0] for n in ("tile", "train", "batch_infer"))
    print(
        f"tile+train+batch_infer: {core:.2f} s = {core / floor1[0]:.2f}x the 1-thread floor, "
        f"{core / floor[0]:.2f}x the threaded floor (target <= 1.5x); max stage memory, all "
        f"processes: {max(r[1] for r in results.values()):.0f} MiB (target < 300)"
    )
    total = sum(r[0] for r in results.values())
    new = results["evaluate"][0] + results["maps"][0]
    print(
        f"evaluate+maps: {new:.2f} s = {new / total:.1%} of the pipeline's {total:.2f} s "
        "(all stages, ingest to maps; target <= 15%)"
    )


def main() -> None:
    """Parse arguments and run the benchmark for each size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs="+", default=[8192])
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    for size in args.size:
        workdir = Path(tempfile.mkdtemp(prefix=f"satpipe-bench-{size}-"))
        try:
            bench(size, workdir)
        finally:
            if args.keep:
                print(f"kept {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
