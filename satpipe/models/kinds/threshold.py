"""The threshold kind: one feature against one number.

A tile whose feature (``mean_intensity`` by default) is above the threshold gets the last class
(``bright``), otherwise the first (``dark``). Its score is the margin, feature minus threshold:
positive for the last class. ``method`` chooses the threshold: ``mean``, the mean of the training
tiles' feature (needs no labels), or ``fit``, the threshold that maximises balanced accuracy on
the labelled training tiles (:func:`satpipe.evaluation.evaluate.fit_threshold`). Two classes only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from satpipe.core.errors import ModelError
from satpipe.models.kinds.base import Output, TrainingSet
from satpipe.models.scores import fit_threshold

METHODS = ("mean", "fit")


@dataclass(frozen=True)
class ThresholdKind:
    """A fitted threshold (see the module docstring)."""

    name: ClassVar[str] = "threshold"
    schema: ClassVar[int] = 1
    input: ClassVar[Literal["features", "pixels"]] = "features"
    output: ClassVar[Output] = "tile"

    threshold: float
    feature: str = "mean_intensity"
    method: str = "mean"

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The one feature compared with the threshold."""
        return (self.feature,)

    @property
    def monitored(self) -> str:
        """Drift watches the thresholded feature."""
        return self.feature

    @classmethod
    def output_for(cls, params: dict[str, Any]) -> Output:
        """Always a tile label."""
        return "tile"

    @classmethod
    def fit(cls, train: TrainingSet, params: dict[str, Any], root: Path) -> ThresholdKind:
        """Choose the threshold with ``params["method"]`` (``mean`` or ``fit``).

        Raises:
            ModelError: an unknown method, a feature the training set lacks, ``fit`` without
                labelled training tiles or with one class only, or not two classes.
        """
        method = params.get("method", "mean")
        feature = params.get("feature", "mean_intensity")
        if method not in METHODS:
            raise ModelError(f"train.method {method!r}: expected one of {', '.join(METHODS)}")
        if len(train.classes) != 2:
            raise ModelError(
                f"the threshold kind has two classes; the model declares {list(train.classes)}"
            )
        if feature not in train.names:
            raise ModelError(
                f"threshold feature {feature!r} is not in the tile index; expected one of "
                f"{', '.join(train.names)}"
            )
        column = train.names.index(feature)
        if method == "mean":
            return cls(float(train.features[:, column].mean()), feature, method)
        rows, y = train.labelled()
        if y.size == 0:
            raise ModelError(
                f"train.method 'fit' needs training tiles with a reference class; none of the "
                f"{len(train.references)} training tiles has one (give the scenes labels, or "
                "lower tile.min_labelled_fraction, or use train.method 'mean')"
            )
        try:
            fitted = fit_threshold(rows[:, column], y == 1, classes=train.classes)
        except ModelError as exc:
            detail = str(exc).removeprefix("fit_threshold: ")
            raise ModelError(f"train.method 'fit': {detail}") from exc
        return cls(fitted.threshold, feature, method)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class 1 where the feature is above the threshold, else 0; score = feature - threshold."""
        values = np.asarray(x, dtype=np.float64)[:, 0]
        return (values > self.threshold).astype(np.int64), values - self.threshold

    def to_dict(self) -> dict[str, Any]:
        """The kind's document."""
        return {"feature": self.feature, "method": self.method, "threshold": self.threshold}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str, root: Path | None) -> ThresholdKind:
        """Rebuild from :meth:`to_dict`.

        Raises:
            ModelError: a key is missing or has the wrong type, naming ``source``.
        """
        try:
            threshold = data["threshold"]
            if isinstance(threshold, bool) or not isinstance(threshold, int | float):
                raise TypeError(f"threshold is {threshold!r}; expected a number")
            return cls(float(threshold), str(data["feature"]), str(data["method"]))
        except (KeyError, TypeError) as exc:
            raise ModelError(f"{source}: malformed threshold model ({exc})") from exc

    def details(self) -> dict[str, Any]:
        """The threshold, its feature and how it was chosen."""
        return self.to_dict()
