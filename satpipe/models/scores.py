"""Scores: a classifier's answers compared with reference classes, and the best threshold.

Classes are strings, in the model's order; for a threshold the positive class is the *last* one
(a feature above the threshold gives ``classes[-1]``, otherwise ``classes[0]``). Training records
how a model scores on its labelled training tiles, the threshold kind fits its threshold here, and
evaluation scores the held-out tiles with the same functions, so the figures agree to the bit.

The scores follow fixed rules so that a number is never invented:

- precision of a class that was never predicted, and recall of a class with no reference tile,
  are ``None`` (undefined), not 0; F1 is ``None`` when either is, and 0.0 when both are 0;
- balanced accuracy is the mean recall over the classes that have reference tiles;
- with no tile every score is ``None``.

Every float is rounded to 6 decimals (:data:`DECIMALS`), so the documents are byte-stable JSON.
Pure functions on numpy arrays and sequences.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np

from satpipe.core.errors import ModelError

DECIMALS = 6


@overload
def rounded(value: float) -> float: ...
@overload
def rounded(value: None) -> None: ...
@overload
def rounded(value: float | None) -> float | None: ...
def rounded(value: float | None) -> float | None:
    """``value`` rounded to :data:`DECIMALS` decimals, or None."""
    return None if value is None else round(float(value), DECIMALS)


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def check_classes(classes: Sequence[str]) -> list[str]:
    """The class names as a list, refusing an empty or repeating one (:class:`ModelError`)."""
    names = list(classes)
    if not names:
        raise ModelError("no class given: expected the model's ordered class list")
    duplicates = sorted({c for c in names if names.count(c) > 1})
    if duplicates:
        raise ModelError(f"classes {names} repeat {duplicates}; expected distinct class names")
    return names


def confusion_matrix(
    actual: Sequence[str], predicted: Sequence[str], classes: Sequence[str]
) -> list[list[int]]:
    """Counts of tiles by actual (rows) and predicted (columns) class, in ``classes`` order.

    Args:
        actual: each tile's reference class.
        predicted: each tile's predicted class, in the same tile order.
        classes: the model's ordered class list.

    Raises:
        ModelError: the two sequences differ in length, or a label is not one of ``classes``.
    """
    names = check_classes(classes)
    if len(actual) != len(predicted):
        raise ModelError(
            f"{len(actual)} reference labels but {len(predicted)} predictions; expected one each"
        )
    position = {c: i for i, c in enumerate(names)}
    matrix = [[0] * len(names) for _ in names]
    for kind, labels in (("reference", actual), ("predicted", predicted)):
        for label in labels:
            if label not in position:
                raise ModelError(f"{kind} class {label!r} is not one of the classes {names}")
    for a, p in zip(actual, predicted, strict=True):
        matrix[position[a]][position[p]] += 1
    return matrix


def _f1(precision: float | None, recall: float | None) -> float | None:
    if precision is None or recall is None:
        return None
    if precision == 0 and recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def classification_scores(
    actual: Sequence[str], predicted: Sequence[str], classes: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, per-class precision/recall/F1 and the confusion matrix.

    Rules (see the module docstring): accuracy is correct / tiles; a class's precision is its
    correct predictions over its predictions and is ``None`` when it was never predicted; its
    recall is its correct predictions over its reference tiles and is ``None`` when it has none
    (support 0); F1 is ``2PR / (P + R)``, ``None`` when P or R is ``None`` and 0.0 when both are
    0; balanced accuracy is the mean recall over the classes with support > 0. With no tile every
    score is ``None``. Floats are rounded to 6 decimals (after computing from exact counts).

    Args:
        actual: each tile's reference class.
        predicted: each tile's predicted class, in the same tile order.
        classes: the model's ordered class list.

    Returns:
        ``{"tiles", "accuracy", "balanced_accuracy", "per_class": {class: {"precision",
        "recall", "f1", "support"}}, "confusion": {"classes", "matrix"}}``; matrix rows are
        actual classes, columns predicted classes.

    Raises:
        ModelError: as :func:`confusion_matrix`.
    """
    names = check_classes(classes)
    matrix = confusion_matrix(actual, predicted, names)
    tiles = len(actual)
    correct = sum(matrix[i][i] for i in range(len(names)))
    per_class: dict[str, dict[str, Any]] = {}
    recalls: list[float] = []
    for i, name in enumerate(names):
        support = sum(matrix[i])
        predicted_as = sum(row[i] for row in matrix)
        precision = _ratio(matrix[i][i], predicted_as)
        recall = _ratio(matrix[i][i], support)
        if recall is not None:
            recalls.append(recall)
        per_class[name] = {
            "precision": rounded(precision),
            "recall": rounded(recall),
            "f1": rounded(_f1(precision, recall)),
            "support": support,
        }
    return {
        "tiles": tiles,
        "accuracy": rounded(_ratio(correct, tiles)),
        "balanced_accuracy": rounded(_mean(recalls)),
        "per_class": per_class,
        "confusion": {"classes": names, "matrix": matrix},
    }


