"""Training: choosing the training tiles of an index and fitting the model on them.

Training tiles are every tile of a ``train`` scene and a hash-chosen share of each ``both`` scene
(:func:`satpipe.tiles.index.is_training_tile`). ``train.model`` names the kind
(:mod:`satpipe.models.kinds`), fitted on the training tiles' feature vectors and, for kinds that use
them, their reference classes. Whatever the kind, when some training tiles have a reference the
model records how it scores on them (its training-set figures), and the tiles left out are the
ones the evaluate stage judges it on.

A kind whose output is a class per pixel (``train.pixel_logistic``, an ONNX graph with
``output: pixels``) has the classes of ``train.pixels`` and gets them in its params as
``pixels``; it is fitted on a labelled pixel sample of the training tiles
(:mod:`satpipe.models.pixel_sample`, read from the scenes directory), its training figures are
pixel accuracies on that sample, and the tiles' references (in the ingest mapping's classes, such
as ``dark``/``bright``) are not its classes and are not checked against them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import numpy as np

from satpipe.core.errors import ModelError
from satpipe.core.params import TrainParams
from satpipe.core.records import TileEntry, TileIndex, by_scene
from satpipe.models import model as model_lib
from satpipe.models.kinds import KINDS, Kind, TrainingSet
from satpipe.models.kinds.base import PixelKind, PixelSample
from satpipe.models.kinds.pixels import PixelClasses
from satpipe.models.model import Model, sample_predictions
from satpipe.models.pixel_sample import build_sample
from satpipe.models.scores import classification_scores
from satpipe.tiles.index import is_training_tile

log = logging.getLogger(__name__)
PIXEL_SECTIONS = {"pixels", "pixel_logistic"}


@dataclass(frozen=True)
class TrainingResult:
    """The fitted model and the training report (:func:`train_metrics` reads its headline)."""

    model: Model
    report: dict[str, Any]


def training_tiles(index: TileIndex, tp: TrainParams) -> list[TileEntry]:
    """The index entries that train the model, in index order."""
    return [
        t for t in index.tiles if is_training_tile(t.id, index.role_of(t), tp.seed, tp.fraction)
    ]


def training_set(tiles: list[TileEntry], classes: tuple[str, ...]) -> TrainingSet:
    """The feature vectors and references of ``tiles``.

    The columns are the features every tile has (scenes with different band counts share the
    scalar ones), in the first tile's order.
    """
    names = list(tiles[0].features)
    common = set(names).intersection(*(t.features.keys() for t in tiles[1:]))
    names = [n for n in names if n in common]
    x = np.array([[t.features[n] for n in names] for t in tiles], dtype=np.float64)
    references = tuple(t.reference for t in tiles)
    return TrainingSet(x.reshape(len(tiles), len(names)), tuple(names), references, classes)


def _figures(kind: Kind, train: TrainingSet) -> dict[str, Any]:
    """How a fitted kind scores on the labelled training tiles (feature-input kinds)."""
    rows = [i for i, ref in enumerate(train.references) if ref is not None]
    actual = [ref for ref in train.references if ref is not None]
    if not rows or kind.input != "features":
        return {"labelled_tiles": len(rows), "accuracy": None, "balanced_accuracy": None}
    columns = [train.names.index(n) for n in kind.feature_names]
    positions, _ = kind.predict(train.features[np.ix_(rows, columns)])
    predicted = [train.classes[int(p)] for p in positions]
    scores = classification_scores(actual, predicted, list(train.classes))
    return {
        "labelled_tiles": len(rows),
        "accuracy": scores["accuracy"],
        "balanced_accuracy": scores["balanced_accuracy"],
    }


def _pixel_figures(kind: Kind, sample: PixelSample, classes: tuple[str, ...]) -> dict[str, Any]:
    """How a fitted per-pixel kind scores on its labelled pixel sample."""
    predicted = sample_predictions(cast(PixelKind, kind), sample)
    if predicted is None:
        return {
            "labelled_pixels": int(sample.classes.size),
            "accuracy": None,
            "balanced_accuracy": None,
        }
    scores = classification_scores(
        [classes[int(k)] for k in sample.classes], [classes[int(k)] for k in predicted], classes
    )
    return {
        "labelled_pixels": int(sample.classes.size),
        "accuracy": scores["accuracy"],
        "balanced_accuracy": scores["balanced_accuracy"],
    }


def kind_params(tp: TrainParams) -> dict[str, Any]:
    """The params of the kind ``train.model`` names: its own section ``train.<kind>``.

    A kind without a section of its own (the threshold) gets ``{"method": train.method}``. A kind
    whose output is a class per pixel also gets ``pixels``: ``train.pixels`` (its classes and
    sample size).

    Raises:
        ModelError: the kind's section is null but the kind needs one (``train.onnx``).
    """
    if tp.model in type(tp).model_fields:
        section = getattr(tp, tp.model)
        if section is None:
            raise ModelError(f"train.model {tp.model!r} needs its settings in train.{tp.model}")
        params: dict[str, Any] = section.model_dump()
    else:
        params = {"method": tp.method}
    if tp.model in KINDS and KINDS[tp.model].output_for(params) == "pixels":
        params["pixels"] = tp.pixels.model_dump()
    return params


def train(
    index: TileIndex,
    index_sha256: str,
    tp: TrainParams,
    source: str,
    root: Path | None = None,
    scenes_dir: Path | None = None,
) -> TrainingResult:
    """Fit the model on ``index``'s training tiles with ``tp``.

    Args:
        index: the tile index.
        index_sha256: its file's sha256 (the training set's identity, kept in the model).
        tp: the ``train`` params.
        source: how to name the index in messages.
        root: the directory relative paths in the kind's params resolve against.
        scenes_dir: the ingested scenes and their label rasters (needed by per-pixel kinds).

    Raises:
        ModelError: no training tile, no scenes directory for a per-pixel kind, or the kind
            cannot be fitted (named, one line).
    """
    roles = index.roles
    train_tiles = training_tiles(index, tp)
    if not train_tiles:
        raise ModelError(
            f"{source}: no training tile: train.fraction {tp.fraction} selects none of the "
            f"{len(index.tiles)} tiles of scenes with role 'train' or 'both' "
            f"({sum(r != 'infer' for r in roles.values())} such scenes); raise train.fraction, "
            "use more tiles, or give a scene the role 'train'"
        )
    params = kind_params(tp)
    if "pixels" in params:
        classes = tuple(c.name for c in tp.pixels.classes)
        data = training_set(train_tiles, classes)
        data = replace(data, references=(None,) * len(train_tiles))
        if scenes_dir is None:
            raise ModelError(
                f"{source}: train.model {tp.model!r} classifies pixels and trains on the scenes' "
                "label rasters; expected the scenes directory"
            )
        try:
            sample = build_sample(
                index,
                train_tiles,
                PixelClasses.from_params(params["pixels"]["classes"]),
                tp.pixels.samples,
                tp.seed,
                scenes_dir,
            )
        except ModelError as exc:
            raise ModelError(f"{source}: {exc}") from exc
        data = replace(data, pixels=sample)
    else:
        classes = tuple(params.get("classes") or tp.classes)
        data = training_set(train_tiles, classes)
        try:
            data.check_references()  # labels the model cannot name make it unjudgeable
        except ModelError as exc:
            raise ModelError(f"{source}: {exc}") from exc
    train_by = by_scene(train_tiles)
    both = sum(1 for t in index.tiles if index.role_of(t) == "both")
    training: dict[str, Any] = {
        "tile_index_sha256": index_sha256,
        "scenes": {
            sid: {"role": sc.role, "sha256": sc.sha256, "tiles": len(train_by.get(sid, []))}
            for sid, sc in index.scenes.items()
        },
        "tiling": dict(index.tiling),
        # A tile-label model records no per-pixel settings: they cannot change it.
        "params": tp.model_dump(exclude=None if "pixels" in params else PIXEL_SECTIONS),
        "tiles": len(train_tiles),
        "tiles_held_out": both - sum(1 for t in train_tiles if index.role_of(t) == "both"),
        "method": tp.method if tp.model == "threshold" else tp.model,
    }
    try:
        kind = model_lib.fit_kind(tp.model, data, params, root or Path.cwd())
        if data.pixels is not None:
            training["figures"] = _pixel_figures(kind, data.pixels, classes)
        else:
            training["figures"] = _figures(kind, data)
        model = model_lib.build(kind, data, dict(index.feature), training, tp.histogram_bins)
    except ModelError as exc:
        raise ModelError(f"{source}: {exc}") from exc
    report = {
        "model": tp.model,
        "method": training["method"],
        "training_tiles": len(train_tiles),
        "held_out_tiles": training["tiles_held_out"],
        "class_fractions": model.reference.get(
            "class_fractions", model.reference.get("pixels", {}).get("class_fractions")
        ),
        "training_set": training["figures"],
        **{f"model.{k}": v for k, v in model.kind.details().items() if _scalar(v)},
    }
    figures = training["figures"]
    log.info(
        "model %s: %s (%s) from %d tiles (%d labelled %s, %d held out)",
        model.version,
        tp.model,
        training["method"],
        len(train_tiles),
        figures.get("labelled_tiles", figures.get("labelled_pixels")),
        "tiles" if "labelled_tiles" in figures else "pixels",
        training["tiles_held_out"],
    )
    return TrainingResult(model, report)


def _scalar(value: Any) -> bool:
    return isinstance(value, int | float | str | bool) or value is None


def train_metrics(report: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of a training report: the train stage's DVC metrics file.

    ``train_bal_acc``: the balanced accuracy on the labelled training tiles (``None`` without
    one), read from the report; beside the held-out ``bal_acc`` of evaluation it shows how far
    the model generalises. The kind and method (params), the tile counts, class fractions, the
    other training-set figures and the kind's details (a threshold's value: learned, but no
    figure experiments are ranked by) stay in the report.

    Args:
        report: the report of :func:`train`.
    """
    return {"train_bal_acc": report["training_set"]["balanced_accuracy"]}
