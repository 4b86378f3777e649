"""Quick-looks: a scene's preview in true colour with its predictions drawn over it, as a PNG.

The input is the scene's *preview* raster (written by ingest, see :mod:`satpipe.scenes.validation`:
the scene decimated by an integer factor, long side at most 1024 pixels). It is shown in true colour
when the bands allow it (red, green and blue found by Sentinel-2 band name, by description or by
GDAL colour interpretation; else bands 1, 2, 3; grey below three bands), each band stretched between
its 2nd and 98th percentiles of valid pixels. Every tile is tinted by its predicted class's
colour (:func:`satpipe.core.classes.class_colour`, integer alpha blending), and a tile whose
reference class differs from its prediction is outlined in magenta. The PNG is written by a minimal
encoder whose compressed bytes come from the pinned libdeflate, so the file is the same on every run
and machine.
"""

from __future__ import annotations

import math
import re
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.enums import ColorInterp
from rasterio.io import MemoryFile

from satpipe.core.classes import class_codes, class_colour, code_of
from satpipe.core.errors import SceneError
from satpipe.core.raster import open_scene
from satpipe.core.records import TilePrediction

OUTLINE_COLOUR = (255, 0, 255)  # magenta: in no palette above
OUTLINE_PIXELS = 2
OVERLAY_ALPHA = 90  # out of 256: about 0.35
QUICKLOOK_MAX_SIDE = 1024
STRETCH_PERCENTILES = (2.0, 98.0)
# Level 6, not 9: on the default 1024x1024 quick-look, 0.15 s instead of 0.63 s for a file 10%
# larger (1.36 vs 1.24 MB); level 9 was a quarter of the maps stage.
PNG_DEFLATE_LEVEL = 6


@dataclass(frozen=True, eq=False)
class QuickLook:
    """A rendered quick-look and how it was made.

    Attributes:
        rgb: ``(rows, cols, 3)`` uint8 image.
        bands: the preview's 1-based bands shown (red, green, blue; or one grey band).
        stretch: per shown band, the ``(low, high)`` values mapped to 0 and 255.
        factor: scene pixels per quick-look pixel along each axis.
    """

    rgb: np.ndarray
    bands: tuple[int, ...]
    stretch: list[tuple[float, float]]
    factor: int


_S2_BANDS = {"red": ("b04", "b4"), "green": ("b03", "b3"), "blue": ("b02", "b2")}
_COLOUR_INTERP = {"red": ColorInterp.red, "green": ColorInterp.green, "blue": ColorInterp.blue}


def display_bands(
    descriptions: Sequence[str | None], colorinterp: Sequence[ColorInterp]
) -> tuple[int, ...]:
    """The 1-based bands to show: red, green, blue with 3 or more bands, else band 1 (grey).

    Red, green and blue are found, in this order of preference, by Sentinel-2 band name in the
    description (``B04``, ``B03``, ``B02``), by a word of the description (``red``, ``green``,
    ``blue``; ``red edge`` is not red), or by GDAL colour interpretation; failing all three,
    bands 1, 2, 3.
    """
    count = len(descriptions)
    if count < 3:
        return (1,)
    words = [re.findall(r"[a-z0-9]+", (d or "").lower()) for d in descriptions]
    rules = [
        lambda colour, i: any(w in _S2_BANDS[colour] for w in words[i]),
        lambda colour, i: colour in words[i] and "edge" not in words[i],
        lambda colour, i: colorinterp[i] == _COLOUR_INTERP[colour],
    ]
    for rule in rules:
        found = [
            next((i + 1 for i in range(count) if rule(colour, i)), None)
            for colour in ("red", "green", "blue")
        ]
        if None not in found and len(set(found)) == 3:
            return tuple(b for b in found if b is not None)
    return (1, 2, 3)


def stretch_band(band: np.ndarray, nodata: float | None) -> tuple[np.ndarray, tuple[float, float]]:
    """Map a band linearly from its 2nd-98th percentile range to 0-255; invalid pixels are 0.

    Valid pixels are finite and not ``nodata``. A band with a single valid value maps it to
    128; a band with none is black and its range is ``(nan, nan)``.
    """
    values = band.astype(np.float64)
    valid = np.isfinite(values)
    if nodata is not None and not math.isnan(nodata):
        valid &= values != nodata
    if not valid.any():
        return np.zeros(band.shape, np.uint8), (math.nan, math.nan)
    low, high = (float(v) for v in np.percentile(values[valid], STRETCH_PERCENTILES))
    shown = stretch(np.where(valid, values, low), low, high)  # invalid (NaN, inf) never cast
    return np.where(valid, shown, 0).astype(np.uint8), (low, high)


