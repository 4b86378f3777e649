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

The fit is the same bit for bit on any machine and for any order of the training rows:

* every product is an elementwise numpy multiplication, never a BLAS product (``@``,
  :func:`numpy.dot`, :mod:`numpy.linalg`), whose last bits depend on the BLAS build and its
  thread count;
* every sum over tiles is a fixed-point sum of integers (:func:`_sums`), exact and therefore
  independent of the order of the tiles and of how numpy splits the loop;
* ``exp`` and ``log`` are computed here from elementwise additions, multiplications and
  divisions, which IEEE 754 defines to the last bit (numpy's and libm's own pick CPU-specific
  code paths);
* the Newton system is solved with a hand-written Cholesky factorisation in Python floats.

Every stored number is rounded to 10 significant digits and the model predicts from the rounded
numbers, so a model reloaded from its JSON document predicts exactly as the fitted one.

A class of the model with no labelled training tile is allowed: the model is fitted on the
classes that have labelled tiles (at least two), and an absent class has zero weights, a
``null`` intercept in the document, probability 0 and is never predicted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from satpipe.core.errors import ModelError
from satpipe.models.kinds.base import TrainingSet

SOLVER = "newton"
PARAM_DEFAULTS: dict[str, Any] = {"features": None, "l2": 1.0, "iterations": 500}
EXCLUDED_BY_DEFAULT = ("valid_fraction",)
DOCUMENT_KEYS = (
    "features",
    "classes",
    "mean",
    "std",
    "weights",
    "intercepts",
    "l2",
    "iterations",
    "solver",
    "training",
)
# Added to the Hessian's diagonal, times the number of tiles: keeps it positive definite when
# features are collinear (or constant) or the classes separable; it changes the steps, not the
# optimum.
JITTER = 1e-9
LINE_SEARCH_HALVINGS = 60
ARMIJO = 1e-4  # the share of the predicted decrease a step must achieve
# exp: x = k ln 2 + r with |r| <= ln(2) / 2 (Cody and Waite's two-part ln 2, as in fdlibm), then
# the degree-13 Taylor polynomial of exp(r), whose truncation error is below 1e-17.
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_EXP_COEFFS = tuple(1.0 / math.factorial(n) for n in range(13, -1, -1))
_EXP_FLOOR = -1100.0  # exp of anything below is 0.0 in float64
_SQRT_HALF = math.sqrt(0.5)
_LOG_COEFFS = tuple(1.0 / (2 * j + 1) for j in range(11, -1, -1))


def _round(value: float) -> float:
    """``value`` to 10 significant digits (and -0.0 to 0.0)."""
    return float(f"{value:.10g}") + 0.0


def _sums(terms: np.ndarray) -> list[float]:
    """The sum of each row of a 2-D array, the same for any order of its columns.

    Each row is added in fixed point: every term is rounded to a multiple of ``2^(e - 52)``,
    where ``2^e`` bounds the row's largest magnitude, and the multiples are added as integers,
    which is exact and so independent of the order (and of how numpy splits the loop). The
    error is at most ``n 2^-53`` times the largest term, as for a float sum in any order.
    """
    _, exps = np.frexp(np.max(np.abs(terms), axis=1, initial=0.0))
    ints = np.rint(np.ldexp(terms, (52 - exps)[:, None])).astype(np.int64)
    high = np.sum(ints >> 26, axis=1, dtype=np.int64).tolist()
    low = np.sum(ints & ((1 << 26) - 1), axis=1, dtype=np.int64).tolist()
    return [
        math.ldexp(float((h << 26) + lo), e - 52)
        for h, lo, e in zip(high, low, exps.tolist(), strict=True)
    ]


def _sum(values: np.ndarray) -> float:
    """The sum of a 1-D array, the same for any order of its elements (see :func:`_sums`)."""
    return _sums(values[None, :])[0]


def _exp(x: np.ndarray) -> np.ndarray:
    """``exp(x)`` from elementwise IEEE operations only (same bits on every machine).

    Args:
        x: finite float64 values, at most about 709 (softmax calls it on values <= 0).
    """
    x = np.maximum(x, _EXP_FLOOR)
    k = np.rint(x / _LN2_HI)
    r = (x - k * _LN2_HI) - k * _LN2_LO
    poly = np.full_like(r, _EXP_COEFFS[0])
    for coeff in _EXP_COEFFS[1:]:
        poly = poly * r + coeff
    return np.ldexp(poly, k.astype(np.int32))


