"""The logistic kind: multinomial (softmax) logistic regression on a tile's feature vector.

Each used feature is standardised with the mean and the (population) standard deviation of the
labelled training tiles; a feature that is constant there gets a standard deviation of 1.0.
Class ``k`` scores ``s_k = b_k + sum_f w_kf * z_f`` on the standardised vector ``z``; a tile's
class is the highest score (ties go to the first class) and its score is that class's softmax
probability, in ``(0, 1]``.

Fitting minimises the summed negative log-likelihood of the labelled training tiles plus
``l2 / 2`` times the squared norm of the weights (the intercepts are not penalised), with
``params`` from ``train.logistic`` in params.yaml:

* ``features``: the feature names to use, or None (default) for every training feature except
  ``valid_fraction``;
* ``l2``: the ridge penalty, a number >= 0 (default 1.0);
* ``iterations``: the most Newton steps to take, an integer >= 1 (default 500).

The solver (``"newton"``) is Newton's method on all the parameters at once (every class's
intercept and weights, with the exact Hessian of the objective, which couples the classes),
started from zero, with a backtracking line search: a step is halved until it decreases the
objective by at least 1e-4 of the predicted decrease. The likelihood does not change when the
same vector is added to every class's parameters; the ridge alone picks the representative with
``sum_k w_k = 0``, and a penalty ``N/2 |sum_k theta_k|^2``, zero at that optimum, makes the
intercepts centred too and the Hessian invertible (with ``1e-9 N`` on its diagonal against
collinear features). It takes at most ``iterations`` steps, with no randomness and no
tolerance: it stops earlier only when no step along the Newton direction decreases the
objective, or the step changes no parameter, because every further step would then be the same
one. On data with an optimum it typically stops within 20 steps; with ``l2 = 0`` and separable
classes there is no optimum and the weights grow for all ``iterations`` steps.

A class of the model with no labelled training tile is allowed: the model is fitted on the
classes that have labelled tiles (at least two), and an absent class has zero weights, a
``null`` intercept in the document, probability 0 and is never predicted.

The arithmetic, which makes the fit the same bit for bit on every machine, is
:mod:`satpipe.models.kinds.logistic_solver`; what ``train.logistic`` and the stored document may
hold is checked by :mod:`satpipe.models.kinds.logistic_document`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from satpipe.core.errors import ModelError
from satpipe.models.kinds.base import Output, TrainingSet
from satpipe.models.kinds.logistic_document import SOLVER, check_document, check_params
from satpipe.models.kinds.logistic_solver import (
    class_scores,
    exact_sum,
    newton,
    round10,
    softmax,
    standardise,
)


class LogisticKind:
    """A fitted multinomial logistic regression (see the module docstring)."""

    name: ClassVar[str] = "logistic"
    schema: ClassVar[int] = 1
    input: ClassVar[Literal["features", "pixels"]] = "features"
    output: ClassVar[Output] = "tile"

    def __init__(
        self,
        *,
        features: Sequence[str],
        classes: Sequence[str],
        mean: Sequence[float],
        std: Sequence[float],
        weights: Sequence[Sequence[float]],
        intercepts: Sequence[float | None],
        l2: float,
        iterations: int,
        training: dict[str, Any],
    ) -> None:
        """Hold an already validated, already rounded model (use :meth:`fit` or :meth:`from_dict`).

        Args:
            features: the used feature names, in column order.
            classes: the model's class names, in order.
            mean: per feature, the training mean.
            std: per feature, the training standard deviation (> 0).
            weights: per class, one weight per feature.
            intercepts: per class, the intercept, or None for a class without training tiles.
            l2: the ridge penalty it was fitted with.
            iterations: the solver steps it was fitted with.
            training: ``labelled_tiles`` and training ``accuracy``.
        """
        self._features = tuple(features)
        self._classes = tuple(classes)
        self._mean = tuple(float(v) for v in mean)
        self._std = tuple(float(v) for v in std)
        self._weights = tuple(tuple(float(v) for v in row) for row in weights)
        self._intercepts = tuple(None if v is None else float(v) for v in intercepts)
        self._l2 = float(l2)
        self._iterations = int(iterations)
        self._training = dict(training)
        self._present = tuple(k for k, b in enumerate(self._intercepts) if b is not None)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The used features, in the column order :meth:`predict` expects."""
        return self._features

    @property
    def monitored(self) -> str:
        """``mean_intensity`` if the model uses it, else its first feature."""
        return "mean_intensity" if "mean_intensity" in self._features else self._features[0]

    @property
    def classes(self) -> tuple[str, ...]:
        """The model's class names, in order."""
        return self._classes

    @classmethod
    def output_for(cls, params: dict[str, Any]) -> Output:
        """Always a tile label."""
        return "tile"

    @classmethod
    def fit(cls, train: TrainingSet, params: dict[str, Any], root: Path) -> LogisticKind:
        """Fit on the labelled training tiles with ``params`` from ``train.logistic``.

        Args:
            train: the training tiles (only the labelled ones are used).
            params: ``features``, ``l2`` and ``iterations`` (see the module docstring).
            root: unused (the kind reads no file).

        Raises:
            ModelError: an unknown or out-of-range param, an unknown feature name, no labelled
                training tile, labelled tiles of one class only, or non-finite feature values.
        """
        names, l2, iterations = check_params(params, train.names)
        rows, y = train.labelled()
        if y.size == 0:
            raise ModelError(
                f"the logistic kind needs training tiles with a reference class; none of the "
                f"{len(train.references)} training tiles has one"
            )
        present = sorted(set(y.tolist()))
        if len(present) < 2:
            raise ModelError(
                f"every labelled training tile is of class {train.classes[present[0]]!r}; a "
                "logistic model needs labelled tiles of at least two classes"
            )
        x = np.asarray(rows, dtype=np.float64)[:, [train.names.index(n) for n in names]]
        bad = int(np.count_nonzero(~np.isfinite(x).all(axis=1)))
        if bad:
            raise ModelError(
                f"{bad} of {len(y)} labelled training tiles have a non-finite value in the "
                f"logistic features ({', '.join(names)}); expected finite values"
            )

        mean, std = [], []
        for f in range(x.shape[1]):
            column = x[:, f]
            m = exact_sum(column) / column.size
            if column.min() == column.max():
                s = 1.0
            else:
                s = math.sqrt(exact_sum((column - m) * (column - m)) / column.size)
            mean.append(round10(m))
            std.append(round10(s) if s > 0.0 else 1.0)
        z = standardise(x, mean, std)
        theta = newton(z, np.searchsorted(present, y), len(present), l2, iterations)

        weights = [[0.0] * len(names) for _ in train.classes]
        intercepts: list[float | None] = [None] * len(train.classes)
        for k, params_k in zip(present, theta, strict=True):
            intercepts[k] = round10(params_k[0])
            weights[k] = [round10(v) for v in params_k[1:]]
        fitted: dict[str, Any] = {
            "features": names,
            "classes": train.classes,
            "mean": mean,
            "std": std,
            "weights": weights,
            "intercepts": intercepts,
            "l2": round10(l2),
            "iterations": iterations,
        }
        predicted, _ = cls(**fitted, training={}).predict(x)
        accuracy = exact_sum((predicted == y).astype(np.float64)) / len(y)
        return cls(**fitted, training={"labelled_tiles": len(y), "accuracy": round10(accuracy)})

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Classify a batch of feature rows.

        Args:
            x: ``(N, len(feature_names))`` feature values, columns in :attr:`feature_names` order.

        Returns:
            Per row, the position of the most probable class (int64; ties go to the first
            class) and its softmax probability (float64, in ``(0, 1]``).

        Raises:
            ModelError: ``x`` has the wrong shape or a non-finite value.
        """
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self._features):
            raise ModelError(
                f"logistic model input has shape {x.shape}; expected (N, {len(self._features)}) "
                f"with columns {', '.join(self._features)}"
            )
        bad = int(np.count_nonzero(~np.isfinite(x).all(axis=1)))
        if bad:
            raise ModelError(
                f"{bad} of {x.shape[0]} rows given to the logistic model have a non-finite "
                "feature value; expected finite values"
            )
        z = standardise(x, self._mean, self._std)
        present = self._present
        scores = class_scores(
            z, [self._weights[k] for k in present], [b for b in self._intercepts if b is not None]
        )
        if not all(np.isfinite(s).all() for s in scores):
            raise ModelError(
                "logistic model scores overflow on these feature values; expected values of "
                "the magnitude seen in training"
            )
        _, exps, total = softmax(scores)
        probs = [e / total for e in exps]
        best = np.zeros(x.shape[0], dtype=np.int64)
        best_score = scores[0]
        best_prob = probs[0]
        for j in range(1, len(present)):
            better = scores[j] > best_score
            best = np.where(better, j, best)
            best_score = np.where(better, scores[j], best_score)
            best_prob = np.where(better, probs[j], best_prob)
        positions = np.asarray(present, dtype=np.int64)[best]
        return positions, best_prob.astype(np.float64)

    def to_dict(self) -> dict[str, Any]:
        """The kind's document: JSON-native, every number rounded to 10 significant digits."""
        return {
            "features": list(self._features),
            "classes": list(self._classes),
            "mean": list(self._mean),
            "std": list(self._std),
            "weights": [list(row) for row in self._weights],
            "intercepts": list(self._intercepts),
            "l2": self._l2,
            "iterations": self._iterations,
            "solver": SOLVER,
            "training": dict(self._training),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str, root: Path | None) -> LogisticKind:
        """Rebuild from :meth:`to_dict`'s document.

        Args:
            data: the document.
            source: where it came from, for messages.
            root: unused.

        Raises:
            ModelError: a key is missing or unknown, or a value has the wrong type or shape,
                naming ``source``.
        """
        try:
            return cls(**check_document(data))
        except ValueError as exc:
            raise ModelError(f"{source}: malformed logistic model: {exc}") from exc

    def details(self) -> dict[str, Any]:
        """The features, classes, penalty, step count and solver."""
        return {
            "features": list(self._features),
            "classes": list(self._classes),
            "l2": self._l2,
            "iterations": self._iterations,
            "solver": SOLVER,
        }
