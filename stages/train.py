"""Stage train: fit the threshold model on a deterministic subset of the tile index.

Usage: ``python -m stages.train <tile_index.json> <model.json> <metrics.json>``; reads ``train``.
"""

from __future__ import annotations

import argparse
import logging
import sys

import numpy as np

from satpipe import model as model_lib
from satpipe.errors import ModelError
from satpipe.files import write_json
from satpipe.params import load_params
from satpipe.tileindex import group_by_scene, index_hash, is_training_tile, load_index
from stages import _cli

log = logging.getLogger(__name__)


def main(args: argparse.Namespace) -> None:
    """Fit and write the model and the training metrics."""
    tp = load_params(args.params).train
    index = load_index(args.index)
    roles = {sid: scene["role"] for sid, scene in index["scenes"].items()}
    train = [
        t
        for t in index["tiles"]
        if is_training_tile(t["id"], roles[t["scene"]], tp.seed, tp.fraction)
    ]
    if not train:
        raise ModelError(
            f"{args.index}: no training tile: train.fraction {tp.fraction} selects none of the "
            f"{len(index['tiles'])} tiles of scenes with role 'train' or 'both' "
            f"({sum(r != 'infer' for r in roles.values())} such scenes); raise train.fraction, "
            "use more tiles, or give a scene the role 'train'"
        )
    values = np.array([t["mean_intensity"] for t in train], dtype=np.float64)
    train_by = group_by_scene(train)
    training = {
        "tile_index_sha256": index_hash(args.index),
        "scenes": {
            sid: {
                "role": sc["role"],
                "sha256": sc["sha256"],
                "tiles": len(train_by.get(sid, [])),
            }
            for sid, sc in index["scenes"].items()
        },
        "tiling": index["tiling"],
        "params": tp.model_dump(),
        "tiles": len(train),
        "tiles_held_out": sum(1 for t in index["tiles"] if roles[t["scene"]] == "both")
        - sum(1 for t in train if roles[t["scene"]] == "both"),
    }
    model = model_lib.fit(values, index["feature"], training, tp.histogram_bins)
    write_json(args.model, model.to_dict())
    write_json(
        args.metrics,
        {
            "threshold": model.threshold,
            "training_tiles": len(train),
            "held_out_tiles": training["tiles_held_out"],
            "bright_fraction": model.reference["class_fractions"]["bright"],
        },
    )
    log.info(
        "model %s: threshold %.3f from %d tiles (%d held out)",
        model.version,
        model.threshold,
        len(train),
        training["tiles_held_out"],
    )


if __name__ == "__main__":
    p = _cli.parser("train", __doc__)
    p.add_argument("index", help="tile index JSON")
    p.add_argument("model", help="output model JSON")
    p.add_argument("metrics", help="output training metrics JSON")
    sys.exit(_cli.run("train", main, p.parse_args()))
