"""Quick-looks of a class raster: its classes in their colours, and its errors against labels.

Both pictures sample the same scene pixels: every ``step``-th row and column from ``step // 2``,
with ``step = ceil(long side / max_side)`` (so the long side is at most ``max_side``, 1024 by
default). The rasters are read in 512-row strips and subsampled, never whole, so the class
raster, the label raster and a held-out mask are sampled identically whatever overviews they
have. Pictures are RGBA PNGs (nodata and unlabelled pixels transparent) written by the same
minimal encoder as :mod:`satpipe.outputs.quicklook` (pinned libdeflate), atomically: the same
inputs give the same bytes on every machine.

Error colours (Okabe-Ito, readable with colour blindness), relative to the ``positive`` class:
correct grey, false positive (predicted positive, labelled otherwise) vermillion, false negative
(labelled positive, predicted otherwise) blue, and, with more than two classes, any other
mistake (neither side positive) yellow.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio

from satpipe.core.classes import parse_colour
from satpipe.core.files import write_bytes_atomic
from satpipe.outputs.quicklook import encode_png
from satpipe.outputs.segmentation import CLASS_NODATA

MAX_SIDE = 1024
STRIP = 512
ERROR_COLOURS: dict[str, tuple[int, int, int]] = {
    "correct": (190, 190, 190),
    "false_positive": (213, 94, 0),
    "false_negative": (0, 114, 178),
    "other_error": (240, 228, 66),
}

Mask = np.ndarray | Callable[[np.ndarray, np.ndarray], np.ndarray]
"""Held-out pixels: a ``(height, width)`` bool array, or ``f(rows, cols)`` giving the bool
``(len(rows), len(cols))`` mask at those scene rows and columns."""


@dataclass(frozen=True, eq=False)
class MaskPicture:
    """A quick-look written to disk.

    Attributes:
        path: the PNG.
        rgba: ``(rows, cols, 4)`` uint8, the picture.
        step: scene pixels per picture pixel along each axis.
        counts: picture pixels per colour name (classes, or the error kinds).
    """

    path: Path
    rgba: np.ndarray
    step: int
    counts: dict[str, int]


def sample_grid(
    height: int, width: int, max_side: int = MAX_SIDE
) -> tuple[int, np.ndarray, np.ndarray]:
    """The step and the scene rows and columns a quick-look samples."""
    step = max(1, math.ceil(max(height, width) / max_side))
    return step, np.arange(step // 2, height, step), np.arange(step // 2, width, step)


def sample_raster(path: Path | str, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Band 1 of a raster at ``rows`` x ``cols``, read in 512-row strips."""
    with rasterio.open(path) as src:
        out = np.empty((len(rows), len(cols)), dtype=src.dtypes[0])
        for top in range(0, src.height, STRIP):
            take = (rows >= top) & (rows < top + STRIP)
            if not take.any():
                continue
            bottom = min(top + STRIP, src.height)
            strip = src.read(1, window=((top, bottom), (0, src.width)))
            out[take] = strip[rows[take] - top][:, cols]
    return out


def _paint(codes: np.ndarray, colours: Sequence[tuple[int, int, int]]) -> np.ndarray:
    """RGBA of ``codes`` (0..len(colours)-1); any other code transparent."""
    lut = np.zeros((256, 4), np.uint8)
    for i, rgb in enumerate(colours):
        lut[i] = (*rgb, 255)
    return lut[codes]


def _size(path: Path | str) -> tuple[int, int]:
    with rasterio.open(path) as src:
        return src.height, src.width


def class_quicklook(
    class_cog: Path | str,
    out_png: Path | str,
    colours: Sequence[str],
    names: Sequence[str] | None = None,
    *,
    max_side: int = MAX_SIDE,
) -> MaskPicture:
    """Draw each class of a class raster in its ``#rrggbb`` colour; nodata is transparent.

    Args:
        class_cog: the class raster (codes ``0..K-1``, anything else drawn transparent).
        out_png: the PNG to write.
        colours: each class's colour, in code order.
        names: class names for :attr:`MaskPicture.counts` (default ``class <code>``).
        max_side: the picture's longest side, at most.
    """
    height, width = _size(class_cog)
    step, rows, cols = sample_grid(height, width, max_side)
    codes = sample_raster(class_cog, rows, cols)
    rgba = _paint(codes, [parse_colour(c) for c in colours])
    names = names or [f"class {i}" for i in range(len(colours))]
    counts = {name: int(np.count_nonzero(codes == i)) for i, name in enumerate(names)}
    counts["nodata"] = int(codes.size - sum(counts.values()))
    write_bytes_atomic(out_png, encode_png(rgba))
    return MaskPicture(path=Path(out_png), rgba=rgba, step=step, counts=counts)


