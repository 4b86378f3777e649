"""Band drift for masks: a band's pixel sample summarised against its training reference.

A per-pixel model's reference (``model.reference["pixels"]["bands"]``) holds each input band's
training distribution (:func:`satpipe.models.model.reference_distribution`). A scene's band
sample is kept as counts in the 102 intervals cut by the reference's 101 quantiles (values equal
to a quantile go above it, as :func:`satpipe.evaluation.drift.psi` bins), so PSI from the counts
is exactly what :func:`~satpipe.evaluation.drift.psi` gives on the sample, and scenes' counts add
up when pooled. The KS statistic is evaluated at the reference quantiles (so it can be up to
about 0.01 below the exact one). A band matches its reference by name, then by common name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from satpipe.core.params import HealthParams
from satpipe.evaluation.drift import (
    bin_expectations,
    kstwo_sf,
    psi_bins_for,
    psi_from_counts,
    psi_positions,
)
from satpipe.models.kinds.pixels import common_name

SKETCH_LEVELS = tuple(round(i / 20, 2) for i in range(21))


def _r(value: float | None) -> float | None:
    return None if value is None else float(f"{float(value):.6g}")


def reference_band(bands: Mapping[str, Any], name: str) -> str | None:
    """The key of the reference ``bands`` for the scene band ``name``, or None.

    The name itself, else a key with the same common name (``B08`` and ``nir`` are one band).
    """
    if name in bands:
        return name
    common = common_name(name)
    matches = [k for k in sorted(bands) if common and common_name(k) == common]
    return matches[0] if matches else None


def band_summary(values: np.ndarray, reference: Mapping[str, Any] | None) -> dict[str, Any]:
    """One band's sample summarised: moments, a 21-quantile sketch, counts on the reference.

    ``quantile_counts``: 102 counts, interval ``j`` holding the values with exactly ``j``
    reference quantiles at or below them; ``histogram_counts``: counts on the reference
    histogram's edges (values outside go to the first or last bin). Both None without reference.
    """
    x = np.asarray(values, dtype=np.float64)
    x = np.sort(x[np.isfinite(x)])
    out: dict[str, Any] = {
        "pixels": int(x.size),
        "mean": _r(float(x.mean())) if x.size else None,
        "std": _r(float(x.std())) if x.size else None,
        "min": _r(float(x[0])) if x.size else None,
        "max": _r(float(x[-1])) if x.size else None,
        "quantiles": [_r(float(q)) for q in np.quantile(x, SKETCH_LEVELS)] if x.size else [],
        "quantile_counts": None,
        "histogram_counts": None,
    }
    if reference is not None:
        q = np.asarray(reference["quantiles"], dtype=np.float64)
        idx = np.searchsorted(q, x, side="right")
        out["quantile_counts"] = [int(c) for c in np.bincount(idx, minlength=q.size + 1)]
        edges = np.asarray(reference["histogram"]["edges"], dtype=np.float64)
        bins = edges.size - 1
        hist = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, bins - 1)
        out["histogram_counts"] = [int(c) for c in np.bincount(hist, minlength=bins)]
    return out


def pool_bands(summaries: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each band's summaries over several scenes pooled into one (counts add up)."""
    pooled: dict[str, dict[str, Any]] = {}
    for summary in summaries:
        for name, band in summary["bands"].items():
            key = band["reference"] or f"(unreferenced) {name}"
            p = pooled.setdefault(key, {"reference": band["reference"], "parts": []})
            p["parts"].append(band)
    out: dict[str, dict[str, Any]] = {}
    for key, p in pooled.items():
        parts = [b for b in p["parts"] if b["pixels"]]
        n = sum(b["pixels"] for b in parts)
        mean = sum(b["pixels"] * b["mean"] for b in parts) / n if n else None
        qc = [b["quantile_counts"] for b in parts if b["quantile_counts"] is not None]
        out[key] = {
            "reference": p["reference"],
            "pixels": n,
            "mean": mean,
            "quantile_counts": np.sum(qc, axis=0) if qc else None,
        }
    return out


def band_figures(band: Mapping[str, Any], ref: Mapping[str, Any], hp: HealthParams) -> Any:
    """PSI, KS and mean shift of a band's (pooled) summary against its reference."""
    n, counts = band["pixels"], np.asarray(band["quantile_counts"], dtype=np.int64)
    levels, m = np.asarray(ref["quantile_levels"], dtype=np.float64), int(ref["count"])
    bins = psi_bins_for(n, hp.psi_bins)
    cuts = psi_positions(levels.size, bins)
    j = np.arange(counts.size)
    psi_bin = np.array([sum(int(jj) >= c + 1 for c in cuts) for jj in j])
    below = np.cumsum(counts)[: levels.size] / n  # share of values below each quantile
    ks = float(np.max(np.abs(below - levels)))
    effective = max(1, round(n * m / (n + m)))
    std = ref["std"] or 1.0
    return {
        "pixels": n,
        "psi": _r(
            psi_from_counts(
                np.bincount(psi_bin, weights=counts, minlength=bins),
                bin_expectations(dict(ref), cuts),
            )
        ),
        "psi_bins": bins,
        "ks_statistic": _r(ks),
        "ks_pvalue": _r(kstwo_sf(ks, effective)),
        "mean": _r(band["mean"]),
        "reference_mean": _r(ref["mean"]),
        "mean_shift_std": _r((band["mean"] - ref["mean"]) / std),
    }
