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
    "SceneParams",
    "StacParams",
    "TileParams",
    "TrainParams",
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
    features: list[str] | None = None
    classes: list[str]
    batch: int = Field(256, ge=1, le=65536)
    bands: int | None = Field(None, ge=1)
    size: int | None = Field(None, ge=1)


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

    @model_validator(mode="after")
    def _check_order(self) -> HealthParams:
        pairs = [
            ("ks_pvalue", self.ks_pvalue_critical, self.ks_pvalue_warning),
            ("psi", self.psi_warning, self.psi_critical),
            ("mean_shift", self.mean_shift_warning, self.mean_shift_critical),
            ("failure_rate", self.failure_rate_warning, self.failure_rate_critical),
            ("class_shift", self.class_shift_warning, self.class_shift_critical),
        ]
        for name, low, high in pairs:
            if low > high:
                raise ValueError(f"{name} thresholds are in the wrong order ({low} > {high})")
        return self


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
