"""Map tiles: a run's rasters as XYZ web-map tiles (Web Mercator, 256-pixel PNG).

A *map tile* is the 256 x 256 picture of tile ``(z, x, y)`` of the Web Mercator quad tile matrix
set (``WebMercatorQuad``: the XYZ scheme of Leaflet, MapLibre and OpenStreetMap). rio-tiler
reads it from a raster: it warps the tile's footprint out of the raster's CRS, using the
raster's overviews when zoomed out. Every layer is read with *nearest* resampling, both when
choosing pixels of an overview and when warping, so a class tile holds only class codes the
raster holds, and every tile pixel is a pixel of the raster. Styles:

- *true colour*: the scene's red, green and blue bands (found as the quick-look finds them) with
  the quick-look's stretch (each band's 2nd-98th percentile of the preview, see
  :func:`true_colour`), so tiles look like the quick-look; pixels with no valid band are
  transparent (black in the quick-look). Zoomed out to the preview's resolution or coarser,
  tiles are read from an in-memory copy of the preview's display bands (the scene decimated by
  ingest) with overviews and a mask, instead of the scene, which has no overviews (and rio-tiler
  warps a multi-band raster with a nodata value at full resolution: tens of seconds a tile
  zoomed out, measured on the 700 x 600 test scene);
- *categorical*: a code's colour from a colour table built from the class declaration (the same
  colours as the rasters' palettes and the legend); nodata and codes of no class transparent;
- *ramp*: the winning class's probability byte (1..255) through the ``viridis`` colour map; with
  one band per class, the largest; nodata transparent;
- *errors*: per pixel, the class raster against the label raster (both read for the same tile,
  so aligned) as correct / false positive / false negative / other error, in
  :data:`satpipe.outputs.mask_quicklook.ERROR_COLOURS`, only where a :class:`MaskGrid` (the
  held-out pixels) says so; unlabelled, nodata and unjudged pixels transparent.

A tile of the matrix that misses the raster is a fully transparent tile (:func:`empty_tile`), not
an error: a map client asks for every tile in view. PNGs are written by
:func:`satpipe.outputs.quicklook.encode_png` (pinned libdeflate), so a tile's bytes are the same
on every machine and an ``ETag`` derived from its inputs' md5 is a strong validator. TileJSON,
legends and point queries are in :mod:`satpipe.outputs.map_info`.
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.io import MemoryFile
from rio_tiler.colormap import apply_cmap, cmap
from rio_tiler.constants import WEB_MERCATOR_TMS
from rio_tiler.errors import NoOverviewWarning, TileOutsideBounds
from rio_tiler.io import Reader
from rio_tiler.models import ImageData

from satpipe.core.raster import open_scene
from satpipe.outputs.mask_quicklook import ERROR_COLOURS, error_kinds, reference_classes
from satpipe.outputs.quicklook import (
    QUICKLOOK_MAX_SIDE,
    display_bands,
    encode_png,
    stretch,
    stretch_band,
)

TILE_SIZE = 256
MAX_ZOOM = 24  # the deepest level of WebMercatorQuad
RAMP = "viridis"
NEAREST: dict[str, Any] = {"resampling_method": "nearest", "reproject_method": "nearest"}
RGBA = tuple[int, int, int, int]
TMS = WEB_MERCATOR_TMS  # the tile matrix set of every tile here


def in_matrix(z: int, x: int, y: int) -> bool:
    """Whether ``(z, x, y)`` is a tile of the Web Mercator matrix set (levels 0..24)."""
    return 0 <= z <= MAX_ZOOM and 0 <= x < 2**z and 0 <= y < 2**z


@functools.cache
def empty_tile() -> bytes:
    """A fully transparent tile: what a tile of the matrix outside the raster shows."""
    return encode_png(np.zeros((TILE_SIZE, TILE_SIZE, 4), np.uint8))


def _tile(src: Reader, z: int, x: int, y: int, indexes: Sequence[int] | None) -> ImageData | None:
    try:
        return src.tile(x, y, z, tilesize=TILE_SIZE, indexes=indexes, **NEAREST)
    except TileOutsideBounds:
        return None


@contextlib.contextmanager
def open_reader(path: Path | str) -> Iterator[Reader]:
    """rio-tiler's reader of ``path``, without its warning about missing overviews.

    Scenes and label rasters have none by design (zoomed-out scene tiles come from the preview
    copy, :class:`TrueColour`); the warning would be logged on every such tile.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoOverviewWarning)
        src = Reader(str(path))
    with src:
        yield src


def read_tile(
    path: Path | str, z: int, x: int, y: int, indexes: Sequence[int] | None = None
) -> ImageData | None:
    """Tile ``(z, x, y)`` of a raster, read by rio-tiler with nearest resampling.

    Returns:
        The tile's values and mask, or None where the tile misses the raster.
    """
    with open_reader(path) as src:
        return _tile(src, z, x, y, indexes)


