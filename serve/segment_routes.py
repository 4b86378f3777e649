"""The ``/segment`` routes: per-pixel classes of an upload, or of a window of a pinned scene.

``POST /segment`` segments an uploaded GeoTIFF (multipart field ``file``) exactly as the segment
stage would; ``GET /segment/{scene}?bbox=minx,miny,maxx,maxy`` cuts a window of a scene the
pinned stage segmented (:mod:`serve.segmenting`). Both answer, as asked by the ``format``
parameter or else the ``Accept`` header:

- ``geotiff`` (``image/tiff``, the default for ``*/*`` or no ``Accept``): the class raster, a
  COG with palette, nodata 255 and the class names as ``CLASS_<code>`` tags;
- ``geojson`` (``application/geo+json``): the class polygons in EPSG:4326;
- ``json`` (``application/json``): pixels and m² per class (:class:`SegmentSummary`).

An ``Accept`` none of them matches is 406. Every answer names the model: headers
``X-Model-Version`` and ``X-Model-MD5``, and the JSON summary's fields. The work runs in a worker
thread (:meth:`serve.routes.Ready.offload`), at most ``classify_threads`` at once.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import Response

from serve.errors import NotAcceptableError
from serve.routes import ReadyDep, error_responses
from serve.schemas import (
    SCENE_ID_PATTERN,
    TIFF_PART_SCHEMA,
    TIFF_UPLOAD_ENCODING,
    SegmentSummary,
)
from serve.segment_answers import MEDIA_TYPES, AnswerFormat, ClassRaster, geojson, geotiff, summary
from serve.segmenting import Segmenting, pixel_kind
from serve.service import LoadedModel

_NUMBER = r"-?[0-9]{1,20}(?:\.[0-9]{1,20})?"
BBOX_PATTERN = rf"^{_NUMBER},{_NUMBER},{_NUMBER},{_NUMBER}$"
DEFAULT_FORMAT: AnswerFormat = "geotiff"
PREFERENCE: tuple[AnswerFormat, ...] = ("geotiff", "json", "geojson")
MEDIA_NAMES: dict[AnswerFormat, tuple[str, ...]] = {
    "geotiff": ("image/tiff", "image/geotiff"),
    "json": ("application/json",),
    "geojson": ("application/geo+json",),
}
_GEOJSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "features"],
    "properties": {"type": {"const": "FeatureCollection"}, "features": {"type": "array"}},
}
_MODEL_HEADERS: dict[str, Any] = {
    "X-Model-Version": {"description": "the served model's version", "schema": {"type": "string"}},
    "X-Model-MD5": {
        "description": "the md5 of the served model file",
        "schema": {"type": "string"},
    },
}

FormatQuery = Annotated[
    AnswerFormat | None,
    Query(
        alias="format",
        description="geotiff, geojson or json; overrides the Accept header (default: geotiff)",
    ),
]


segment_uploads = APIRouter(tags=["segmentation"])
segment_scenes = APIRouter(tags=["segmentation"])


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    ok = {
        "description": "the per-pixel classes, in the format asked for",
        "model": SegmentSummary,
        "content": {
            "image/tiff": {"schema": {"type": "string", "format": "binary"}},
            "application/geo+json": {"schema": _GEOJSON_SCHEMA},
        },
        "headers": _MODEL_HEADERS,
    }
    return {200: ok, **error_responses(*codes)}


def _ranges(accept: str) -> list[tuple[str, float]]:
    """The media ranges of an ``Accept`` header with their q-values (1 when absent)."""
    ranges = []
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        ranges.append((media.lower(), q))
    return ranges


def _specificity(media_range: str, names: tuple[str, ...]) -> int:
    """How specifically a media range matches a format's media types (0: it does not)."""
    if media_range in names:
        return 3
    if media_range == names[0].split("/")[0] + "/*":
        return 2
    return 1 if media_range == "*/*" else 0


def negotiate(asked: AnswerFormat | None, accept: str | None) -> AnswerFormat:
    """The answer's format: ``asked``, else the best one the ``Accept`` header allows.

    Each format takes the q-value of the most specific range that matches its media type
    (``image/tiff`` over ``image/*`` over ``*/*``); the highest q above 0 wins, ties going to
    GeoTIFF, then JSON, then GeoJSON. No ``Accept`` (or an empty one) means GeoTIFF.

    Raises:
        NotAcceptableError: no format has a q above 0 (406).
    """
    if asked is not None:
        return asked
    if not accept or not accept.strip():
        return DEFAULT_FORMAT
    ranges = _ranges(accept)
    best: tuple[float, AnswerFormat] | None = None
    for fmt in PREFERENCE:
        matches = [(_specificity(r, MEDIA_NAMES[fmt]), q) for r, q in ranges]
        rank, q = max(matches, key=lambda m: m[0])
        if rank and q > 0 and (best is None or q > best[0]):
            best = (q, fmt)
    if best is None:
        raise NotAcceptableError(
            f"Accept {accept[:200]!r}: none of image/tiff, application/geo+json or "
            "application/json is acceptable; ask for one of them, or set format"
        )
    return best[1]