def _log(x: np.ndarray) -> np.ndarray:
    """``log(x)`` for finite ``x > 0`` from elementwise IEEE operations only.

    ``x = m 2^e`` with ``m`` in ``[sqrt(1/2), sqrt(2))``, then ``log(m) = 2 atanh(u)`` with
    ``u = (m - 1) / (m + 1)``, ``|u| < 0.172``, summed to ``u^23``.
    """
    m, e = np.frexp(x)
    low = m < _SQRT_HALF
    m = np.where(low, m * 2.0, m)
    e = (e - low).astype(np.float64)
    u = (m - 1.0) / (m + 1.0)
    u2 = u * u
    series = np.full_like(u, _LOG_COEFFS[0])
    for coeff in _LOG_COEFFS[1:]:
        series = series * u2 + coeff
    return e * _LN2_HI + (e * _LN2_LO + 2.0 * u * series)


def _cholesky(a: list[list[float]]) -> list[list[float]]:
    """Lower-triangular ``L`` with ``L L^T = a`` for a symmetric positive definite ``a``."""
    n = len(a)
    low = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1):
            acc = a[i][j]
            for m in range(j):
                acc -= low[i][m] * low[j][m]
            if i == j:
                if not acc > 0.0:
                    raise ModelError(
                        f"logistic fit: the Newton system is not positive definite (pivot {i} is "
                        f"{acc!r}); expected positive pivots"
                    )
                low[i][i] = math.sqrt(acc)
            else:
                low[i][j] = acc / low[j][j]
    return low


def _solve(low: list[list[float]], b: list[float]) -> list[float]:
    """``x`` with ``L L^T x = b``, by forward then backward substitution."""
    n = len(b)
    y = [0.0] * n
    for i in range(n):
        acc = b[i]
        for m in range(i):
            acc -= low[i][m] * y[m]
        y[i] = acc / low[i][i]
    x = [0.0] * n
    for i in reversed(range(n)):
        acc = y[i]
        for m in range(i + 1, n):
            acc -= low[m][i] * x[m]
        x[i] = acc / low[i][i]
    return x


def _is_number(value: Any) -> bool:
    """Whether ``value`` is a finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _standardise(x: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> list[np.ndarray]:
    """The standardised columns of ``x``, one array per feature."""
    return [(x[:, f] - mean[f]) / std[f] for f in range(len(mean))]


def _scores(
    z: list[np.ndarray], weights: Sequence[Sequence[float]], intercepts: Sequence[float]
) -> list[np.ndarray]:
    """Per class, ``b_k + sum_f w_kf z_f``, summed in feature order."""
    rows = z[0].shape[0] if z else 0
    out = []
    for w, b in zip(weights, intercepts, strict=True):
        s = np.full(rows, b, dtype=np.float64)
        for f, column in enumerate(z):
            s = s + column * w[f]
        out.append(s)
    return out


def _softmax(scores: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Per row, the top score, per class ``exp(score - top)``, and their sum (in class order)."""
    top = scores[0]
    for s in scores[1:]:
        top = np.maximum(top, s)
    exps = [_exp(s - top) for s in scores]
    total = exps[0]
    for e in exps[1:]:
        total = total + e
    return top, exps, total


class LogisticKind:
    """A fitted multinomial logistic regression (see the module docstring)."""

    name: ClassVar[str] = "logistic"
    schema: ClassVar[int] = 1
    input: ClassVar[Literal["features", "pixels"]] = "features"

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
        names, l2, iterations = _check_params(params, train.names)
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
            m = _sum(column) / column.size
            if column.min() == column.max():
                s = 1.0
            else:
                s = math.sqrt(_sum((column - m) * (column - m)) / column.size)
            mean.append(_round(m))
            std.append(_round(s) if s > 0.0 else 1.0)
        z = _standardise(x, mean, std)
        theta = _newton(z, np.searchsorted(present, y), len(present), l2, iterations)

        weights = [[0.0] * len(names) for _ in train.classes]
        intercepts: list[float | None] = [None] * len(train.classes)
        for k, params_k in zip(present, theta, strict=True):
            intercepts[k] = _round(params_k[0])
            weights[k] = [_round(v) for v in params_k[1:]]
        fitted: dict[str, Any] = {
            "features": names,
            "classes": train.classes,
            "mean": mean,
            "std": std,
            "weights": weights,
            "intercepts": intercepts,
            "l2": _round(l2),
            "iterations": iterations,
        }
        predicted, _ = cls(**fitted, training={}).predict(x)
        accuracy = _sum((predicted == y).astype(np.float64)) / len(y)
        return cls(**fitted, training={"labelled_tiles": len(y), "accuracy": _round(accuracy)})

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
        z = _standardise(x, self._mean, self._std)
        present = self._present
        scores = _scores(
            z, [self._weights[k] for k in present], [self._intercepts[k] for k in present]
        )
        if not all(np.isfinite(s).all() for s in scores):
            raise ModelError(
                "logistic model scores overflow on these feature values; expected values of "
                "the magnitude seen in training"
            )
        _, exps, total = _softmax(scores)
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
            return cls(**_check_document(data))
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