def _png(rgb: np.ndarray, alpha: np.ndarray) -> bytes:
    """PNG of ``(3, h, w)`` colours and a ``(h, w)`` alpha; transparent pixels are all zero."""
    rgba = np.concatenate([np.where(alpha > 0, rgb, 0), alpha[None]]).astype(np.uint8)
    return encode_png(rgba.transpose(1, 2, 0))


def colour_table(colours: Sequence[tuple[int, int, int]], first_code: int = 0) -> dict[int, RGBA]:
    """A colour map for rio-tiler: code ``first_code + i`` is ``colours[i]``, opaque.

    Every other byte value is transparent (the table has all 256 entries, so rio-tiler takes
    its lookup-table path).
    """
    table: dict[int, RGBA] = dict.fromkeys(range(256), (0, 0, 0, 0))
    for i, (r, g, b) in enumerate(colours):
        table[first_code + i] = (r, g, b, 255)
    return table


def paint(codes: np.ndarray, valid: np.ndarray, table: Mapping[int, RGBA]) -> bytes:
    """PNG of ``(h, w)`` byte codes through a colour table; invalid pixels transparent."""
    rgb, alpha = apply_cmap(codes[None].astype(np.uint8), dict(table))
    return _png(rgb, np.where(valid, alpha, 0))


def render_categorical(
    path: Path | str, z: int, x: int, y: int, table: Mapping[int, RGBA]
) -> bytes:
    """A class raster's tile: each code in its colour, nodata and unknown codes transparent."""
    img = read_tile(path, z, x, y, indexes=[1])
    if img is None:
        return empty_tile()
    return paint(img.data[0], img.mask > 0, table)


@functools.cache
def ramp_table() -> dict[int, RGBA]:
    """The probability ramp: byte ``round(255 p)`` to its ``viridis`` colour."""
    table = cast(dict[int, Sequence[int]], cmap.get(RAMP))  # a named map is a GDAL-style table
    return {int(k): (int(v[0]), int(v[1]), int(v[2]), int(v[3])) for k, v in table.items()}


def render_ramp(path: Path | str, z: int, x: int, y: int) -> bytes:
    """A probability raster's tile: the winner's byte (the largest band) through the ramp."""
    img = read_tile(path, z, x, y)
    if img is None:
        return empty_tile()
    valid = img.mask > 0
    winner = np.where(np.ma.getmaskarray(img.array), 0, img.data).max(axis=0)
    return paint(winner, valid & (winner > 0), ramp_table())


