"""Stage evaluate: judge the predictions against the tiles' reference labels.

Usage: ``python -m stages.evaluate <model.json> <tile_index.json> <predictions.json>
<evaluate.json> <report.json> <plots_dir>``. Judges the tiles not used for training and writes
their headline scores (``<evaluate.json>``, the DVC metrics file), the full report (counts,
overall and per-scene scores, confusion matrices) and, in ``<plots_dir>``, the rows of the DVC
plots: ``confusion.json`` (per-tile actual/predicted), ``threshold_curve.json`` and
``feature_histogram.json``. A per-pixel model (``--scenes``, ``--segments``: the segment stage's
class rasters) is judged per held-out pixel instead, and fills ``confusion_pixels.json`` (exact
pixel counts per actual/predicted pair) and ``class_iou.json``; the other kind's plot files hold
an empty list.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from satpipe.core.errors import ModelError
from satpipe.core.files import read_json, write_json
from satpipe.core.records import read_index, read_predictions
from satpipe.evaluation.evaluate import evaluate_predictions, evaluation_metrics
from satpipe.models import model as model_lib
from satpipe.tiles.index import index_hash
from stages import _cli

log = logging.getLogger(__name__)

TILE_PLOTS = ("confusion.json", "threshold_curve.json", "feature_histogram.json")
PIXEL_PLOTS = ("confusion_pixels.json", "class_iou.json")


def _pixels(args: argparse.Namespace, plots: Path) -> None:
    """A per-pixel model: judge its class rasters per held-out pixel."""
    from satpipe.evaluation.pixels import (  # reads rasters: a tile-label run never needs it
        class_iou_rows,
        confusion_rows,
        evaluate_pixels,
        pixel_metrics,
    )

    model = model_lib.load(args.model)
    index = read_index(args.index)
    segments = Path(args.segments)
    listed = read_json(segments / "index.json")["scenes"]
    rasters = {s["id"]: segments / s["class"] for s in listed}
    report = evaluate_pixels(model, index, index_hash(args.index), rasters, args.scenes)
    for name in TILE_PLOTS:
        write_json(plots / name, [])
    write_json(plots / "confusion_pixels.json", confusion_rows(report))
    write_json(plots / "class_iou.json", class_iou_rows(report))
    write_json(args.report, report)
    write_json(args.metrics, pixel_metrics(report))
    overall = report["overall"]
    if report["evaluated"]:
        log.info(
            "evaluated %d held-out pixels: mean IoU %s, accuracy %s, kappa %s",
            overall["pixels"],
            overall["miou"],
            overall["accuracy"],
            overall["kappa"],
        )
    else:
        log.warning("not evaluated: %s", report["reason"])


def main(args: argparse.Namespace) -> None:
    """Evaluate and write the metrics, the report and the plot rows."""
    model = model_lib.load(args.model)
    plots = Path(args.plots_dir)
    if model.output == "pixels":
        if args.scenes is None or args.segments is None:
            raise ModelError("a per-pixel model is judged with --scenes and --segments")
        _pixels(args, plots)
        return
    index, predictions = read_index(args.index), read_predictions(args.predictions)
    result = evaluate_predictions(model, index, predictions)
    write_json(plots / "confusion.json", result.confusion_rows)
    write_json(plots / "threshold_curve.json", result.curve_rows)
    write_json(plots / "feature_histogram.json", result.histogram_rows)
    for name in PIXEL_PLOTS:
        write_json(plots / name, [])
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
    p.add_argument("--scenes", default=None, help="directory of scenes (per-pixel models)")
    p.add_argument("--segments", default=None, help="segment stage's output (per-pixel models)")
    sys.exit(_cli.run("evaluate", main, p.parse_args()))
