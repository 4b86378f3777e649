"""Health for masks (scene summaries, checks, insufficient data) and tile health's sample rule."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import numpy as np

from satpipe.core.params import HealthParams
from satpipe.core.segment_stats import SegmentStats
from satpipe.evaluation.drift import health_report, psi, psi_bins_for
from satpipe.evaluation.mask_health import mask_health, scene_summary
from satpipe.models.model import reference_distribution

CLASSES = ("water", "land")
HP = HealthParams()
RNG_REF = np.random.default_rng(11)
REFERENCE_PIXELS = {
    "samples": 5000,
    "class_fractions": {"water": 0.3, "land": 0.7},
    "reference_class_fractions": {"water": 0.3, "land": 0.7},
    "bands": {
        "B03": reference_distribution(RNG_REF.normal(800.0, 80.0, 5000), 20),
        "B08": reference_distribution(RNG_REF.normal(2000.0, 300.0, 5000), 20),
    },
}


def _model() -> Any:
    kind = SimpleNamespace(output="pixels")
    return SimpleNamespace(
        kind=kind, classes=CLASSES, version="v1", reference={"pixels": REFERENCE_PIXELS}
    )


def _stats(
    scene: str = "a",
    valid: int = 100_000,
    water: float = 0.3,
    seam: tuple[int, int] = (20_000, 100),
    samples: int = 3000,
    nir_shift: float = 0.0,
    seed: int = 1,
) -> SegmentStats:
    rng = np.random.default_rng(seed)
    n_water = round(valid * water)
    probability = np.zeros(256, np.int64)
    probability[200] = valid - 10
    probability[255] = 10
    sample = np.column_stack(
        (rng.normal(800.0, 80.0, samples), rng.normal(2000.0 + nir_shift, 300.0, samples))
    )
    return SegmentStats(
        scene=scene,
        width=401,
        height=333,
        valid_pixels=valid,
        class_counts=np.array([n_water, valid - n_water], np.int64),
        probability_counts=probability,
        seam_compared=seam[0],
        seam_disagree=seam[1],
        windows=12,
        windows_skipped=1,
        band_sample=sample,
        band_names=("B03", "nir"),  # nir matches the reference's B08 by common name
    )


def test_scene_summary_is_small_deterministic_json() -> None:
    stats = _stats()
    summary = scene_summary(stats, _model())
    assert summary == scene_summary(stats, _model())
    text = json.dumps(summary, sort_keys=True, allow_nan=False)
    assert len(text) < 8000
    assert summary["class_counts"] == {"water": 30_000, "land": 70_000}
    assert summary["class_shares"] == {"water": 0.3, "land": 0.7}
    histogram = summary["probability"]["histogram"]
    assert len(histogram["counts"]) == 16 and sum(histogram["counts"]) == 100_000
    assert histogram["counts"][12] == 99_990 and histogram["counts"][15] == 10
    assert summary["probability"]["mean"] == round((200 * 99_990 + 255 * 10) / 255 / 1e5, 6)
    assert summary["seam"] == {"compared": 20_000, "disagree": 100, "fraction": 0.005}
    assert summary["bands"]["nir"]["reference"] == "B08"
    assert sum(summary["bands"]["nir"]["quantile_counts"]) == 3000


def test_band_psi_from_the_summary_is_psi_on_the_sample() -> None:
    stats = _stats(nir_shift=150.0)
    report = mask_health(_model(), [scene_summary(stats, _model())], HP)
    nir = report["figures"]["bands"]["B08"]
    ref = REFERENCE_PIXELS["bands"]["B08"]
    exact = psi(stats.band_sample[:, 1], ref, psi_bins_for(3000, HP.psi_bins))
    assert nir["psi"] == float(f"{exact:.6g}")
    assert nir["ks_statistic"] > 0.1 and nir["mean_shift_std"] > 0.3


def test_matching_masks_are_healthy() -> None:
    report = mask_health(_model(), [scene_summary(_stats(), _model())], HP)
    assert report["status"] == "healthy", report["checks"]
    assert set(report["checks"]) == {"class_shift", "seam", "psi", "mean_shift"}
    assert report["recommendations"] == [
        "No action needed: the masks match the training reference."
    ]
    assert report["thresholds"]["min_pixels"] == 1000


def test_class_shift_seams_and_band_drift_are_graded() -> None:
    shifted = _stats("b", water=0.7, seam=(20_000, 2_000), nir_shift=900.0, seed=2)
    summaries = [scene_summary(_stats(), _model()), scene_summary(shifted, _model())]
    report = mask_health(_model(), summaries, HP)
    scene = report["scenes"]["b"]
    assert scene["checks"]["class_shift"]["status"] == "critical"  # 0.4 > 0.3
    assert scene["checks"]["seam"]["status"] == "warning"  # 0.1 between 0.05 and 0.15
    assert scene["checks"]["psi"]["status"] == "critical"
    assert scene["checks"]["psi"]["band"] == "B08"
    assert report["scenes"]["a"]["status"] == "healthy"
    assert report["status"] == "critical"
    assert report["scenes_by_status"]["critical"] == 1
    # pooled: seams and class counts add up
    assert report["figures"]["seam"] == {"compared": 40_000, "disagree": 2_100, "fraction": 0.0525}
    assert report["figures"]["class_shares"]["water"] == 0.5


def test_too_few_pixels_is_insufficient_data_not_a_warning() -> None:
    # 500 valid pixels with a large class shift, 200 seam pixels with many disagreements
    small = _stats(valid=500, water=0.9, seam=(200, 100), samples=30)
    report = mask_health(_model(), [scene_summary(small, _model())], HP)
    for name in ("class_shift", "seam", "psi", "mean_shift"):
        check = report["checks"][name]
        assert check["status"] == "insufficient data", name
        assert check["min_samples"] == 1000
    assert report["status"] == "insufficient data"
    assert any("insufficient data" in text for text in report["recommendations"])
    # nothing compared on the seams (a pointwise model, or overlap 0): nothing can disagree,
    # which is not a lack of evidence
    none = scene_summary(_stats(seam=(0, 0)), _model())
    assert none["seam"]["fraction"] is None
    seam = mask_health(_model(), [none], HP)["checks"]["seam"]
    assert seam["status"] == "healthy" and seam["value"] is None and "overlap" in seam["reason"]


def test_a_judged_problem_wins_over_insufficient_data() -> None:
    stats = _stats(water=0.9, seam=(100, 0))  # class shift critical, seams too few
    report = mask_health(_model(), [scene_summary(stats, _model())], HP)
    assert report["checks"]["seam"]["status"] == "insufficient data"
    assert report["status"] == "critical"


def test_no_scene_is_a_warning() -> None:
    assert mask_health(_model(), [], HP)["status"] == "warning"


TILE_REFERENCE = {
    **reference_distribution(np.random.default_rng(1).normal(1000.0, 100.0, 2000), 20),
    "class_fractions": {"dark": 0.5, "bright": 0.5},
}


def test_tile_health_below_min_samples_is_insufficient_data() -> None:
    # 7 tiles of the training distribution whose class shares moved by 0.27: noise at this size
    values = np.random.default_rng(4).normal(1000.0, 100.0, 7)
    fractions = {"dark": 0.77, "bright": 0.23}
    report = health_report(values, TILE_REFERENCE, 0, 7, fractions, HP)
    for name in ("psi", "mean_shift", "class_shift", "ks_pvalue"):
        assert report["checks"][name]["status"] == "insufficient data", name
    assert report["checks"]["failure_rate"]["status"] == "healthy"
    assert report["status"] == "insufficient data"
    assert any("min_samples" in text for text in report["recommendations"])
    # the same figures from enough tiles are judged
    many = np.random.default_rng(4).normal(1000.0, 100.0, 40)
    judged = health_report(many, TILE_REFERENCE, 0, 40, fractions, HP)
    assert judged["checks"]["class_shift"]["status"] == "warning"
    assert judged["status"] == "warning"


def test_tile_health_few_tiles_far_off_is_still_flagged_by_ks() -> None:
    values = np.random.default_rng(5).normal(9000.0, 100.0, 6)  # a scene nothing like training
    report = health_report(values, TILE_REFERENCE, 0, 6, {"dark": 0.0, "bright": 1.0}, HP)
    assert report["checks"]["ks_pvalue"]["status"] == "critical"  # the p-value accounts for n
    assert report["checks"]["psi"]["status"] == "insufficient data"
    assert report["status"] == "critical"


def test_tile_health_with_min_samples_lowered_judges_few_tiles() -> None:
    values = np.random.default_rng(4).normal(1000.0, 100.0, 7)
    report = health_report(
        values, TILE_REFERENCE, 0, 7, {"dark": 0.5, "bright": 0.5}, HealthParams(min_samples=5)
    )
    assert report["checks"]["class_shift"]["status"] == "healthy"
