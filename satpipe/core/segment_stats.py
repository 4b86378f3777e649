"""What a per-pixel model's whole-scene run saw: filled by inference, read by mask health.

Kept in ``core`` because :mod:`satpipe.inference` and :mod:`satpipe.evaluation` are siblings that
may not import each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, kw_only=True)
class SegmentStats:
    """What a per-pixel model's whole-scene run saw (:mod:`satpipe.inference.segment`).

    The segment stage turns it into the scene's summary JSON, which health reads.

    Attributes:
        scene: the scene id.
        width, height: the scene's size, pixels.
        valid_pixels: pixels classified (valid input; the rest are nodata in the outputs).
        class_counts: ``(K,)`` int64, valid pixels per class, in the model's class order.
        probability_counts: ``(256,)`` int64, valid pixels per winner-probability byte value
            (the value written in the probability raster: ``round_half_up(255 p)``).
        seam_compared: overlap-strip pixels (valid) where two neighbouring windows both gave a
            class; ``seam_disagree`` of them got different classes from the two windows.
        windows, windows_skipped: windows run, and skipped as entirely nodata.
        band_sample: ``(N, B)`` float64, the model's bands (its band order) at the valid pixels
            of a fixed grid (every 16th row and column from (8, 8)), in the scene's units.
        band_names: the model's bands as the scene names them (``band <n>`` where unnamed).
    """

    scene: str
    width: int
    height: int
    valid_pixels: int
    class_counts: np.ndarray
    probability_counts: np.ndarray
    seam_compared: int
    seam_disagree: int
    windows: int
    windows_skipped: int
    band_sample: np.ndarray
    band_names: tuple[str, ...]
