"""The vocabulary of class polygons: the settings, a feature, a scene's features, their error.

A *feature* is one region of one class (4-connected pixels; see
:mod:`satpipe.outputs.polygons`) as a polygon in the scene CRS, with its class and area in m².
:class:`FeatureStream` is a scene's features in their stable order as the block scan finalises
them (:class:`FeatureBatch` after batch), so they can go to files without being held together;
:class:`ClassPolygons` is the same features held together, with the area of each class.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from satpipe.core.errors import SatpipeError, SceneError

if TYPE_CHECKING:  # the settings are read by stages that never vectorise (a tile-label model)
    import numpy as np
    from rasterio.crs import CRS
    from shapely.geometry import Polygon

GEOGRAPHIC_DECIMALS = 9
"""Default decimals of coordinates in degrees (1e-9 degree is about 0.1 mm)."""
PROJECTED_DECIMALS = 3
"""Default decimals of coordinates in a projected CRS's unit (a millimetre for metres)."""
AREA_DECIMALS = 3
"""Decimals of areas in m²."""


class ClassRasterError(SceneError):
    """A class raster (or array) cannot be turned into polygons: bands, dtype, codes, grid."""


class PolygonSettingsError(SatpipeError, ValueError):
    """A polygon setting is out of range."""


@dataclass(frozen=True)
class PolygonSettings:
    """How class rasters become polygons.

    Attributes:
        min_area: m²; features smaller than this are dropped (after the opening).
        opening: pixels: the half-width r of a morphological opening of each class by a
            ``(2r + 1)``-pixel square (so parts narrower than ``2r + 1`` pixels go); the pixels it
            removes belong to no feature. 0 = none.
        simplify: tolerance in pixels (0 = exact pixel edges): coverage simplification
            (:func:`shapely.coverage_simplify`, Visvalingam-Whyatt) of all the features together,
            so an edge two features share stays shared (no gaps, no overlaps); edges with no
            feature beside them (raster edge, nodata, dropped features) stay exact.
        precision: decimals of the written coordinates (scene CRS); None =
            :data:`GEOGRAPHIC_DECIMALS` (9) for a geographic CRS, else
            :data:`PROJECTED_DECIMALS` (3, a millimetre in metres).
        block_rows: rows per block read from the raster (memory, not results: the features do
            not depend on it).
    """

    min_area: float = 0.0
    opening: int = 0
    simplify: float = 0.0
    precision: int | None = None
    block_rows: int = 1024

    def __post_init__(self) -> None:
        checks = [
            (
                "min_area",
                self.min_area,
                math.isfinite(self.min_area) and self.min_area >= 0,
                ">= 0",
            ),
            ("opening", self.opening, 0 <= self.opening <= 1024, "0 to 1024 pixels"),
            (
                "simplify",
                self.simplify,
                math.isfinite(self.simplify) and self.simplify >= 0,
                ">= 0",
            ),
            ("block_rows", self.block_rows, self.block_rows >= 1, ">= 1"),
        ]
        if self.precision is not None:
            checks.append(("precision", self.precision, 0 <= self.precision <= 15, "0 to 15"))
        for name, value, ok, expected in checks:
            if not ok:
                raise PolygonSettingsError(
                    f"polygon settings: {name}={value!r}; expected {expected}"
                )

    def decimals(self, crs: CRS) -> int:
        """The decimals of coordinates in ``crs``: ``precision``, or the CRS's default."""
        if self.precision is not None:
            return self.precision
        return GEOGRAPHIC_DECIMALS if crs.is_geographic else PROJECTED_DECIMALS


@dataclass(frozen=True)
class Feature:
    """One feature: a region of one class.

    Attributes:
        code: the class code (index into the model's classes).
        name: the class name.
        geometry: the polygon in the scene CRS (holes kept, valid, normalised).
        area_m2: its area in m² (geodesic for a geographic CRS), rounded to 3 decimals.
    """

    code: int
    name: str
    geometry: Polygon
    area_m2: float


@dataclass(frozen=True)
class ClassPolygons:
    """A scene's features, in stable order, and the area of each class.

    Attributes:
        classes: the class names, in code order.
        crs: the scene CRS the geometries are in.
        features: in stream order: by their region's last pixel in row-major order (its bottom
            row, then the rightmost pixel of that row), then, for the pieces an opening splits a
            region into, by the piece's own last pixel (:mod:`satpipe.outputs.polygons`).
        areas_m2: per class, the sum of its features' ``area_m2`` in that order, rounded to 3
            decimals (0.0 when it has none).
    """

    classes: tuple[str, ...]
    crs: CRS
    features: tuple[Feature, ...]
    areas_m2: dict[str, float]


@dataclass(frozen=True)
class FeatureBatch:
    """Consecutive features of a stream, as arrays.

    Attributes:
        codes: ``(n,)`` int64 class codes.
        geometries: ``(n,)`` object array of polygons in the scene CRS.
        areas_m2: ``(n,)`` float64 areas in m², rounded to 3 decimals.
    """

    codes: np.ndarray
    geometries: np.ndarray
    areas_m2: np.ndarray

    def __len__(self) -> int:
        return len(self.codes)


@dataclass(frozen=True)
class FeatureStream:
    """A scene's features, batch by batch, in their stable order (see :class:`ClassPolygons`).

    ``batches`` is an iterator: a stream is read once. How the features are cut into batches
    depends on the reading (block height); the features and their order do not.

    Attributes:
        classes: the class names, in code order.
        crs: the scene CRS the geometries are in.
        batches: the features, in order.
    """

    classes: tuple[str, ...]
    crs: CRS
    batches: Iterator[FeatureBatch]


@dataclass(frozen=True)
class FeatureSummary:
    """What a stream held: the number of features and the area of each class.

    Attributes:
        features: how many features.
        areas_m2: per class, the sum of its features' ``area_m2`` in stream order, rounded to 3
            decimals (0.0 when it has none).
    """

    features: int
    areas_m2: dict[str, float]


class AreaTotals:
    """Counts features and sums their areas per class as batches go by (in stream order)."""

    def __init__(self, classes: Sequence[str]) -> None:
        self._names = tuple(classes)
        self._totals = dict.fromkeys(self._names, 0.0)
        self._count = 0

    def add(self, batch: FeatureBatch) -> None:
        """Count a batch's features and add their areas."""
        for code, area in zip(batch.codes.tolist(), batch.areas_m2.tolist(), strict=True):
            self._totals[self._names[code]] += area
        self._count += len(batch)

    def summary(self) -> FeatureSummary:
        """The count and the per-class areas so far."""
        areas = {name: round(total, AREA_DECIMALS) for name, total in self._totals.items()}
        return FeatureSummary(features=self._count, areas_m2=areas)
