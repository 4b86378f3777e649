"""Stage evaluate: judge the predictions against the tiles' reference labels.

Usage: ``python -m stages.evaluate <model.json> <tile_index.json> <predictions.json>
<evaluate.json> <report.json> <plots_dir>``. Judges the tiles not used for training and writes
their headline scores (``<evaluate.json>``, the DVC metrics file), the full report (counts,
overall and per-scene scores, confusion matrices) and, in ``<plots_dir>``, the rows of three DVC
plots: ``confusion.json`` (per-tile actual/predicted), ``threshold_curve.json`` and
``feature_histogram.json``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from satpipe.core.files import write_json
from satpipe.core.records import read_index, read_predictions
from satpipe.evaluation.evaluate import evaluate_predictions, evaluation_metrics
from satpipe.models import model as model_lib
from stages import _cli

log = logging.getLogger(__name__)


def main(args: argparse.Namespace) -> None:
    """Evaluate and write the metrics, the report and the plot rows."""
    model = model_lib.load(args.model)
    index, predictions = read_index(args.index), read_predictions(args.predictions)
    result = evaluate_predictions(model, index, predictions)
    plots = Path(args.plots_dir)
    write_json(plots / "confusion.json", result.confusion_rows)
    write_json(plots / "threshold_curve.json", result.curve_rows)
    write_json(plots / "feature_histogram.json", result.histogram_rows)
    write_json(args.report, result.report)
    write_json(args.metrics, evaluation_metrics(result.report))
    overall = result.report["overall"]
    if result.report["evaluated"]:
        log.info(
            "evaluated %d held-out tiles: accuracy %.4f, balanced accuracy %.4f",
            overall["tiles"],
            overall["accuracy"],
            overall["balanced_accuracy"],
        )
    else:
        log.warning("not evaluated: %s", result.report["reason"])


if __name__ == "__main__":
    p = _cli.parser("evaluate", __doc__)
    p.add_argument("model", help="model JSON")
    p.add_argument("index", help="tile index JSON")
    p.add_argument("predictions", help="predictions JSON")
    p.add_argument("metrics", help="output headline scores JSON (a DVC metrics file)")
    p.add_argument("report", help="output evaluation report JSON (every count and score)")
    p.add_argument("plots_dir", help="output directory of plot rows (DVC plots)")
    sys.exit(_cli.run("evaluate", main, p.parse_args()))
