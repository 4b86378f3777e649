"""Footprints: tile outlines as GeoJSON in EPSG:4326, ready for QGIS.

Each tile's bounds (in the scene CRS) become a polygon densified with a few points per edge, so
that the outline stays right after reprojection, transformed to longitude/latitude (RFC 7946 axis
order, exterior ring counterclockwise) and rounded to 7 decimals (about 1 cm). A tile that cannot
be transformed (e.g. off the disk of a geostationary view) gets a null geometry rather than
invalid coordinates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

from rasterio.crs import CRS
from rasterio.warp import transform as warp_transform

from satpipe.core.records import TileIndex, TilePrediction, by_scene

_POINTS_PER_EDGE = 4
_DECIMALS = 7
_WGS84 = CRS.from_epsg(4326)
GEOJSON_PROPERTIES = ("scene", "prediction", "score", "features", "model_version", "path")
"""The prediction fields each footprint carries as properties."""


def _ring(bounds: Sequence[float]) -> list[tuple[float, float]]:
    left, bottom, right, top = bounds
    corners = [(left, bottom), (right, bottom), (right, top), (left, top), (left, bottom)]
    ring = []
    for (x0, y0), (x1, y1) in pairwise(corners):
        for i in range(_POINTS_PER_EDGE):
            t = i / _POINTS_PER_EDGE
            ring.append((x0 + (x1 - x0) * t, y0 + (y1 - y0) * t))
    ring.append(corners[0])
    return ring


def feature_collection(
    crs: CRS, records: Sequence[TilePrediction], properties: tuple[str, ...]
) -> dict[str, Any]:
    """GeoJSON FeatureCollection of the records' ``bounds`` reprojected from ``crs`` to 4326.

    Each feature's id is the tile id and its properties the named fields of the record.
    """
    rings = [_ring(rec.bounds) for rec in records]
    xs = [x for ring in rings for x, _ in ring]
    ys = [y for ring in rings for _, y in ring]
    lons, lats = warp_transform(crs, _WGS84, xs, ys) if xs else ([], [])
    features, pos = [], 0
    for rec, ring in zip(records, rings, strict=True):
        pts = list(zip(lons[pos : pos + len(ring)], lats[pos : pos + len(ring)], strict=True))
        pos += len(ring)
        if all(math.isfinite(x) and math.isfinite(y) for x, y in pts):
            geometry: dict[str, Any] | None = {
                "type": "Polygon",
                "coordinates": [[[round(x, _DECIMALS), round(y, _DECIMALS)] for x, y in pts]],
            }
        else:
            geometry = None
        features.append(
            {
                "type": "Feature",
                "id": rec.id,
                "geometry": geometry,
                "properties": {key: getattr(rec, key) for key in properties},
            }
        )
    return {"type": "FeatureCollection", "features": features}


def prediction_footprints(index: TileIndex, records: Sequence[TilePrediction]) -> dict[str, Any]:
    """The classified tiles' footprints as one GeoJSON FeatureCollection (EPSG:4326)."""
    features = []
    groups = by_scene(records)
    for sid, scene in index.scenes.items():  # records are grouped by scene, in this order
        mine = groups.get(sid, [])
        if mine:
            fc = feature_collection(CRS.from_wkt(scene.crs_wkt), mine, GEOJSON_PROPERTIES)
            features.extend(fc["features"])
    return {"type": "FeatureCollection", "features": features}
