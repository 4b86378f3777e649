"""The model: a kind (threshold, logistic, ONNX, ...) and what every model carries, as JSON.

:class:`Model` wraps one :mod:`satpipe.models.kinds` kind with what stages and serving need whatever
the kind: the ordered class names, the feature definition the tiles were measured with, the feature
drift monitoring watches and its training distribution (the *reference*), the training
provenance (tile-index hash, params, method, training-set figures), and a version id that is a
UUID derived from all of that content (same inputs, same id; never random). No pickle: the
document is canonical JSON, and the kind's own part sits under ``model`` with its own schema.

Nothing outside :mod:`satpipe.models.kinds` names a kind: callers classify with
:meth:`Model.predict`, which returns each tile's class name and score.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from satpipe.core.classes import class_colour, parse_colour
from satpipe.core.errors import ModelError
from satpipe.core.files import json_digest, read_json
from satpipe.models.kinds import Kind, TrainingSet, kind_class
from satpipe.models.kinds.base import Output, PixelKind, PixelSample
from satpipe.tiles.features import FeatureSpec

MODEL_SCHEMA = 2
# Namespace for uuid5 version ids: a fixed UUID so ids are stable across machines and releases.
VERSION_NAMESPACE = uuid.UUID("5b8f0c1e-3d2a-5e7b-9a41-6c0d2f9e8b13")
QUANTILE_LEVELS = tuple(round(i / 100, 2) for i in range(101))


@dataclass(frozen=True)
class Model:
    """A fitted model of any kind (see the module docstring)."""

    kind: Kind
    classes: tuple[str, ...]
    feature: dict[str, Any]
    reference: dict[str, Any]
    training: dict[str, Any]
    version: str

    @property
    def feature_spec(self) -> FeatureSpec:
        """The feature definition as a :class:`FeatureSpec`."""
        return FeatureSpec.from_dict(self.feature)

    @property
    def input(self) -> str:
        """What the model reads: ``features`` (the feature vector) or ``pixels``."""
        return self.kind.input

    @property
    def output(self) -> Output:
        """What the model labels: ``tile`` or ``pixels`` (every pixel)."""
        return self.kind.output

    @property
    def colours(self) -> tuple[tuple[int, int, int], ...]:
        """Each class's display colour: a per-pixel model's declared ones, else the defaults."""
        declared = getattr(self.kind, "colours", None) if self.output == "pixels" else None
        if declared:
            return tuple(parse_colour(c) for c in declared)
        return tuple(class_colour(name, i) for i, name in enumerate(self.classes))

    @property
    def monitored(self) -> str:
        """The feature drift monitoring compares with :attr:`reference`."""
        return self.kind.monitored

    @property
    def reported_features(self) -> tuple[str, ...]:
        """The features a prediction reports: those the kind reads, then the monitored one."""
        names = tuple(self.kind.feature_names)
        return names if self.monitored in names else (*names, self.monitored)

    def predict(self, x: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Classify a batch: feature rows (columns in the kind's feature order) or pixels.

        Returns:
            Each tile's class name and score.
        """
        positions, scores = self.kind.predict(x)
        return [self.classes[int(p)] for p in positions], np.asarray(scores, dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document written to disk."""
        return {**self._content(), "version": self.version}

    def _content(self) -> dict[str, Any]:
        return {
            "schema": MODEL_SCHEMA,
            "kind": self.kind.name,
            "kind_schema": self.kind.schema,
            "model": self.kind.to_dict(),
            "classes": list(self.classes),
            "feature": self.feature,
            "monitored": self.monitored,
            "reference": self.reference,
            "training": self.training,
        }


def version_id(content: dict[str, Any]) -> str:
    """UUID (version 5) derived from the canonical JSON of the model content."""
    return str(uuid.uuid5(VERSION_NAMESPACE, json_digest(content)))


def reference_distribution(values: np.ndarray, bins: int) -> dict[str, Any]:
    """Summary of the monitored training feature kept in the model for drift checks.

    Holds count, mean, standard deviation, min, max, the quantiles at 0.00, 0.01, ..., 1.00
    (linear interpolation) and a histogram with ``bins`` equal-width bins over [min, max].
    """
    values = np.sort(np.asarray(values, dtype=np.float64))
    lo, hi = float(values[0]), float(values[-1])
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi if hi > lo else lo + 1.0))
    return {
        "count": int(values.size),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": lo,
        "max": hi,
        "quantile_levels": list(QUANTILE_LEVELS),
        "quantiles": [float(q) for q in np.quantile(values, QUANTILE_LEVELS)],
        "histogram": {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]},
    }


def band_name(bands: tuple[str, ...], position: int) -> str:
    """A scene band's name: its description, or ``band <n>`` (1-based) without one."""
    return bands[position] or f"band {position + 1}"


def sample_predictions(kind: PixelKind, sample: PixelSample) -> np.ndarray | None:
    """Each sample pixel's predicted class position, or None for a kind with a fixed window.

    The pixels go to :meth:`PixelKind.scores` as one ``(1, B, N, 1)`` window (a per-pixel model
    without a window sees each pixel alone); the class is the most probable (ties: the first).
    """
    if kind.window is not None:
        return None  # a windowed graph needs spatial context the sample does not keep
    names = list(sample.bands)
    columns = list(kind.band_indices(names, len(names), "the training scene"))
    x = np.ascontiguousarray(sample.values[:, columns].T, dtype=np.float32)[None, :, :, None]
    return np.argmax(kind.scores(x)[0, :, :, 0], axis=0).astype(np.int64)


def pixel_reference(
    kind: PixelKind, sample: PixelSample, names: tuple[str, ...], bins: int
) -> dict[str, Any]:
    """The training reference of a per-pixel model: class shares and band distributions.

    Holds the sample size, the share of the sample the model predicts as each class (absent for
    a kind with a fixed window, see :func:`sample_predictions`), the share labelled as each, and
    per band the model reads (by the scene's name) the :func:`reference_distribution` of its
    values.
    """
    n = int(sample.classes.size)
    labelled = np.bincount(sample.classes, minlength=len(names))
    out: dict[str, Any] = {"samples": n}
    predicted = sample_predictions(kind, sample)
    if predicted is not None:
        counts = np.bincount(predicted, minlength=len(names))
        out["class_fractions"] = {c: int(k) / n for c, k in zip(names, counts, strict=True)}
    out["reference_class_fractions"] = {c: int(k) / n for c, k in zip(names, labelled, strict=True)}
    bands = list(sample.bands)
    out["bands"] = {
        band_name(sample.bands, p): reference_distribution(sample.values[:, p], bins)
        for p in kind.band_indices(bands, len(bands), "the training scene")
    }
    return out


def _seal(
    kind: Kind,
    classes: tuple[str, ...],
    feature: dict[str, Any],
    reference: dict[str, Any],
    training: dict[str, Any],
) -> Model:
    draft = Model(kind, classes, feature, reference, training, "")
    return Model(kind, classes, feature, reference, training, version_id(draft._content()))


def fit_kind(kind: str, train: TrainingSet, params: dict[str, Any], root: Path) -> Kind:
    """Fit the kind ``kind`` on ``train`` (see :meth:`satpipe.models.kinds.base.Kind.fit`).

    Raises:
        ModelError: an unknown kind (listing the known ones), no training tile, or the kind
            cannot be fitted.
    """
    if train.features.shape[0] == 0:
        raise ModelError("no training tile: cannot fit a model on an empty set")
    return kind_class(kind).fit(train, params, root)


def build(
    kind: Kind,
    train: TrainingSet,
    feature: dict[str, Any],
    training: dict[str, Any],
    bins: int,
) -> Model:
    """Wrap a fitted kind into a :class:`Model`, with the reference of its monitored feature.

    Args:
        kind: the fitted kind.
        train: the tiles it was fitted on.
        feature: the feature definition (from the tile index).
        training: provenance recorded in the model (tile index hash, params, method, figures).
        bins: histogram bins of the reference distribution.

    Raises:
        ModelError: the monitored feature is not in the training set.
    """
    if kind.monitored not in train.names:
        raise ModelError(
            f"monitored feature {kind.monitored!r} is not in the tile index; expected one of "
            f"{', '.join(train.names)}"
        )
    values = train.features[:, train.names.index(kind.monitored)]
    reference = reference_distribution(values, bins)
    if kind.input == "features":
        columns = [train.names.index(n) for n in kind.feature_names]
        positions, _ = kind.predict(train.features[:, columns])
        counts = np.bincount(np.asarray(positions, dtype=np.int64), minlength=len(train.classes))
        reference["class_fractions"] = {
            c: int(n) / values.size for c, n in zip(train.classes, counts, strict=True)
        }
    if kind.output == "pixels" and train.pixels is not None:
        reference["pixels"] = pixel_reference(
            cast(PixelKind, kind), train.pixels, train.classes, bins
        )
    return _seal(kind, tuple(train.classes), feature, reference, training)


def from_dict(data: Any, source: str = "model", root: Path | None = None) -> Model:
    """Build a :class:`Model` from its JSON document, checking schema, kind and version id.

    Args:
        data: the parsed document.
        source: how to name it in messages.
        root: the directory files the kind refers to (an ONNX graph) are resolved against.

    Raises:
        ModelError: the document is not a model, its kind is unknown, or its version id does not
            match its content (the file was edited).
    """
    if not isinstance(data, dict) or "kind" not in data:
        raise ModelError(f"{source}: not a model document")
    if data.get("schema") != MODEL_SCHEMA:
        raise ModelError(f"{source}: model schema {data.get('schema')!r}; expected {MODEL_SCHEMA}")
    cls = kind_class(str(data["kind"]))
    if data.get("kind_schema") != cls.schema:
        raise ModelError(
            f"{source}: {cls.name} model schema {data.get('kind_schema')!r}; expected {cls.schema}"
        )
    try:
        kind = cls.from_dict(dict(data["model"]), source, root)
        model = Model(
            kind=kind,
            classes=tuple(str(c) for c in data["classes"]),
            feature=dict(data["feature"]),
            reference=dict(data["reference"]),
            training=dict(data["training"]),
            version=str(data["version"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{source}: malformed model ({exc})") from exc
    expected = version_id(model._content())
    if model.version != expected:
        raise ModelError(
            f"{source}: version {model.version} does not match its content ({expected}); "
            "the file was modified after training"
        )
    return model


def load(path: Path | str, root: Path | None = None) -> Model:
    """Read a model JSON file (files it refers to resolve against ``root``, default its repo).

    Raises:
        ModelError: the file is missing, not JSON, or not a valid model.
    """
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise ModelError(f"{path}: model file not found") from None
    except ValueError as exc:
        raise ModelError(f"{path}: not valid JSON ({exc})") from exc
    return from_dict(data, str(path), root if root is not None else Path.cwd())


__all__ = [
    "Model",
    "build",
    "fit_kind",
    "from_dict",
    "load",
    "pixel_reference",
    "sample_predictions",
]
