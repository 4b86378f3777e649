"""Pipeline parameters: one frozen, validated object per ``params.yaml`` section.

``params.yaml`` is the only place tunables live. Each section maps to a model with
``extra="forbid"``, so a misspelt key (``dvc exp run -S tile.sise=512`` silently adds one) fails
with the dotted key named instead of being ignored. Values are checked strictly: ``"256"`` is not
an int. Keys that are unused in the current configuration are present and ``null``; a nested
section (``ingest.labels``, ``ingest.stac``, ``train.onnx``) spells out all its keys, and is unset
while they all hold their defaults (see :mod:`satpipe.core.params_base`).

The ``ingest`` section's models live in :mod:`satpipe.core.params_ingest`; this module holds the
other sections, the whole file (:class:`Params`) and its loading, and re-exports them all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from satpipe.core.classes import CLASSES
from satpipe.core.errors import ParamsError
from satpipe.core.params_base import NestedSection, Section, check_class_names
from satpipe.core.params_ingest import (
    AoiParams,
    IngestParams,
    LabelParams,
    SceneParams,
    StacParams,
    parse_iso8601,
)

__all__ = [
    "AoiParams",
    "BatchInferParams",
    "EngineParams",
    "FeaturesParams",
    "HealthParams",
    "IngestParams",
    "LabelParams",
    "LogisticParams",
    "OnnxParams",
    "Params",
    "PixelClassParams",
    "PixelLogisticParams",
    "PixelParams",
    "SceneParams",
    "SegmentParams",
    "StacParams",
    "TileParams",
    "TrainParams",
    "VectorizeParams",
    "load_params",
    "parse_iso8601",
    "parse_params",
]


class TileParams(Section):
    """``tile``: the tile grid and which tiles are kept."""

    size: int = Field(256, ge=8, le=16384)
    stride: int | None = Field(None, ge=1)
    max_nodata_fraction: float = Field(0.5, ge=0.0, le=1.0)
    keep_partial: bool = False
    compress: Literal["zstd", "deflate", "lzw", "none"] = "zstd"
    min_labelled_fraction: float = Field(0.5, gt=0.0, le=1.0)

    @property
    def step(self) -> int:
        """The effective stride: ``stride`` or, when null, ``size``."""
        return self.stride if self.stride is not None else self.size


class FeaturesParams(Section):
    """``features``: which bands the mean-intensity feature averages (1-based; null = all)."""

    bands: list[int] | None = None

    @field_validator("bands")
    @classmethod
    def _check_bands(cls, value: list[int] | None) -> list[int] | None:
        if value is not None:
            if not value:
                raise ValueError("expected a non-empty list of 1-based band numbers or null")
            if any(b < 1 for b in value) or len(set(value)) != len(value):
                raise ValueError("expected distinct band numbers >= 1")
        return value


class LogisticParams(Section):
    """``train.logistic``: the logistic kind's features (null = all but the valid fraction)."""

    features: list[str] | None = None
    l2: float = Field(1.0, ge=0.0)
    iterations: int = Field(500, ge=1, le=100_000)


