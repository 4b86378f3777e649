"""Pipeline parameters: one frozen, validated object per ``params.yaml`` section.

``params.yaml`` is the only place tunables live. Each section maps to a model below with
``extra="forbid"``, so a misspelt key (``dvc exp run -S tile.sise=512`` silently adds one) fails
with the dotted key named instead of being ignored. Values are checked strictly: ``"256"`` is not
an int. Keys that are unused in the current configuration are present and ``null``.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path, PurePosixPath
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from satpipe.core.classes import CLASSES, MAX_CLASSES
from satpipe.core.errors import ParamsError

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def parse_iso8601(value: str) -> dt.datetime:
    """Parse an ISO 8601 timestamp into an aware UTC datetime (naive means UTC).

    Raises:
        ValueError: the string is not ISO 8601.
    """
    parsed = dt.datetime.fromisoformat(value.strip())
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def _sha256(cls: type, value: str | None) -> str | None:
    """A sha256 param: 64 hexadecimal characters, stored in lower case (or None)."""
    if value is not None and not _SHA256.match(value.lower()):
        raise ValueError("expected 64 hexadecimal characters")
    return None if value is None else value.lower()


def _check_names(names: list[str]) -> list[str]:
    """Class names: 1 to MAX_CLASSES distinct, non-empty names without surrounding spaces."""
    if not 1 <= len(names) <= MAX_CLASSES:
        raise ValueError(f"{len(names)} classes; expected 1 to {MAX_CLASSES}")
    for name in names:
        if not name or name != name.strip():
            raise ValueError(f"class name {name!r} is empty or has surrounding spaces")
    if len(set(names)) != len(names):
        raise ValueError(f"class names {names} repeat a name; expected distinct names")
    return names


class LabelParams(_Section):
    """A scene's reference labels: a raster of integer class codes and what the codes mean.

    The raster comes from ``path`` (a local GeoTIFF, absolute or relative to params.yaml) or
    ``url`` (downloaded, verified against ``sha256`` like a scene). ``classes`` maps each model
    class to the codes that mean it, e.g. ``{bright: [8, 9, 10, 11], dark: [4, 5, 6]}``; codes
    not listed are unlabelled. A synthetic scene carries its own label raster: there only
    ``classes`` may be set, to remap its surface codes.
    """

    path: str | None = None
    url: str | None = None
    sha256: str | None = None
    asset: str | None = None
    classes: dict[str, list[int]] | None = None

    _check_sha256 = field_validator("sha256")(classmethod(_sha256))

    @field_validator("classes")
    @classmethod
    def _check_classes(cls, value: dict[str, list[int]] | None) -> dict[str, list[int]] | None:
        if value is None:
            return None
        _check_names(list(value))
        owner: dict[int, str] = {}
        for name, codes in value.items():
            if not codes:
                raise ValueError(f"class {name!r} lists no code; expected a list of integers")
            for code in codes:
                if code in owner and owner[code] != name:
                    raise ValueError(
                        f"code {code} is listed under two classes ({owner[code]!r} and "
                        f"{name!r}); expected each code under one class"
                    )
                owner[code] = name
        return {name: sorted(set(codes)) for name, codes in value.items()}

    @model_validator(mode="after")
    def _check_source(self) -> LabelParams:
        if sum(v is not None for v in (self.path, self.url, self.asset)) > 1:
            raise ValueError("{at}: set one of path, url or asset")
        if self.url is not None:
            if not self.url.startswith(("http://", "https://")):
                raise ValueError(f"{{at}}.url {self.url!r} is not an http(s) URL")
            if not self.sha256:
                raise ValueError("{at}.url needs {at}.sha256 (downloads are always verified)")
        return self


class AoiParams(_Section):
    """An area of interest: a ``bbox`` (left, bottom, right, top) in ``crs``, or a GeoJSON file."""

    bbox: list[float] | None = Field(None, min_length=4, max_length=4)
    crs: str = "EPSG:4326"
    geojson: str | None = None

    @model_validator(mode="after")
    def _check_one(self) -> AoiParams:
        if (self.bbox is None) == (self.geojson is None):
            raise ValueError("{at}: set bbox (with crs) or geojson, exactly one")
        if self.bbox is not None:
            left, bottom, right, top = self.bbox
            if not (left < right and bottom < top):
                raise ValueError(
                    f"{{at}}.bbox {self.bbox}: expected [left, bottom, right, top] with "
                    "left < right and bottom < top"
                )
        return self


class StacParams(_Section):
    """``ingest.stac``: the item, the bands to stack, how to resample, where, and pins.

    ``assets`` are asset keys (``B04``) or ``eo:bands`` common names (``red``), in band order.
    ``pixels_sha256`` optionally pins, per asset key, the sha256 of the pixels read.
    """

    item: str
    assets: list[str] = Field(min_length=1)
    resampling: Literal["nearest", "bilinear", "cubic", "average"] = "nearest"
    aoi: AoiParams | None = None
    pixels_sha256: dict[str, str] | None = None

    @field_validator("pixels_sha256")
    @classmethod
    def _check_pins(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        return {key: _sha256(cls, sha) or "" for key, sha in value.items()}


_SCENE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class SceneParams(_Section):
    """One scene: where it comes from, how it is validated, and what it is used for.

    ``role`` says whether its tiles train the model (``train``), are classified and compared with
    training in the health report (``infer``), or both (``both``: split by ``train.fraction``).
    ``id`` names its files; by default it is derived from the source (see :func:`scene_id`).
    """

    source: Literal["synthetic", "file", "http", "stac"] = "synthetic"
    path: str | None = None
    url: str | None = None
    fetch: Literal["range", "download"] = "range"
    sha256: str | None = None
    acquisition_time: str | None = None
    nodata: float | None = None
    seed: int = Field(42, ge=0)
    width: int = Field(2048, ge=1, le=200_000)
    height: int = Field(2048, ge=1, le=200_000)
    role: Literal["train", "infer", "both"] = "both"
    id: str | None = None
    labels: LabelParams | None = None
    stac: StacParams | None = None

    _check_sha256 = field_validator("sha256")(classmethod(_sha256))

    @field_validator("acquisition_time")
    @classmethod
    def _check_time(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_iso8601(value)
            except ValueError:
                raise ValueError("expected an ISO 8601 time such as 2024-07-15T10:30:00Z") from None
        return value

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str | None) -> str | None:
        if value is not None and not _SCENE_ID.match(value):
            raise ValueError("expected 1-100 letters, digits, '.', '_' or '-' (not first)")
        return value

    @model_validator(mode="after")
    def _check_source(self) -> SceneParams:
        if self.source == "file" and not self.path:
            raise ValueError("source 'file' needs {at}.path")
        if self.source == "stac" and self.stac is None:
            raise ValueError("source 'stac' needs {at}.stac: {item, assets}")
        if self.source == "http":
            if not self.url:
                raise ValueError("source 'http' needs {at}.url")
            if not self.url.startswith(("http://", "https://")):
                raise ValueError(f"{{at}}.url {self.url!r} is not an http(s) URL")
            if self.fetch == "download" and not self.sha256:
                raise ValueError(
                    "{at}.fetch 'download' needs {at}.sha256 (downloads are always verified)"
                )
        labels = self.labels
        if labels is not None:
            if self.source == "synthetic" and (labels.path or labels.url or labels.asset):
                raise ValueError(
                    "a synthetic scene carries its own labels; {at}.labels may only set classes"
                )
            if labels.asset is not None and self.source != "stac":
                raise ValueError("{at}.labels.asset names an item asset: only for source 'stac'")
            if self.source != "synthetic" and not (labels.path or labels.url or labels.asset):
                raise ValueError(
                    "{at}.labels needs a path or a url to a label GeoTIFF (or, for source "
                    "'stac', the item's label asset)"
                )
            if self.source != "synthetic" and not labels.classes:
                raise ValueError(
                    "{at}.labels needs classes: which codes mean which class, "
                    "e.g. {bright: [8, 9, 10, 11], dark: [4, 5, 6]}"
                )
        return self

    @property
    def scene_id(self) -> str:
        """``id``, or one derived from the source: ``synthetic-<seed>`` or the file/URL stem."""
        if self.id is not None:
            return self.id
        if self.source == "synthetic":
            return f"synthetic-{self.seed}"
        if self.source == "stac" and self.stac is not None:
            ref = self.stac.item
            name = PurePosixPath(urlsplit(ref).path if "://" in ref else ref)
        elif self.source == "http":
            name = PurePosixPath(urlsplit(self.url).path)
        else:
            name = PurePosixPath(self.path or "")
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", name.stem).strip("-.") or "scene"
        return stem[:100]


class IngestParams(SceneParams):
    """``ingest``: one scene (the keys of :class:`SceneParams`) or a list in ``scenes``.

    When ``scenes`` is set it lists every scene, and the single-scene keys at the top of the
    section are not used. ``skip_invalid`` records an invalid scene in the ingest metrics and goes
    on, instead of failing the stage.
    """

    retries: int = Field(3, ge=0, le=20)
    timeout: float = Field(30.0, gt=0)
    scenes: list[SceneParams] | None = None
    skip_invalid: bool = False

    @model_validator(mode="after")
    def _check_scenes(self) -> IngestParams:
        if self.scenes is not None:
            if not self.scenes:
                raise ValueError("scenes is an empty list; use null for the single-scene form")
            seen: dict[str, int] = {}
            for i, item in enumerate(self.scenes):
                if item.scene_id in seen:
                    raise ValueError(
                        f"scenes {seen[item.scene_id]} and {i} share the id {item.scene_id!r}; "
                        "set a distinct 'id' on one of them"
                    )
                seen[item.scene_id] = i
        return self

    def scene_list(self) -> list[SceneParams]:
        """The scenes to ingest: ``scenes``, or the single scene the top-level keys describe."""
        if self.scenes is not None:
            return list(self.scenes)
        keys = SceneParams.model_fields
        return [SceneParams.model_validate({k: getattr(self, k) for k in keys})]


class TileParams(_Section):
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


class FeaturesParams(_Section):
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


class LogisticParams(_Section):
    """``train.logistic``: the logistic kind's features (null = all but the valid fraction)."""

    features: list[str] | None = None
    l2: float = Field(1.0, ge=0.0)
    iterations: int = Field(500, ge=1, le=100_000)


