"""Class polygons as files: FlatGeobuf in the scene CRS, GeoJSON in EPSG:4326 for the web.

Both carry, per feature, the fields ``class`` (name), ``code`` (int) and ``area_m2`` (float).
:func:`write_features` writes a :class:`~satpipe.outputs.polygons_types.FeatureStream` to either
or both in one pass, :data:`BATCH_FEATURES` features at a time (the batches are cut from the
features' sequence, so the bytes do not depend on how the stream was batched): memory holds one
batch, not the scene. The :class:`ClassPolygons` writers go through the same path.

FlatGeobuf (:func:`pyogrio.write_arrow` of a stream of Arrow record batches, WKB geometries;
layer :data:`LAYER`): Polygon layer in the scene CRS with GDAL's packed Hilbert R-tree. GDAL
writes the features to a temporary file beside the output as they come and, on closing, writes
the index and the features again in the index's Hilbert order (a function of the geometries and
their order), keeping a bounding box per feature in memory. GeoJSON (RFC 7946): longitude,
latitude in EPSG:4326, exterior rings counter-clockwise, coordinates rounded to
:data:`GEOJSON_DECIMALS`, features in their order; vertices are transformed, edges are not
densified (at pixel scale the difference is far below a pixel). Neither holds a time or a path:
the same features give the same bytes.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TextIO

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]  # pyarrow ships no types
import pyogrio  # type: ignore[import-untyped]  # pyogrio ships no types
import pyproj
import shapely

from satpipe.core.files import atomic_path
from satpipe.outputs.polygons_types import (
    AreaTotals,
    ClassPolygons,
    ClassRasterError,
    FeatureBatch,
    FeatureStream,
    FeatureSummary,
)

LAYER = "class_polygons"
FIELDS = ("class", "code", "area_m2")
GEOJSON_DECIMALS = 8
"""Decimals of GeoJSON degrees (1e-8 degree is about 1 mm)."""
BATCH_FEATURES = 4096
"""Features per batch written."""
JSON_COORDINATES = 1 << 16
"""Coordinates formatted at a time in the GeoJSON."""
_SCHEMA = pa.schema(
    [
        ("class", pa.string()),
        ("code", pa.int32()),
        ("area_m2", pa.float64()),
        ("geometry", pa.binary()),
    ]
)


def write_features(
    stream: FeatureStream, flatgeobuf: Path | None = None, geojson: Path | None = None
) -> FeatureSummary:
    """Write a stream's features to FlatGeobuf and/or GeoJSON, batch by batch, in one pass.

    Args:
        stream: the features (consumed).
        flatgeobuf: the ``.fgb`` file to write (replaced), or None.
        geojson: the ``.geojson`` file to write (atomically), or None.

    Returns:
        The number of features and the area of each class, as :func:`collect` would give.

    Raises:
        ClassRasterError: a coordinate cannot be transformed to EPSG:4326 (GeoJSON), or what
            the stream raises; then neither file is left behind.
    """
    totals = AreaTotals(stream.classes)
    with ExitStack() as stack:
        sinks: list[Callable[[FeatureBatch], None]] = [totals.add]
        writer = None
        if geojson is not None:
            tmp = stack.enter_context(atomic_path(geojson))
            writer = _GeojsonWriter(stack.enter_context(tmp.open("w", encoding="utf-8")), stream)
            sinks.append(writer.add)
        batches = _passed_to(_rebatched(stream.batches), sinks)
        if flatgeobuf is not None:
            _write_flatgeobuf(stream, batches, Path(flatgeobuf))
        else:
            for _ in batches:
                pass
        if writer is not None:
            writer.close()
    return totals.summary()


def _rebatched(batches: Iterable[FeatureBatch]) -> Iterator[FeatureBatch]:
    """The same features in batches of :data:`BATCH_FEATURES` (the last one shorter)."""
    held: list[FeatureBatch] = []
    count = 0
    for batch in batches:
        held.append(batch)
        count += len(batch)
        while count >= BATCH_FEATURES:
            whole = _concat(held)
            yield _cut(whole, slice(0, BATCH_FEATURES))
            held, count = [_cut(whole, slice(BATCH_FEATURES, None))], count - BATCH_FEATURES
    if count:
        yield _concat(held)


def _concat(batches: list[FeatureBatch]) -> FeatureBatch:
    if len(batches) == 1:
        return batches[0]
    return FeatureBatch(
        codes=np.concatenate([b.codes for b in batches]),
        geometries=np.concatenate([b.geometries for b in batches]),
        areas_m2=np.concatenate([b.areas_m2 for b in batches]),
    )


def _cut(batch: FeatureBatch, part: slice) -> FeatureBatch:
    return FeatureBatch(batch.codes[part], batch.geometries[part], batch.areas_m2[part])


def _passed_to(
    batches: Iterator[FeatureBatch], sinks: list[Callable[[FeatureBatch], None]]
) -> Iterator[FeatureBatch]:
    for batch in batches:
        for sink in sinks:
            sink(batch)
        yield batch


def _write_flatgeobuf(stream: FeatureStream, batches: Iterator[FeatureBatch], path: Path) -> None:
    """Write the batches to ``path`` through an Arrow stream (see the module docstring)."""
    names = np.asarray(stream.classes, dtype=object)
    raised: list[BaseException] = []

    def records() -> Iterator[pa.RecordBatch]:
        try:
            for batch in batches:
                columns = [
                    pa.array(names[batch.codes], pa.string()),
                    pa.array(batch.codes, pa.int32()),
                    pa.array(batch.areas_m2, pa.float64()),
                    pa.array(shapely.to_wkb(batch.geometries, output_dimension=2), pa.binary()),
                ]
                yield pa.RecordBatch.from_arrays(columns, schema=_SCHEMA)
        except BaseException as exc:  # GDAL sees only "error while accessing batch"
            raised.append(exc)
            raise

    path.unlink(missing_ok=True)
    try:
        pyogrio.write_arrow(
            pa.RecordBatchReader.from_batches(_SCHEMA, records()),
            str(path),
            layer=LAYER,
            driver="FlatGeobuf",
            geometry_name="geometry",
            geometry_type="Polygon",
            crs=stream.crs.to_wkt(),
            layer_options={"TEMPORARY_DIR": str(path.parent)},
        )
    except Exception:
        path.unlink(missing_ok=True)
        if raised:
            raise raised[0] from None
        raise


class _GeojsonWriter:
    """Writes a FeatureCollection to ``out``: the head now, each batch's features, the tail."""

    def __init__(self, out: TextIO, stream: FeatureStream) -> None:
        self._out, self._names, self._to_wgs84 = out, stream.classes, _to_wgs84(stream)
        self._first = True
        out.write('{"type":"FeatureCollection","features":[')

    def add(self, batch: FeatureBatch) -> None:
        """Write the batch's features (in EPSG:4326), a bounded run of coordinates at a time.

        The text is what :func:`json.dumps` (compact) makes of the feature with its geometry
        as :func:`shapely.geometry.mapping` gives it, without building that mapping: a
        polygon of millions of vertices would take a hundred bytes of Python objects per
        vertex.
        """
        if not len(batch):
            return
        rings, ring_owner = shapely.get_rings(self._to_wgs84(batch.geometries), return_index=True)
        ring_ends = np.cumsum(shapely.get_num_coordinates(rings))
        coords = shapely.get_coordinates(rings)
        first_rings = np.searchsorted(ring_owner, np.arange(len(batch) + 1))
        for i, (code, area) in enumerate(
            zip(batch.codes.tolist(), batch.areas_m2.tolist(), strict=True)
        ):
            properties = {"class": self._names[code], "code": code, "area_m2": area}
            self._out.write(
                ("" if self._first else ",")
                + '{"type":"Feature","properties":'
                + json.dumps(properties, separators=(",", ":"), allow_nan=False)
                + ',"geometry":{"type":"Polygon","coordinates":['
            )
            self._first = False
            for r in range(first_rings[i], first_rings[i + 1]):
                start = ring_ends[r - 1] if r else 0
                self._out.write("," if r > first_rings[i] else "")
                self._write_ring(coords[start : ring_ends[r]])
            self._out.write("]}}")

    def _write_ring(self, xy: np.ndarray) -> None:
        """``[[x,y],...]``, :data:`JSON_COORDINATES` coordinates at a time."""
        self._out.write("[")
        for start in range(0, len(xy), JSON_COORDINATES):
            chunk = xy[start : start + JSON_COORDINATES].tolist()
            text = json.dumps(chunk, separators=(",", ":"), allow_nan=False)[1:-1]
            self._out.write(("," if start else "") + text)
        self._out.write("]")

    def close(self) -> None:
        """Write the tail."""
        self._out.write("]}\n")


