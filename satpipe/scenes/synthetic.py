"""Synthetic scenes: a deterministic, seeded, Sentinel-2-like GeoTIFF for offline runs.

The scene has four uint16 bands (B02 blue, B03 green, B04 red, B08 near infrared, reflectance x
10000), 10 m pixels in UTM zone 33N, and three kinds of surface: water, land (a mix of
vegetation and bare soil) and cloud, drawn from fractal value noise. A slanted strip along the
left edge is nodata (0), as at the edge of a Sentinel-2 swath. It carries an acquisition-time tag.

Same params, same bytes, on any machine: lattice values come from PCG64 uniform doubles, the
noise is interpolated with a smoothstep polynomial using only +, - and * (no transcendental
functions, whose last bits vary between CPUs and libm builds), and per-pixel texture comes from a
generator seeded by the block position, so blocks can be rendered in parallel threads in any order.
The scene is written one row of blocks at a time, so memory stays flat however large it is.

The generator's per-pixel decision is the scene's truth: :func:`write_scene` can write it beside
the scene as a label raster on the same grid, one small integer code per surface
(:data:`SURFACES`), from the same arrays the pixels were drawn from. A pixel is ``cloud`` where the
cloud covers at least half of it (its blending weight is >= 0.5), else ``water``, else ``soil``
where soil makes up at least half of the land mix, else ``vegetation``; ``nodata`` in the swath
edge strip. :data:`LABEL_CLASSES` maps the codes to the model's classes the way Sentinel-2's Scene
Classification is mapped: cloud is bright; water, vegetation and soil are dark.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.windows import Window

log = logging.getLogger(__name__)

BLOCK = 512
BANDS = ("B02", "B03", "B04", "B08")
CRS_EPSG = 32633
ORIGIN = (399960.0, 5900040.0)
PIXEL_SIZE = 10.0
_BASE_TIME = dt.datetime(2024, 6, 1, 10, 30, 21, tzinfo=dt.UTC)
# Band values (B02, B03, B04, B08) of each surface, reflectance x 10000.
_WATER = np.array([900.0, 800.0, 600.0, 300.0])
_VEGETATION = np.array([400.0, 700.0, 450.0, 3200.0])
_SOIL = np.array([1300.0, 1600.0, 1900.0, 2600.0])
_CLOUD = np.array([7500.0, 7600.0, 7700.0, 7900.0])
# Label codes of the surfaces the generator draws (0 is nodata, declared as such in the raster).
SURFACES = {0: "nodata", 1: "water", 2: "vegetation", 3: "soil", 4: "cloud"}
LABEL_CLASSES = {"dark": [1, 2, 3], "bright": [4]}
LABEL_NODATA = 0


def acquisition_time(seed: int) -> str:
    """The deterministic acquisition time written into a synthetic scene's tags."""
    when = _BASE_TIME + dt.timedelta(days=seed % 365)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