def _segmenting(request: Request, ctx: ReadyDep) -> Segmenting:
    state = request.app.state
    segmenting: Segmenting | None = getattr(state, "segmenting", None)
    if segmenting is None:  # made on first use; two made at once would be alike
        segmenting = state.segmenting = Segmenting(state.settings, ctx.service.cache)
    return segmenting


def encode_answer(raster: ClassRaster, fmt: AnswerFormat, loaded: LoadedModel) -> bytes:
    """The answer's bytes in ``fmt``, naming ``loaded``'s model (see the module docstring)."""
    model = loaded.model
    if fmt == "geotiff":
        return geotiff(raster, model.classes, pixel_kind(loaded).colours)
    if fmt == "geojson":
        return geojson(raster, model.classes)
    return summary(raster, model.classes, model.version, loaded.md5).model_dump_json().encode()


async def _answer(ctx: ReadyDep, raster: ClassRaster, fmt: AnswerFormat, stem: str) -> Response:
    content = await ctx.offload(encode_answer, raster, fmt, ctx.loaded)
    headers = {"X-Model-Version": ctx.loaded.model.version, "X-Model-MD5": ctx.loaded.md5}
    if fmt != "json":
        suffix = ".class.tif" if fmt == "geotiff" else ".geojson"
        headers["Content-Disposition"] = f'attachment; filename="{stem}{suffix}"'
    return Response(content, media_type=MEDIA_TYPES[fmt], headers=headers)


@segment_uploads.post(
    "/segment",
    response_model=None,
    responses=_responses(400, 401, 406, 409, 413, 415, 422, 503),
    openapi_extra=TIFF_UPLOAD_ENCODING,
)
async def segment_upload(
    file: Annotated[
        UploadFile,
        File(
            description="a georeferenced GeoTIFF with the bands the model reads",
            json_schema_extra=TIFF_PART_SCHEMA,
        ),
    ],
    request: Request,
    ctx: ReadyDep,
    answer_format: FormatQuery = None,
) -> Response:
    """Segment an uploaded GeoTIFF with the pinned model and segment settings.

    Limits (413): the body's bytes, and width x height x bands read from the TIFF header before
    any pixel is decoded (``SATPIPE_MAX_SEGMENT_BYTES``, ``SATPIPE_MAX_SEGMENT_SAMPLES``). 409:
    the served model labels whole tiles.
    """
    fmt = negotiate(answer_format, request.headers.get("accept"))
    segmenting = _segmenting(request, ctx)
    data = await file.read()
    name = (file.filename or "file")[:100]  # as messages name it
    raster = await ctx.offload(segmenting.upload, data, name, ctx.loaded)
    return await _answer(ctx, raster, fmt, "upload")


@segment_scenes.get(
    "/segment/{scene}",
    response_model=None,
    responses=_responses(401, 404, 405, 406, 409, 413, 422, 503),
)
async def segment_window(
    scene: Annotated[
        str,
        PathParam(
            pattern=SCENE_ID_PATTERN,
            max_length=100,
            description="a scene id of the pinned segmentation, e.g. synthetic-42",
        ),
    ],
    bbox: Annotated[
        str,
        Query(
            pattern=BBOX_PATTERN,
            max_length=200,
            description="minx,miny,maxx,maxy in bbox_crs (EPSG:4326: lon,lat order)",
            examples=["400000,5894100,401000,5895000"],
        ),
    ],
    request: Request,
    ctx: ReadyDep,
    bbox_crs: Annotated[
        Literal["scene", "EPSG:4326"], Query(description="the CRS of bbox: the scene's or lon/lat")
    ] = "scene",
    answer_format: FormatQuery = None,
) -> Response:
    """A window of a pinned scene's class COG: the pixels the bbox overlaps.

    404: no such scene in the pinned segmentation. 405: no scene id (``GET /segment/`` is
    redirected to ``/segment``, which takes uploads). 413: more pixels than
    ``SATPIPE_MAX_WINDOW_PIXELS``. 422: a bbox outside the scene.
    """
    fmt = negotiate(answer_format, request.headers.get("accept"))
    segmenting = _segmenting(request, ctx)
    raster = await ctx.offload(segmenting.window, scene, bbox, bbox_crs, ctx.loaded)
    return await _answer(ctx, raster, fmt, scene)
