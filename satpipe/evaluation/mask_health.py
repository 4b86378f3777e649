"""Health for masks: what a per-pixel model's whole-scene runs saw, against its training reference.

The segment stage turns each scene's :class:`~satpipe.core.records.SegmentStats` into a small,
deterministic JSON summary (:func:`scene_summary`, ``data/segments/<id>.json``); health pools
them (:func:`mask_health`). Against ``model.reference["pixels"]`` (the training pixel sample:
``class_fractions`` predicted, ``bands`` with each band's reference distribution), every scene
and the whole run are checked for:

- ``class_shift``: the largest change of any class's share of valid pixels from training;
- ``seam``: the share of overlap-strip pixels whose class differs between neighbouring windows;
- ``psi`` and ``mean_shift``: per band, the PSI of the band sample over reference-quantile bins
  and its mean shift in reference standard deviations; the check holds the worst band.

The mean winning-class probability and its 16-bin histogram, and each band's KS statistic and
p-value, are reported without a grade: on tens of thousands of spatially correlated pixels a KS
p-value rejects any real-world difference, so PSI and the mean shift grade band drift. A check
whose sample has fewer than ``health.min_pixels`` pixels says ``insufficient data`` (so does
one the model has no reference for). Statuses and their order are
:data:`satpipe.evaluation.drift.STATUSES`; the worst check sets the status.

The summary keeps each band's sample as counts in the 102 intervals cut by the reference's 101
quantiles (values equal to a quantile go above it, as :func:`satpipe.evaluation.drift.psi` bins),
so PSI is exactly what :func:`~satpipe.evaluation.drift.psi` gives on the sample, and pooled
scenes' counts add up. The KS statistic is evaluated at the reference quantiles (so it can be up
to about 0.01 below the exact one). Figures are rounded to 6 significant digits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from satpipe.core.errors import ModelError
from satpipe.core.params import HealthParams
from satpipe.core.records import sorted_scene_ids
from satpipe.core.segment_stats import SegmentStats
from satpipe.evaluation.band_drift import band_figures, band_summary, pool_bands, reference_band
from satpipe.evaluation.drift import (
    INSUFFICIENT,
    STATUSES,
    graded_check,
    worst_status,
)
from satpipe.models.model import Model

PROBABILITY_BINS = 16


def _r(value: float | None) -> float | None:
    return None if value is None else float(f"{float(value):.6g}")


def _pixel_reference(model: Model) -> dict[str, Any]:
    ref = model.reference.get("pixels")
    return dict(ref) if isinstance(ref, Mapping) else {}


def scene_summary(stats: SegmentStats, model: Model) -> dict[str, Any]:
    """The JSON the segment stage writes for a scene, which :func:`mask_health` reads.

    ``{"scene", "model_version", "width", "height", "valid_pixels", "classes", "class_counts",
    "class_shares", "probability": {"mean", "histogram": {"byte_edges", "counts"}}, "seam":
    {"compared", "disagree", "fraction"}, "windows": {"run", "skipped"}, "bands": {name:
    band_summary + "reference" (the reference band's key or None)}}``. Probability bin ``b``
    holds the byte values ``16b .. 16b + 15`` (probability ``byte / 255``); ``fraction`` is None
    when no seam pixel was compared; ``class_shares`` are None with no valid pixel.

    Raises:
        ModelError: the class counts do not match the model's classes, or the band sample does
            not match the band names.
    """
    classes = list(model.classes)
    counts = np.asarray(stats.class_counts, dtype=np.int64).ravel()
    if counts.size != len(classes):
        raise ModelError(
            f"scene {stats.scene}: {counts.size} class counts for {len(classes)} model classes"
        )
    sample = np.asarray(stats.band_sample, dtype=np.float64).reshape(-1, len(stats.band_names))
    prob = np.asarray(stats.probability_counts, dtype=np.int64).ravel()
    if prob.size != 256:
        raise ModelError(f"scene {stats.scene}: {prob.size} probability counts; expected 256")
    valid = int(stats.valid_pixels)
    total = int(prob.sum())
    mean = float(np.dot(np.arange(256), prob)) / (255 * total) if total else None
    ref_bands = _pixel_reference(model).get("bands") or {}
    bands: dict[str, Any] = {}
    for i, name in enumerate(stats.band_names):
        key = reference_band(ref_bands, name)
        ref = ref_bands[key] if key is not None else None
        bands[name] = {"reference": key, **band_summary(sample[:, i], ref)}
    return {
        "scene": stats.scene,
        "model_version": model.version,
        "width": int(stats.width),
        "height": int(stats.height),
        "valid_pixels": valid,
        "classes": classes,
        "class_counts": {c: int(n) for c, n in zip(classes, counts, strict=True)},
        "class_shares": {
            c: _r(int(n) / valid) if valid else None for c, n in zip(classes, counts, strict=True)
        },
        "probability": {
            "mean": _r(mean),
            "histogram": {
                "byte_edges": list(range(0, 257, 256 // PROBABILITY_BINS)),
                "counts": [int(c) for c in prob.reshape(PROBABILITY_BINS, -1).sum(axis=1)],
            },
        },
        "seam": {
            "compared": int(stats.seam_compared),
            "disagree": int(stats.seam_disagree),
            "fraction": _r(stats.seam_disagree / stats.seam_compared)
            if stats.seam_compared
            else None,
        },
        "windows": {"run": int(stats.windows), "skipped": int(stats.windows_skipped)},
        "bands": bands,
    }


_ADVICE = {
    "class_shift": "Class shares moved by {value:.1%} from training: check the scenes' "
    "season, clouds and sensor, and confirm with labelled pixels before trusting areas.",
    "seam": "{value:.1%} of window-overlap pixels change class between neighbouring windows: "
    "raise segment.overlap, or use a model with more context (a larger window).",
    "psi": "Band {band}'s distribution moved from training (PSI {value}): check sensor, "
    "processing level and scale/offset, and retrain on such scenes if it is real.",
    "mean_shift": "Band {band}'s mean moved by {value} training standard deviations: look for "
    "haze, snow, a calibration or scaling change.",
}


def _judge(
    shares: Mapping[str, float | None],
    valid: int,
    seam: tuple[int, int],
    bands: Mapping[str, dict[str, Any]],
    model: Model,
    hp: HealthParams,
) -> tuple[dict[str, Any], dict[str, Any]]:
    pixel_ref = _pixel_reference(model)
    ref_fr, ref_bands = pixel_ref.get("class_fractions") or {}, pixel_ref.get("bands") or {}
    least = hp.min_pixels
    shift = (
        max((abs((shares.get(c) or 0.0) - float(v)) for c, v in ref_fr.items()), default=0.0)
        if ref_fr and valid
        else None
    )
    compared, disagree = seam
    per_band = {
        key: band_figures(b, ref_bands[b["reference"]], hp)
        for key, b in sorted(bands.items())
        if b["reference"] is not None and b["pixels"] and b["quantile_counts"] is not None
    }
    figures: dict[str, Any] = {
        "class_shift": _r(shift),
        "seam_fraction": _r(disagree / compared) if compared else None,
        "bands": per_band,
    }
    checks = {
        "class_shift": graded_check(
            figures["class_shift"],
            hp.class_shift_warning,
            hp.class_shift_critical,
            samples=valid,
            min_samples=least,
        ),
        "seam": graded_check(
            figures["seam_fraction"],
            hp.seam_warning,
            hp.seam_critical,
            samples=compared,
            min_samples=least,
        ),
    }
    for name, figure, warn, crit in (
        ("psi", "psi", hp.psi_warning, hp.psi_critical),
        ("mean_shift", "mean_shift_std", hp.mean_shift_warning, hp.mean_shift_critical),
    ):
        worst = max(per_band, key=lambda k: abs(per_band[k][figure]), default=None)
        value = None if worst is None else abs(per_band[worst][figure])
        pixels = 0 if worst is None else per_band[worst]["pixels"]
        checks[name] = {
            "band": worst,
            **graded_check(value, warn, crit, samples=pixels, min_samples=least),
        }
    if not compared:  # nothing overlaps: nothing can disagree (not a lack of evidence)
        checks["seam"] = {
            "value": None,
            "warning": hp.seam_warning,
            "critical": hp.seam_critical,
            "status": "healthy",
            "reason": "no window overlap was compared (a pointwise model scores each pixel "
            "once; or segment.overlap is 0)",
        }
    if not ref_fr:
        checks["class_shift"]["reason"] = "the model has no reference class fractions"
    if not per_band:
        for name in ("psi", "mean_shift"):
            checks[name]["reason"] = "no band has a training reference"
    return figures, checks


def _pooled(summaries: Sequence[Mapping[str, Any]], classes: Sequence[str]) -> dict[str, Any]:
    valid = sum(s["valid_pixels"] for s in summaries)
    counts = {c: sum(s["class_counts"][c] for s in summaries) for c in classes}
    hist = np.zeros(PROBABILITY_BINS, np.int64)
    for s in summaries:
        hist += np.asarray(s["probability"]["histogram"]["counts"], dtype=np.int64)
    weighted = [(s["probability"]["mean"], s["valid_pixels"]) for s in summaries]
    prob_n = sum(n for m, n in weighted if m is not None)
    compared = sum(s["seam"]["compared"] for s in summaries)
    disagree = sum(s["seam"]["disagree"] for s in summaries)
    return {
        "pixels": valid,
        "class_shares": {c: _r(n / valid) if valid else None for c, n in counts.items()},
        "probability": {
            "mean": _r(sum(m * n for m, n in weighted if m is not None) / prob_n)
            if prob_n
            else None,
            "histogram": {
                "byte_edges": list(range(0, 257, 256 // PROBABILITY_BINS)),
                "counts": [int(c) for c in hist],
            },
        },
        "seam": {
            "compared": compared,
            "disagree": disagree,
            "fraction": _r(disagree / compared) if compared else None,
        },
        "windows": {k: sum(s["windows"][k] for s in summaries) for k in ("run", "skipped")},
    }


def _assess(
    figures: dict[str, Any], bands: Mapping[str, Any], model: Model, hp: HealthParams
) -> dict[str, Any]:
    seam = (figures["seam"]["compared"], figures["seam"]["disagree"])
    drift, checks = _judge(figures["class_shares"], figures["pixels"], seam, bands, model, hp)
    return {
        "status": worst_status([c["status"] for c in checks.values()]),
        "figures": {**figures, **drift},
        "checks": checks,
    }


def mask_health(
    model: Model, summaries: Sequence[Mapping[str, Any]], hp: HealthParams
) -> dict[str, Any]:
    """The health report of a per-pixel model's whole-scene runs: overall and per scene.

    Args:
        model: the per-pixel model (classes, version, ``reference["pixels"]``).
        summaries: each segmented scene's :func:`scene_summary`.
        hp: the ``health`` params.

    Returns:
        ``{"status", "model_version", "compared", "figures", "checks", "recommendations",
        "scenes": {id: {"status", "figures", "checks"}}, "scenes_by_status", "thresholds"}``,
        the shape of the tile health report. With no summary the status is ``warning``.

    Raises:
        ModelError: a summary was made with another model's classes.
    """
    classes = list(model.classes)
    for s in summaries:
        if list(s["classes"]) != classes:
            raise ModelError(
                f"scene summary {s['scene']}: classes {s['classes']}; the model has {classes}"
            )
    overall = _assess(_pooled(summaries, classes), pool_bands(summaries), model, hp)
    by_id = {s["scene"]: s for s in summaries}
    scenes = {
        sid: _assess(_pooled([by_id[sid]], classes), pool_bands([by_id[sid]]), model, hp)
        for sid in sorted_scene_ids(by_id)
    }
    recommendations, status = [], overall["status"]
    if not summaries:
        status = "warning"
        recommendations.append("No scene was segmented: nothing to judge the masks on.")
    for name, check in overall["checks"].items():
        if check["status"] in ("warning", "critical"):
            recommendations.append(
                _ADVICE[name].format(value=check["value"], band=check.get("band"))
            )
        elif check["status"] == INSUFFICIENT and summaries:
            why = check.get("reason") or (
                f"{check['samples']} pixels, fewer than health.min_pixels ({hp.min_pixels})"
            )
            recommendations.append(f"{name}: insufficient data ({why}).")
    worse = [
        sid
        for sid, v in scenes.items()
        if v["status"] in ("warning", "critical")
        and STATUSES.index(v["status"]) > STATUSES.index(status)
    ]
    if worse:
        recommendations.append(
            f"Scenes {', '.join(str(sid) for sid in worse)} look worse than the whole: see "
            "masks.scenes.<id> and their class rasters before trusting them."
        )
    if status == "healthy" and not recommendations:
        recommendations.append("No action needed: the masks match the training reference.")
    return {
        "status": status,
        "model_version": model.version,
        "compared": "every valid pixel of each segmented scene (bands: a fixed 1-in-16 grid)",
        "figures": overall["figures"],
        "checks": overall["checks"],
        "recommendations": recommendations,
        "scenes": scenes,
        "scenes_by_status": {
            st: sum(v["status"] == st for v in scenes.values()) for st in STATUSES
        },
        "thresholds": hp.model_dump(),
    }
