"""Stage evaluate: judge the predictions against the tiles' reference labels.

Usage: ``python -m stages.evaluate <model.json> <tile_index.json> <predictions.json>
<evaluate.json> <plots_dir>``. Writes the scores of the tiles not used for training (a DVC
metrics file) and, in ``<plots_dir>``, the rows of three DVC plots: ``confusion.json`` (per-tile
actual/predicted), ``threshold_curve.json`` and ``feature_histogram.json``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from satpipe.core.files import write_json
from satpipe.core.records import read_index, read_predictions
from satpipe.evaluation.evaluate import evaluate_predictions
from satpipe.models import model as model_lib
from stages import _cli

log = logging.getLogger(__name__)


def main(args: argparse.Namespace) -> None:
    """Evaluate and write the metrics and plot rows."""
    model = model_lib.load(args.model)
    index, predictions = read_index(args.index), read_predictions(args.predictions)
    result = evaluate_predictions(model, index, predictions)
    plots = Path(args.plots_dir)
    write_json(plots / "confusion.json", result.confusion_rows)
    write_json(plots / "threshold_curve.json", result.curve_rows)
    write_json(plots / "feature_histogram.json", result.histogram_rows)
    write_json(args.metrics, result.metrics)
    overall, counts = result.metrics["overall"], result.metrics["counts"]
    if result.metrics["evaluated"]:
        log.info(
            "evaluated %d held-out tiles: accuracy %.4f, balanced accuracy %.4f",
            counts["tiles_with_reference"],
            overall["accuracy"],
            overall["balanced_accuracy"],
        )
    else:
        log.warning("not evaluated: %s", result.metrics["reason"])


if __name__ == "__main__":
    p = _cli.parser("evaluate", __doc__)
    p.add_argument("model", help="model JSON")
    p.add_argument("index", help="tile index JSON")
    p.add_argument("predictions", help="predictions JSON")
    p.add_argument("metrics", help="output evaluation metrics JSON (a DVC metric)")
    p.add_argument("plots_dir", help="output directory of plot rows (DVC plots)")
    sys.exit(_cli.run("evaluate", main, p.parse_args()))
