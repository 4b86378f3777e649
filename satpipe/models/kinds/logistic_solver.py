"""The logistic kind's arithmetic: exact sums, ``exp``/``log``, Cholesky, and the Newton fit.

The fit is the same bit for bit on any machine and for any order of the training rows:

* every product is an elementwise numpy multiplication, never a BLAS product (``@``,
  :func:`numpy.dot`, :mod:`numpy.linalg`), whose last bits depend on the BLAS build and its
  thread count;
* every sum over tiles is a fixed-point sum of integers (:func:`exact_sums`), exact and therefore
  independent of the order of the tiles and of how numpy splits the loop;
* ``exp`` and ``log`` are computed here from elementwise additions, multiplications and
  divisions, which IEEE 754 defines to the last bit (numpy's and libm's own pick CPU-specific
  code paths);
* the Newton system is solved with a hand-written Cholesky factorisation in Python floats.

Every stored number is rounded to 10 significant digits and the model predicts from the rounded
numbers, so a model reloaded from its JSON document predicts exactly as the fitted one.

:func:`newton` fits every class's intercept and weights at once with the exact Hessian and a
backtracking line search (see :mod:`satpipe.models.kinds.logistic` for the model it fits).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from satpipe.core.errors import ModelError

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


def round10(value: float) -> float:
    """``value`` to 10 significant digits (and -0.0 to 0.0)."""
    return float(f"{value:.10g}") + 0.0


def exact_sums(terms: np.ndarray) -> list[float]:
    """The sum of each row of a 2-D array, the same for any order of its columns.

    Each row is added in fixed point: every term is rounded to a multiple of ``2^(e - 52)``,
    where ``2^e`` bounds the row's largest magnitude, and the multiples are added as integers,
    which is exact and so independent of the order (and of how numpy splits the loop). The
    error is at most ``n 2^-53`` times the largest term, as for a float sum in any order.
    """
    _, exps = np.frexp(np.max(np.abs(terms), axis=1, initial=0.0))
    ints = np.rint(np.ldexp(terms, (52 - exps)[:, None])).astype(np.int64)
    # The method, not np.sum: numpy's stubs type np.sum(..., axis=1) as "scalar or array".
    high: list[int] = (ints >> 26).sum(axis=1, dtype=np.int64).tolist()
    low: list[int] = (ints & ((1 << 26) - 1)).sum(axis=1, dtype=np.int64).tolist()
    return [
        math.ldexp(float((h << 26) + lo), e - 52)
        for h, lo, e in zip(high, low, exps.tolist(), strict=True)
    ]


def exact_sum(values: np.ndarray) -> float:
    """The sum of a 1-D array, the same for any order of its elements (see :func:`exact_sums`)."""
    return exact_sums(values[None, :])[0]


def exp(x: np.ndarray) -> np.ndarray:
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


def log(x: np.ndarray) -> np.ndarray:
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


def cholesky(a: list[list[float]]) -> list[list[float]]:
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


def solve(low: list[list[float]], b: list[float]) -> list[float]:
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


def standardise(x: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> list[np.ndarray]:
    """The standardised columns of ``x``, one array per feature."""
    return [(x[:, f] - mean[f]) / std[f] for f in range(len(mean))]


def class_scores(
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


def softmax(scores: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Per row, the top score, per class ``exp(score - top)``, and their sum (in class order)."""
    top = scores[0]
    for s in scores[1:]:
        top = np.maximum(top, s)
    exps = [exp(s - top) for s in scores]
    total = exps[0]
    for e in exps[1:]:
        total = total + e
    return top, exps, total


def newton(
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
        scores = class_scores(z, [t[1:] for t in theta], [t[0] for t in theta])
        top, exps, total = softmax(scores)
        chosen = np.choose(y, scores)
        loss = exact_sum(log(total) - (chosen - top))
        ridge = math.fsum(w * w for t in theta for w in t[1:])
        centre = math.fsum(math.fsum(t[i] for t in theta) ** 2 for i in range(size))
        return loss + 0.5 * l2 * ridge + 0.5 * mu * centre, np.stack([e / total for e in exps])

    theta = [[0.0] * size for _ in range(classes)]
    value, probs = objective(theta)
    for _ in range(iterations):
        flat = [v for t in theta for v in t]
        sums = exact_sums((x[None, :, :] * (probs - onehot)[:, None, :]).reshape(-1, n))
        centre = [math.fsum(t[i] for t in theta) for i in range(size)]
        grad = [
            sums[a] + (l2 * flat[a] if a % size else 0.0) + mu * centre[a % size]
            for a in range(dim)
        ]
        # Data Hessian: block (k, m) = sum_n p_nk (delta_km - p_nm) x_n x_n^T.
        weights = np.stack([probs[k] * (float(k == m) - probs[m]) for k, m in class_pairs])
        # One class pair at a time: exact_sums sums each row on its own, so the bits are those
        # of one (pairs x products x N) block, without its memory (4.5 GB at K=10, F=17, N=20k).
        moments = [v for w in weights for v in exact_sums(w[None, :] * products)]
        hessian = [row[:] for row in constant]
        for c, (k, m) in enumerate(class_pairs):
            for p, (i, j) in enumerate(pairs):
                v = moments[c * len(pairs) + p]
                a, b, c2, d = k * size + i, m * size + j, k * size + j, m * size + i
                for row, col in {(a, b), (b, a), (c2, d), (d, c2)}:
                    hessian[row][col] += v
        step = solve(cholesky(hessian), grad)
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