def _check_params(params: dict[str, Any], available: Sequence[str]) -> tuple[list[str], float, int]:
    """Validated ``(feature names, l2, iterations)`` from ``train.logistic``.

    Raises:
        ModelError: one line naming the key and its value.
    """
    unknown = sorted(set(params) - set(PARAM_DEFAULTS))
    if unknown:
        raise ModelError(
            f"train.logistic.{unknown[0]}: unknown key; expected one of {', '.join(PARAM_DEFAULTS)}"
        )
    merged = {**PARAM_DEFAULTS, **params}
    features, l2, iterations = merged["features"], merged["l2"], merged["iterations"]
    if features is None:
        names = [n for n in available if n not in EXCLUDED_BY_DEFAULT]
        if not names:
            raise ModelError(
                f"train.logistic.features: the training set has no feature but "
                f"{', '.join(available) or 'none'}; expected at least one other"
            )
    else:
        if (
            not isinstance(features, list | tuple)
            or not features
            or not all(isinstance(n, str) for n in features)
        ):
            raise ModelError(
                f"train.logistic.features: {features!r}; expected a non-empty list of feature "
                "names, or null for all"
            )
        names = list(features)
        for n in names:
            if n not in available:
                raise ModelError(
                    f"train.logistic.features: unknown feature {n!r}; available: "
                    f"{', '.join(available)}"
                )
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise ModelError(
                f"train.logistic.features: {dup!r} is listed twice; expected distinct names"
            )
    if not _is_number(l2) or l2 < 0:
        raise ModelError(f"train.logistic.l2: {l2!r}; expected a number >= 0")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ModelError(f"train.logistic.iterations: {iterations!r}; expected an integer >= 1")
    return names, float(l2), iterations


def _newton(
    z: list[np.ndarray], y: np.ndarray, classes: int, l2: float, iterations: int
) -> list[list[float]]:
    """Fit ``[b_k, w_k1, ..., w_kF]`` per class by Newton's method with a backtracking line search.

    Args:
        z: the standardised feature columns, each ``(N,)``.
        y: ``(N,)`` int64, each tile's class among the fitted classes (``0 .. classes - 1``).
        classes: the number of fitted classes.
        l2: the ridge penalty on the weights.
        iterations: the maximum number of Newton steps.
    """
    n = y.size
    x = np.stack([np.ones(n, dtype=np.float64), *z])  # (F + 1, N)
    size = x.shape[0]
    dim = classes * size
    onehot = np.stack([(y == k).astype(np.float64) for k in range(classes)])  # (K, N)
    pairs = [(i, j) for i in range(size) for j in range(i + 1)]
    products = np.stack([x[i] * x[j] for i, j in pairs])  # (P, N)
    class_pairs = [(k, m) for k in range(classes) for m in range(k + 1)]
    # Constant part of the Hessian: the ridge, the centring penalty (mu / 2 |sum_k theta_k|^2,
    # zero at the optimum, which makes the likelihood's flat direction curved) and the jitter.
    mu = float(n)
    constant = [[0.0] * dim for _ in range(dim)]
    for a in range(dim):
        for b in range(dim):
            if a % size == b % size:
                constant[a][b] = mu
        constant[a][a] += JITTER * n + (l2 if a % size else 0.0)

    def objective(theta: list[list[float]]) -> tuple[float, np.ndarray]:
        scores = _scores(z, [t[1:] for t in theta], [t[0] for t in theta])
        top, exps, total = _softmax(scores)
        chosen = np.choose(y, scores)
        loss = _sum(_log(total) - (chosen - top))
        ridge = math.fsum(w * w for t in theta for w in t[1:])
        centre = math.fsum(math.fsum(t[i] for t in theta) ** 2 for i in range(size))
        return loss + 0.5 * l2 * ridge + 0.5 * mu * centre, np.stack([e / total for e in exps])

    theta = [[0.0] * size for _ in range(classes)]
    value, probs = objective(theta)
    for _ in range(iterations):
        flat = [v for t in theta for v in t]
        sums = _sums((x[None, :, :] * (probs - onehot)[:, None, :]).reshape(-1, n))
        centre = [math.fsum(t[i] for t in theta) for i in range(size)]
        grad = [
            sums[a] + (l2 * flat[a] if a % size else 0.0) + mu * centre[a % size]
            for a in range(dim)
        ]
        # Data Hessian: block (k, m) = sum_n p_nk (delta_km - p_nm) x_n x_n^T.
        weights = np.stack([probs[k] * (float(k == m) - probs[m]) for k, m in class_pairs])
        moments = _sums((weights[:, None, :] * products[None, :, :]).reshape(-1, n))
        hessian = [row[:] for row in constant]
        for c, (k, m) in enumerate(class_pairs):
            for p, (i, j) in enumerate(pairs):
                v = moments[c * len(pairs) + p]
                a, b, c2, d = k * size + i, m * size + j, k * size + j, m * size + i
                for row, col in {(a, b), (b, a), (c2, d), (d, c2)}:
                    hessian[row][col] += v
        step = _solve(_cholesky(hessian), grad)
        slope = -math.fsum(g * d for g, d in zip(grad, step, strict=True))
        t = 1.0
        for _ in range(LINE_SEARCH_HALVINGS):
            trial = [
                [flat[k * size + i] - t * step[k * size + i] for i in range(size)]
                for k in range(classes)
            ]
            trial_value, trial_probs = objective(trial)
            if trial_value < value and trial_value <= value + ARMIJO * t * slope:
                break
            t *= 0.5
        else:
            break  # no decrease along the Newton direction: every further step would be this one
        if trial == theta:
            break  # the step changes no parameter: every further step would be this one
        theta, value, probs = trial, trial_value, trial_probs
    return theta


