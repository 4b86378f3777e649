"""Request and response bodies of the service (pydantic models, shown in ``/docs``).

Bounds are ``(left, bottom, right, top)`` in ``crs``; a window is the tile's position in its
scene, in pixels. Every result names the model that produced it (``model_version``, ``model_md5``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_BATCH = 256

# The rules of serve.paths.check_tile_path as a pattern, declared in the schema (the service
# checks them itself, answering 400 with the rule broken): '/'-separated segments of letters,
# digits, '.', '_' and '-', none empty, '.' or '..', at most 255 characters each (a file
# name's limit), the last ending in .tif or .tiff (any case).
_SEGMENT = (
    r"(?:[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}"
    r"|\.[A-Za-z0-9_-][A-Za-z0-9._-]{0,253}"
    r"|\.\.[A-Za-z0-9._-]{1,253})"
)
TILE_PATH_PATTERN = rf"^(?:{_SEGMENT}/)*[A-Za-z0-9._-]{{0,250}}\.[Tt][Ii][Ff][Ff]?$"
SCENE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
"""A scene id, as ingest makes them (``ingest.id``): a file name, never a path."""

# An upload's part, as the schema declares it: a non-empty file of media type image/tiff (an
# empty or non-TIFF file is answered 415, one the model cannot read 422: content, not shape).
TIFF_PART_SCHEMA: dict[str, Any] = {
    "format": "binary",
    "contentMediaType": "image/tiff",
    "minLength": 1,
}
TIFF_UPLOAD_ENCODING: dict[str, Any] = {
    "requestBody": {
        "content": {"multipart/form-data": {"encoding": {"file": {"contentType": "image/tiff"}}}}
    }
}
"""``openapi_extra`` of an upload route: its ``file`` part is sent as ``image/tiff``."""

_TILE_PATH_TEXT = "path of a tile file relative to the tiles directory, e.g. r000000_c000256.tif"
TilePath = Annotated[
    str,
    Field(
        min_length=1,
        max_length=1024,
        description=_TILE_PATH_TEXT,
        examples=["r000000_c000256.tif"],
        json_schema_extra={"pattern": TILE_PATH_PATTERN},
    ),
]
BatchTilePath = Annotated[
    str,
    Field(
        min_length=1,
        max_length=1024,
        description=_TILE_PATH_TEXT + "; a refused path is one item's error (status 400)",
        examples=["r000000_c000256.tif"],
    ),
]


class InferRequest(BaseModel):
    """``POST /infer``: classify a tile of the pipeline's tiles directory."""

    model_config = ConfigDict(extra="forbid")

    tile_path: TilePath


class BatchRequest(BaseModel):
    """``POST /infer/batch``: classify several tiles; one result or one error per item."""

    model_config = ConfigDict(extra="forbid")

    tile_paths: list[BatchTilePath] = Field(min_length=1, max_length=MAX_BATCH)


class Window(BaseModel):
    """A tile's pixel window in its scene."""

    col_off: int
    row_off: int
    width: int
    height: int


class InferResult(BaseModel):
    """The model's answer for one tile, with where the tile is and which model answered."""

    tile_id: str | None = Field(description="id from the tile index; null for an upload")
    tile_path: str | None = Field(description="the requested path; null for an upload")
    in_index: bool = Field(description="the tile is listed in the tile index")
    window: Window | None = Field(description="pixel window in the scene, when known")
    bounds: tuple[float, float, float, float] | None = Field(
        description="(left, bottom, right, top) in crs, when known"
    )
    crs: str | None
    prediction: str = Field(description="the class, one of the model's classes (see /model)")
    score: float = Field(description="the model's score for it (meaning depends on the kind)")
    features: dict[str, float] = Field(
        description="the features the model read, and the one drift monitoring watches"
    )
    valid_fraction: float
    model_version: str
    model_md5: str


class BatchItem(BaseModel):
    """One item of a batch: a result, or the status and detail of its error."""

    tile_path: str
    status: int = Field(description="the HTTP status this item alone would have had")
    result: InferResult | None = None
    detail: str | None = None


class BatchResponse(BaseModel):
    """All items of a batch, in request order."""

    model_version: str
    model_md5: str
    succeeded: int
    failed: int
    results: list[BatchItem]


class Liveness(BaseModel):
    """``GET /health/live``: the process answers."""

    status: Literal["alive"] = "alive"


class Readiness(BaseModel):
    """``GET /health/ready``: the pinned model is loaded and verified."""

    status: Literal["ready"] = "ready"
    model_version: str
    model_md5: str
    origin: str = Field(description="where the verified model bytes came from")


class RegistryInfo(BaseModel):
    """The registry assignment the service serves: artifact, version, stage, commit."""

    artifact: str
    version: str
    stage: str
    rev: str = Field(description="the commit the version's tag names")


class ModelInfo(BaseModel):
    """``GET /model``: the served model, its pin in ``dvc.lock`` and the software versions."""

    model_version: str
    model_md5: str
    origin: str
    rev: str | None = Field(description="git revision the pin was read at; null = workspace")
    registry: RegistryInfo | None = Field(
        None, description="the GTO assignment served (SATPIPE_ARTIFACT/SATPIPE_STAGE); else null"
    )
    lock_file: str
    lock_entry: dict[str, Any] = Field(description="the train stage's entry in dvc.lock")
    training_params: dict[str, Any] = Field(
        description="params the train stage ran with; a nested section left at its defaults "
        "(train.onnx when the model is not ONNX) is null"
    )
    tile_params: dict[str, Any] = Field(description="params the tile stage ran with")
    kind: str = Field(description="the model kind (threshold, logistic, onnx, ...)")
    details: dict[str, Any] = Field(description="the kind's own parameters, e.g. the threshold")
    classes: list[str]
    monitored: str = Field(description="the feature drift monitoring compares with training")
    feature: dict[str, Any]
    reference: dict[str, Any] = Field(description="training reference statistics (drift)")
    training: dict[str, Any] = Field(description="training provenance recorded in the model")
    upload_expectations: dict[str, Any]
    versions: dict[str, str]


class ErrorBody(BaseModel):
    """Every error answer: one line saying what was wrong and what was expected."""

    detail: str


class ClassArea(BaseModel):
    """One class of a segmentation answer: its code, name, pixels and area."""

    code: int = Field(description="the class code in the GeoTIFF answer (255 is nodata)")
    name: str
    pixels: int
    area_m2: float = Field(description="m² (see area_method)")


class SegmentSummary(BaseModel):
    """``/segment`` as JSON: the grid, pixels and m² per class, the settings and the model."""

    scene: str | None = Field(description="the pinned scene the window is cut from; null: upload")
    window: Window | None = Field(description="the window in the scene; null for an upload")
    width: int
    height: int
    crs: str
    transform: tuple[float, float, float, float, float, float] = Field(
        description="the affine transform (a, b, c, d, e, f) of the answer's grid"
    )
    bounds: tuple[float, float, float, float] = Field(description="(left, bottom, right, top)")
    pixels: int
    valid_pixels: int
    nodata_pixels: int
    area_method: Literal["projected", "geodesic"] = Field(
        description="projected: pixels x the pixel's area; geodesic: per row, on the ellipsoid"
    )
    classes: list[ClassArea]
    settings: dict[str, Any] = Field(
        description="the segment params the pinned run used (window, overlap, blend, batch)"
    )
    model_version: str
    model_md5: str