class OnnxParams(_Section):
    """``train.onnx``: a classifier exported to ONNX, and what its input and outputs mean."""

    path: str
    input: Literal["features", "pixels"] = "features"
    features: list[str] | None = None
    classes: list[str]
    batch: int = Field(256, ge=1, le=65536)
    bands: int | None = Field(None, ge=1)
    size: int | None = Field(None, ge=1)


class TrainParams(_Section):
    """``train``: the model kind, the training subset, the reference distribution.

    ``model`` names the kind (:mod:`satpipe.models.kinds`): ``threshold`` (default), ``logistic`` or
    ``onnx``, each with its own settings: ``method`` for the threshold (``mean``: the mean of the
    training tiles' feature; ``fit``: the threshold with the best balanced accuracy on the
    labelled training tiles), ``logistic`` and ``onnx`` for the others. ``classes`` are the
    model's class names in order (default ``dark``, ``bright``; for a threshold the last one is
    the class above it); an ONNX model's are ``onnx.classes``. Reference labels are judged against
    these names.
    """

    _check_classes = field_validator("classes")(classmethod(lambda cls, v: _check_names(v)))

    model: str = "threshold"
    classes: list[str] = Field(default_factory=lambda: list(CLASSES), min_length=2)
    method: Literal["mean", "fit"] = "mean"
    logistic: LogisticParams = LogisticParams()
    onnx: OnnxParams | None = None
    fraction: float = Field(0.5, gt=0.0, le=1.0)
    seed: int = Field(0, ge=0)
    histogram_bins: int = Field(20, ge=2, le=1000)


class BatchInferParams(_Section):
    """``batch_infer``: how many unreadable tiles a run tolerates."""

    max_failed_fraction: float = Field(0.05, ge=0.0, le=1.0)


class HealthParams(_Section):
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


class EngineParams(_Section):
    """``engine``: where tile and batch_infer work runs (not a DVC param: outputs don't change)."""

    name: Literal["local", "dask"] = "local"
    workers: int | None = Field(None, ge=1, le=4096)
    address: str | None = None


class Params(_Section):
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
    err = exc.errors(include_url=False)[0]
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