def _check_document(data: Any) -> dict[str, Any]:
    """The constructor arguments from a logistic document.

    Raises:
        ValueError: one line saying what is malformed.
    """
    if not isinstance(data, dict):
        raise ValueError(f"the document is {type(data).__name__}; expected an object")
    for key in DOCUMENT_KEYS:
        if key not in data:
            raise ValueError(f"missing key {key!r}")
    extra = sorted(set(data) - set(DOCUMENT_KEYS))
    if extra:
        raise ValueError(f"unknown key {extra[0]!r}; expected {', '.join(DOCUMENT_KEYS)}")

    def names(key: str, minimum: int) -> list[str]:
        value = data[key]
        if (
            not isinstance(value, list)
            or len(value) < minimum
            or not all(isinstance(v, str) for v in value)
            or len(set(value)) != len(value)
        ):
            raise ValueError(f"{key} is {value!r}; expected at least {minimum} distinct names")
        return value

    def numbers(key: str, value: Any, length: int, positive: bool = False) -> list[float]:
        if not isinstance(value, list) or len(value) != length:
            got = f"{len(value)} values" if isinstance(value, list) else repr(value)
            raise ValueError(f"{key} has {got}; expected a list of {length} numbers")
        for v in value:
            if not _is_number(v) or (positive and v <= 0):
                kind = "positive numbers" if positive else "finite numbers"
                raise ValueError(f"{key} holds {v!r}; expected {kind}")
        return [float(v) for v in value]

    features = names("features", 1)
    classes = names("classes", 2)
    nf, nk = len(features), len(classes)
    mean = numbers("mean", data["mean"], nf)
    std = numbers("std", data["std"], nf, positive=True)
    rows = data["weights"]
    if not isinstance(rows, list) or len(rows) != nk:
        got = f"{len(rows)} rows" if isinstance(rows, list) else repr(rows)
        raise ValueError(f"weights has {got}; expected one row per class ({nk})")
    weights = [numbers(f"weights[{k}]", row, nf) for k, row in enumerate(rows)]
    intercepts = data["intercepts"]
    if not isinstance(intercepts, list) or len(intercepts) != nk:
        got = f"{len(intercepts)} values" if isinstance(intercepts, list) else repr(intercepts)
        raise ValueError(f"intercepts has {got}; expected one per class ({nk})")
    for v in intercepts:
        if v is not None and not _is_number(v):
            raise ValueError(f"intercepts holds {v!r}; expected finite numbers or null")
    if sum(v is not None for v in intercepts) < 2:
        raise ValueError(f"intercepts is {intercepts!r}; expected at least two numbers")
    l2, iterations, solver = data["l2"], data["iterations"], data["solver"]
    if not _is_number(l2) or l2 < 0:
        raise ValueError(f"l2 is {l2!r}; expected a number >= 0")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations is {iterations!r}; expected an integer >= 1")
    if solver != SOLVER:
        raise ValueError(f"solver is {solver!r}; expected {SOLVER!r}")
    training = data["training"]
    if (
        not isinstance(training, dict)
        or set(training) != {"labelled_tiles", "accuracy"}
        or isinstance(training["labelled_tiles"], bool)
        or not isinstance(training["labelled_tiles"], int)
        or training["labelled_tiles"] < 1
        or not _is_number(training["accuracy"])
        or not 0 <= training["accuracy"] <= 1
    ):
        raise ValueError(
            f"training is {training!r}; expected labelled_tiles (an integer >= 1) and accuracy "
            "(a number in [0, 1])"
        )
    return {
        "features": features,
        "classes": classes,
        "mean": mean,
        "std": std,
        "weights": weights,
        "intercepts": [None if v is None else float(v) for v in intercepts],
        "l2": float(l2),
        "iterations": iterations,
        "training": dict(training),
    }
