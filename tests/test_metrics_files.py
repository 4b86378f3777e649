"""Metrics files hold the headline figures; the full documents are reports beside them.

``dvc exp show`` makes a column of every leaf of every metrics file. Each stage's metrics file
(``data/metrics/<stage>.json``) is therefore a handful of flat figures read from its report
(``data/reports/<stage>.json``, a plain ``cache: false`` output), by one library function per
stage. The pipeline runs check real files (``test_pipeline.py``, ``test_multiscene.py``); these
check the declarations and the derivations.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import pytest
import yaml

from satpipe.core.params import HealthParams, TrainParams
from satpipe.core.records import TileIndex
from satpipe.evaluation.drift import health_report
from satpipe.evaluation.health import health_metrics
from satpipe.models.model import reference_distribution
from satpipe.models.training import train, train_metrics
from satpipe.scenes.ingest import ingest_metrics
from satpipe.tiles.run import tile_metrics
from tests.headlines import HEADLINES, assert_flat_figures
from tests.records import tile_entry, tile_index

REPO = Path(__file__).resolve().parents[1]


def _stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _declared(entries: list) -> dict[str, dict]:
    """A ``outs``/``metrics`` list as ``{path: options}``."""
    found: dict[str, dict] = {}
    for entry in entries:
        found.update(entry if isinstance(entry, dict) else {entry: {}})
    return found


@pytest.mark.parametrize("name", sorted(HEADLINES))
def test_each_stage_writes_a_metrics_file_and_a_report(name: str) -> None:
    stage = _stages()[name]
    metrics, report = f"data/metrics/{name}.json", f"data/reports/{name}.json"
    assert _declared(stage["metrics"]) == {metrics: {"cache": False}}
    outs = _declared(stage["outs"])
    assert outs[report] == {"cache": False}  # in git beside the metrics, diffable
    argv = shlex.split(stage["cmd"])
    assert argv[argv.index(metrics) + 1] == report  # both paths reach the script from cmd


def test_no_report_is_a_metric_or_a_plot() -> None:
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    metrics = [p for s in dvc["stages"].values() for p in _declared(s.get("metrics", []))]
    assert sorted(metrics) == sorted(f"data/metrics/{name}.json" for name in HEADLINES)
    plots = [next(iter(p)) if isinstance(p, dict) else p for p in dvc.get("plots", [])]
    assert not [p for p in plots if p.startswith("data/reports")]


def test_tile_headline_leaves_skips_scenes_and_params_in_the_report() -> None:
    report = {
        "tiles_written": 63,
        "tiles_with_reference": 60,
        "tiles_without_reference": 3,
        "tiles_skipped": {"empty": 0, "nodata": 1, "partial": 0},
        "tile_size": 256,
        "stride": 256,
        "scenes": {"s": {"tiles_written": 63, "tiles_skipped": {"nodata": 1}}},
    }
    assert tile_metrics(report) == {"tiles": 63}


def test_ingest_headline_counts_the_scenes_and_leaves_the_reasons() -> None:
    report = {
        "scenes_ingested": 1,
        "scenes_skipped": 1,
        "skipped": [{"id": "junk", "reason": "NotGeoTIFFError: junk.tif"}],
    }
    assert ingest_metrics(report) == {"scenes_ingested": 1, "scenes_skipped": 1}


def _training_index(refs: list[str | None]) -> TileIndex:
    values = [1.0, 2.0, 3.0, 10.0, 11.0, 12.0][: len(refs)]
    entries = [
        tile_entry(f"s/r0_c{i}", mean_intensity=v, reference=r)
        for i, (v, r) in enumerate(zip(values, refs, strict=True))
    ]
    return tile_index(entries, {"s": "train"})


@pytest.mark.parametrize("method", ["mean", "fit"])
def test_train_headline_is_read_from_the_report(method: str) -> None:
    refs = ["dark", "dark", "bright", "dark", "bright", "bright"]
    result = train(_training_index(refs), "f" * 64, TrainParams(method=method), "idx.json")
    metrics = train_metrics(result.report)
    assert metrics == {"train_bal_acc": result.report["training_set"]["balanced_accuracy"]}
    assert_flat_figures(metrics)
    # the params, the learned threshold and the counts stay in the report
    for key in ("model", "method", "model.threshold", "training_tiles", "class_fractions"):
        assert key in result.report and key not in metrics


def test_train_headline_without_labels_is_null_not_zero() -> None:
    result = train(_training_index([None] * 4), "f" * 64, TrainParams(), "idx.json")
    assert train_metrics(result.report) == {"train_bal_acc": None}


REFERENCE = {
    **reference_distribution(np.random.default_rng(1).normal(1000.0, 100.0, 2000), 20),
    "class_fractions": {"dark": 0.5, "bright": 0.5},
}


@pytest.mark.parametrize(("mean", "status"), [(1000.0, "healthy"), (1300.0, "critical")])
def test_health_headline_is_the_status_and_no_threshold(mean: float, status: str) -> None:
    values = np.random.default_rng(3).normal(mean, 100.0, 500)
    fractions = {"dark": 0.5, "bright": 0.5}
    report = health_report(values, REFERENCE, 0, 500, fractions, HealthParams())
    assert health_metrics(report) == {"health": report["status"]}
    assert report["status"] == status  # the thresholds behind it stay in the report's checks


def test_health_headline_with_nothing_compared() -> None:
    report = health_report(np.array([]), REFERENCE, 0, 0, {}, HealthParams())
    assert health_metrics(report) == {"health": "warning"}