def _to_wgs84(stream: FeatureStream) -> Callable[[np.ndarray], np.ndarray]:
    """The features' geometries in EPSG:4326 (lon, lat), rounded, exteriors counter-clockwise."""
    source = pyproj.CRS.from_wkt(stream.crs.to_wkt())
    transformer = pyproj.Transformer.from_crs(source, "EPSG:4326", always_xy=True)

    def reproject(xy: np.ndarray) -> np.ndarray:
        lon, lat = transformer.transform(xy[:, 0], xy[:, 1])
        out = np.round(np.column_stack([lon, lat]), GEOJSON_DECIMALS)
        if not np.isfinite(out).all():
            raise ClassRasterError(
                f"CRS {stream.crs.to_string()!r}: polygons cannot be transformed to EPSG:4326"
            )
        return out

    def to_wgs84(geometries: np.ndarray) -> np.ndarray:
        return shapely.orient_polygons(shapely.transform(geometries, reproject))

    return to_wgs84


def stream_of(polygons: ClassPolygons) -> FeatureStream:
    """The features of ``polygons`` as a stream (one batch), for the writers."""
    features = polygons.features
    geometries = np.empty(len(features), dtype=object)
    geometries[:] = [f.geometry for f in features]
    batch = FeatureBatch(
        codes=np.asarray([f.code for f in features], dtype=np.int64),
        geometries=geometries,
        areas_m2=np.asarray([f.area_m2 for f in features], dtype=np.float64),
    )
    return FeatureStream(polygons.classes, polygons.crs, iter([batch]))


