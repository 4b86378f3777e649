"""Features: the per-tile numbers the model looks at.

There is one feature, ``mean_intensity``: the mean over valid pixels of the selected bands'
values. A pixel is valid when every selected band is finite and differs from the nodata value.
Integer data is summed exactly in 64-bit integers, so the value does not depend on memory layout
or summation order; the tile stage, batch inference and the REST service all call
:func:`tile_features`, so the same pixels always give the same bits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

FEATURE_NAME = "mean_intensity"


@dataclass(frozen=True)
class FeatureSpec:
    """How the feature is computed: 1-based band numbers (None = all bands)."""

    bands: tuple[int, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form, stored in the tile index and the model."""
        return {
            "name": FEATURE_NAME,
            "bands": None if self.bands is None else list(self.bands),
            "valid_pixel": "every selected band finite and != nodata",
            "aggregation": "mean over valid pixels and selected bands",
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpec:
        """Inverse of :meth:`to_dict`."""
        bands = data.get("bands")
        return cls(None if bands is None else tuple(int(b) for b in bands))

    def indexes(self, band_count: int) -> list[int]:
        """The 0-based band positions to use for a raster with ``band_count`` bands."""
        if self.bands is None:
            return list(range(band_count))
        return [b - 1 for b in self.bands]


@dataclass(frozen=True)
class TileFeatures:
    """What one tile measures: the valid-pixel fraction and, if any pixel is valid, the mean."""

    valid_fraction: float
    mean_intensity: float | None


def valid_mask(data: np.ndarray, nodata: float | None) -> np.ndarray:
    """Boolean ``(rows, cols)`` mask of pixels valid in every band of ``data``."""
    mask = np.ones(data.shape[1:], dtype=bool)
    floating = data.dtype.kind == "f"
    for band in data:
        if floating:
            mask &= np.isfinite(band)
        if nodata is not None and not (isinstance(nodata, float) and np.isnan(nodata)):
            mask &= band != nodata
    return mask


def tile_features(data: np.ndarray, nodata: float | None, spec: FeatureSpec) -> TileFeatures:
    """Compute the features of one ``(bands, rows, cols)`` tile.

    Args:
        data: pixel values.
        nodata: the nodata value, or None when the data declares none.
        spec: which bands to use.

    Returns:
        The valid fraction and the mean intensity (None when no pixel is valid).
    """
    indexes = spec.indexes(data.shape[0])
    selected = data if indexes == list(range(data.shape[0])) else data[indexes]
    mask = valid_mask(selected, nodata)
    count = int(np.count_nonzero(mask))
    total_pixels = mask.size
    if count == 0:
        return TileFeatures(0.0, None)
    if selected.dtype.kind in "iu":
        acc = np.int64 if selected.dtype.kind == "i" else np.uint64
        if count == total_pixels:
            total = int(selected.sum(dtype=acc))
        elif 2 * count >= total_pixels:
            # Mostly valid: everything minus the few invalid pixels (exact in integers, and
            # cheaper than gathering the many valid ones).
            total = int(selected.sum(dtype=acc)) - int(selected[:, ~mask].sum(dtype=acc))
        else:
            total = int(selected[:, mask].sum(dtype=acc))
        mean = total / (count * selected.shape[0])
    else:
        bands = selected.shape[0]
        values = selected.reshape(bands, -1) if count == total_pixels else selected[:, mask]
        mean = float(np.ascontiguousarray(values, dtype=np.float64).sum()) / values.size
    return TileFeatures(count / total_pixels, mean)
