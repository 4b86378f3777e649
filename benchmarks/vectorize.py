"""Benchmark class polygons: time and peak memory of vectorising a class raster, against a floor.

Usage::

    python benchmarks/vectorize.py               # a 10980x10980 scene (a Sentinel-2 tile, 10 m)
    python benchmarks/vectorize.py --size 2048 --reps 3

Scene: a uint8 class COG (5 classes, nodata 255 in a corner triangle like a swath edge; 10 m
pixels, EPSG:32631), deterministic: a coarse random field (one value per 16 pixels, smoothed),
interpolated bilinearly, plus per-pixel noise, cut into 5 classes by fixed thresholds. That gives
blobs with ragged edges and speckle: hundreds of thousands of regions at full size. Written 512
rows at a time into a tiled GeoTIFF, then copied to a COG by GDAL, outside anything measured.

Each measurement runs in a fresh process (peak RSS ``VmHWM`` of that process, and of its imports
alone), interleaved ``--reps`` times:

- ``read``: read the raster in blocks of ``--block-rows`` rows (the I/O floor);
- ``floor``: read the same blocks and run ``rasterio.features.shapes`` (GDAL polygonize,
  4-connectivity, nodata masked) over each, consuming every polygon: no labelling, no merge
  across blocks, no shapely, no writes;
- ``run``: :func:`satpipe.outputs.polygons.raster_features` (default settings but
  ``--block-rows``) streamed to a FlatGeobuf by :func:`~satpipe.outputs.polygons.write_features`;
- ``stage``: the same streamed to the FlatGeobuf and the GeoJSON in one pass, as the vectorize
  stage writes them.

Prints each figure, the features, and the ratios run / floor and stage / floor (of the medians).
Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GDAL_CACHEMAX", "16")  # as the stages set it (stages/_cli.py)

import numpy as np  # noqa: E402
import rasterio  # noqa: E402
import rasterio.shutil  # noqa: E402
from rasterio.crs import CRS  # noqa: E402
from rasterio.features import shapes  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402
from rasterio.windows import Window  # noqa: E402
from scipy import ndimage  # noqa: E402

from satpipe.outputs.polygons import (  # noqa: E402
    PolygonSettings,
    raster_features,
    write_features,
)

CLASSES = ("water", "vegetation", "soil", "cloud", "shadow")
CELL = 8  # pixels per value of the coarse field
NOISE = 0.03  # per-pixel noise, relative to the coarse field's spread
THRESHOLDS = (-0.8, -0.25, 0.25, 0.8)  # on the standardised field: 5 classes
WRITE_ROWS = 512


def write_scene(path: Path, size: int, seed: int = 22) -> None:
    """The benchmark's class COG (see the module docstring), built 512 rows at a time."""
    rng = np.random.default_rng(seed)
    cells = size // CELL + 3
    coarse = ndimage.gaussian_filter(rng.standard_normal((cells, cells)), 1.5)
    coarse /= coarse.std()
    profile: dict[str, Any] = dict(
        driver="GTiff", width=size, height=size, count=1, dtype="uint8", nodata=255,
        crs=CRS.from_epsg(32631), transform=from_origin(300000, 6000000, 10, 10),
        tiled=True, blockxsize=512, blockysize=512, compress="deflate",
    )  # fmt: skip
    staged = path.with_suffix(".staged.tif")
    cols = np.arange(size)
    with rasterio.open(staged, "w", **profile) as dst:
        for row in range(0, size, WRITE_ROWS):
            rows = np.arange(row, min(row + WRITE_ROWS, size))
            rr, cc = np.meshgrid(rows / CELL + 1, cols / CELL + 1, indexing="ij")
            field = ndimage.map_coordinates(coarse, [rr, cc], order=1)
            noise = np.random.default_rng([seed, row]).standard_normal(field.shape)
            classes = np.digitize(field + NOISE * noise, THRESHOLDS).astype(np.uint8)
            classes[rr * CELL + cc * CELL < size / 6] = 255  # a nodata corner
            dst.write(classes[None], window=Window(0, row, size, len(rows)))
    rasterio.shutil.copy(staged, path, driver="COG", compress="DEFLATE", blocksize=512)
    staged.unlink()