def reference_classes(
    labels: np.ndarray, label_codes: Sequence[Sequence[int]], nodata: float | None
) -> np.ndarray:
    """Each label pixel's class position (int16), -1 where unlabelled or nodata.

    Raises:
        ValueError: a code belongs to two classes.
    """
    seen: dict[int, int] = {}
    ref = np.full(labels.shape, -1, np.int16)
    for k, codes in enumerate(label_codes):
        for code in codes:
            if seen.setdefault(int(code), k) != k:
                raise ValueError(f"label code {code} belongs to classes {seen[int(code)]} and {k}")
            ref[labels == code] = k
    if nodata is not None and not math.isnan(nodata):
        ref[labels == nodata] = -1
    elif nodata is not None:
        ref[np.isnan(labels)] = -1
    return ref


def error_kinds(pred: np.ndarray, ref: np.ndarray, judged: np.ndarray, positive: int) -> np.ndarray:
    """Per pixel: 0 correct, 1 false positive, 2 false negative, 3 other error, 255 not judged.

    False positive and negative are relative to class ``positive``; the codes index
    :data:`ERROR_COLOURS` (the quick-look and the map tiles' error layer both draw them).
    """
    kinds = np.full(pred.shape, 255, np.uint8)
    wrong = judged & (pred != ref)
    kinds[judged & (pred == ref)] = 0
    kinds[wrong & (pred == positive)] = 1
    kinds[wrong & (ref == positive)] = 2
    kinds[wrong & (pred != positive) & (ref != positive)] = 3
    return kinds


def error_quicklook(
    class_cog: Path | str,
    label_raster: Path | str,
    label_codes: Sequence[Sequence[int]],
    out_png: Path | str,
    positive: int = 0,
    mask: Mask | None = None,
    *,
    max_side: int = MAX_SIDE,
) -> MaskPicture:
    """Draw where a class raster is right and wrong against a label raster on its grid.

    Per pixel: correct, false positive, false negative (relative to class ``positive``) or other
    error, in :data:`ERROR_COLOURS`; transparent where the class raster is nodata, the label is
    unlabelled (its nodata, or a code of no class) or ``mask`` is False.

    Args:
        class_cog: the class raster (codes ``0..K-1``, nodata 255).
        label_raster: the reference labels, raw codes, same size as the class raster.
        label_codes: per class (in code order), the label codes meaning it.
        out_png: the PNG to write.
        positive: the class position errors are told relative to.
        mask: held-out pixels only (see :data:`Mask`); None: every pixel.
        max_side: the picture's longest side, at most.

    Raises:
        ValueError: the rasters differ in size, ``positive`` is not a class, or a label code
            belongs to two classes.
    """
    k = len(label_codes)
    if not 0 <= positive < k:
        raise ValueError(f"positive class {positive}: expected 0..{k - 1}")
    height, width = _size(class_cog)
    if _size(label_raster) != (height, width):
        raise ValueError(
            f"label raster {_size(label_raster)} and class raster {(height, width)} differ in size"
        )
    step, rows, cols = sample_grid(height, width, max_side)
    pred = sample_raster(class_cog, rows, cols).astype(np.int16)
    with rasterio.open(label_raster) as src:
        nodata = src.nodata
    ref = reference_classes(sample_raster(label_raster, rows, cols), label_codes, nodata)
    judged = (ref >= 0) & (pred < k) & (pred != CLASS_NODATA)
    if mask is not None:
        held = mask(rows, cols) if callable(mask) else np.asarray(mask)[np.ix_(rows, cols)]
        judged &= np.asarray(held, bool)
    kinds = error_kinds(pred, ref, judged, positive)  # 255: not judged (transparent)
    names = list(ERROR_COLOURS)
    rgba = _paint(kinds, list(ERROR_COLOURS.values()))
    counts = {name: int(np.count_nonzero(kinds == i)) for i, name in enumerate(names)}
    counts["not_judged"] = int(np.count_nonzero(kinds == 255))
    write_bytes_atomic(out_png, encode_png(rgba))
    return MaskPicture(path=Path(out_png), rgba=rgba, step=step, counts=counts)
