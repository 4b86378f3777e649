"""Training: choosing the training tiles of an index and fitting the model on them.

Training tiles are every tile of a ``train`` scene and a hash-chosen share of each ``both`` scene
(:func:`satpipe.tileindex.is_training_tile`). ``train.method`` decides the threshold: ``mean``,
the mean of the training tiles' feature, needs no labels; ``fit`` is the threshold that
maximises balanced accuracy on the training tiles that have a reference class
(:func:`satpipe.evaluation.fit_threshold`). Either way, when some training tiles have a reference,
the model records how it scores on them (its training-set figures), and the tiles left out are
the ones the evaluate stage judges it on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from satpipe import model as model_lib
from satpipe.errors import ModelError
from satpipe.evaluation import classification_scores, fit_threshold
from satpipe.model import CLASSES, Model
from satpipe.params import TrainParams
from satpipe.tileindex import group_by_scene, is_training_tile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingResult:
    """The fitted model and the training metrics (a DVC metrics file)."""

    model: Model
    metrics: dict[str, Any]


def training_tiles(index: dict[str, Any], tp: TrainParams) -> list[dict[str, Any]]:
    """The index entries that train the model, in index order."""
    roles = {sid: scene["role"] for sid, scene in index["scenes"].items()}
    return [
        t
        for t in index["tiles"]
        if is_training_tile(t["id"], roles[t["scene"]], tp.seed, tp.fraction)
    ]


def _figures(labelled: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
    """How the threshold scores on the labelled training tiles."""
    actual = [t["reference"] for t in labelled]
    predicted = [CLASSES[-1] if t["mean_intensity"] > threshold else CLASSES[0] for t in labelled]
    scores = classification_scores(actual, predicted, CLASSES)
    return {
        "labelled_tiles": len(labelled),
        "accuracy": scores["accuracy"],
        "balanced_accuracy": scores["balanced_accuracy"],
    }


def train(index: dict[str, Any], index_sha256: str, tp: TrainParams, source: str) -> TrainingResult:
    """Fit the model on ``index``'s training tiles with ``tp``.

    Args:
        index: the tile index.
        index_sha256: its file's sha256 (the training set's identity, kept in the model).
        tp: the ``train`` params.
        source: how to name the index in messages.

    Raises:
        ModelError: no training tile, or ``fit`` without two classes among the labelled ones.
    """
    roles = {sid: scene["role"] for sid, scene in index["scenes"].items()}
    train_set = training_tiles(index, tp)
    if not train_set:
        raise ModelError(
            f"{source}: no training tile: train.fraction {tp.fraction} selects none of the "
            f"{len(index['tiles'])} tiles of scenes with role 'train' or 'both' "
            f"({sum(r != 'infer' for r in roles.values())} such scenes); raise train.fraction, "
            "use more tiles, or give a scene the role 'train'"
        )
    values = np.array([t["mean_intensity"] for t in train_set], dtype=np.float64)
    labelled = [t for t in train_set if t.get("reference") is not None]
    threshold = None
    if tp.method == "fit":
        if not labelled:
            raise ModelError(
                f"{source}: train.method 'fit' needs training tiles with a reference class; none "
                f"of the {len(train_set)} training tiles has one (give the scenes labels, or "
                "lower tile.min_labelled_fraction, or use train.method 'mean')"
            )
        feats = np.array([t["mean_intensity"] for t in labelled], dtype=np.float64)
        positive = np.array([t["reference"] == CLASSES[-1] for t in labelled])
        try:
            threshold = fit_threshold(feats, positive, classes=CLASSES).threshold
        except ModelError as exc:
            detail = str(exc).removeprefix("fit_threshold: ")
            raise ModelError(f"{source}: train.method 'fit': {detail}") from exc
    train_by = group_by_scene(train_set)
    both = sum(1 for t in index["tiles"] if roles[t["scene"]] == "both")
    training = {
        "tile_index_sha256": index_sha256,
        "scenes": {
            sid: {"role": sc["role"], "sha256": sc["sha256"], "tiles": len(train_by.get(sid, []))}
            for sid, sc in index["scenes"].items()
        },
        "tiling": index["tiling"],
        "params": tp.model_dump(),
        "tiles": len(train_set),
        "tiles_held_out": both - sum(1 for t in train_set if roles[t["scene"]] == "both"),
        "method": tp.method,
    }
    threshold = float(values.mean()) if threshold is None else threshold
    training["figures"] = _figures(labelled, threshold)
    model = model_lib.fit(values, index["feature"], training, tp.histogram_bins, threshold)
    metrics = {
        "method": tp.method,
        "threshold": model.threshold,
        "training_tiles": len(train_set),
        "held_out_tiles": training["tiles_held_out"],
        "bright_fraction": model.reference["class_fractions"]["bright"],
        "training_set": training["figures"],
    }
    log.info(
        "model %s: %s threshold %.3f from %d tiles (%d labelled, %d held out)",
        model.version,
        tp.method,
        model.threshold,
        len(train_set),
        len(labelled),
        training["tiles_held_out"],
    )
    return TrainingResult(model, metrics)
