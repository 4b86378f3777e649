"""Segmentation for the service: an uploaded scene run through the batch code, or a pinned window.

**Upload** (``POST /segment``): a GeoTIFF of any size within the declared limits is segmented by
:class:`satpipe.inference.segment.SceneSegmentation`, the segment stage's own runner (the same
windows, overlap, blending and quantisation), with the ``segment`` params the pinned stage ran
with (:mod:`serve.segment_pin`) and the served model, in-process: the inline engine (one job
pipeline in this thread and a helper thread; the stage uses a process pool, which changes no
byte). So a scene uploaded whole gives the class pixels the stage wrote, byte for byte.

Limits are checked before any pixel is decoded: the body's bytes (the route's body limit), then
width x height x bands from the TIFF header alone (:func:`serve.expectations.tiff_shape`): a
60000 x 60000 sparse GeoTIFF of a few hundred KB is refused from its first kilobyte (413, naming
the limit and the value), never decompressed. Then the upload must be a georeferenced,
north-up GeoTIFF of one supported pixel type with the bands the model reads (else 415 or 422).

**Window** (``GET /segment/{scene}``): a bounding box, in the scene's CRS or EPSG:4326 (lon/lat
order), is cut from the pinned class COG, verified against its md5 in ``dvc.lock``. A box in
EPSG:4326 is first transformed to the scene's CRS (its bounding box there, edges densified).
The window is every pixel whose area the box overlaps (a box edge on a pixel edge takes no pixel
beyond it), clipped to the scene; a box outside the scene is 422, a window of more than
``max_window_pixels`` pixels 413.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform_bounds
from rasterio.windows import Window as RasterWindow

from satpipe.core.errors import (
    LockfileError,
    ModelError,
    NotGeoTIFFError,
    SceneError,
    UnsupportedDtypeError,
)
from satpipe.core.raster import GEOTIFF_DRIVERS, open_scene, read_window
from satpipe.core.records import SceneRecord
from satpipe.inference.segment import SceneSegmentation, SegmentSettings, settings_for
from satpipe.inference.segment_read import release
from satpipe.models.kinds.base import PixelKind
from satpipe.outputs.segmentation import provenance_tags
from satpipe.scenes.validation import SUPPORTED_DTYPES, check_georeferencing
from serve.errors import BoundsError, LimitError, PixelModelError
from serve.expectations import tiff_shape
from serve.schemas import Window
from serve.segment_answers import ClassRaster
from serve.segment_pin import PinnedSegments
from serve.service import LoadedModel
from serve.settings import Settings

EDGE = 1e-6
"""Pixels: a box edge this close to a pixel edge is on it (no sliver of a pixel is taken)."""


def pixel_kind(loaded: LoadedModel) -> PixelKind:
    """The served model's per-pixel kind.

    Raises:
        PixelModelError: the served model labels whole tiles (409).
    """
    model = loaded.model
    if model.output != "pixels":
        raise PixelModelError(
            f"model {model.version} (kind {model.kind.name}) labels whole tiles, not pixels: "
            "/segment needs a per-pixel model (train.model pixel_logistic, or an ONNX model with "
            "per-pixel output)"
        )
    return model.kind  # type: ignore[return-value]


def _described(settings: SegmentSettings) -> dict[str, object]:
    return {
        "window": settings.window,
        "overlap": settings.overlap,
        "blend": settings.blend,
        "batch": settings.batch,
    }


class Segmenting:
    """Segments uploads and cuts windows of the pinned scenes (shared by the routes)."""

    def __init__(self, settings: Settings, cache: Path | None) -> None:
        self.settings = settings
        self.pinned = PinnedSegments(settings, cache)

    def check_header(self, data: bytes, name: str) -> None:
        """Refuse, from the TIFF header alone, an upload that is no TIFF or is too large.

        Raises:
            NotGeoTIFFError: no TIFF signature (415).
            RasterReadError: a truncated or malformed header (422).
            LimitError: more samples than ``max_segment_samples`` (413).
        """
        shape = tiff_shape(data, name)
        if shape is None:
            raise NotGeoTIFFError(
                f"{name}: not a TIFF file (no TIFF signature); expected a GeoTIFF"
            )
        self._check_samples(name, *shape, "read from its TIFF header")

    def _check_samples(self, name: str, width: int, height: int, bands: int, seen: str) -> None:
        limit = self.settings.max_segment_samples
        if width * height * bands > limit:
            raise LimitError(
                f"{name}: {width}x{height} pixels x {bands} bands = {width * height * bands} "
                f"samples ({seen}), more than the limit of {limit} "
                "(SATPIPE_MAX_SEGMENT_SAMPLES); nothing was decoded"
            )

    def upload(self, data: bytes, filename: str, loaded: LoadedModel) -> ClassRaster:
        """Segment an uploaded GeoTIFF with the batch code path (see the module docstring).

        Raises:
            PixelModelError: the served model labels tiles. LimitError: too large.
            NotGeoTIFFError, RasterReadError, SceneError: not a usable GeoTIFF.
            LockfileError: the segment stage's pin is unusable.
        """
        kind = pixel_kind(loaded)
        name = f"upload {filename!r}"
        self.check_header(data, name)  # before anything is decoded
        settings = settings_for(kind, self.pinned.pin(loaded).params)
        with tempfile.TemporaryDirectory(prefix="satpipe-segment-") as tmp:
            path = Path(tmp) / "upload.tif"  # the runner reads windows of a file
            path.write_bytes(data)
            scene = self._scene(path, name)
            classes, provenance = _segment(kind, scene, path, settings)
        tags = provenance_tags(loaded.model.version, loaded.md5, provenance)
        transform, crs = Affine(*scene.transform), CRS.from_wkt(scene.crs_wkt)
        return ClassRaster(classes, transform, crs, tags, settings=_described(settings))

    def _scene(self, path: Path, name: str) -> SceneRecord:
        """The upload's scene record, from its header (validated as ingest validates scenes)."""
        with open_scene(path, name=name) as src:
            if src.driver not in GEOTIFF_DRIVERS:
                raise NotGeoTIFFError(f"{name}: driver is {src.driver}; expected a GeoTIFF")
            self._check_samples(name, src.width, src.height, src.count, "as GDAL opens it")
            dtypes = tuple(src.dtypes)
            if len(set(dtypes)) > 1 or dtypes[0] not in SUPPORTED_DTYPES:
                raise UnsupportedDtypeError(
                    f"{name}: pixel types {', '.join(sorted(set(dtypes)))}; expected one of "
                    f"{', '.join(SUPPORTED_DTYPES)} for every band"
                )
            check_georeferencing(src, name)
            epsg = src.crs.to_epsg()
            return SceneRecord(
                id=name,
                role="infer",
                sha256="",
                width=src.width,
                height=src.height,
                count=src.count,
                dtypes=dtypes,
                crs=f"EPSG:{epsg}" if epsg else src.crs.to_wkt(),
                crs_wkt=src.crs.to_wkt(),
                epsg=epsg,
                transform=tuple(src.transform)[:6],
                nodata=src.nodata,
                acquisition_time=None,
                source={"kind": "upload"},
                labels=None,
                preview=None,
                driver=src.driver,
                bounds=tuple(src.bounds),
                res=tuple(src.res),
                nodata_source="file" if src.nodata is not None else None,
                acquisition_time_source=None,
                band_descriptions=tuple(src.descriptions),
                block_shape=tuple(src.block_shapes[0]),
                valid_fraction=math.nan,
                size_bytes=path.stat().st_size,
            )

    def window(self, scene: str, bbox: str, bbox_crs: str, loaded: LoadedModel) -> ClassRaster:
        """Cut a bounding box's window from the pinned class COG of ``scene``.

        Raises:
            PixelModelError: the served model labels tiles. SceneNotFoundError: no such scene.
            BoundsError: a malformed box, or one outside the scene. LimitError: too large.
            LockfileError: the COG's pinned bytes are not there.
        """
        kind = pixel_kind(loaded)
        box = parse_bbox(bbox)
        pin = self.pinned.pin(loaded)
        path, pinned = self.pinned.class_cog(pin, scene)
        name = f"scene {scene!r}"
        with open_scene(path, name=name) as src:
            if bbox_crs != "scene":
                box = _from_lonlat(box, src.crs, name)
            win = pixel_window(box, src.transform, src.width, src.height, name, bbox)
            pixels, limit = win.width * win.height, self.settings.max_window_pixels
            if pixels > limit:
                raise LimitError(
                    f"{name}: bbox {bbox} covers {win.width}x{win.height} = {pixels} pixels, more "
                    f"than the limit of {limit} (SATPIPE_MAX_WINDOW_PIXELS)"
                )
            classes = read_window(src, win, [1], name=name)[0]
            tags = {k: v for k, v in src.tags().items() if not k.startswith("CLASS_")}
            transform, crs = src.window_transform(win), src.crs
        if self.pinned.files.local(pinned) != path:  # replaced while read: refuse, not guess
            raise LockfileError(f"{pinned.path}: changed while it was read; ask again")
        where = Window(col_off=win.col_off, row_off=win.row_off, width=win.width, height=win.height)
        settings = settings_for(kind, pin.params)
        return ClassRaster(classes, transform, crs, tags, scene, where, _described(settings))