def _memory_raster(
    data: np.ndarray, transform: Affine, crs: CRS | str, valid: np.ndarray | None = None
) -> MemoryFile:
    """An in-memory tiled GeoTIFF of ``(bands, rows, cols)`` data, with NEAREST overviews.

    ``valid`` (rows, cols) becomes the dataset's mask; there is no nodata value. rio-tiler then
    reads it fast at every zoom level: a multi-band raster with a nodata value is warped
    band by band at full resolution when zoomed out (seconds to minutes a tile, measured).
    """
    count, rows, cols = data.shape
    mem = MemoryFile()
    profile = {"driver": "GTiff", "width": cols, "height": rows, "count": count}
    profile.update(dtype=data.dtype.name, crs=CRS.from_user_input(crs), transform=transform)
    profile.update(tiled=True, blockxsize=TILE_SIZE, blockysize=TILE_SIZE)
    factors = [2**k for k in range(1, 32) if max(rows, cols) >> k >= TILE_SIZE // 2]
    with mem.open(**profile) as dst:
        dst.write(data)
        if valid is not None:
            dst.write_mask(np.where(valid, 255, 0).astype(np.uint8))
        if factors:
            dst.build_overviews(factors, Resampling.nearest)
    return mem


class TrueColour:
    """How a scene is shown in true colour: its display bands, their stretch, its preview.

    Built once per scene from its preview raster. Keeps an in-memory copy of the preview's
    display bands (with a mask and overviews) that zoomed-out tiles are read from; tiles finer
    than the preview are read from the scene itself. A band's invalid pixels are stored in
    the copy as its low limit, which the stretch maps to 0, as the quick-look draws them.

    Attributes:
        bands: 1-based bands shown as red, green, blue (or one grey band).
        limits: per shown band, the values mapped to 0 and 255 (``nan`` when it has no valid
            pixel).
        maxzoom: the deepest zoom level read from the preview copy.
    """

    def __init__(self, preview_path: Path | str, nodata: float | None = None) -> None:
        """Work out the quick-look's bands and stretch from the preview (see :func:`true_colour`).

        Args:
            preview_path: the scene's preview raster.
            nodata: the scene's nodata value, if it overrides the preview's own.
        """
        with open_scene(preview_path) as src:
            bands = display_bands(src.descriptions, src.colorinterp)
            data = src.read(list(bands))
            nodata = src.nodata if nodata is None else nodata
            transform, crs = src.transform, src.crs
        step = math.ceil(max(data.shape[1:]) / QUICKLOOK_MAX_SIDE)
        self.bands = tuple(bands)
        self.limits = tuple(stretch_band(band, nodata)[1] for band in data[:, ::step, ::step])
        invalid = ~np.isfinite(data) if data.dtype.kind == "f" else np.zeros(data.shape, bool)
        if nodata is not None and not math.isnan(nodata):
            invalid |= data == nodata
        for band, bad, (low, _) in zip(data, invalid, self.limits, strict=True):
            if not math.isnan(low):
                band[bad] = math.floor(low)
        self._copy = _memory_raster(data, transform, crs, np.asarray(~invalid.all(axis=0)))
        with self._copy.open() as dataset, Reader(None, dataset=dataset) as src:
            self.maxzoom = int(src.maxzoom)

    def read(self, scene: Path | str, z: int, x: int, y: int) -> ImageData | None:
        """The display bands on tile ``(z, x, y)``: from the preview copy, or the scene."""
        if z > self.maxzoom:
            return read_tile(scene, z, x, y, indexes=list(self.bands))
        with self._copy.open() as dataset, Reader(None, dataset=dataset) as src:
            return _tile(src, z, x, y, list(range(1, len(self.bands) + 1)))


def true_colour(preview_path: Path | str, nodata: float | None = None) -> TrueColour:
    """The quick-look's bands and stretch of a scene, computed from its preview raster.

    As :func:`satpipe.outputs.quicklook.quicklook` does: the display bands, the preview
    decimated to at most :data:`QUICKLOOK_MAX_SIDE` pixels on its long side, and each band's
    2nd-98th percentile of valid pixels.

    Args:
        preview_path: the scene's preview raster.
        nodata: the scene's nodata value, if it overrides the preview's own.
    """
    return TrueColour(preview_path, nodata)


def render_true_colour(scene: Path | str, z: int, x: int, y: int, style: TrueColour) -> bytes:
    """A scene's tile in true colour with ``style``'s stretch; no valid band: transparent.

    Zoomed out to the preview's resolution or coarser, read from the preview (see
    :class:`TrueColour`), else from ``scene``.
    """
    img = style.read(scene, z, x, y)
    if img is None:
        return empty_tile()
    masked = np.ma.getmaskarray(img.array)
    bands = [
        np.where(masked[i], 0, stretch(img.data[i], *style.limits[i]))
        for i in range(len(style.bands))
    ]
    rgb = np.stack(bands * 3 if len(bands) == 1 else bands)
    return _png(rgb, np.where(img.mask > 0, 255, 0))


class MaskGrid:
    """A bool raster on its own grid (e.g. the held-out pixels), tiled like the others.

    Kept in memory (:func:`_memory_raster`); each read opens its own dataset on it, so reads
    from several threads do not share one.
    """

    def __init__(self, mask: np.ndarray, transform: Affine, crs: CRS | str) -> None:
        """Store ``mask`` (``(rows, cols)`` bool) with its ``transform`` and ``crs``."""
        self._file = _memory_raster(mask.astype(np.uint8)[None], transform, crs)

    def tile(self, z: int, x: int, y: int) -> np.ndarray:
        """The mask on tile ``(z, x, y)``, ``(256, 256)`` bool (False outside the grid)."""
        with self._file.open() as dataset, Reader(None, dataset=dataset) as src:
            img = _tile(src, z, x, y, [1])
        if img is None:
            return np.zeros((TILE_SIZE, TILE_SIZE), np.bool_)
        return (img.data[0] > 0) & (img.mask > 0)


def render_errors(
    class_path: Path | str,
    labels_path: Path | str,
    label_codes: Sequence[Sequence[int]],
    z: int,
    x: int,
    y: int,
    judged: MaskGrid | None = None,
    positive: int = 0,
) -> bytes:
    """A class raster's errors against its labels on one tile (see the module docstring).

    Args:
        class_path: the class raster (codes ``0..K-1``).
        labels_path: the label raster on the same grid (raw codes).
        label_codes: per class, the label codes meaning it.
        z: zoom level.
        x: tile column.
        y: tile row.
        judged: the pixels to judge (None: every labelled pixel).
        positive: the class errors are told relative to.
    """
    classes = read_tile(class_path, z, x, y, indexes=[1])
    labels = read_tile(labels_path, z, x, y, indexes=[1])
    if classes is None or labels is None:
        return empty_tile()
    pred = classes.data[0].astype(np.int16)
    ref = reference_classes(labels.data[0], label_codes, None)
    ok = (classes.mask > 0) & (labels.mask > 0) & (ref >= 0) & (pred < len(label_codes))
    if judged is not None:
        ok &= judged.tile(z, x, y)
    kinds = error_kinds(pred, ref, ok, positive)
    return paint(kinds, kinds != 255, colour_table(list(ERROR_COLOURS.values())))