@dataclass(frozen=True)
class ThresholdFit:
    """The threshold that best separates two classes on one feature, and how well it does.

    ``threshold`` is exact (rounding it could move it across a feature value); the scores are
    rounded to 6 decimals.
    """

    threshold: float
    balanced_accuracy: float
    accuracy: float
    tiles: int

    def to_dict(self) -> dict[str, Any]:
        """The fit as a JSON-ready dict."""
        return {
            "threshold": self.threshold,
            "balanced_accuracy": self.balanced_accuracy,
            "accuracy": self.accuracy,
            "tiles": self.tiles,
        }


def _pair(values: Any, positive: Any, who: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(values, dtype=np.float64)
    pos = np.asarray(positive)
    if x.ndim != 1 or pos.ndim != 1:
        raise ModelError(
            f"{who}: values and positive have {x.ndim} and {pos.ndim} dimensions; expected 1-D"
        )
    if x.size != pos.size:
        raise ModelError(
            f"{who}: {x.size} values but {pos.size} positive flags; expected one flag per value"
        )
    if pos.size and pos.dtype != np.bool_:
        raise ModelError(f"{who}: positive has dtype {pos.dtype}; expected bool (True = last)")
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        raise ModelError(
            f"{who}: {bad.size} non-finite values (first {x[bad[0]]} at position {bad[0]}); "
            "expected finite feature values"
        )
    return x, pos.astype(np.bool_)


def _balanced(tp: int, n_pos: int, tn: int, n_neg: int) -> float | None:
    # Mean recall over the classes present; the same float expression wherever it is used, so a
    # curve point and a fit at the same threshold agree to the last bit.
    return _mean([r for r in (_ratio(tn, n_neg), _ratio(tp, n_pos)) if r is not None])


def fit_threshold(
    values: np.ndarray, positive: np.ndarray, *, classes: Sequence[str] | None = None
) -> ThresholdFit:
    """Best threshold for "positive iff value > threshold", by balanced accuracy.

    Candidates are the midpoints between adjacent distinct sorted values, so the threshold
    always lies between two adjacent feature values (strictly above the lower; if the midpoint
    of two adjacent floats rounds up to the upper one, the lower value is used instead). The
    chosen candidate maximises balanced accuracy (mean of the two recalls); ties are broken by
    higher plain accuracy, then by the smaller threshold. Comparisons use exact integer counts,
    so ties are exact and the choice is deterministic. Runs in O(n log n) (one sort, then
    cumulative counts).

    Args:
        values: feature value of each tile.
        positive: bool per tile, True for the positive (last) class.
        classes: the two class names, used only to name a missing class in errors.

    Raises:
        ModelError: malformed input, fewer than 2 distinct values, or only one class present.
    """
    x, pos = _pair(values, positive, "fit_threshold")
    neg_name, pos_name = (
        (repr(classes[0]), repr(classes[-1])) if classes else ("negative", "positive")
    )
    distinct, inverse = np.unique(x, return_inverse=True)
    if distinct.size < 2:
        found = f"all equal to {distinct[0]}" if distinct.size else "no value"
        raise ModelError(
            f"fit_threshold: found {distinct.size} distinct feature value(s) ({x.size} tiles, "
            f"{found}); expected at least 2 to place a threshold between"
        )
    n_pos = int(np.count_nonzero(pos))
    n_neg = x.size - n_pos
    if n_pos == 0 or n_neg == 0:
        present, absent = (pos_name, neg_name) if n_neg == 0 else (neg_name, pos_name)
        raise ModelError(
            f"fit_threshold: only class {present} present ({x.size} tiles, 0 {absent}); "
            "expected tiles of both classes"
        )
    inverse = inverse.ravel()
    k = distinct.size
    pos_at = np.bincount(inverse[pos], minlength=k).astype(np.int64)
    all_at = np.bincount(inverse, minlength=k).astype(np.int64)
    # Candidate j lies between distinct[j] and distinct[j + 1]: values <= distinct[j] are negative.
    pos_le = np.cumsum(pos_at)[:-1]
    neg_le = np.cumsum(all_at - pos_at)[:-1]
    tp = n_pos - pos_le
    tn = neg_le
    score = tp * n_neg + tn * n_pos  # balanced accuracy * 2 * n_pos * n_neg, exact
    correct = tp + tn
    tied = np.flatnonzero(score == score.max())
    best = int(tied[np.argmax(correct[tied])])  # argmax: first, i.e. smallest threshold
    lo, hi = float(distinct[best]), float(distinct[best + 1])
    threshold = lo / 2 + hi / 2
    if not lo <= threshold < hi:
        threshold = lo
    balanced = _balanced(int(tp[best]), n_pos, int(tn[best]), n_neg)
    assert balanced is not None  # both classes are present (checked above): two recalls
    return ThresholdFit(
        threshold=threshold,
        balanced_accuracy=rounded(balanced),
        accuracy=rounded(int(correct[best]) / x.size),
        tiles=int(x.size),
    )


def threshold_curve(
    values: np.ndarray, positive: np.ndarray, thresholds: Sequence[float]
) -> list[dict[str, Any]]:
    """Balanced accuracy and accuracy of "positive iff value > t" at each threshold ``t``.

    Balanced accuracy is the mean recall over the classes present (as in
    :func:`classification_scores`); with no value both scores are ``None``. Rows are in the
    order of ``thresholds``; every float is rounded to 6 decimals.

    Args:
        values: feature value of each tile.
        positive: bool per tile, True for the positive (last) class.
        thresholds: the thresholds to score.

    Raises:
        ModelError: malformed input or a non-finite threshold.
    """
    x, pos = _pair(values, positive, "threshold_curve")
    t = np.asarray(list(thresholds), dtype=np.float64)
    if not np.all(np.isfinite(t)):
        raise ModelError("threshold_curve: a threshold is not finite; expected finite thresholds")
    order = np.argsort(x, kind="stable")
    cum_pos = np.concatenate(([0], np.cumsum(pos[order], dtype=np.int64)))
    n_pos = int(cum_pos[-1])
    n_neg = x.size - n_pos
    at_or_below = np.searchsorted(x[order], t, side="right")
    rows = []
    for threshold, le in zip(t, at_or_below, strict=True):
        pos_le = int(cum_pos[le])
        tp, tn = n_pos - pos_le, int(le) - pos_le
        rows.append(
            {
                "threshold": rounded(threshold),
                "balanced_accuracy": rounded(_balanced(tp, n_pos, tn, n_neg)),
                "accuracy": rounded(_ratio(tp + tn, x.size)),
            }
        )
    return rows