def write_flatgeobuf(polygons: ClassPolygons, path: Path) -> None:
    """Write the features to a FlatGeobuf file in their CRS (replacing ``path``).

    Args:
        polygons: the features.
        path: the ``.fgb`` file to write.
    """
    write_features(stream_of(polygons), flatgeobuf=Path(path))


def geojson_bytes(polygons: ClassPolygons) -> bytes:
    """The features as a GeoJSON FeatureCollection in EPSG:4326 (RFC 7946), UTF-8.

    Args:
        polygons: the features (any CRS).

    Raises:
        ClassRasterError: a coordinate cannot be transformed to EPSG:4326.
    """
    stream = stream_of(polygons)
    out = io.StringIO()
    writer = _GeojsonWriter(out, stream)
    for batch in _rebatched(stream.batches):
        writer.add(batch)
    writer.close()
    return out.getvalue().encode()


def write_geojson(polygons: ClassPolygons, path: Path) -> None:
    """Write :func:`geojson_bytes` to ``path`` atomically, streaming batch by batch.

    Args:
        polygons: the features (any CRS).
        path: the ``.geojson`` file to write.

    Raises:
        ClassRasterError: a coordinate cannot be transformed to EPSG:4326.
    """
    write_features(stream_of(polygons), geojson=Path(path))