def _segment(
    kind: PixelKind, scene: SceneRecord, path: Path, settings: SegmentSettings
) -> tuple[np.ndarray, dict[str, Any]]:
    """The class codes of a scene file by the segment stage's runner, and its provenance."""
    try:
        run = SceneSegmentation(kind, scene, path, settings)
    except ModelError as exc:  # the scene lacks a band the model reads: the upload's fault
        raise SceneError(str(exc)) from exc
    classes = np.empty((scene.height, scene.width), dtype=np.uint8)
    try:
        for block in run.blocks():
            classes[block.row_off : block.row_off + block.classes.shape[0]] = block.classes
    finally:
        release()  # the file this process kept open for reads
    return classes, run.provenance


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """``minx,miny,maxx,maxy`` as four finite numbers with ``minx < maxx`` and ``miny < maxy``.

    Raises:
        BoundsError: anything else (422).
    """
    parts = text.split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise BoundsError(f"bbox {text!r}: expected four numbers minx,miny,maxx,maxy")
    minx, miny, maxx, maxy = values
    if not (minx < maxx and miny < maxy):
        raise BoundsError(f"bbox {text!r}: expected minx < maxx and miny < maxy")
    return minx, miny, maxx, maxy


def _from_lonlat(
    box: tuple[float, float, float, float], crs: CRS, name: str
) -> tuple[float, float, float, float]:
    """A lon/lat box as its bounding box in ``crs`` (edges densified)."""
    minx, miny, maxx, maxy = box
    if not (-180 <= minx and maxx <= 180 and -90 <= miny and maxy <= 90):
        raise BoundsError(
            f"bbox {box}: not longitudes in [-180, 180] and latitudes in [-90, 90] (EPSG:4326)"
        )
    try:
        out = transform_bounds(CRS.from_epsg(4326), crs, *box, densify_pts=21)
    except Exception as exc:  # PROJ refuses what it cannot transform: a box outside the scene
        raise BoundsError(f"{name}: bbox {box} cannot be transformed to the scene's CRS") from exc
    if not all(math.isfinite(v) for v in out):
        raise BoundsError(f"{name}: bbox {box} has no finite extent in the scene's CRS")
    return out


