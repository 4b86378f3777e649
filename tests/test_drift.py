"""Health report: drift figures and the status they give."""

from __future__ import annotations

import numpy as np
import pytest

from satpipe.core.params import HealthParams
from satpipe.evaluation.drift import health_report, psi, psi_bins_for
from satpipe.models.model import reference_distribution

REF_VALUES = np.random.default_rng(1).normal(1000.0, 100.0, 2000)
REFERENCE = {
    **reference_distribution(REF_VALUES, 20),
    "class_fractions": {"dark": 0.5, "bright": 0.5},
}
PARAMS = HealthParams()


def _report(values: np.ndarray, failed: int = 0, fractions: dict | None = None) -> dict:
    fractions = fractions or {"dark": 0.5, "bright": 0.5}
    return health_report(values, REFERENCE, failed, values.size + failed, fractions, PARAMS)


def test_same_distribution_is_healthy() -> None:
    values = np.random.default_rng(2).normal(1000.0, 100.0, 500)
    report = _report(values)
    assert report["status"] == "healthy"
    assert report["figures"]["ks_pvalue"] > 0.05
    assert report["figures"]["psi"] < 0.1
    assert abs(report["figures"]["mean_shift_std"]) < 0.2
    assert report["recommendations"] == [
        "No action needed: inference data matches the training reference."
    ]


def test_shifted_distribution_is_critical_with_advice() -> None:
    values = np.random.default_rng(3).normal(1300.0, 100.0, 500)
    report = _report(values)
    assert report["status"] == "critical"
    assert report["figures"]["mean_shift_std"] == pytest.approx(3.0, abs=0.2)
    assert {"ks_pvalue", "psi", "mean_shift"} <= {
        k for k, c in report["checks"].items() if c["status"] == "critical"
    }
    assert any("retrain" in text for text in report["recommendations"])


def test_moderate_shift_is_a_warning() -> None:
    values = np.random.default_rng(4).normal(1000.0, 100.0, 40) + 130.0
    report = _report(values)
    assert report["checks"]["mean_shift"]["status"] == "warning"
    assert report["status"] in {"warning", "critical"}


def test_failure_rate_and_class_shift_grading() -> None:
    values = np.random.default_rng(5).normal(1000.0, 100.0, 300)
    report = _report(values, failed=10)
    assert report["checks"]["failure_rate"]["status"] == "warning"  # 10/310 = 3.2%
    report = _report(values, failed=40)
    assert report["status"] == "critical"
    report = _report(values, fractions={"dark": 0.9, "bright": 0.1})
    assert report["checks"]["class_shift"]["status"] == "critical"


def test_empty_inference_is_a_warning() -> None:
    report = _report(np.array([]))
    assert report["status"] == "warning"
    assert "lower train.fraction" in report["recommendations"][0]


def test_psi_bins_follow_sample_size() -> None:
    assert psi_bins_for(20, 10) == 2
    assert psi_bins_for(55, 10) == 5
    assert psi_bins_for(10_000, 10) == 10
    # Identical distribution: PSI near zero; a disjoint one: large.
    assert psi(REF_VALUES, REFERENCE, 10) < 0.01
    assert psi(REF_VALUES + 1000.0, REFERENCE, 10) > 1.0


def test_psi_of_a_discrete_band_against_itself_is_small() -> None:
    """A band of few integer values (Sentinel-2's B10 on a clear scene) ties many quantiles.

    Equal-share bins would call a sample of the very same distribution critical (PSI 2.6 on the
    Sen1Floods11 chip); the bins' shares read off the tied quantiles keep it near zero.
    """
    rng = np.random.default_rng(3)
    values = np.array([7, 9, 9, 9, 10, 11, 11, 11, 11, 12, 13, 13, 16], dtype=np.float64)
    reference = reference_distribution(rng.choice(values, 20000), 20)
    assert psi(rng.choice(values, 5000), reference, 10) < 0.01
    assert psi(rng.choice(values[:4], 5000), reference, 10) > 0.25  # a real shift still shows