class _Noise:
    """Fractal value noise over a ``height`` x ``width`` grid, evaluated window by window."""

    def __init__(self, rng: np.random.Generator, height: int, width: int, cells: tuple[int, ...]):
        self.cells = cells
        self.amplitudes = [0.5**i for i in range(len(cells))]
        self.total = sum(self.amplitudes)
        self.lattices = [rng.random((height // s + 3, width // s + 3)) for s in cells]

    def window(self, row_off: int, col_off: int, rows: int, cols: int) -> np.ndarray:
        out = np.zeros((rows, cols))
        r = np.arange(row_off, row_off + rows, dtype=np.float64)
        c = np.arange(col_off, col_off + cols, dtype=np.float64)
        for cell, amp, lattice in zip(self.cells, self.amplitudes, self.lattices, strict=True):
            gy, gx = r / cell, c / cell
            iy, ix = np.floor(gy).astype(np.intp), np.floor(gx).astype(np.intp)
            fy, fx = gy - iy, gx - ix
            sy, sx = fy * fy * (3.0 - 2.0 * fy), fx * fx * (3.0 - 2.0 * fx)
            lo = iy.min()
            band = lattice[lo : iy.max() + 2]
            horiz = band[:, ix] * (1.0 - sx) + band[:, ix + 1] * sx
            top, bottom = horiz[iy - lo], horiz[iy - lo + 1]
            out += amp * (top * (1.0 - sy)[:, None] + bottom * sy[:, None])
        return out / self.total


def _render(
    terrain: _Noise, cloud: _Noise, seed: int, width: int, window: Window
) -> tuple[np.ndarray, np.ndarray]:
    """The pixels of one window, and its surface codes (see :data:`SURFACES`)."""
    r0, c0, rows, cols = window.row_off, window.col_off, window.height, window.width
    e = terrain.window(r0, c0, rows, cols)
    cl = cloud.window(r0, c0, rows, cols)
    soil = np.clip((e - 0.5) * 2.5, 0.0, 1.0)
    water = e < 0.42
    alpha = np.clip((cl - 0.58) * (1.0 / 0.12), 0.0, 1.0)
    alpha = alpha * alpha * (3.0 - 2.0 * alpha)
    rng = np.random.default_rng([seed, 1, r0, c0])
    out = np.empty((len(BANDS), rows, cols), dtype=np.uint16)
    rr = np.arange(r0, r0 + rows, dtype=np.int64)[:, None]
    cc = np.arange(c0, c0 + cols, dtype=np.int64)[None, :]
    nodata = 20 * cc + 7 * rr < 2 * width
    for b in range(len(BANDS)):
        land = _VEGETATION[b] * (1.0 - soil) + _SOIL[b] * soil
        surface = np.where(water, _WATER[b] * (0.8 + 0.4 * e), land)
        value = surface * (1.0 - alpha) + _CLOUD[b] * alpha
        value = value + rng.integers(-40, 41, size=(rows, cols))
        band = np.clip(np.rint(value), 1, 10000).astype(np.uint16)
        band[nodata] = 0
        out[b] = band
    codes = np.where(water, np.uint8(1), np.where(soil >= 0.5, np.uint8(3), np.uint8(2)))
    codes[alpha >= 0.5] = 4
    codes[nodata] = LABEL_NODATA
    return out, codes.astype(np.uint8)


def _label_profile(width: int, height: int) -> dict:
    return {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 1,
        "dtype": "uint8",
        "crs": CRS.from_epsg(CRS_EPSG),
        "transform": from_origin(*ORIGIN, PIXEL_SIZE, PIXEL_SIZE),
        "nodata": LABEL_NODATA,
        "tiled": True,
        "blockxsize": BLOCK,
        "blockysize": BLOCK,
        "compress": "deflate",
    }


def write_scene(
    path: Path | str,
    *,
    width: int,
    height: int,
    seed: int,
    labels_path: Path | str | None = None,
) -> dict[int, int]:
    """Write the synthetic scene for ``seed`` at ``width`` x ``height`` pixels to ``path``.

    The file is a tiled (512 x 512), deflate-compressed GeoTIFF with nodata 0. With
    ``labels_path``, the surface code of every pixel goes there too: a uint8 GeoTIFF on the same
    grid, nodata 0, with the code meanings in its tags.

    Returns:
        How many pixels have each surface code (:data:`SURFACES`).
    """
    rng = np.random.default_rng([seed, 0])
    terrain = _Noise(rng, height, width, (1024, 512, 256, 128, 64, 32))
    cloud = _Noise(rng, height, width, (512, 256, 128, 64, 32))
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": len(BANDS),
        "dtype": "uint16",
        "crs": CRS.from_epsg(CRS_EPSG),
        "transform": from_origin(*ORIGIN, PIXEL_SIZE, PIXEL_SIZE),
        "nodata": 0,
        "tiled": True,
        "blockxsize": BLOCK,
        "blockysize": BLOCK,
        "compress": "deflate",
        "predictor": 2,
        "interleave": "pixel",
        "bigtiff": "if_safer",
        "num_threads": "ALL_CPUS",  # parallel deflate; the bytes do not depend on it
    }
    log.info("writing synthetic scene %dx%d seed=%d", width, height, seed)
    counts = np.zeros(len(SURFACES), dtype=np.int64)
    with contextlib.ExitStack() as stack:
        dst = stack.enter_context(rasterio.open(path, "w", **profile))
        lab = None
        if labels_path is not None:
            lab = stack.enter_context(
                rasterio.open(labels_path, "w", **_label_profile(width, height))
            )
            lab.update_tags(**{f"CODE_{code}": name for code, name in SURFACES.items()})
        dst.descriptions = BANDS
        dst.update_tags(
            ACQUISITION_TIME=acquisition_time(seed),
            PLATFORM="synthetic Sentinel-2-like",
            SYNTHETIC_SEED=str(seed),
        )
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            for row_off in range(0, height, BLOCK):
                row = [
                    Window(c, row_off, min(BLOCK, width - c), min(BLOCK, height - row_off))
                    for c in range(0, width, BLOCK)
                ]
                blocks = pool.map(lambda w: _render(terrain, cloud, seed, width, w), row)
                for window, (block, codes) in zip(row, blocks, strict=True):
                    dst.write(block, window=window)
                    if lab is not None:
                        lab.write(codes, 1, window=window)
                    counts += np.bincount(codes.ravel(), minlength=len(SURFACES))
    return {code: int(n) for code, n in enumerate(counts)}
