"""Stage train: fit the threshold model on a deterministic subset of the tile index.

Usage: ``python -m stages.train <tile_index.json> <model.json> <metrics.json> <report.json>
[--scenes <scenes_dir>]``; reads ``train``. A per-pixel kind samples its labelled training pixels
from the scenes (and their label rasters) in ``<scenes_dir>``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from satpipe.core.files import write_json
from satpipe.core.params import load_params
from satpipe.core.records import read_index
from satpipe.models.training import train, train_metrics
from satpipe.tiles.index import index_hash
from stages import _cli


def main(args: argparse.Namespace) -> None:
    """Fit and write the model, the training report and its metrics."""
    tp = load_params(args.params).train
    index = read_index(args.index)
    scenes = Path(args.scenes) if args.scenes else None
    root = Path(args.params).parent
    result = train(index, index_hash(args.index), tp, args.index, root, scenes_dir=scenes)
    write_json(args.model, result.model.to_dict())
    write_json(args.report, result.report)
    write_json(args.metrics, train_metrics(result.report))


if __name__ == "__main__":
    p = _cli.parser("train", __doc__)
    p.add_argument("index", help="tile index JSON")
    p.add_argument("model", help="output model JSON")
    p.add_argument("metrics", help="output training metrics JSON (a DVC metrics file)")
    p.add_argument("report", help="output training report JSON")
    p.add_argument("--scenes", default=None, help="directory of scenes (per-pixel kinds)")
    sys.exit(_cli.run("train", main, p.parse_args()))
