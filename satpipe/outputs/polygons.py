"""Class polygons: a class raster as one polygon feature per region of a class, streamed.

A *region* is a 4-connected set of pixels of one class; pixels of a class that touch only at a
corner (diagonally) are separate features. Nodata pixels belong to no feature. The raster is read
in blocks of ``block_rows`` rows (never whole) and a region that crosses block edges is merged
into ONE feature (:mod:`satpipe.outputs.polygons_stitch`).

Each feature is then made canonical, in pixel space (x = column, y = row, exact integers):
collinear vertices removed (``shapely.simplify(g, 0)``) and ``shapely.normalize``, so the result
does not depend on the block height. Then, as :class:`PolygonSettings` asks: a morphological
opening of each class by a ``(2r + 1)``-pixel square (a negative then positive mitred buffer of
each feature, which on pixel edges is exactly the raster opening; a feature it splits becomes
several), the features smaller than ``min_area`` m² dropped, and coverage simplification of all
features together (:func:`shapely.coverage_simplify` on the features with a vertex at every
pixel corner, so neighbours' shared edges match and stay shared; the coverage's outer boundary,
along the raster edge, nodata and dropped features, is kept exact). Finally the pixel coordinates
go through the scene's affine transform, are rounded to ``precision`` decimals and normalised.

Streaming (:func:`raster_features`): a region is final as soon as a block leaves no part of it
on the block's last row; its feature then goes out at once, in a :class:`FeatureBatch`, so
memory holds one block, its features and the regions still open across the block edge, not the
scene's features (:func:`~satpipe.outputs.polygons_write.write_features` writes them to files
batch by batch). The exception: coverage simplification (``simplify > 0``) needs all the
neighbours at once, so with it every feature is held until the end of the scan
(:mod:`satpipe.outputs.polygons_finish`). :func:`raster_polygons` and :func:`array_polygons`
collect a stream into :class:`ClassPolygons` (every feature in memory; small rasters).

Order: by the region's last pixel in row-major order (its bottom row, then the rightmost pixel
of that row; a block completes regions only after those of earlier blocks, so each block's
features are sorted and sent at once), then, for the pieces an opening splits a region into, by
the piece's own last pixel. The same pixels give the same features in the same order, the same
coordinates and, written, the same bytes (:mod:`satpipe.outputs.polygons_write`), whatever the
block height.

Area per feature in m²: for a projected CRS the planar area times the square of the CRS's linear
unit in metres (without simplification, exactly pixel count times pixel area); for a geographic
CRS the geodesic area on the CRS's ellipsoid (:meth:`pyproj.Geod.geometry_area_perimeter`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from satpipe.core.errors import RasterReadError
from satpipe.outputs.polygons_finish import Finisher
from satpipe.outputs.polygons_stitch import Stitcher
from satpipe.outputs.polygons_types import (
    AreaTotals,
    ClassPolygons,
    ClassRasterError,
    Feature,
    FeatureBatch,
    FeatureStream,
    FeatureSummary,
    PolygonSettings,
    PolygonSettingsError,
)
from satpipe.outputs.polygons_write import (
    geojson_bytes,
    write_features,
    write_flatgeobuf,
    write_geojson,
)
from satpipe.outputs.segmentation import CLASS_NODATA

__all__ = [
    "ClassPolygons",
    "ClassRasterError",
    "Feature",
    "FeatureBatch",
    "FeatureStream",
    "FeatureSummary",
    "PolygonSettings",
    "PolygonSettingsError",
    "array_features",
    "array_polygons",
    "collect",
    "geojson_bytes",
    "raster_features",
    "raster_polygons",
    "write_features",
    "write_flatgeobuf",
    "write_geojson",
]

_Block = tuple[int, np.ndarray, np.ndarray, bool]
"""A block of rows: its first row, its class codes, where they are valid, whether it is last."""


def raster_features(
    path: Path,
    classes: Sequence[str],
    settings: PolygonSettings,
    window: Window | None = None,
) -> FeatureStream:
    """The features of a class raster (or of a window of it), streamed as the blocks are read.

    The raster's layout, CRS and the window are checked here; the pixels are read, block by
    block, as the stream is consumed, and each batch holds the features the last block read
    completed (or, with ``settings.simplify``, all of them at the end: see the module docstring).

    Args:
        path: a one-band integer raster of class codes (``0..len(classes)-1``); its nodata value
            (255 when it declares none) belongs to no feature.
        classes: the class names, in code order.
        settings: opening, minimum area, simplification, precision, block height.
        window: the part of the raster to vectorise (whole pixels, inside it); None = all.

    Returns:
        The features, in the raster's CRS.

    Raises:
        ClassRasterError: not one band, not integers, no CRS, or a window outside the raster;
            while the stream is consumed, a class code outside ``classes``.
        RasterReadError: the raster cannot be opened or (while consumed) read.
    """
    path = Path(path)
    try:
        with rasterio.open(path) as src:
            _check_layout(str(path), src.count, np.dtype(src.dtypes[0]))
            if src.crs is None:
                raise ClassRasterError(f"{path}: no CRS; expected a georeferenced class raster")
            win = _whole_pixels(str(path), window, src.width, src.height)
            nodata = CLASS_NODATA if src.nodata is None else src.nodata
            transform, crs = src.window_transform(win), src.crs
    except RasterioIOError as exc:
        raise RasterReadError(f"{path}: cannot read the class raster ({exc})") from exc
    blocks = _raster_blocks(path, win, nodata, len(classes), settings.block_rows)
    return FeatureStream(tuple(classes), crs, _batches(blocks, Finisher(transform, crs, settings)))


def _raster_blocks(
    path: Path, win: Window, nodata: float, count: int, block_rows: int
) -> Iterator[_Block]:
    try:
        with rasterio.open(path) as src:
            for row, rows in _row_blocks(win.height, block_rows):
                block = src.read(1, window=Window(win.col_off, win.row_off + row, win.width, rows))
                at = (win.row_off + row, win.col_off)
                valid = _valid_codes(str(path), block, nodata, count, at)
                yield row, block, valid, row + rows == win.height
    except RasterioIOError as exc:
        raise RasterReadError(f"{path}: cannot read the class raster ({exc})") from exc


def array_features(
    classes_array: np.ndarray,
    transform: Affine,
    crs: CRS,
    classes: Sequence[str],
    settings: PolygonSettings,
    nodata: int = CLASS_NODATA,
) -> FeatureStream:
    """The features of an in-memory class array, streamed: those :func:`raster_features` gives.

    Args:
        classes_array: ``(rows, columns)`` integer class codes.
        transform: the array's geotransform.
        crs: its CRS.
        classes: the class names, in code order.
        settings: opening, minimum area, simplification, precision, block height.
        nodata: the code of pixels that belong to no feature.

    Raises:
        ClassRasterError: not two-dimensional or not integers; while the stream is consumed, a
            class code outside ``classes``.
    """
    source = "class array"
    if classes_array.ndim != 2 or 0 in classes_array.shape:
        raise ClassRasterError(
            f"{source}: shape {classes_array.shape}; expected (rows, columns), both non-zero"
        )
    _check_layout(source, 1, classes_array.dtype)

    def blocks() -> Iterator[_Block]:
        height = classes_array.shape[0]
        for row, rows in _row_blocks(height, settings.block_rows):
            block = classes_array[row : row + rows]
            valid = _valid_codes(source, block, nodata, len(classes), (row, 0))
            yield row, block, valid, row + rows == height

    return FeatureStream(
        tuple(classes), crs, _batches(blocks(), Finisher(transform, crs, settings))
    )


def _batches(blocks: Iterator[_Block], finisher: Finisher) -> Iterator[FeatureBatch]:
    """Stitch the blocks; after each, the features of the regions it completed."""
    stitcher = Stitcher()
    for row, codes, valid, last in blocks:
        stitcher.add(row, codes, valid, last)
        batch = finisher.add(*stitcher.take())
        if batch is not None:
            yield batch
    batch = finisher.end()
    if batch is not None:
        yield batch


def collect(stream: FeatureStream) -> ClassPolygons:
    """All the features of a stream, held together, and the area of each class.

    Args:
        stream: the features (consumed).
    """
    names = stream.classes
    totals = AreaTotals(names)
    features: list[Feature] = []
    for batch in stream.batches:
        totals.add(batch)
        features.extend(
            Feature(code=int(c), name=names[c], geometry=g, area_m2=float(a))
            for c, g, a in zip(
                batch.codes.tolist(),
                batch.geometries.tolist(),
                batch.areas_m2.tolist(),
                strict=True,
            )
        )
    areas_m2 = totals.summary().areas_m2
    return ClassPolygons(classes=names, crs=stream.crs, features=tuple(features), areas_m2=areas_m2)


def raster_polygons(
    path: Path,
    classes: Sequence[str],
    settings: PolygonSettings,
    window: Window | None = None,
) -> ClassPolygons:
    """All the features of a class raster, held together: :func:`collect` of the stream.

    The arguments are those of :func:`raster_features`. Every feature is in memory: for a whole
    scene, stream them to files with :func:`write_features` instead.

    Raises:
        ClassRasterError: as :func:`raster_features`.
        RasterReadError: as :func:`raster_features`.
    """
    return collect(raster_features(path, classes, settings, window))


def array_polygons(
    classes_array: np.ndarray,
    transform: Affine,
    crs: CRS,
    classes: Sequence[str],
    settings: PolygonSettings,
    nodata: int = CLASS_NODATA,
) -> ClassPolygons:
    """All the features of an in-memory class array: :func:`collect` of :func:`array_features`.

    Raises:
        ClassRasterError: as :func:`array_features`.
    """
    return collect(array_features(classes_array, transform, crs, classes, settings, nodata))


def _check_layout(source: str, bands: int, dtype: np.dtype) -> None:
    if bands != 1:
        raise ClassRasterError(f"{source}: {bands} bands; expected one band of class codes")
    if not np.issubdtype(dtype, np.integer):
        raise ClassRasterError(f"{source}: dtype {dtype}; expected integer class codes (uint8)")


def _whole_pixels(source: str, window: Window | None, width: int, height: int) -> Window:
    if window is None:
        return Window(0, 0, width, height)
    parts = (window.col_off, window.row_off, window.width, window.height)
    col, row, cols, rows = (int(v) for v in parts)
    if (
        any(int(v) != v for v in parts)
        or min(col, row) < 0
        or min(cols, rows) < 1
        or col + cols > width
        or row + rows > height
    ):
        raise ClassRasterError(
            f"{source}: window {parts}; expected whole pixels inside the {width}x{height} raster"
        )
    return Window(col, row, cols, rows)


def _row_blocks(height: int, block_rows: int) -> Iterator[tuple[int, int]]:
    for row in range(0, height, block_rows):
        yield row, min(block_rows, height - row)


def _valid_codes(
    source: str, block: np.ndarray, nodata: float, count: int, at: tuple[int, int]
) -> np.ndarray:
    """Where ``block`` (whose first pixel is row, column ``at``) holds a class.

    Raises:
        ClassRasterError: a pixel holds a code outside ``0..count-1``.
    """
    valid = block != nodata
    bad = valid & ((block < 0) | (block >= count))
    if bad.any():
        row, col = np.unravel_index(int(np.argmax(bad)), bad.shape)
        raise ClassRasterError(
            f"{source}: class code {block[row, col]} at row {at[0] + row}, column {at[1] + col}; "
            f"expected 0 to {count - 1} (the {count} classes) or nodata {nodata:g}"
        )
    return valid