def pixel_window(
    box: tuple[float, float, float, float],
    transform: Affine,
    width: int,
    height: int,
    name: str,
    shown: str,
) -> RasterWindow:
    """The pixels of a north-up grid whose area ``box`` overlaps, clipped to the grid.

    Raises:
        BoundsError: the box does not overlap the grid (422).
    """
    minx, miny, maxx, maxy = box
    t = transform
    # Clamped just outside the grid first: a far-away box must not overflow floor and ceil.
    cols = sorted(min(max(v, -1.0), width + 1.0) for v in ((minx - t.c) / t.a, (maxx - t.c) / t.a))
    rows = sorted(min(max(v, -1.0), height + 1.0) for v in ((maxy - t.f) / t.e, (miny - t.f) / t.e))
    c0, c1 = max(0, math.floor(cols[0] + EDGE)), min(width, math.ceil(cols[1] - EDGE))
    r0, r1 = max(0, math.floor(rows[0] + EDGE)), min(height, math.ceil(rows[1] - EDGE))
    if c1 <= c0 or r1 <= r0:
        left, top = t.c, t.f
        right, bottom = t.c + t.a * width, t.f + t.e * height
        raise BoundsError(
            f"{name}: bbox {shown} does not overlap the scene (bounds {left}, {bottom}, {right}, "
            f"{top} in its CRS)"
        )
    return RasterWindow(c0, r0, c1 - c0, r1 - r0)
