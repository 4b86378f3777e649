"""Stage health: compare inference features with the model's training reference.

Usage: ``python -m stages.health <model.json> <predictions.json> <health.json> <report.json>``;
reads ``health``. Writes the status (``<health.json>``, the DVC metrics file) and the full report
(figures, checks with their thresholds, recommendations, per scene). See
:mod:`satpipe.evaluation.health` for which tiles are compared and how.
"""

from __future__ import annotations

import argparse
import logging
import sys

from satpipe.core.files import write_json
from satpipe.core.params import load_params
from satpipe.core.records import read_predictions
from satpipe.evaluation.health import health_document, health_metrics
from satpipe.models import model as model_lib
from stages import _cli

log = logging.getLogger(__name__)


def main(args: argparse.Namespace) -> None:
    """Write the health report (overall, then per scene) and its metrics."""
    hp = load_params(args.params).health
    report = health_document(model_lib.load(args.model), read_predictions(args.predictions), hp)
    write_json(args.report, report)
    write_json(args.health, health_metrics(report))
    log.info("health %s (%s)", report["status"], "; ".join(report["recommendations"]))


if __name__ == "__main__":
    p = _cli.parser("health", __doc__)
    p.add_argument("model", help="model JSON")
    p.add_argument("predictions", help="predictions JSON")
    p.add_argument("health", help="output health metrics JSON (a DVC metrics file)")
    p.add_argument("report", help="output health report JSON (figures, checks, thresholds)")
    sys.exit(_cli.run("health", main, p.parse_args()))
