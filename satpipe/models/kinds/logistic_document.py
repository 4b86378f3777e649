"""The logistic kind's params and document: what ``train.logistic`` and ``model.json`` may hold.

:func:`check_params` validates ``train.logistic`` against the training set's features;
:func:`check_document` validates a stored model document before the kind is rebuilt from it. Both
fail with one line naming the key, its value and what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from satpipe.core.errors import ModelError

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


def is_number(value: Any) -> bool:
    """Whether ``value`` is a finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_params(params: dict[str, Any], available: Sequence[str]) -> tuple[list[str], float, int]:
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
    if not is_number(l2) or l2 < 0:
        raise ModelError(f"train.logistic.l2: {l2!r}; expected a number >= 0")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ModelError(f"train.logistic.iterations: {iterations!r}; expected an integer >= 1")
    return names, float(l2), iterations


def check_document(data: Any) -> dict[str, Any]:
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
            if not is_number(v) or (positive and v <= 0):
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
        if v is not None and not is_number(v):
            raise ValueError(f"intercepts holds {v!r}; expected finite numbers or null")
    if sum(v is not None for v in intercepts) < 2:
        raise ValueError(f"intercepts is {intercepts!r}; expected at least two numbers")
    l2, iterations, solver = data["l2"], data["iterations"], data["solver"]
    if not is_number(l2) or l2 < 0:
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
        or not is_number(training["accuracy"])
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