def hwm() -> float:
    """This process's peak RSS, MiB (``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _blocks(path: Path, block_rows: int) -> Any:
    with rasterio.open(path) as src:
        for row in range(0, src.height, block_rows):
            rows = min(block_rows, src.height - row)
            yield src.read(1, window=Window(0, row, src.width, rows))


def child(what: str, path: Path, block_rows: int, out: Path) -> dict[str, Any]:
    """One measurement in this (fresh) process."""
    base = hwm()
    start = time.perf_counter()
    figures: dict[str, Any] = {}
    if what == "read":
        figures["pixels"] = sum(block.size for block in _blocks(path, block_rows))
    elif what == "floor":
        count = 0
        for block in _blocks(path, block_rows):
            for _ in shapes(block, mask=block != 255, connectivity=4):
                count += 1
        figures["polygons"] = count
    else:
        stream = raster_features(path, CLASSES, PolygonSettings(block_rows=block_rows))
        geojson = out.with_suffix(".geojson") if what == "stage" else None
        figures["features"] = write_features(stream, flatgeobuf=out, geojson=geojson).features
        figures["fgb_mib"] = out.stat().st_size / 2**20
        if geojson is not None:
            figures["geojson_mib"] = geojson.stat().st_size / 2**20
    figures.update(seconds=time.perf_counter() - start, base_mib=base, peak_mib=hwm())
    return figures


def measure(what: str, path: Path, block_rows: int, out: Path) -> dict[str, Any]:
    """Run :func:`child` in a fresh interpreter; its figures."""
    argv = [sys.executable, __file__, "--child", what, str(path), str(block_rows), str(out)]
    done = subprocess.run(argv, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    """Build the scene, measure read / floor / run interleaved, print the figures."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", type=int, default=10980, help="scene side, pixels (default 10980)")
    p.add_argument("--block-rows", type=int, default=1024, help="rows per block (default 1024)")
    p.add_argument("--reps", type=int, default=1, help="interleaved repetitions (default 1)")
    p.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        what, path, block_rows, out = args.child
        print(json.dumps(child(what, Path(path), int(block_rows), Path(out))))
        return
    with tempfile.TemporaryDirectory(prefix="bench-vectorize-") as tmp:
        scene = Path(tmp) / "classes.tif"
        t = time.perf_counter()
        write_scene(scene, args.size)
        print(
            f"scene {args.size}x{args.size} uint8 class COG, {len(CLASSES)} classes: written in "
            f"{time.perf_counter() - t:.1f} s ({scene.stat().st_size / 2**20:.1f} MiB)",
            flush=True,
        )
        runs: dict[str, list[dict[str, Any]]] = {"read": [], "floor": [], "run": [], "stage": []}
        for rep in range(args.reps):
            for what in runs:
                r = measure(what, scene, args.block_rows, Path(tmp) / "out.fgb")
                runs[what].append(r)
                extra = {k: v for k, v in r.items() if k not in ("seconds", "base_mib", "peak_mib")}
                print(
                    f"  rep {rep + 1} {what}: {r['seconds']:.1f} s, peak RSS {r['peak_mib']:.0f} "
                    f"MiB (imports {r['base_mib']:.0f} MiB) {json.dumps(extra)}",
                    flush=True,
                )
        median = {w: statistics.median(r["seconds"] for r in rs) for w, rs in runs.items()}
        last, stage = runs["run"][-1], runs["stage"][-1]
        print(
            f"block_rows {args.block_rows}: raster_features streamed to FlatGeobuf "
            f"{median['run']:.1f} s, peak RSS {last['peak_mib']:.0f} MiB, {last['features']} "
            f"features, {last['fgb_mib']:.1f} MiB FlatGeobuf; with the GeoJSON too (the stage) "
            f"{median['stage']:.1f} s, peak RSS {stage['peak_mib']:.0f} MiB; floor (read + GDAL "
            f"polygonize, {runs['floor'][-1]['polygons']} block polygons) {median['floor']:.1f} "
            f"s, peak RSS {runs['floor'][-1]['peak_mib']:.0f} MiB; read alone "
            f"{median['read']:.1f} s; ratio run / floor {median['run'] / median['floor']:.2f}, "
            f"stage / floor {median['stage'] / median['floor']:.2f}"
        )


if __name__ == "__main__":
    main()
