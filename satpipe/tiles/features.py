"""Features: the per-tile numbers the models look at.

A tile's *feature vector* is a set of named numbers (:func:`feature_names`):

- ``mean_intensity``: the mean over valid pixels of the selected bands' values (``features.bands``);
- ``valid_fraction``: the share of the tile's pixels that are valid;
- ``band_<i>_mean`` and ``band_<i>_std`` for every band ``i`` (1-based) of the tile: the mean and
  the (population) standard deviation of that band over the valid pixels.

A pixel is valid when every selected band is finite and differs from the nodata value. Integer
data is summed exactly (sums and sums of squares in Python-sized integers), so the values do not
depend on memory layout or summation order; the tile stage, batch inference and the REST service
all call :func:`feature_vector` (or :func:`tile_features` for the two scalar figures), so the same
pixels always give the same bits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

FEATURE_NAME = "mean_intensity"
VALID_FRACTION = "valid_fraction"


def feature_names(band_count: int) -> tuple[str, ...]:
    """The names of a tile's feature vector for a scene of ``band_count`` bands, in order."""
    per_band = [f"band_{i}_{stat}" for i in range(1, band_count + 1) for stat in ("mean", "std")]
    return (FEATURE_NAME, VALID_FRACTION, *per_band)


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


def _measure(
    data: np.ndarray, nodata: float | None, spec: FeatureSpec
) -> tuple[TileFeatures, np.ndarray]:
    """The tile's valid fraction and mean intensity, and its valid-pixel mask."""
    # not at the top: loading a model (which reads its FeatureSpec) should not import rasterio
    from satpipe.core.raster import valid_mask

    indexes = spec.indexes(data.shape[0])
    selected = data if indexes == list(range(data.shape[0])) else data[indexes]
    mask = valid_mask(selected, nodata)
    count = int(np.count_nonzero(mask))
    total_pixels = mask.size
    if count == 0:
        return TileFeatures(0.0, None), mask
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
    return TileFeatures(count / total_pixels, mean), mask


def tile_features(data: np.ndarray, nodata: float | None, spec: FeatureSpec) -> TileFeatures:
    """Compute the features of one ``(bands, rows, cols)`` tile.

    Args:
        data: pixel values.
        nodata: the nodata value, or None when the data declares none.
        spec: which bands to use.

    Returns:
        The valid fraction and the mean intensity (None when no pixel is valid).
    """
    return _measure(data, nodata, spec)[0]


def _band_stats(band: np.ndarray, mask: np.ndarray, count: int) -> tuple[float, float]:
    """Mean and population standard deviation of ``band`` over ``mask`` (``count`` pixels)."""
    if band.dtype.kind in "iu" and band.dtype.itemsize <= 2:
        values = band if count == mask.size else band[mask]
        wide = values.astype(np.int64, copy=False).ravel()
        total = int(wide.sum())
        squares = int(np.einsum("i,i->", wide, wide, optimize=False))
        # Exact in integers: count^2 * variance = count * sum(x^2) - sum(x)^2.
        spread = count * squares - total * total
        return total / count, math.sqrt(spread) / count
    values = np.ascontiguousarray(band if count == mask.size else band[mask], dtype=np.float64)
    mean = float(values.sum()) / count
    deviation = values - mean
    return mean, math.sqrt(float((deviation * deviation).sum()) / count)


def tile_measurements(
    data: np.ndarray,
    nodata: float | None,
    spec: FeatureSpec,
    names: tuple[str, ...] | None = None,
) -> tuple[TileFeatures, dict[str, float] | None]:
    """:func:`tile_features` and :func:`feature_vector` of one tile, its pixels masked once.

    Raises:
        ValueError: a name is not a feature of a tile with this many bands.
    """
    all_names = feature_names(data.shape[0])
    wanted = all_names if names is None else names
    unknown = [n for n in wanted if n not in all_names]
    if unknown:
        raise ValueError(
            f"unknown feature {unknown[0]!r} for a {data.shape[0]}-band tile; expected one of "
            f"{', '.join(all_names)}"
        )
    basic, mask = _measure(data, nodata, spec)
    if basic.mean_intensity is None:
        return basic, None
    count = int(np.count_nonzero(mask))
    out: dict[str, float] = {}
    stats: dict[int, tuple[float, float]] = {}
    for name in wanted:
        if name == FEATURE_NAME:
            out[name] = basic.mean_intensity
        elif name == VALID_FRACTION:
            out[name] = basic.valid_fraction
        else:
            _, index, stat = name.split("_")
            band = int(index) - 1
            if band not in stats:
                stats[band] = _band_stats(data[band], mask, count)
            out[name] = stats[band][0 if stat == "mean" else 1]
    return basic, out


def feature_vector(
    data: np.ndarray,
    nodata: float | None,
    spec: FeatureSpec,
    names: tuple[str, ...] | None = None,
) -> dict[str, float] | None:
    """The named features of one ``(bands, rows, cols)`` tile (see the module docstring).

    Args:
        data: pixel values.
        nodata: the nodata value, or None when the data declares none.
        spec: which bands ``mean_intensity`` averages (and whose validity counts).
        names: the features wanted (default: all of :func:`feature_names`); computing only
            those a model reads keeps serving fast.

    Returns:
        ``{name: value}`` in the order of ``names``, or None when no pixel is valid.

    Raises:
        ValueError: a name is not a feature of a tile with this many bands.
    """
    return tile_measurements(data, nodata, spec, names)[1]