def stretch(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map values linearly from ``[low, high]`` to 0..255 (uint8), clipped.

    A range of NaNs (a band with no valid pixel) maps everything to 0, an empty range
    (``high <= low``) to 128. The quick-look and the true-colour map tiles both draw with it.
    """
    if math.isnan(low) or math.isnan(high):
        return np.zeros(values.shape, np.uint8)
    if not high > low:
        return np.full(values.shape, 128, np.uint8)
    scaled = np.rint((values.astype(np.float64) - low) * (255.0 / (high - low)))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _preview_factor(preview: Affine, scene: Affine, name: str) -> int:
    """The integer decimation factor of a preview relative to its scene."""
    ratio = preview.a / scene.a
    factor = round(ratio)
    same_origin = math.isclose(preview.c, scene.c, abs_tol=1e-6 * abs(scene.a)) and math.isclose(
        preview.f, scene.f, abs_tol=1e-6 * abs(scene.e)
    )
    if (
        factor < 1
        or not math.isclose(ratio, factor, rel_tol=1e-9)
        or not math.isclose(preview.e, scene.e * factor, rel_tol=1e-9)
        or not same_origin
    ):
        raise SceneError(
            f"{name}: preview transform {tuple(preview)[:6]} is not the scene transform "
            f"{tuple(scene)[:6]} scaled by an integer factor"
        )
    return factor


def _span(offset: int, length: int, factor: int, limit: int) -> tuple[int, int]:
    """Quick-look pixels whose centre, ``(p + 0.5) * factor`` scene pixels, is in the window."""
    start = -((factor - 2 * offset) // (2 * factor))
    stop = -((factor - 2 * (offset + length)) // (2 * factor))
    return min(max(start, 0), limit), min(max(stop, 0), limit)


def quicklook(
    preview_path: Path | str,
    records: Sequence[TilePrediction],
    scene_transform: Affine,
    classes: Sequence[str],
    references: Mapping[str, str | None] | None = None,
    *,
    nodata: float | None = None,
    colours: Sequence[tuple[int, int, int]] | None = None,
) -> QuickLook:
    """Render a scene's quick-look from its preview raster and its tile records.

    A preview larger than :data:`QUICKLOOK_MAX_SIDE` on its long side is decimated further
    (every m-th pixel). Each tile is tinted with its class colour (alpha
    ``OVERLAY_ALPHA / 256``) over the quick-look pixels whose centre lies in its window; where
    tiles overlap, the last in grid order (lowest, then rightmost) tints. A tile whose
    reference is set and differs from its prediction gets a magenta outline,
    ``OUTLINE_PIXELS`` wide, inside its footprint, drawn over all tints. Invalid pixels are
    black, and tinted like the others inside a tile.

    Args:
        preview_path: the preview GeoTIFF (all bands, transform = scene transform scaled).
        records: the scene's predictions.
        scene_transform: the scene's transform, to find the preview's decimation factor.
        classes: the model's classes, in order.
        references: each tile's reference class, by tile id (absent or None: no reference).
        nodata: the scene's nodata value, if it overrides the preview's own.
        colours: the classes' display colours (None: :func:`satpipe.core.classes.class_colour`).

    Raises:
        ModelError: a record's prediction is not one of ``classes``.
        SceneError: the preview is not the scene decimated by an integer factor.
    """
    codes = class_codes(classes)
    with open_scene(preview_path) as src:
        factor = _preview_factor(src.transform, scene_transform, str(preview_path))
        bands = display_bands(src.descriptions, src.colorinterp)
        data = src.read(list(bands))
        nodata = src.nodata if nodata is None else nodata
    step = math.ceil(max(data.shape[1:]) / QUICKLOOK_MAX_SIDE)
    if step > 1:
        data, factor = data[:, ::step, ::step], factor * step
    channels, stretch = [], []
    for band in data:
        out, limits = stretch_band(band, nodata)
        channels.append(out)
        stretch.append(limits)
    rgb = np.stack(channels * 3 if len(channels) == 1 else channels, axis=-1)
    rows, cols = rgb.shape[:2]

    references = references or {}
    ordered = sorted(records, key=lambda r: (r.window.row_off, r.window.col_off))
    spans = []
    label = np.zeros((rows, cols), dtype=np.uint8)
    for rec in ordered:
        win = rec.window
        r0, r1 = _span(win.row_off, win.height, factor, rows)
        c0, c1 = _span(win.col_off, win.width, factor, cols)
        label[r0:r1, c0:c1] = code_of(rec.prediction, codes, rec.id)
        spans.append((r0, r1, c0, c1))
    if colours is None:
        colours = [class_colour(name, i) for i, name in enumerate(classes)]
    palette = np.array([(0, 0, 0), *colours], dtype=np.int32)
    tinted = label > 0
    blend = rgb[tinted].astype(np.int32) * (256 - OVERLAY_ALPHA)
    blend += palette[label[tinted]] * OVERLAY_ALPHA + 128
    rgb[tinted] = (blend >> 8).astype(np.uint8)
    outline = np.array(OUTLINE_COLOUR, dtype=np.uint8)
    w = OUTLINE_PIXELS
    for rec, (r0, r1, c0, c1) in zip(ordered, spans, strict=True):
        reference = references.get(rec.id)
        if reference is None or reference == rec.prediction or r1 <= r0 or c1 <= c0:
            continue
        rgb[r0 : min(r0 + w, r1), c0:c1] = outline
        rgb[max(r1 - w, r0) : r1, c0:c1] = outline
        rgb[r0:r1, c0 : min(c0 + w, c1)] = outline
        rgb[r0:r1, max(c1 - w, c0) : c1] = outline
    return QuickLook(rgb=rgb, bands=bands, stretch=stretch, factor=factor)


def _deflate_rows(raw: np.ndarray) -> bytes:
    """Compress a 2-D uint8 array, row after row, into one zlib stream with libdeflate.

    The array is written as a one-strip DEFLATE GeoTIFF in memory and the strip is read back:
    a TIFF Deflate strip is a zlib stream. This way the bytes come from the libdeflate bundled
    in the pinned rasterio wheel, like every GeoTIFF's. Python's ``zlib`` (and GDAL's PNG
    driver, through libpng) use the system libz, whose output differs between zlib and
    zlib-ng, so the same image would not give the same file on every machine.
    """
    rows, width = raw.shape
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": rows,
        "count": 1,
        "dtype": "uint8",
        "compress": "deflate",
        "zlevel": PNG_DEFLATE_LEVEL,
        "tiled": False,
        "blockysize": rows,
        # A placeholder georeference: rasterio warns about a missing or identity transform.
        "transform": Affine(1.0, 0.0, 0.0, 0.0, -1.0, float(rows)),
    }
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(raw, 1)
        data = mem.read()
        with mem.open() as src:
            offset = int(src.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1))
            size = int(src.get_tag_item("BLOCK_SIZE_0_0", "TIFF", bidx=1))
    return data[offset : offset + size]


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def encode_png(rgb: np.ndarray) -> bytes:
    """Encode a ``(rows, cols, 3 or 4)`` uint8 image as an 8-bit RGB(A) PNG, byte for byte stable.

    A minimal writer (IHDR, one IDAT, IEND; filter 0 on every row) rather than GDAL's PNG
    driver: the file holds nothing but pixels (no text, time or georeferencing chunks, no
    ``.aux.xml``), and the compressed bytes come from the pinned libdeflate (see
    :func:`_deflate_rows`). ``zlib.crc32`` is only the chunk checksum, which is the same
    everywhere.
    """
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4) or rgb.dtype != np.uint8 or 0 in rgb.shape:
        raise ValueError(f"expected a non-empty (rows, cols, 3 or 4) uint8 image, got {rgb.shape}")
    rows, cols, channels = rgb.shape
    raw = np.zeros((rows, 1 + channels * cols), dtype=np.uint8)  # column 0: filter 0 (none)
    raw[:, 1:] = rgb.reshape(rows, channels * cols)
    colour_type = 2 if channels == 3 else 6  # truecolour, or truecolour with alpha
    header = struct.pack(">IIBBBBB", cols, rows, 8, colour_type, 0, 0, 0)
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", _deflate_rows(raw)),
            _chunk(b"IEND", b""),
        ]
    )
