"""What a stage's metrics file must be: the few headline figures of its report, read from it.

``dvc exp show`` makes one column of every leaf of every metrics file, so each stage's metrics
file holds a few flat figures (numbers, ``None`` for an undefined score, the health status) and
its report, a plain output beside it, everything else. :func:`check_headlines` checks a
directory pair of them against the library's derivations.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from satpipe.core.files import read_json
from satpipe.evaluation.drift import STATUSES
from satpipe.evaluation.evaluate import evaluation_metrics
from satpipe.evaluation.health import health_metrics
from satpipe.models.training import train_metrics
from satpipe.scenes.ingest import ingest_metrics
from satpipe.tiles.run import tile_metrics

# The headline of each stage, by its metrics file's name; evaluate adds f1_<class> per class.
HEADLINES: dict[str, tuple[Callable[[dict[str, Any]], dict[str, Any]], tuple[str, ...]]] = {
    "ingest": (ingest_metrics, ("scenes_ingested", "scenes_skipped")),
    "tile": (tile_metrics, ("tiles",)),
    "train": (train_metrics, ("train_bal_acc",)),
    "health": (health_metrics, ("health",)),
    "evaluate": (evaluation_metrics, ("accuracy", "bal_acc", "eval_tiles")),
}


def headline_keys(stage: str, classes: tuple[str, ...] = ("dark", "bright")) -> set[str]:
    """The keys of ``stage``'s metrics file for a model with these classes."""
    keys = set(HEADLINES[stage][1])
    if stage == "evaluate":
        keys |= {f"f1_{name}" for name in classes}
    return keys


def assert_flat_figures(metrics: dict[str, Any]) -> None:
    """Every value is a number, ``None`` or (``health``) a status: one column each, no nesting."""
    for key, value in metrics.items():
        if key == "health":
            assert value in STATUSES, (key, value)
        else:
            assert value is None or type(value) in (int, float), (key, value)


def check_headlines(
    metrics_path: Callable[[str], Path],
    report_path: Callable[[str], Path],
    classes: tuple[str, ...] = ("dark", "bright"),
) -> int:
    """Each stage's metrics file is exactly its report's headline; returns how many figures.

    Args:
        metrics_path: the metrics file of a stage, by stage name.
        report_path: the report of a stage, by stage name.
        classes: the model's classes.
    """
    figures = 0
    for stage, (headline, _) in HEADLINES.items():
        metrics, report = read_json(metrics_path(stage)), read_json(report_path(stage))
        assert set(metrics) == headline_keys(stage, classes), stage
        assert_flat_figures(metrics)
        assert metrics == headline(report), stage
        figures += len(metrics)
    return figures
