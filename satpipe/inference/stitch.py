"""Stitching per-window class probabilities into one scene, in exact integer arithmetic.

The window grid, the reflection that pads the scene at its borders, the integer taper each
window's scores are weighted by, and the rule that turns summed scores into the bytes written.
Every sum is of integers, so it does not depend on the order windows are added in: how a scene
is split into jobs, how many workers run them and on which engine cannot change a byte.

**Grid.** Windows of side ``W`` with an even overlap ``O <= W/2`` step by ``S = W - O``; window
``k`` along an axis starts at ``-O/2 + k*S`` (the first starts half an overlap before the
scene), and there are as many as it takes to cover the scene (at least one; a window may be
larger than the scene). Every scene pixel is covered by one or two windows along each axis, so
by at most four. Rows ``[k*S, (k+1)*S)`` (the last: to the scene's end) are *owned* by window
row ``k``, so every pixel is owned by exactly one job (same for columns).

**Padding.** A window's pixels outside the scene are the scene reflected at its border without
repeating the edge pixel (numpy's ``reflect``): index ``i`` of an axis of ``n`` pixels maps to
``m = i mod 2(n-1)``, then ``2(n-1) - m`` where ``m >= n``; with ``n = 1`` every index maps to 0.

**Taper.** A window pixel ``(i, j)`` weighs ``w(i, j) = t(i) * t(j)`` with the 1-D integer taper
``t``, in ``[1, 127]`` (:data:`TAPER_MAX`):

- ``hann``: ``t(i) = max(1, round(127 * sin^2(pi * (i + 0.5) / W)))``;
- ``tukey``: 127 in the middle; over the first ``O`` pixels
  ``t(i) = max(1, round(127 * sin^2(pi * (i + 0.5) / (2 O))))``, mirrored over the last ``O``
  (with ``O = 0``: 127 everywhere);
- ``flat``: 1 everywhere.

(``round`` is half to even; the taper is computed once by the driver and shipped to the jobs.)

**Blending.** A window's probability ``p`` is quantised to ``q = round(p * 2^15)`` (half to
even, clipped to ``[0, 2^15]``); each valid window pixel adds ``w * q_k`` to class ``k``'s sum and
``w`` to the weight sum; invalid pixels add nothing. With at most four windows per pixel every
sum fits int32 (``4 * 127^2 * 2^15 < 2^31``). A pixel's class is the argmax of its sums (a tie goes
to the first class); it is nodata (255) where the weight sum is 0. Its probability byte is
``round_half_up(255 * s / (wsum * 2^15))`` of the winner's sum ``s`` (or of every class's sum),
computed in integers as ``(510 s + d) // (2 d)`` with ``d = wsum * 2^15``; 0 at nodata.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

Blend = Literal["hann", "tukey", "flat"]
TAPER_MAX = 127
"""The largest 1-D taper weight (so that four windows' weighted sums fit int32)."""
PROB_SCALE = 1 << 15
"""Probabilities are quantised to integers in ``[0, PROB_SCALE]``."""
NODATA_CLASS = 255
"""The class written at nodata pixels."""


def taper(blend: Blend, window: int, overlap: int) -> np.ndarray:
    """The 1-D integer taper of a window (see the module docstring): int32 ``(window,)``."""
    i = np.arange(window, dtype=np.float64) + 0.5
    if blend == "flat":
        return np.ones(window, dtype=np.int32)
    if blend == "hann":
        t = np.rint(TAPER_MAX * np.sin(np.pi * i / window) ** 2)
    else:
        t = np.full(window, float(TAPER_MAX))
        if overlap:
            ramp = np.rint(TAPER_MAX * np.sin(np.pi * i[:overlap] / (2 * overlap)) ** 2)
            t[:overlap] = ramp
            t[window - overlap :] = ramp[::-1]
    return np.maximum(t, 1).astype(np.int32)


def origins(size: int, window: int, overlap: int) -> np.ndarray:
    """The window origins along an axis of ``size`` pixels: int64, ``-O/2 + k*S``."""
    stride = window - overlap
    count = max(1, math.ceil((size + overlap // 2 - window) / stride) + 1)
    return -(overlap // 2) + stride * np.arange(count, dtype=np.int64)


def owned(k: int, count: int, size: int, stride: int) -> tuple[int, int]:
    """The span ``[start, stop)`` of an axis owned by window ``k`` of ``count``."""
    start = min(size, k * stride)
    stop = size if k == count - 1 else min(size, (k + 1) * stride)
    return start, stop


def reflect(index: np.ndarray, size: int) -> np.ndarray:
    """Map indices of an axis of ``size`` pixels into it by reflection (no edge repeat)."""
    if size == 1:
        return np.zeros_like(index)
    period = 2 * (size - 1)
    m = np.mod(index, period)
    return np.where(m >= size, period - m, m)


def quantise(p: np.ndarray) -> np.ndarray:
    """``round(p * 2^15)`` (half to even) clipped to ``[0, 2^15]``, int32."""
    scaled = np.rint(np.asarray(p, dtype=np.float32) * np.float32(PROB_SCALE))
    return np.clip(scaled, 0, PROB_SCALE).astype(np.int32)


def finalise(
    acc: np.ndarray, wsum: np.ndarray, every_class: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Turn summed scores into the bytes written.

    Args:
        acc: ``(K, rows, cols)`` int32, each class's weighted sum of quantised probabilities.
        wsum: ``(rows, cols)`` int32, the summed weights (0: nodata).
        every_class: one probability byte per class (else the winner's only).

    Returns:
        ``classes`` uint8 ``(rows, cols)`` (255 at nodata), ``probabilities`` uint8
        ``(P, rows, cols)`` with ``P`` 1 or ``K`` (0 at nodata), ``valid`` bool ``(rows, cols)``.
    """
    valid = wsum > 0
    classes = np.zeros(wsum.shape, dtype=np.uint8)  # argmax over classes, ties to the first
    best = acc[0].copy()
    for k in range(1, acc.shape[0]):
        better = acc[k] > best
        classes[better] = k
        np.maximum(best, acc[k], out=best)
    classes[~valid] = NODATA_CLASS
    # (510 s + d) // (2 d) in float64: both below 2^41, so the quotient's floor is exact.
    den = wsum.astype(np.float64) * PROB_SCALE
    den2 = 2 * np.maximum(den, 1)
    top = acc if every_class else best[None]
    probs = np.floor((510 * top.astype(np.float64) + den) / den2).astype(np.uint8)
    probs[:, ~valid] = 0
    return classes, probs, valid


__all__ = [
    "NODATA_CLASS",
    "PROB_SCALE",
    "TAPER_MAX",
    "Blend",
    "finalise",
    "origins",
    "owned",
    "quantise",
    "reflect",
    "taper",
]
