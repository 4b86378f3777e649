"""Benchmark the pipeline stages on a large synthetic scene: wall time and peak RSS per stage.

Usage::

    python benchmarks/pipeline.py                 # 8192x8192, 4-band uint16, deflate
    python benchmarks/pipeline.py --size 10980    # memory must stay flat in scene size
    python benchmarks/pipeline.py --size 8192 10980

Each stage runs as its own process (``python -m stages.<name>``, exactly the command in dvc.yaml,
without DVC's own hashing), so peak RSS is that stage's alone (``wait4`` rusage). The *floor* is
measured in the same run, also in its own process: read the scene once with rasterio (same
block-aligned windows, same GDAL settings) and write the same tiles with the same GeoTIFF
profile, computing nothing else; once on one thread and once on as many threads as the tile
stage uses. The ratio is taken against the threaded floor, the stricter of the two.
Targets (issue 2): every stage under 300 MiB; tile + train + batch_infer within 1.5x the floor.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

FLOOR = """
import os, sys, numpy as np
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from rasterio import windows
from rasterio.windows import Window
from satpipe.files import read_json
from satpipe.raster import encode_tile, open_scene, read_window, tile_profile
from satpipe.tiling import plan_jobs
os.environ.setdefault("GDAL_CACHEMAX", "64")
scene, meta_path, out, size, compress, workers = sys.argv[1:7]
size, workers = int(size), int(workers)
meta = read_json(meta_path); out = Path(out); out.mkdir()
with open_scene(scene) as src:
    jobs, _ = plan_jobs(src.width, src.height, size, size, False, src.block_shapes[0][0])
    profile = tile_profile(src.count, src.dtypes[0], size, src.crs, meta["nodata"], compress)
    scene_transform = src.transform

def job_run(job):
    with open_scene(scene) as src:
        data = read_window(src, Window(0, job.row_off, src.width, job.rows))
    for win in job.windows:
        r0 = win.row_off - job.row_off
        tile = np.ascontiguousarray(
            data[:, r0:r0 + win.height, win.col_off:win.col_off + win.width])
        blob = encode_tile(tile, windows.transform(win, scene_transform), profile)
        (out / f"{win.row_off}_{win.col_off}.tif").write_bytes(blob)

with ThreadPoolExecutor(workers) as pool:
    list(pool.map(job_run, jobs))
"""


def run(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """Run ``cmd``; return (wall seconds, peak RSS MiB) of that process alone."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    stderr = proc.stderr.read() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{stderr}")
    return elapsed, usage.ru_maxrss / 1024


def bench(size: int, workdir: Path) -> None:
    """Run every stage and the floor on a ``size`` x ``size`` synthetic scene."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["ingest"].update(source="synthetic", width=size, height=size)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    py = sys.executable
    compress = params["tile"]["compress"]
    stages = [
        ("ingest", [py, "-m", "stages.ingest", "scene.tif", "scene.json"]),
        (
            "tile",
            [
                py,
                "-m",
                "stages.tile",
                "scene.tif",
                "scene.json",
                "tiles",
                "index.json",
                "tile_metrics.json",
            ],
        ),
        ("train", [py, "-m", "stages.train", "index.json", "model.json", "train_metrics.json"]),
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
        ("health", [py, "-m", "stages.health", "model.json", "predictions.json", "health.json"]),
    ]
    results = {name: run(cmd, workdir) for name, cmd in stages}
    floor_args = ["scene.tif", "scene.json", "floor_tiles", str(params["tile"]["size"]), compress]
    floor1 = run([py, "-c", FLOOR, *floor_args, "1"], workdir)
    shutil.rmtree(workdir / "floor_tiles")
    floor = run([py, "-c", FLOOR, *floor_args, str(os.cpu_count() or 1)], workdir)
    tiles = len(list((workdir / "tiles").iterdir()))
    scene_mib = (workdir / "scene.tif").stat().st_size / 2**20
    print(
        f"\nscene {size}x{size}, 4-band uint16 deflate ({scene_mib:.0f} MiB on disk), "
        f"tile.size {params['tile']['size']}, {tiles} tiles, {os.cpu_count()} cores"
    )
    print(f"{'stage':<14}{'wall s':>9}{'peak RSS MiB':>15}")
    for name, (secs, rss) in results.items():
        print(f"{name:<14}{secs:>9.2f}{rss:>15.0f}")
    print(f"{'floor 1 thread':<14}{floor1[0]:>9.2f}{floor1[1]:>15.0f}")
    print(f"{'floor threads':<14}{floor[0]:>9.2f}{floor[1]:>15.0f}")
    core = sum(results[n][0] for n in ("tile", "train", "batch_infer"))
    print(
        f"tile+train+batch_infer: {core:.2f} s = {core / floor[0]:.2f}x floor "
        f"(target <= 1.5x); max stage RSS {max(r for _, r in results.values()):.0f} MiB "
        "(target < 300)"
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
