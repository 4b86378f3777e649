"""Stand-in Cloud-Optimized GeoTIFFs for the assets of real STAC items, and rewritten items.

The real Sentinel-2 items in ``../shared/data/stac`` (see its ``MANIFEST.md``) point at cloud
storage these machines cannot reach. :func:`standin_item` writes, for chosen assets, a COG on
the asset's own grid (``proj:shape`` / ``proj:transform`` / ``proj:epsg``), or on the part of
that grid covering a window, and a copy of the item whose only change is those assets'
``href`` (pointing at a local server such as :class:`tests.range_server.RangeServer`).

Pixel values are a function of the georeferenced position (the 60 m cell holding the pixel
centre), not of the pixel index: a window stand-in has the same values at the same place as a
full-grid one, and the 10, 20 and 60 m assets of a Sentinel-2 tile (whose grids are aligned on
60 m) agree cell by cell. :func:`value_at` gives the expected value at a map coordinate.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import zlib
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.shutil import copy as rio_copy
from rasterio.warp import transform_bounds
from rasterio.windows import Window, from_bounds
from rasterio.windows import bounds as window_bounds_of

STAC_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "stac"
EARTH_SEARCH_ITEM = "S2A_28QCH_20200714_0_L2A.json"
PLANETARY_COMPUTER_ITEM = "S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531.json"

CELL = 60.0  # metres: the values are constant over 60 m cells, the LCM of 10, 20 and 60 m
BAND_LOW, BAND_SPAN = 1000, 3000  # "band" values: 1000..3999, never the nodata 0
SCL_CODES = np.array([4, 5, 6, 8, 9, 10], dtype=np.uint8)  # vegetation..cirrus; 0 is nodata
KINDS = ("band", "scl", "noise")
_DEFAULT_DTYPE = {"band": "uint16", "scl": "uint8", "noise": "uint8"}


def stac_item_path(name: str) -> Path:
    """The path of a shared real STAC item; skips the calling test when it is absent.

    Args:
        name: The file name in ``../shared/data/stac``, e.g. :data:`EARTH_SEARCH_ITEM`.

    Returns:
        The path of the item JSON.
    """
    path = STAC_DIR / name
    if not path.is_file():
        pytest.skip(f"real STAC item ../shared/data/stac/{name} not present")
    return path


def load_item(path: Path) -> dict[str, Any]:
    """Read a STAC item JSON (key order preserved)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _crs_of(fields: dict[str, Any]) -> CRS | None:
    """The CRS named by the projection-extension fields of an asset or of item properties."""
    if fields.get("proj:epsg") is not None:
        return CRS.from_epsg(int(fields["proj:epsg"]))
    if fields.get("proj:code"):  # projection extension v2
        return CRS.from_user_input(fields["proj:code"])
    if fields.get("proj:wkt2"):
        return CRS.from_wkt(fields["proj:wkt2"])
    if fields.get("proj:projjson"):
        return CRS.from_user_input(json.dumps(fields["proj:projjson"]))
    return None


def item_crs(item: dict[str, Any]) -> CRS | None:
    """The item-level CRS (``properties``' projection fields), or None if it names none."""
    return _crs_of(item.get("properties", {}))


def asset_grid(item: dict[str, Any], key: str) -> tuple[Affine, int, int, CRS]:
    """The pixel grid of one asset of a STAC item.

    Args:
        item: The parsed item.
        key: The asset key, e.g. ``"B04"``.

    Returns:
        ``(transform, width, height, crs)``: the transform from ``proj:transform`` (6 or 9
        numbers), the size from ``proj:shape`` (``[rows, cols]``) and the CRS from the asset's
        projection fields if it has any, else the item properties' (``proj:epsg``, or
        ``proj:code`` / ``proj:wkt2`` / ``proj:projjson``).

    Raises:
        KeyError: If the item has no such asset.
        ValueError: If the asset lacks ``proj:shape`` or ``proj:transform``, or no CRS is
            given.
    """
    asset = item["assets"][key]
    shape = asset.get("proj:shape")
    numbers = asset.get("proj:transform")
    if shape is None or numbers is None:
        raise ValueError(f"asset {key!r} has no proj:shape / proj:transform")
    if len(numbers) not in (6, 9):
        raise ValueError(f"asset {key!r}: proj:transform has {len(numbers)} numbers, not 6 or 9")
    crs = _crs_of(asset) or item_crs(item)
    if crs is None:
        raise ValueError(f"asset {key!r}: no proj:epsg (or other CRS) on the asset or item")
    rows, cols = (int(n) for n in shape)
    return Affine(*(float(n) for n in numbers[:6])), cols, rows, crs


