"""Finishing: the regions a block scan completes, as features in their final form and order.

The stitcher (:mod:`satpipe.outputs.polygons_stitch`) hands over, after each block, the regions
that block completed, in pixel space. :class:`Finisher` gives them their final form: canonical
(collinear vertices removed, normalised where a later step depends on the vertex order), the
opening, the order, the minimum area, the coordinates in the scene CRS and the areas in m² (see
:mod:`satpipe.outputs.polygons` for what each step means).

Order: a region is complete when no part of it reaches the last row read, so every region a
block completes has its last pixel (in row-major order) after that of every region an earlier
block completed. Features are therefore ordered by their region's last pixel (bottom row, then
the rightmost pixel of that row) and, for the pieces an opening splits a region into, then by
the piece's own last pixel; sorting each block's features gives the order of the whole scene,
whatever the block height, and nothing waits for later blocks.

Coverage simplification (``simplify > 0``) needs every feature's neighbours at once: with it,
the finisher keeps all the features (pixel space) until the end of the scan and simplifies them
together, so the whole coverage is in memory. Without it, memory is one block's features.
"""

from __future__ import annotations

import numpy as np
import pyproj
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError

from satpipe.outputs.polygons_stitch import canonical, chunks
from satpipe.outputs.polygons_types import (
    AREA_DECIMALS,
    ClassRasterError,
    FeatureBatch,
    PolygonSettings,
)


class Finisher:
    """Turn each block's completed regions into a batch of features (:meth:`add`, :meth:`end`).

    Args:
        transform: pixel space to the scene CRS (of the part of the raster read).
        crs: the scene CRS.
        settings: opening, minimum area, simplification, precision.
    """

    def __init__(self, transform: Affine, crs: CRS, settings: PolygonSettings) -> None:
        self._transform, self._crs, self._settings = transform, crs, settings
        self._decimals = settings.decimals(crs)
        self._coverage: list[tuple[np.ndarray, np.ndarray]] = []  # simplify > 0 only

    def add(self, pixels: np.ndarray, codes: np.ndarray) -> FeatureBatch | None:
        """The features of the regions one block completed, in order (None when there are none).

        Args:
            pixels: the regions' pixel-space polygons (any order, not yet canonical).
            codes: their class codes.

        Returns:
            The batch; always None with simplification, whose features come from :meth:`end`.
        """
        settings = self._settings
        # Normalised here only where a later step could depend on the vertex order.
        pixels = canonical(pixels, normalise=settings.opening > 0 or settings.simplify > 0)
        keys = last_pixels(pixels)
        if settings.opening and len(pixels):
            pixels, index = _opened(pixels, settings.opening)
            codes, keys = codes[index], keys[index]
        if not len(pixels):
            return None
        own = last_pixels(pixels)
        order = np.lexsort((own[:, 1], own[:, 0], keys[:, 1], keys[:, 0]))
        pixels, codes = pixels[order], codes[order]
        world = self._to_world(pixels)
        areas = self._areas(pixels, world)
        if settings.min_area > 0:
            keep = areas >= settings.min_area
            pixels, codes, world, areas = pixels[keep], codes[keep], world[keep], areas[keep]
        if settings.simplify > 0:
            self._coverage.append((pixels, codes))
            return None
        return FeatureBatch(codes=codes, geometries=world, areas_m2=areas) if len(codes) else None

    def end(self) -> FeatureBatch | None:
        """With simplification, every feature, simplified together; else None."""
        if not self._coverage:
            return None
        pixels = np.concatenate([p for p, _ in self._coverage])
        codes = np.concatenate([c for _, c in self._coverage])
        self._coverage = []
        if not len(pixels):
            return None
        # A vertex at every pixel corner (exactly: segmentize interpolates): edge-matched.
        matched = shapely.transform(shapely.segmentize(pixels, 1.0), np.rint)
        simple = shapely.coverage_simplify(
            matched, self._settings.simplify, simplify_boundary=False
        )
        world = self._to_world(simple)
        return FeatureBatch(codes=codes, geometries=world, areas_m2=self._areas(simple, world))

    def _to_world(self, geometries: np.ndarray) -> np.ndarray:
        """Pixel space to the scene CRS, rounded to the decimals, normalised."""
        a, b, c, d, e, f = self._transform[:6]
        decimals = self._decimals

        def affine(xy: np.ndarray) -> np.ndarray:
            x, y = xy[:, 0], xy[:, 1]
            return np.round(np.column_stack([a * x + b * y + c, d * x + e * y + f]), decimals)

        out = np.empty(len(geometries), dtype=object)
        for part in chunks(geometries):
            out[part] = shapely.normalize(shapely.transform(geometries[part], affine))
        return out

    def _areas(self, pixels: np.ndarray, world: np.ndarray) -> np.ndarray:
        """Each feature's area in m² (see :mod:`satpipe.outputs.polygons`)."""
        crs = self._crs
        if crs.is_geographic:
            geod = pyproj.CRS.from_wkt(crs.to_wkt()).get_geod() or pyproj.Geod(ellps="WGS84")
            oriented = shapely.orient_polygons(world)  # exterior counter-clockwise: positive
            areas = [geod.geometry_area_perimeter(g)[0] for g in oriented]
            return np.round(np.asarray(areas, dtype=np.float64), AREA_DECIMALS)
        try:
            _, metres = crs.linear_units_factor
        except CRSError as exc:
            raise ClassRasterError(
                f"CRS {crs.to_string()!r} has no linear unit; expected a projected or geographic "
                "CRS"
            ) from exc
        pixel_area = abs(self._transform.determinant) * metres**2
        return np.round(shapely.area(pixels) * pixel_area, AREA_DECIMALS)


def _opened(geometries: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """Each polygon opened by a ``(2r + 1)``-pixel square: the pieces, and whose piece each is."""
    eroded = shapely.buffer(geometries, -r, join_style="mitre")
    opened = shapely.buffer(eroded, r, join_style="mitre")
    parts, index = shapely.get_parts(opened, return_index=True)
    kept = ~shapely.is_empty(parts)
    return canonical(parts[kept]), index[kept]


def last_pixels(geometries: np.ndarray) -> np.ndarray:
    """Each pixel-space polygon's last pixel in row-major order: ``(n, 2)`` rows, columns.

    The bottom row's pixels lie along the polygon's lowest edge (``y = bottom + 1``); the
    rightmost one's lower right corner is a vertex there, the rightmost.
    """
    bottom = shapely.bounds(geometries)[:, 3] if len(geometries) else np.zeros(0)
    right = np.empty(len(geometries))
    for part in chunks(geometries):
        coords, index = shapely.get_coordinates(geometries[part], return_index=True)
        on_bottom = coords[:, 1] == bottom[part][index]  # grouped by geometry, none empty
        index, x = index[on_bottom], coords[on_bottom, 0]
        starts = np.flatnonzero(np.r_[True, index[1:] != index[:-1]])
        right[part] = np.maximum.reduceat(x, starts)
    return np.column_stack([bottom - 1, right - 1])
