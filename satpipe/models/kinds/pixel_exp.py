"""The pixel_logistic kind's prediction arithmetic, in place: features, scores and softmax.

The same IEEE operations, in the same order, as the fitted path
(:func:`satpipe.models.kinds.pixel_logistic.feature_columns`, the kind's scores and
:func:`satpipe.models.kinds.logistic_solver.softmax` with its ``exp``), so the same bits; only
where results land differs: temporaries are reused (``out=``) instead of allocated per
operation, a normalised difference whose bands never sum to 0 skips the ``where`` that guards
the division, and windows are scored where they lie, without moving the band axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from satpipe.models.kinds.logistic_solver import _EXP_COEFFS, _EXP_FLOOR, _LN2_HI, _LN2_LO

CHUNK = 1 << 14  # pixels scored at once (elementwise: results do not depend on it)


@dataclass(frozen=True)
class Linear:
    """The stored numbers prediction needs: features, standardisation and present classes."""

    features: tuple[tuple[int, ...], ...]  # positions in the model's bands (one, or a pair)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    present: tuple[int, ...]  # classes with an intercept
    intercepts: tuple[float, ...]  # per present class
    weights: tuple[tuple[float, ...], ...]  # per present class, per feature


def exp_into(x: np.ndarray, k: np.ndarray, tmp: np.ndarray) -> None:
    """``x = logistic_solver.exp(x)`` in place (same bits); ``k``, ``tmp``: scratch, x's shape."""
    np.maximum(x, _EXP_FLOOR, out=x)
    np.divide(x, _LN2_HI, out=k)
    np.rint(k, out=k)
    np.multiply(k, _LN2_HI, out=tmp)
    np.subtract(x, tmp, out=x)
    np.multiply(k, _LN2_LO, out=tmp)
    x -= tmp  # r
    np.multiply(x, _EXP_COEFFS[0], out=tmp)  # the Horner steps, from the highest degree
    tmp += _EXP_COEFFS[1]
    for coeff in _EXP_COEFFS[2:]:
        tmp *= x
        tmp += coeff
    np.ldexp(tmp, k.astype(np.int32), out=x)


def _features(values: np.ndarray, model: Linear) -> list[np.ndarray]:
    """Each standardised feature of finite pixels ``values`` (``(B, P)`` float64)."""
    z = []
    for pos, m, s in zip(model.features, model.mean, model.std, strict=True):
        if len(pos) == 1:
            column = values[pos[0]] - m
        else:
            a, b = values[pos[0]], values[pos[1]]
            total = a + b
            column = a - b
            zero = total == 0.0
            if zero.any():  # as feature_columns: 0 where the bands sum to 0
                column = np.where(zero, 0.0, column / np.where(zero, 1.0, total))
            else:
                column /= total
            column -= m
        column /= s
        z.append(column)
    return z


def probabilities_into(values: np.ndarray, model: Linear, out: np.ndarray) -> None:
    """Write each present class's probability of pixels ``values`` (``(B, P)``) into ``out[k]``.

    ``out``: ``(K, P)`` (float32 rows take the float64 results rounded); absent classes' rows
    are left as they are.
    """
    bad = ~np.isfinite(values).all(axis=0)
    spoilt = bool(bad.any())
    if spoilt:
        values = np.where(bad, 0.0, values)  # any finite value: the features are reset below
    z = _features(values, model)
    if spoilt:
        for column in z:
            column[bad] = 0.0  # the training mean
    tmp = np.empty(values.shape[1])
    scores = []
    for b, weights in zip(model.intercepts, model.weights, strict=True):
        acc = np.full(values.shape[1], b)
        for column, w in zip(z, weights, strict=True):
            np.multiply(column, w, out=tmp)
            acc += tmp
        scores.append(acc)
    top = scores[0].copy()
    for s in scores[1:]:
        np.maximum(top, s, out=top)
    k = np.empty_like(tmp)
    for s in scores:
        s -= top
        exp_into(s, k, tmp)
    total = top  # reused: e_0 + e_1 + ... in class order
    np.add(scores[0], scores[1], out=total)
    for e in scores[2:]:
        total += e
    for c, e in zip(model.present, scores, strict=True):
        np.divide(e, total, out=out[c])


def scores_into(x: np.ndarray, model: Linear, out: np.ndarray) -> None:
    """Probabilities of windows ``x`` (``(N, B, H, W)``) into ``out`` (``(N, K, H, W)``)."""
    n, b, h, w = x.shape
    for i in range(n):
        values = x[i].reshape(b, h * w)
        rows = out[i].reshape(out.shape[1], h * w)
        for start in range(0, h * w, CHUNK):  # cache-sized runs of pixels
            stop = start + CHUNK
            probabilities_into(values[:, start:stop].astype(np.float64), model, rows[:, start:stop])


def linear(doc: dict[str, object], features: Sequence[tuple[int, ...]]) -> Linear:
    """The :class:`Linear` of a pixel_logistic document (its checked numbers)."""
    intercepts: list[float | None] = doc["intercepts"]  # type: ignore[assignment]
    present = tuple(k for k, v in enumerate(intercepts) if v is not None)
    weights: list[list[float]] = doc["weights"]  # type: ignore[assignment]
    return Linear(
        tuple(tuple(f) for f in features),
        tuple(float(v) for v in doc["mean"]),  # type: ignore[attr-defined]
        tuple(float(v) for v in doc["std"]),  # type: ignore[attr-defined]
        present,
        tuple(float(intercepts[k]) for k in present),  # type: ignore[arg-type]
        tuple(tuple(float(v) for v in weights[k]) for k in present),
    )


__all__ = ["CHUNK", "Linear", "exp_into", "linear", "probabilities_into", "scores_into"]
