"""Stage health: compare inference features with the model's training reference.

Usage: ``python -m stages.health <model.json> <predictions.json> <health.json>``; reads ``health``.
The tiles compared are those not used for training when inference ran on the training index,
otherwise every inferred tile.
"""

from __future__ import annotations

import argparse
import logging
import sys

import numpy as np

from satpipe import model as model_lib
from satpipe.drift import health_report
from satpipe.files import read_json, write_json
from satpipe.model import CLASSES
from satpipe.params import load_params
from satpipe.tileindex import in_training_subset
from stages import _cli

log = logging.getLogger(__name__)


def main(args: argparse.Namespace) -> None:
    """Write the health report (a DVC metric)."""
    hp = load_params(args.params).health
    model = model_lib.load(args.model)
    preds = read_json(args.predictions)
    meta, records = preds["metadata"], preds["predictions"]
    training = model.training
    same_index = meta["tile_index_sha256"] == training["tile_index_sha256"]
    if same_index:
        tp = training["params"]
        records = [
            r for r in records if not in_training_subset(r["id"], tp["seed"], tp["fraction"])
        ]
    values = np.array([r["mean_intensity"] for r in records], dtype=np.float64)
    fractions = {
        c: (sum(r["prediction"] == c for r in records) / len(records) if records else 0.0)
        for c in CLASSES
    }
    report = health_report(
        values, model.reference, meta["tiles_failed"], meta["tiles_total"], fractions, hp
    )
    report = {
        "status": report["status"],
        "model_version": model.version,
        "compared": "held_out" if same_index else "all_inferred",
        "tiles_inferred": meta["tiles_inferred"],
        "tiles_failed": meta["tiles_failed"],
        "prediction_fractions": {c: round(v, 6) for c, v in fractions.items()},
        **{k: v for k, v in report.items() if k != "status"},
        "thresholds": hp.model_dump(),
    }
    write_json(args.health, report)
    log.info("health %s (%s)", report["status"], "; ".join(report["recommendations"]))


if __name__ == "__main__":
    p = _cli.parser("health", __doc__)
    p.add_argument("model", help="model JSON")
    p.add_argument("predictions", help="predictions JSON")
    p.add_argument("health", help="output health JSON (a DVC metric)")
    sys.exit(_cli.run("health", main, p.parse_args()))
