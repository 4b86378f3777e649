"""Stage health: compare inference features with the model's training reference.

Usage: ``python -m stages.health <model.json> <predictions.json> <health.json>``; reads ``health``.
See :mod:`satpipe.evaluation.health` for which tiles are compared and how.
"""

from __future__ import annotations

import argparse
import logging
import sys

from satpipe.core.files import write_json
from satpipe.core.params import load_params
from satpipe.core.records import read_predictions
from satpipe.evaluation.health import health_document
from satpipe.models import model as model_lib
from stages import _cli

log = logging.getLogger(__name__)


def main(args: argparse.Namespace) -> None:
    """Write the health report (a DVC metric): overall, then per scene."""
    hp = load_params(args.params).health
    report = health_document(model_lib.load(args.model), read_predictions(args.predictions), hp)
    write_json(args.health, report)
    log.info("health %s (%s)", report["status"], "; ".join(report["recommendations"]))


if __name__ == "__main__":
    p = _cli.parser("health", __doc__)
    p.add_argument("model", help="model JSON")
    p.add_argument("predictions", help="predictions JSON")
    p.add_argument("health", help="output health JSON (a DVC metric)")
    sys.exit(_cli.run("health", main, p.parse_args()))