class OnnxParams(NestedSection):
    """``train.onnx``: a classifier exported to ONNX, and what its input and outputs mean.

    Unset (``None``) while every key holds its default: ``path`` and ``classes`` null,
    ``input: features``, ``batch: 256``, the rest null.
    """

    path: str
    input: Literal["features", "pixels"] = "features"
    output: Literal["tile", "pixels"] = "tile"
    features: list[str] | None = None
    classes: list[str] | None = None
    batch: int = Field(256, ge=1, le=65536)
    bands: int | list[str | int] | None = None
    size: int | None = Field(None, ge=1)
    scores: Literal["logits", "probabilities"] = "probabilities"
    scale: list[float] | None = None
    offset: list[float] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    provider: Literal["cpu", "cuda"] = "cpu"

    @field_validator("bands")
    @classmethod
    def _check_bands(cls, value: int | list[str | int] | None) -> int | list[str | int] | None:
        if isinstance(value, int) and value < 1:
            raise ValueError("expected a band count >= 1, a list of bands, or null")
        if isinstance(value, list):
            if not value or len(set(map(str, value))) != len(value):
                raise ValueError("expected a non-empty list of distinct band names or numbers")
            if any(isinstance(b, int) and b < 1 for b in value):
                raise ValueError("band numbers are 1-based")
        return value

    @field_validator("std")
    @classmethod
    def _check_std(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and any(not v > 0 for v in value):
            raise ValueError("expected standard deviations > 0")
        return value

    @model_validator(mode="after")
    def _check_output(self) -> OnnxParams:
        if self.output == "tile" and self.classes is None:
            raise ValueError("a tile classifier names its output columns: {at}.classes is missing")
        if self.output == "pixels" and self.input != "pixels":
            raise ValueError("{at}: output pixels needs input pixels")
        return self


class PixelClassParams(Section):
    """One class of a per-pixel model: its name, the label codes meaning it, its colour."""

    name: str
    codes: list[int] = Field(default_factory=list)
    colour: str = Field(pattern=r"^#[0-9a-fA-F]{6}$")


class PixelParams(Section):
    """``train.pixels``: what a per-pixel model's classes are, and how it is trained.

    ``classes`` in order: the model's class ``i`` is written as code ``i`` in the class raster
    and drawn in its ``colour``; a reference label pixel whose code is listed under a class is
    that class (codes listed nowhere are unlabelled). ``samples`` caps the labelled training
    pixels a trainable kind is fitted on (a deterministic sample of the training tiles).
    """

    classes: list[PixelClassParams] = Field(min_length=2, max_length=254)
    samples: int = Field(20000, ge=100, le=1_000_000)

    @field_validator("classes")
    @classmethod
    def _check_classes(cls, value: list[PixelClassParams]) -> list[PixelClassParams]:
        check_class_names([c.name for c in value])
        codes = [code for c in value for code in c.codes]
        if len(set(codes)) != len(codes):
            raise ValueError("a label code is listed under two classes")
        return value


class PixelLogisticParams(Section):
    """``train.pixel_logistic``: per-pixel multinomial logistic regression."""

    features: list[str] = Field(default_factory=lambda: ["bands", "ndwi", "ndvi"], min_length=1)
    l2: float = Field(1.0, ge=0.0)
    iterations: int = Field(100, ge=1, le=10_000)


class TrainParams(Section):
    """``train``: the model kind, the training subset, the reference distribution.

    ``model`` names the kind (:mod:`satpipe.models.kinds`): ``threshold`` (default), ``logistic`` or
    ``onnx``, each with its own settings: ``method`` for the threshold (``mean``: the mean of the
    training tiles' feature; ``fit``: the threshold with the best balanced accuracy on the
    labelled training tiles), ``logistic`` and ``onnx`` for the others. ``classes`` are the
    model's class names in order (default ``dark``, ``bright``; for a threshold the last one is
    the class above it); an ONNX model's are ``onnx.classes``. Reference labels are judged against
    these names.
    """

    _check_classes = field_validator("classes")(classmethod(lambda cls, v: check_class_names(v)))

    model: str = "threshold"
    classes: list[str] = Field(default_factory=lambda: list(CLASSES), min_length=2)
    method: Literal["mean", "fit"] = "mean"
    logistic: LogisticParams = LogisticParams()
    onnx: OnnxParams | None = None
    pixels: PixelParams = PixelParams(
        classes=[
            PixelClassParams(name="water", codes=[1], colour="#1f78b4"),
            PixelClassParams(name="vegetation", codes=[2], colour="#33a02c"),
            PixelClassParams(name="soil", codes=[3], colour="#b15928"),
            PixelClassParams(name="cloud", codes=[4], colour="#f0f0f0"),
        ]
    )
    pixel_logistic: PixelLogisticParams = PixelLogisticParams()
    fraction: float = Field(0.5, gt=0.0, le=1.0)
    seed: int = Field(0, ge=0)
    histogram_bins: int = Field(20, ge=2, le=1000)


class BatchInferParams(Section):
    """``batch_infer``: how many unreadable tiles a run tolerates."""

    max_failed_fraction: float = Field(0.05, ge=0.0, le=1.0)


class HealthParams(Section):
    """``health``: the thresholds that turn drift figures into a status."""

    ks_pvalue_warning: float = Field(0.05, ge=0.0, le=1.0)
    ks_pvalue_critical: float = Field(0.001, ge=0.0, le=1.0)
    psi_warning: float = Field(0.1, ge=0.0)
    psi_critical: float = Field(0.25, ge=0.0)
    mean_shift_warning: float = Field(1.0, ge=0.0)
    mean_shift_critical: float = Field(2.0, ge=0.0)
    failure_rate_warning: float = Field(0.01, ge=0.0, le=1.0)
    failure_rate_critical: float = Field(0.05, ge=0.0, le=1.0)
    class_shift_warning: float = Field(0.15, ge=0.0, le=1.0)
    class_shift_critical: float = Field(0.3, ge=0.0, le=1.0)
    psi_bins: int = Field(10, ge=2, le=100)
    min_samples: int = Field(20, ge=1)
    min_pixels: int = Field(1000, ge=1)
    seam_warning: float = Field(0.05, ge=0.0, le=1.0)
    seam_critical: float = Field(0.15, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _check_order(self) -> HealthParams:
        pairs = [
            ("ks_pvalue", self.ks_pvalue_critical, self.ks_pvalue_warning),
            ("psi", self.psi_warning, self.psi_critical),
            ("mean_shift", self.mean_shift_warning, self.mean_shift_critical),
            ("failure_rate", self.failure_rate_warning, self.failure_rate_critical),
            ("class_shift", self.class_shift_warning, self.class_shift_critical),
            ("seam", self.seam_warning, self.seam_critical),
        ]
        for name, low, high in pairs:
            if low > high:
                raise ValueError(f"{name} thresholds are in the wrong order ({low} > {high})")
        return self


class SegmentParams(Section):
    """``segment``: how a per-pixel model runs over whole scenes (tile-label models skip it).

    Windows of ``window`` pixels (null: the model's fixed size, else 256) step by
    ``window - overlap``; overlapping scores are blended with the ``blend`` taper. ``batch``
    windows go to the model per call (the last call is padded to it, so the model always sees
    the same batch shape). ``probabilities``: ``winner`` writes the winning class's probability,
    ``all`` one band per class.
    """

    window: int | None = Field(None, ge=16, le=4096)
    overlap: int = Field(64, ge=0, le=2048)
    blend: Literal["hann", "tukey", "flat"] = "hann"
    batch: int = Field(4, ge=1, le=1024)
    probabilities: Literal["winner", "all"] = "winner"

    @model_validator(mode="after")
    def _check_overlap(self) -> SegmentParams:
        if self.window is not None and 2 * self.overlap > self.window:
            raise ValueError(f"overlap {self.overlap} is more than half the window {self.window}")
        if self.overlap % 2:
            raise ValueError(f"overlap {self.overlap} is odd; expected an even number of pixels")
        return self


class VectorizeParams(Section):
    """``vectorize``: how class rasters become polygons (per-pixel models only).

    The keys are :class:`satpipe.outputs.polygons.PolygonSettings`'s. ``min_area`` (m²) drops
    smaller features after the ``opening`` (the half-width in pixels of a square morphological
    opening; 0 = none); ``simplify`` is a coverage-simplification tolerance in pixels (0 = exact
    pixel edges); ``precision`` the decimals of written coordinates (null: 3 in a projected CRS,
    9 in degrees); ``block_rows`` the rows read at a time (memory only).
    """

    min_area: float = Field(0.0, ge=0.0)
    opening: int = Field(0, ge=0, le=1024)
    simplify: float = Field(0.0, ge=0.0)
    precision: int | None = Field(None, ge=0, le=15)
    block_rows: int = Field(1024, ge=1, le=65536)


class EngineParams(Section):
    """``engine``: where tile and batch_infer work runs (not a DVC param: outputs don't change)."""

    name: Literal["local", "dask"] = "local"
    workers: int | None = Field(None, ge=1, le=4096)
    address: str | None = None


class Params(Section):
    """The whole ``params.yaml``."""

    ingest: IngestParams = IngestParams()
    tile: TileParams = TileParams()
    features: FeaturesParams = FeaturesParams()
    train: TrainParams = TrainParams()
    batch_infer: BatchInferParams = BatchInferParams()
    health: HealthParams = HealthParams()
    segment: SegmentParams = SegmentParams()
    vectorize: VectorizeParams = VectorizeParams()
    engine: EngineParams = EngineParams()


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as ``X``, ``X | None`` or ``list[X] | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        if (found := _model_in(arg)) is not None:
            return found
    return None


def _describe(path: Path, exc: ValidationError, data: dict[str, Any]) -> str:
    errors = exc.errors(include_url=False)
    # A misspelt key comes first: it also explains a key reported missing beside it.
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = [str(part) for part in err["loc"]]
    key = ".".join(loc) or "<top level>"
    if err["type"] == "extra_forbidden":
        model: type[BaseModel] = Params
        for part in err["loc"][:-1]:
            if isinstance(part, str) and part in model.model_fields:
                model = _model_in(model.model_fields[part].annotation) or model
        expected = ", ".join(sorted(model.model_fields))
        return f"{path}: unknown key {key!r} (expected one of: {expected})"
    value: Any = data
    for part in err["loc"]:
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and isinstance(part, int) and part < len(value):
            value = value[part]
        else:
            value = None
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing":
        return f"{path}: {key} is missing"
    if isinstance(value, dict):  # a check across a section's keys: the message names them
        return f"{path}: {key}: {msg.replace('{at}', key)}"
    return f"{path}: {key}={value!r}: {msg}"


def parse_params(data: Any, path: Path | str = "params.yaml") -> Params:
    """Validate an already-loaded params mapping.

    Raises:
        ParamsError: naming the dotted key, the value and what was expected.
    """
    path = Path(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    try:
        return Params.model_validate(data)
    except ValidationError as exc:
        raise ParamsError(_describe(path, exc, data)) from exc


def load_params(path: Path | str = "params.yaml") -> Params:
    """Read and validate ``params.yaml``.

    Raises:
        ParamsError: the file is missing, is not YAML, or fails validation.
    """
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ParamsError(f"{path}: params file not found") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML ({exc.__class__.__name__})") from exc
    return parse_params(data, path)
