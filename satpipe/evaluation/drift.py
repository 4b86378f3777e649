"""Drift: comparing what inference saw with what training saw.

The reference is the training feature distribution stored in the model (101 quantiles, mean,
standard deviation, class fractions). Against it, the inference features give:

- the Kolmogorov-Smirnov statistic against the reference CDF interpolated linearly between the
  stored quantiles, with the two-sample p-value (the reference is itself a sample);
- the population stability index, ``PSI = sum((a - e) * ln(a / e))`` over bins cut at the
  reference quantiles (so each bin expects ``e = 1 / bins``), with at most ``health.psi_bins``
  bins and at least about 10 compared tiles per bin (PSI is noise on sparser bins);
- the mean shift in training standard deviations, ``(mean_inf - mean_ref) / std_ref``;
- the failure rate, and the largest change in any class's share of predictions.

Each figure is compared with a warning and a critical threshold from ``params.yaml``. Statuses
rank ``healthy`` < ``insufficient data`` < ``warning`` < ``critical`` (:data:`STATUSES`) and the
worst check sets the status: a judged warning or critical wins; otherwise, if a check could not be
judged, the status is ``insufficient data``; otherwise ``healthy``.

*Insufficient data*: with fewer than ``health.min_samples`` tiles compared, the drift and
class-shift checks (PSI, mean shift, class shift) say ``insufficient data`` whatever their value,
since at that size they are noise (one tile of 7 moves a class share by 0.14). The KS test is the
exception in one direction: its p-value already accounts for the sample size, so a significant
result still grades (a scene far off the reference is flagged even with a few tiles), while a
non-significant one says ``insufficient data`` (no evidence either way). The failure rate is
always judged. With no tile compared at all the status is at least ``warning`` (the setup leaves
nothing to monitor). Figures are kept in every case.

Figures are rounded to 6 significant digits so the report is byte-stable across CPUs whose math
libraries differ in the last bit.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from satpipe.core.params import HealthParams
from satpipe.evaluation import kolmogorov

INSUFFICIENT = "insufficient data"
STATUSES = ("healthy", INSUFFICIENT, "warning", "critical")
"""Every status, from best to worst (the order :func:`worst_status` ranks them by)."""


def worst_status(statuses: list[str] | tuple[str, ...], default: str = "healthy") -> str:
    """The worst of ``statuses`` by :data:`STATUSES` order (``default`` when there is none)."""
    return max(statuses, key=STATUSES.index, default=default)


def _r(value: float) -> float:
    return float(f"{value:.6g}")


def ks_test(values: np.ndarray, reference: dict[str, Any]) -> tuple[float, float]:
    """KS statistic of ``values`` against the reference quantile CDF, and its p-value.

    The reference CDF was itself estimated from ``reference["count"]`` training tiles, so the
    p-value is that of the two-sample test: the Kolmogorov distribution at the effective size
    ``n * m / (n + m)``. Treating the reference as exact (one-sample) understates the p-value
    when the training set is small.
    """
    levels = np.asarray(reference["quantile_levels"], dtype=np.float64)
    quantiles = np.asarray(reference["quantiles"], dtype=np.float64)
    x = np.sort(np.asarray(values, dtype=np.float64))
    n, m = x.size, int(reference["count"])
    cdf = np.interp(x, quantiles, levels, left=0.0, right=1.0)
    steps = np.arange(1, n + 1) / n
    statistic = float(max(np.max(steps - cdf), np.max(cdf - (steps - 1.0 / n))))
    effective = max(1, round(n * m / (n + m)))
    return statistic, kstwo_sf(statistic, effective)


def kstwo_sf(statistic: float, n: int) -> float:
    """The two-sided Kolmogorov-Smirnov p-value of ``statistic`` at sample size ``n``.

    ``scipy.stats.kstwo.sf``, float for float, from :mod:`satpipe.evaluation.kolmogorov`, which
    spares the health stage the import of ``scipy.stats`` (0.7-1 s).
    """
    return kolmogorov.kstwo_sf(statistic, n)


def psi_bins_for(n: int, max_bins: int) -> int:
    """Bins for PSI: at most ``max_bins``, and at least ~10 expected values per bin (min 2)."""
    return max(2, min(max_bins, n // 10))


def psi(values: np.ndarray, reference: dict[str, Any], bins: int) -> float:
    """Population stability index over ``bins`` reference-quantile bins.

    Actual bin fractions are smoothed, ``(count + 0.5) / (n + 0.5 * bins)``, so that an empty bin
    adds a bounded amount instead of dominating the sum.
    """
    quantiles = np.asarray(reference["quantiles"], dtype=np.float64)
    cuts = psi_positions(len(quantiles), bins)
    idx = np.searchsorted(quantiles[cuts], values, side="right")
    return psi_from_counts(np.bincount(idx, minlength=bins), bin_expectations(reference, cuts))


def psi_positions(levels: int, bins: int) -> list[int]:
    """Which of ``levels`` reference quantiles cut the ``bins`` PSI bins (``bins - 1`` of them)."""
    return [round(k * (levels - 1) / bins) for k in range(1, bins)]


def bin_expectations(reference: dict[str, Any], cuts: list[int]) -> np.ndarray:
    """The reference's share in each PSI bin cut at its quantiles ``cuts``.

    ``P(X < q)`` is read off the reference's quantiles as the level of the first quantile at or
    above ``q``: for a continuous reference every bin holds ``1 / bins``; for a discrete or
    saturated one (several quantiles at one value) the shares follow the tied values' mass, and
    a bin between two equal cuts holds nothing (a value equal to a cut goes above it).
    """
    quantiles = np.asarray(reference["quantiles"], dtype=np.float64)
    levels = np.asarray(reference["quantile_levels"], dtype=np.float64)
    first = np.searchsorted(quantiles, quantiles[cuts], side="left")
    return np.diff(np.concatenate([[0.0], levels[first], [1.0]]))


def psi_from_counts(counts: np.ndarray, expected: np.ndarray | None = None) -> float:
    """PSI of values counted in ``len(counts)`` bins (smoothed as :func:`psi`).

    ``expected``: the reference's share of each bin (:func:`bin_expectations`; default equal
    shares). A bin the reference leaves empty is merged into the next one.
    """
    counts = np.asarray(counts, dtype=np.float64).copy()
    bins = len(counts)
    shares = np.full(bins, 1.0 / bins) if expected is None else np.asarray(expected, dtype=float)
    keep = shares > 1e-12
    for i in range(bins - 1):
        if not keep[i]:
            counts[i + 1] += counts[i]
    counts, shares = counts[keep], shares[keep]
    n, total = float(np.sum(counts)), 0.0
    for count, e in zip(counts, shares, strict=True):
        a = (float(count) + 0.5) / (n + 0.5 * len(counts))
        total += (a - e) * math.log(a / e)
    return total


def _grade(value: float, warning: float, critical: float, higher_is_worse: bool = True) -> str:
    if higher_is_worse:
        return "critical" if value > critical else "warning" if value > warning else "healthy"
    return "critical" if value < critical else "warning" if value < warning else "healthy"


def graded_check(
    value: float | None,
    warning: float,
    critical: float,
    *,
    samples: int,
    min_samples: int,
    higher_is_worse: bool = True,
    significant_counts: bool = False,
) -> dict[str, Any]:
    """A check: ``{"value", "warning", "critical", "status"}`` (and ``samples`` when too few).

    With ``samples < min_samples`` (or no value) the status is ``insufficient data``; when
    ``significant_counts`` (a test whose value already accounts for the sample size), a graded
    warning or critical stands even then, and only a healthy grade becomes insufficient data.
    """
    check: dict[str, Any] = {"value": value, "warning": warning, "critical": critical}
    status = INSUFFICIENT if value is None else _grade(value, warning, critical, higher_is_worse)
    if samples < min_samples and not (significant_counts and status in ("warning", "critical")):
        status = INSUFFICIENT
    if status == INSUFFICIENT:
        check["samples"], check["min_samples"] = samples, min_samples
    check["status"] = status
    return check


_ADVICE = {
    "ks_pvalue": "The feature distribution differs from training (KS test): check that the "
    "scenes come from the same sensor, season and processing level, or retrain on recent scenes.",
    "psi": "The population stability index shows the feature's distribution has moved: "
    "inspect the scenes behind the shift and consider retraining.",
    "mean_shift": "Mean intensity moved by {value} training standard deviations: look for "
    "clouds, haze, snow or a calibration change, and retrain if it is real.",
    "failure_rate": "{value:.1%} of tiles could not be read: see tiles_failed in "
    "predictions.json and re-run tiling (dvc repro) or fix the storage.",
    "class_shift": "The share of predicted classes moved by {value:.1%} from training: "
    "confirm with a few labelled tiles before trusting the counts.",
}


def health_report(
    values: np.ndarray,
    reference: dict[str, Any],
    failed: int,
    total: int,
    class_fractions: dict[str, float],
    params: HealthParams,
) -> dict[str, Any]:
    """Compare inference features with the reference and grade the result.

    Args:
        values: inference feature values compared with the reference.
        reference: the model's reference distribution.
        failed: tiles that could not be inferred.
        total: tiles attempted.
        class_fractions: share of each class among the inference predictions.
        params: the ``health`` thresholds.
    """
    values = np.asarray(values, dtype=np.float64)
    failure_rate = failed / total if total else 0.0
    checks: dict[str, dict[str, Any]] = {}
    figures: dict[str, Any] = {"tiles_compared": int(values.size), "failure_rate": _r(failure_rate)}
    recommendations: list[str] = []
    if values.size:
        stat, pvalue = ks_test(values, reference)
        ref_std = reference["std"] or 1.0
        bins = psi_bins_for(values.size, params.psi_bins)
        shift = (float(values.mean()) - reference["mean"]) / ref_std
        # A pixel-input model has no training-set class shares (training sees only features).
        ref_fr = reference.get("class_fractions") or {}
        class_shift = max(
            (abs(class_fractions.get(k, 0.0) - v) for k, v in ref_fr.items()), default=0.0
        )
        figures.update(
            ks_statistic=_r(stat),
            ks_pvalue=_r(pvalue),
            psi=_r(psi(values, reference, bins)),
            psi_bins=bins,
            mean_shift_std=_r(shift),
            inference_mean=_r(float(values.mean())),
            reference_mean=_r(reference["mean"]),
            reference_std=_r(reference["std"]),
            class_shift=_r(class_shift),
        )
        n, least = int(values.size), params.min_samples
        checks["ks_pvalue"] = graded_check(
            figures["ks_pvalue"],
            params.ks_pvalue_warning,
            params.ks_pvalue_critical,
            samples=n,
            min_samples=least,
            higher_is_worse=False,
            significant_counts=True,
        )
        limits = {
            "psi": (figures["psi"], params.psi_warning, params.psi_critical),
            "mean_shift": (
                abs(figures["mean_shift_std"]),
                params.mean_shift_warning,
                params.mean_shift_critical,
            ),
            "class_shift": (
                figures["class_shift"],
                params.class_shift_warning,
                params.class_shift_critical,
            ),
        }
        for name, (value, warn, crit) in limits.items():
            checks[name] = graded_check(value, warn, crit, samples=n, min_samples=least)
        if n < least:
            recommendations.append(
                f"Only {n} tiles were compared; drift figures are unreliable below "
                f"{least} (health.min_samples), so those checks say insufficient data: use a "
                "larger scene, a smaller tile.size or a lower train.fraction."
            )
    else:
        recommendations.append(
            "No inference tile to compare with training: every tile was used "
            "for training or failed; lower train.fraction."
        )
    checks["failure_rate"] = {
        "value": figures["failure_rate"],
        "warning": params.failure_rate_warning,
        "critical": params.failure_rate_critical,
        "status": _grade(failure_rate, params.failure_rate_warning, params.failure_rate_critical),
    }
    status = worst_status([c["status"] for c in checks.values()])
    if not values.size:
        status = worst_status([status, "warning"])
    for name, check in checks.items():
        if check["status"] in ("warning", "critical"):
            recommendations.append(_ADVICE[name].format(value=check["value"]))
    if status == "healthy" and not recommendations:
        recommendations.append("No action needed: inference data matches the training reference.")
    return {
        "status": status,
        "figures": figures,
        "checks": checks,
        "recommendations": recommendations,
    }
