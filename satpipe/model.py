"""The model: a threshold on tile mean intensity, stored as JSON.

A tile whose mean intensity is above the threshold is ``bright`` (cloud, thin cirrus, snow);
otherwise it is ``dark``. The threshold is the mean of the training tiles' mean intensities, or
the one fitted to reference labels (see :mod:`satpipe.training`).
The model file carries everything needed to use and audit it: the feature definition, the hash
of the tile index it was fitted on, the params, a reference distribution of the training feature
for drift checks, and a version id that is a UUID derived from all of that content (same inputs,
same id; never random). No pickle.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from satpipe.classes import CLASSES
from satpipe.errors import ModelError
from satpipe.features import FeatureSpec
from satpipe.files import json_digest, read_json

MODEL_KIND = "mean-intensity-threshold"
MODEL_SCHEMA = 1
# Namespace for uuid5 version ids: a fixed UUID so ids are stable across machines and releases.
VERSION_NAMESPACE = uuid.UUID("5b8f0c1e-3d2a-5e7b-9a41-6c0d2f9e8b13")
QUANTILE_LEVELS = tuple(round(i / 100, 2) for i in range(101))


@dataclass(frozen=True)
class Model:
    """A fitted threshold model (see the module docstring)."""

    threshold: float
    feature: dict[str, Any]
    reference: dict[str, Any]
    training: dict[str, Any]
    version: str

    @property
    def feature_spec(self) -> FeatureSpec:
        """The feature definition as a :class:`FeatureSpec`."""
        return FeatureSpec.from_dict(self.feature)

    def predict(self, mean_intensity: float) -> str:
        """Classify one feature value: ``bright`` above the threshold, else ``dark``."""
        return CLASSES[1] if mean_intensity > self.threshold else CLASSES[0]

    def to_dict(self) -> dict[str, Any]:
        """The JSON document written to disk."""
        return {
            **_content(self.threshold, self.feature, self.reference, self.training),
            "version": self.version,
        }


def _content(threshold: float, feature: dict, reference: dict, training: dict) -> dict[str, Any]:
    return {
        "kind": MODEL_KIND,
        "schema": MODEL_SCHEMA,
        "classes": list(CLASSES),
        "threshold": threshold,
        "feature": feature,
        "reference": reference,
        "training": training,
    }


def version_id(content: dict[str, Any]) -> str:
    """UUID (version 5) derived from the canonical JSON of the model content."""
    return str(uuid.uuid5(VERSION_NAMESPACE, json_digest(content)))


def reference_distribution(values: np.ndarray, bins: int) -> dict[str, Any]:
    """Summary of the training feature kept in the model for drift checks.

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


def fit(
    features: np.ndarray,
    feature: dict[str, Any],
    training: dict[str, Any],
    bins: int,
    threshold: float | None = None,
) -> Model:
    """Fit the model: the threshold and the reference distribution of the training feature.

    Args:
        features: training feature values, in tile-index order.
        feature: the feature definition (from the tile index).
        training: provenance recorded in the model (tile index hash, params, method, figures).
        bins: histogram bins of the reference distribution.
        threshold: the threshold, when chosen by the caller (``train.method: fit``); by default
            the mean of ``features``.

    Raises:
        ModelError: there is no training value.
    """
    values = np.asarray(features, dtype=np.float64)
    if values.size == 0:
        raise ModelError("no training tile: cannot fit a threshold on an empty set")
    threshold = float(values.mean()) if threshold is None else float(threshold)
    reference = reference_distribution(values, bins)
    bright = int(np.count_nonzero(values > threshold))
    reference["class_fractions"] = {
        CLASSES[0]: (values.size - bright) / values.size,
        CLASSES[1]: bright / values.size,
    }
    content = _content(threshold, feature, reference, training)
    return Model(threshold, feature, reference, training, version_id(content))


def from_dict(data: Any, source: str = "model") -> Model:
    """Build a :class:`Model` from its JSON document, checking kind, schema and version id.

    Raises:
        ModelError: the document is not a model of this kind, or its version id does not
            match its content (the file was edited).
    """
    if not isinstance(data, dict) or data.get("kind") != MODEL_KIND:
        raise ModelError(f"{source}: not a {MODEL_KIND} model")
    if data.get("schema") != MODEL_SCHEMA:
        raise ModelError(f"{source}: model schema {data.get('schema')!r}; expected {MODEL_SCHEMA}")
    try:
        model = Model(
            threshold=float(data["threshold"]),
            feature=dict(data["feature"]),
            reference=dict(data["reference"]),
            training=dict(data["training"]),
            version=str(data["version"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{source}: malformed model ({exc})") from exc
    expected = version_id(_content(model.threshold, model.feature, model.reference, model.training))
    if model.version != expected:
        raise ModelError(
            f"{source}: version {model.version} does not match its content ({expected}); "
            "the file was modified after training"
        )
    return model


def load(path: Path | str) -> Model:
    """Read a model JSON file.

    Raises:
        ModelError: the file is missing, not JSON, or not a valid model.
    """
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise ModelError(f"{path}: model file not found") from None
    except ValueError as exc:
        raise ModelError(f"{path}: not valid JSON ({exc})") from exc
    return from_dict(data, str(path))
