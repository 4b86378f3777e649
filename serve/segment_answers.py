"""The three answers of ``/segment``: the class GeoTIFF, the class polygons, a JSON summary.

Every answer is made from one :class:`ClassRaster`: uint8 class codes ``0..K-1`` in the served
model's class order, 255 at nodata, on a georeferenced grid.

- ``geotiff``: written by :class:`satpipe.outputs.segmentation.SegmentWriter`, the segment stage's
  own writer (a COG: palette, ``CLASS_<code>`` tags, nodata 255, the provenance tags), so a scene
  uploaded whole answers the very raster the stage wrote. The class names' PAM sidecar is not
  part of a single-file answer; the tags carry them.
- ``geojson``: the class polygons in EPSG:4326 (:mod:`satpipe.outputs.polygons`).
- ``json``: pixels and m² per class (:class:`serve.schemas.SegmentSummary`).

Areas: in a projected CRS every pixel has the same area, ``|a e - b d|`` in the CRS's unit
squared, converted to m² with the CRS's linear unit: a class's area is its pixels times that. In
a geographic CRS it is the sum of the geodesic areas of the class's polygons
(:attr:`ClassPolygons.areas_m2`), the areas the GeoJSON answer's features carry.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from affine import Affine
from rasterio.crs import CRS

from satpipe.outputs.polygons import (
    ClassPolygons,
    PolygonSettings,
    array_polygons,
    geojson_bytes,
)
from satpipe.outputs.segmentation import CLASS_NODATA, SegmentWriter
from serve.schemas import ClassArea, SegmentSummary, Window

AnswerFormat = Literal["geotiff", "geojson", "json"]
MEDIA_TYPES: dict[AnswerFormat, str] = {
    "geotiff": "image/tiff",
    "geojson": "application/geo+json",
    "json": "application/json",
}


@dataclass(frozen=True)
class ClassRaster:
    """Class codes on a grid, and what made them.

    Attributes:
        classes: ``(rows, cols)`` uint8, codes ``0..K-1``, 255 at nodata.
        transform: the grid's affine transform.
        crs: the grid's CRS.
        tags: the provenance tags of the GeoTIFF answer (model, window, overlap, blend...).
        scene: the scene id (a window of a pinned scene), or None (an upload).
        window: the window in the scene (a pinned scene), or None (an upload).
        settings: the segmentation settings (window, overlap, blend, batch).
    """

    classes: np.ndarray
    transform: Affine
    crs: CRS
    tags: Mapping[str, str]
    scene: str | None = None
    window: Window | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def width(self) -> int:
        """Columns."""
        return int(self.classes.shape[1])

    @property
    def height(self) -> int:
        """Rows."""
        return int(self.classes.shape[0])

    @property
    def crs_wkt(self) -> str:
        """The CRS as WKT (what :class:`SegmentWriter` reads)."""
        return str(self.crs.to_wkt())

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in the CRS."""
        t = self.transform
        xs = (t.c, t.c + t.a * self.width)
        ys = (t.f, t.f + t.e * self.height)
        return min(xs), min(ys), max(xs), max(ys)


def geotiff(raster: ClassRaster, classes: Sequence[str], colours: Sequence[str]) -> bytes:
    """The class raster as the segment stage writes it (a COG, see the module docstring)."""
    tmp = Path(tempfile.mkdtemp(prefix="satpipe-answer-"))
    try:
        path = tmp / "classes.tif"
        with SegmentWriter(path, raster, classes, colours, tags=dict(raster.tags)) as writer:
            ones = np.broadcast_to(np.uint8(1), (1, raster.height, raster.width))
            writer.write(0, raster.classes, ones, raster.classes != CLASS_NODATA)
        return path.read_bytes()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def polygons(raster: ClassRaster, classes: Sequence[str]) -> ClassPolygons:
    """The class polygons of the raster: exact pixel edges, nothing dropped or simplified."""
    return array_polygons(raster.classes, raster.transform, raster.crs, classes, PolygonSettings())


def geojson(raster: ClassRaster, classes: Sequence[str]) -> bytes:
    """The class polygons as a GeoJSON FeatureCollection in EPSG:4326."""
    return geojson_bytes(polygons(raster, classes))


def class_areas(raster: ClassRaster, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray, str]:
    """Pixels per class, m² per class (in class order) and how the areas were measured."""
    k = len(classes)
    counts = np.bincount(raster.classes.ravel(), minlength=256)[:k].astype(np.int64)
    if raster.crs.is_geographic:  # the polygons' geodesic areas, as the GeoJSON answer gives
        by_name = polygons(raster, classes).areas_m2
        return counts, np.array([by_name.get(name, 0.0) for name in classes]), "geodesic"
    t = raster.transform
    _, metres = raster.crs.linear_units_factor
    pixel = abs(t.a * t.e - t.b * t.d) * float(metres) ** 2
    return counts, counts * pixel, "projected"


def summary(
    raster: ClassRaster, classes: Sequence[str], model_version: str, model_md5: str
) -> SegmentSummary:
    """The JSON summary: pixels and m² per class, the grid, the settings and the model."""
    counts, areas, method = class_areas(raster, classes)
    pixels = raster.width * raster.height
    valid = int(counts.sum())
    epsg = raster.crs.to_epsg()
    return SegmentSummary(
        scene=raster.scene,
        window=raster.window,
        width=raster.width,
        height=raster.height,
        crs=f"EPSG:{epsg}" if epsg else raster.crs_wkt,
        transform=tuple(raster.transform)[:6],
        bounds=raster.bounds,
        pixels=pixels,
        valid_pixels=valid,
        nodata_pixels=pixels - valid,
        area_method=method,
        classes=[
            ClassArea(code=c, name=name, pixels=int(counts[c]), area_m2=float(areas[c]))
            for c, name in enumerate(classes)
        ],
        settings=dict(raster.settings),
        model_version=model_version,
        model_md5=model_md5,
    )