def window_bounds(
    item: dict[str, Any], key: str, row_off: int, col_off: int, size: int
) -> tuple[float, float, float, float]:
    """The bounds of a ``size`` x ``size`` pixel window of an asset's grid.

    Args:
        item: The parsed item.
        key: The asset key whose grid counts the pixels.
        row_off: The window's first row.
        col_off: The window's first column.
        size: The window's width and height in pixels.

    Returns:
        ``(left, bottom, right, top)`` in the asset's CRS.
    """
    transform, _, _, _ = asset_grid(item, key)
    return tuple(window_bounds_of(Window(col_off, row_off, size, size), transform))


# -- pixel values -------------------------------------------------------------------------------


def _positional(
    transform: Affine,
    row_off: int,
    height: int,
    width: int,
    values: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> np.ndarray:
    """``values(cx, cy)`` for a strip of full-width rows; ``(cx, cy)`` are int64 60 m cells.

    On a north-up grid the cell row depends on the pixel row only, so ``values`` is computed
    once per distinct cell row (a 512-row strip at 10 m has 86 of them) and the rows are then
    gathered: much faster than evaluating every pixel.
    """
    cols = np.arange(width, dtype=np.float64) + 0.5
    rows = np.arange(row_off, row_off + height, dtype=np.float64) + 0.5
    a, b, c, d, e, f = transform[:6]
    if b == 0 and d == 0:
        cx = np.floor((c + a * cols) / CELL).astype(np.int64)[np.newaxis, :]
        cy = np.floor((f + e * rows) / CELL).astype(np.int64)
        unique, inverse = np.unique(cy, return_inverse=True)
        table = np.broadcast_to(values(cx, unique[:, np.newaxis]), (len(unique), width))
        return table[inverse]
    x = c + a * cols[np.newaxis, :] + b * rows[:, np.newaxis]
    y = f + d * cols[np.newaxis, :] + e * rows[:, np.newaxis]
    cx = np.floor(x / CELL).astype(np.int64)
    cy = np.floor(y / CELL).astype(np.int64)
    return np.broadcast_to(values(cx, cy), (height, width))


def _band_range(dtype: str) -> tuple[int, int]:
    """``(low, span)`` of "band" values: 1000..3999, or 1..max for too small integer types."""
    if np.issubdtype(np.dtype(dtype), np.integer):
        top = int(np.iinfo(np.dtype(dtype)).max)
        if top < BAND_LOW + BAND_SPAN - 1:
            return 1, min(top, BAND_SPAN)
    return BAND_LOW, BAND_SPAN


def _band_values(cx: np.ndarray, cy: np.ndarray, seed: int, dtype: str) -> np.ndarray:
    low, span = _band_range(dtype)
    # low + (seed*37 + cx*7 + cy*13) % span, with each term reduced before broadcasting so the
    # element-wise work is two int32 operations.
    tx = ((cx * 7) % span).astype(np.int32)
    ty = ((cy * 13 + seed * 37) % span).astype(np.int32)
    total = tx + ty
    total -= span * (total >= span)
    return total + low


def _scl_values(cx: np.ndarray, cy: np.ndarray, seed: int) -> np.ndarray:
    mixed = (cx * 73856093) ^ (cy * 19349663) ^ (seed * 83492791)
    return SCL_CODES[mixed % len(SCL_CODES)]


def _values(cx: np.ndarray, cy: np.ndarray, *, kind: str, seed: int, dtype: str) -> np.ndarray:
    """The values of a positional kind ("band" or "scl") for 60 m cells, as ``dtype``."""
    if kind == "scl":
        return _scl_values(cx, cy, seed).astype(dtype, copy=False)
    return _band_values(cx, cy, seed, dtype).astype(dtype, copy=False)


def value_at(x: float, y: float, *, kind: str = "band", seed: int = 0, dtype: str = "") -> int:
    """The stand-in value at map coordinate ``(x, y)`` (of a pixel whose centre is there).

    Args:
        x: Easting in the raster's CRS.
        y: Northing in the raster's CRS.
        kind: ``"band"`` or ``"scl"`` (``"noise"`` has no positional value).
        seed: The seed the stand-in was written with.
        dtype: The stand-in's data type (default: the kind's default).

    Returns:
        The value every stand-in of that kind and seed has at that place.
    """
    if kind not in ("band", "scl"):
        raise ValueError(f"no positional value for kind {kind!r}")
    cx = np.array(math.floor(x / CELL), dtype=np.int64)
    cy = np.array(math.floor(y / CELL), dtype=np.int64)
    return int(_values(cx, cy, kind=kind, seed=seed, dtype=dtype or _DEFAULT_DTYPE[kind]))


def _strips(height: int, blocksize: int) -> Iterator[tuple[int, int]]:
    for row in range(0, height, blocksize):
        yield row, min(blocksize, height - row)


def _noise(rng: np.random.Generator, shape: tuple[int, int], dtype: str) -> np.ndarray:
    """Uniform random values in 1..max (never the nodata 0): incompressible."""
    kind = np.dtype(dtype)
    if np.issubdtype(kind, np.integer):
        return rng.integers(1, np.iinfo(kind).max, size=shape, dtype=kind, endpoint=True)
    return (rng.random(shape) + 1).astype(kind)


def _overview_factors(width: int, height: int, blocksize: int) -> list[int]:
    """2, 4, 8, ... until the smallest overview fits in one block (as GDAL's COG driver)."""
    factors: list[int] = []
    factor = 2
    while math.ceil(max(width, height) / (factor // 2)) > blocksize:
        factors.append(factor)
        factor *= 2
    return factors


def write_standin(
    path: Path,
    transform: Affine,
    width: int,
    height: int,
    crs: CRS | str | int,
    *,
    dtype: str | None = None,
    count: int = 1,
    kind: str = "band",
    seed: int = 0,
    nodata: float | None = 0,
    blocksize: int = 512,
    compress: str | None = "deflate",
    overviews: bool = True,
    level: int | None = 1,
) -> Path:
    """Write a stand-in Cloud-Optimized GeoTIFF on a given grid.

    The file is written strip by strip (one row of blocks at a time) to a temporary tiled
    GeoTIFF beside ``path``, which gets nearest-neighbour overviews, and is then copied with
    GDAL's ``COG`` driver (``LAYOUT=COG``: all IFDs at the start, overviews before the full
    resolution, tiles of ``blocksize``); the raster never sits whole in memory.

    Args:
        path: The file to write (parent directories are created).
        transform: The grid's affine transform.
        width: Columns.
        height: Rows.
        crs: The CRS (anything ``CRS.from_user_input`` takes; an int is an EPSG code).
        dtype: The data type; default ``uint16`` for ``"band"``, ``uint8`` for ``"scl"`` and
            ``"noise"``.
        count: Bands; for ``"band"`` and ``"scl"``, band ``i`` (0-based) uses seed
            ``seed + i``; ``"noise"`` bands come one after the other from one generator.
        kind: ``"band"``: ``1000 + (seed*37 + 7*cx + 13*cy) % 3000`` with ``(cx, cy)`` the
            60 m cell of the pixel centre (1..max for ``uint8``/``int8``); ``"scl"``:
            Sentinel-2 scene classification codes 4, 5, 6, 8, 9, 10 per 60 m cell; ``"noise"``:
            incompressible random values 1..max from ``numpy.random.default_rng(seed)``
            (for byte-count tests, with ``compress=None``). None of them contains 0.
        seed: Varies the values (see ``kind``).
        nodata: The nodata value recorded in the file (None: none).
        blocksize: Tile width and height.
        compress: A GDAL compression (``"deflate"``, ``"lzw"``, ``"zstd"``...) or None.
        overviews: Add internal overviews (only when the raster is larger than a block).
        level: The compression level for ``deflate``/``zstd``/``lzma``... (None: GDAL's
            default). 1 by default: about 4 times faster than deflate's default 6, and the
            stand-ins' compression ratio does not matter.

    Returns:
        ``path``.

    Raises:
        ValueError: For an unknown ``kind``.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    dtype = dtype or _DEFAULT_DTYPE[kind]
    crs = CRS.from_epsg(crs) if isinstance(crs, int) else CRS.from_user_input(crs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": dtype,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": blocksize,
        "blockysize": blocksize,
        "interleave": "band",
    }
    factors = _overview_factors(width, height, blocksize) if overviews else []
    rng = np.random.default_rng(seed)
    fd, name = tempfile.mkstemp(suffix=".tif", prefix=f".{path.stem}-", dir=path.parent)
    os.close(fd)
    temporary = Path(name)
    try:
        with rasterio.open(temporary, "w", **profile) as dst:
            for row, rows in _strips(height, blocksize):
                window = Window(0, row, width, rows)
                for band in range(count):
                    if kind == "noise":
                        block = _noise(rng, (rows, width), dtype)
                    else:
                        values = partial(_values, kind=kind, seed=seed + band, dtype=dtype)
                        block = _positional(transform, row, rows, width, values)
                    dst.write(np.ascontiguousarray(block, dtype=dtype), band + 1, window=window)
            if factors:
                dst.build_overviews(factors, Resampling.nearest)
        options: dict[str, Any] = {
            "blocksize": blocksize,
            "compress": (compress or "NONE").upper(),
            "overviews": "FORCE_USE_EXISTING" if factors else "NONE",
            "num_threads": "ALL_CPUS",
        }
        if compress and np.issubdtype(np.dtype(dtype), np.integer) and kind == "band":
            options["predictor"] = "YES"
        if compress and level is not None and compress.lower() not in ("lzw", "packbits"):
            options["level"] = str(level)
        rio_copy(temporary, path, driver="COG", **options)
    finally:
        temporary.unlink(missing_ok=True)
    return path


# -- items --------------------------------------------------------------------------------------


def asset_seed(key: str) -> int:
    """The seed of an asset's stand-in: fixed per asset key (independent of other assets)."""
    return zlib.crc32(key.encode()) % 1000


def _window_on_grid(
    transform: Affine, width: int, height: int, bounds: tuple[float, float, float, float]
) -> Window:
    """The integer window of the grid covering ``bounds`` (snapped outward, clipped)."""
    raw = from_bounds(*bounds, transform=transform)
    eps = 1e-6  # pixels: bounds on a pixel edge up to float noise do not add a pixel
    col0 = max(0, math.floor(raw.col_off + eps))
    row0 = max(0, math.floor(raw.row_off + eps))
    col1 = min(width, math.ceil(raw.col_off + raw.width - eps))
    row1 = min(height, math.ceil(raw.row_off + raw.height - eps))
    if col1 <= col0 or row1 <= row0:
        raise ValueError(f"window {bounds} does not overlap the grid")
    return Window(col0, row0, col1 - col0, row1 - row0)


def _asset_layout(asset: dict[str, Any], key: str) -> tuple[int, str | None]:
    """Band count and dtype of a "band" stand-in: 3 x uint8 for a true-colour asset."""
    bands = asset.get("eo:bands") or []
    if key in ("visual", "TCI", "overview") or len(bands) == 3:
        return 3, "uint8"
    return max(1, len(bands)), None


def standin_item(
    item_path: Path,
    out_dir: Path,
    base_url: str,
    assets: list[str],
    *,
    window: tuple[float, float, float, float] | None = None,
    noise: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """Write stand-in COGs for some assets of a real item, and the item pointing at them.

    For each key in ``assets``, writes ``out_dir/<item id>/<key>.tif`` on that asset's grid
    (:func:`asset_grid`): the whole grid, or with ``window`` only the part of it covering the
    window, snapped outward to the asset's pixels (so its transform stays on the asset's
    grid). ``SCL`` is written with ``kind="scl"``, ``visual``/``overview`` as 3 x uint8, others as
    ``kind="band"`` with seed :func:`asset_seed` of the key. Then writes
    ``out_dir/<item id>.json``: the item with only those assets' ``href`` replaced by
    ``base_url + "/<item id>/<key>.tif"``; everything else, key order and formatting (2-space
    indent and final newline, as the shared items) stay, so the file differs from the
    original only on those ``href`` lines. Other assets keep their (unreachable) hrefs.

    Args:
        item_path: The real item JSON (see :func:`stac_item_path`).
        out_dir: Where to write; serve it with ``RangeServer(out_dir)``.
        base_url: The server's base URL, e.g. ``RangeServer.base_url`` (no trailing slash
            needed).
        assets: Asset keys to write stand-ins for.
        window: ``(left, bottom, right, top)`` in the item's CRS; None: the whole grid.
        noise: Asset key -> extra :func:`write_standin` options, for assets (also listed in
            ``assets``) to write as ``kind="noise"`` instead, e.g.
            ``{"B04": {"compress": None}}`` for byte-count tests.

    Returns:
        The path of the rewritten item.

    Raises:
        ValueError: If a ``noise`` key is not in ``assets`` or the window misses a grid.
    """
    item_path, out_dir = Path(item_path), Path(out_dir)
    item = load_item(item_path)
    noise = noise or {}
    stray = set(noise) - set(assets)
    if stray:
        raise ValueError(f"noise keys {sorted(stray)} are not in assets {assets}")
    item_id = item["id"]
    base = base_url.rstrip("/")
    for key in assets:
        transform, width, height, crs = asset_grid(item, key)
        if window is not None:
            bounds = window
            crs_of_item = item_crs(item)
            if crs_of_item is not None and crs_of_item != crs:
                bounds = transform_bounds(crs_of_item, crs, *window)
            part = _window_on_grid(transform, width, height, bounds)
            transform = transform @ Affine.translation(part.col_off, part.row_off)
            width, height = int(part.width), int(part.height)
        options: dict[str, Any]
        if key in noise:
            options = {"kind": "noise", "seed": asset_seed(key), **noise[key]}
        elif key == "SCL":
            options = {"kind": "scl", "seed": asset_seed(key)}
        else:
            count, dtype = _asset_layout(item["assets"][key], key)
            options = {"kind": "band", "seed": asset_seed(key), "count": count, "dtype": dtype}
        write_standin(out_dir / item_id / f"{key}.tif", transform, width, height, crs, **options)
        item["assets"][key]["href"] = f"{base}/{quote(item_id)}/{quote(key)}.tif"
    out = out_dir / f"{item_id}.json"
    out.write_text(json.dumps(item, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return out
