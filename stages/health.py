"""Stage health: compare inference features with the model's training reference.

Usage: ``python -m stages.health <model.json> <predictions.json> <health.json> <report.json>``;
reads ``health``. Writes the status (``<health.json>``, the DVC metrics file) and the full report
(figures, checks with their thresholds, recommendations, per scene). For a per-pixel model,
``--segments`` names the segment stage's output, whose scene summaries the mask checks read. See
:mod:`satpipe.evaluation.health` for which tiles are compared and how.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from satpipe.core.files import read_json, write_json
from satpipe.core.params import load_params
from satpipe.core.records import read_predictions
from satpipe.evaluation.health import health_document, health_metrics
from satpipe.models import model as model_lib
from stages import _cli

log = logging.getLogger(__name__)


def main(args: argparse.Namespace) -> None:
    """Write the health report (overall, then per scene) and its metrics."""
    hp = load_params(args.params).health
    model = model_lib.load(args.model)
    summaries = None
    if model.output == "pixels" and args.segments is not None:
        segments = Path(args.segments)
        listed = read_json(segments / "index.json")["scenes"]
        summaries = [read_json(segments / s["summary"]) for s in listed]
    report = health_document(model, read_predictions(args.predictions), hp, summaries)
    write_json(args.report, report)
    write_json(args.health, health_metrics(report))
    log.info("health %s (%s)", report["status"], "; ".join(report["recommendations"]))


if __name__ == "__main__":
    p = _cli.parser("health", __doc__)
    p.add_argument("model", help="model JSON")
    p.add_argument("predictions", help="predictions JSON")
    p.add_argument("health", help="output health metrics JSON (a DVC metrics file)")
    p.add_argument("report", help="output health report JSON (figures, checks, thresholds)")
    p.add_argument("--segments", default=None, help="segment stage's output (per-pixel models)")
    sys.exit(_cli.run("health", main, p.parse_args()))
