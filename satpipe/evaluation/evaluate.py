"""Evaluation: a classifier's predictions judged against reference labels.

A tile's *reference* is the class its labels say it is; its *prediction* is the class the model
gave it. Only tiles that did not train the model (held out) and that have a reference are
evaluated: scoring a model on its own training tiles says nothing about how it generalises, and
a tile without a reference cannot be scored at all. Classes are strings, in the model's order;
for a threshold the positive class is the *last* one (a feature above the threshold gives
``classes[-1]``, otherwise ``classes[0]``).

The scores are :mod:`satpipe.models.scores`' (the rules that keep them from inventing a number
are there); every float is rounded to 6 decimals, so the documents are byte-stable JSON. A run
gives two documents: the *report* (every count and score, overall and per scene, with confusion
matrices) and its *metrics* (:func:`evaluation_metrics`: the few figures experiments are ranked
by, read from the report, flat so that each is one ``dvc exp show`` column). The functions here
are pure (numpy only) except :func:`evaluate_predictions`, which takes a loaded model, tile index
and predictions document; stages read and write the files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from satpipe.core.errors import ModelError
from satpipe.core.records import (
    PredictionSet,
    TileEntry,
    TileIndex,
    TilePrediction,
    sorted_scene_ids,
)
from satpipe.models.model import Model
from satpipe.models.scores import (
    DECIMALS,
    check_classes,
    classification_scores,
    rounded,
    threshold_curve,
)
from satpipe.tiles.index import held_out_filter

COUNT_KEYS = (
    "tiles_predicted",
    "tiles_held_out",
    "tiles_with_reference",
    "tiles_without_reference",
    "tiles_used_for_training",
)


def curve_thresholds(
    values: np.ndarray, reference_min: float, reference_max: float, points: int = 101
) -> list[float]:
    """``points`` evenly spaced thresholds over the union of the values' and reference range.

    The range is ``[min(values, reference_min), max(values, reference_max)]`` (the reference
    range alone when there is no value). Thresholds are rounded to 6 decimals; duplicates left by
    rounding (a range narrower than that) are dropped, so a single-point range gives one
    threshold.

    Raises:
        ModelError: fewer than 2 points, or a non-finite bound or value.
    """
    if points < 2:
        raise ModelError(f"curve_thresholds: points {points}; expected at least 2")
    x = np.asarray(values, dtype=np.float64).ravel()
    bounds = np.concatenate((x, [reference_min, reference_max]))
    if not np.all(np.isfinite(bounds)):
        raise ModelError("curve_thresholds: a value or reference bound is not finite")
    grid = np.linspace(float(bounds.min()), float(bounds.max()), points)
    return sorted({round(float(v), DECIMALS) for v in grid})


def histogram_rows(
    training_hist: dict[str, Any], inference_values: np.ndarray, feature: str
) -> list[dict[str, Any]]:
    """Training and inference shares of each bin of the model's reference histogram.

    Inference values are counted on the training histogram's edges, bins closed on the left
    (the last also on the right, as :func:`numpy.histogram`); a value below the first edge is
    counted in the first bin and one above the last edge in the last bin, so every value is
    counted. Each row is ``{feature: bin centre, "training": share, "inference": share}``, with
    share = bin count / total count (0.0 when the total is 0), rounded to 6 decimals: the rows
    of a DVC ``linear`` plot with ``x=feature`` and ``y=[training, inference]``.

    Args:
        training_hist: the model's ``reference["histogram"]``: ``{"edges", "counts"}``.
        inference_values: the inference feature values.
        feature: the feature name (the x key of each row).

    Raises:
        ModelError: the histogram is malformed, or an inference value is not finite.
    """
    try:
        edges = np.asarray(training_hist["edges"], dtype=np.float64)
        counts = np.asarray(training_hist["counts"], dtype=np.int64)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(
            f"training histogram malformed ({exc}); expected edges and counts"
        ) from exc
    bins = counts.size
    if edges.ndim != 1 or counts.ndim != 1 or bins < 1 or edges.size != bins + 1:
        raise ModelError(
            f"training histogram has {edges.size} edges and {bins} counts; "
            "expected n + 1 edges for n >= 1 counts"
        )
    if not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0) or np.any(counts < 0):
        raise ModelError(
            "training histogram malformed: expected finite increasing edges, counts >= 0"
        )
    x = np.asarray(inference_values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(x)):
        raise ModelError(f"histogram_rows: a {feature} value is not finite")
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, bins - 1)
    inferred = np.bincount(idx, minlength=bins)
    train_total, infer_total = int(counts.sum()), int(x.size)
    centres = edges[:-1] / 2 + edges[1:] / 2
    return [
        {
            feature: rounded(centres[i]),
            "training": rounded(counts[i] / train_total if train_total else 0.0),
            "inference": rounded(inferred[i] / infer_total if infer_total else 0.0),
        }
        for i in range(bins)
    ]


@dataclass(frozen=True)
class EvaluationResult:
    """What :func:`evaluate_run` produces: the report and the rows of three plots."""

    report: dict[str, Any]
    confusion_rows: list[dict[str, Any]]
    curve_rows: list[dict[str, Any]]
    histogram_rows: list[dict[str, Any]]


def evaluation_metrics(report: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of an evaluation report: the evaluate stage's DVC metrics file.

    Read from the report's ``overall`` scores, so the two documents cannot disagree:
    ``accuracy``, ``bal_acc`` (balanced accuracy), ``f1_<class>`` for each of the model's
    classes and ``eval_tiles`` (the tiles scored). A score the report leaves undefined stays
    ``None``. Names are short because ``dvc exp show`` gives each figure a column. Counts per kind
    of tile, precision, recall, support, confusion matrices and per-scene scores stay in the
    report.

    Args:
        report: the report of :func:`evaluate_run`.
    """
    overall = report["overall"]
    return {
        "accuracy": overall["accuracy"],
        "bal_acc": overall["balanced_accuracy"],
        **{f"f1_{name}": scores["f1"] for name, scores in overall["per_class"].items()},
        "eval_tiles": overall["tiles"],
    }


def _feature_value(record: TilePrediction, feature: str) -> float:
    try:
        return float(record.features[feature])
    except (KeyError, TypeError, ValueError):
        raise ModelError(
            f"prediction {record.id!r}: {feature} is {record.features.get(feature)!r}; "
            "expected a number"
        ) from None


def _not_evaluated_reason(counts: dict[str, int]) -> str:
    if counts["tiles_predicted"] == 0:
        return "no tile was predicted: nothing to evaluate"
    if counts["tiles_held_out"] == 0:
        return "every predicted tile trained the model: no held-out tile to evaluate on"
    return (
        "no held-out tile has a reference label: give scenes a labels raster "
        "(ingest.labels or ingest.scenes[].labels)"
    )


def evaluate_run(
    tiles: Sequence[TileEntry],
    predictions: Sequence[TilePrediction],
    classes: Sequence[str],
    held_out: Callable[[TileEntry], bool],
    threshold: float | None,
    reference: dict[str, Any],
    feature: str = "mean_intensity",
) -> EvaluationResult:
    """Evaluate a batch-inference run against the tiles' reference classes.

    Each predicted tile is looked up in the tile index. Tiles that trained the model are
    excluded (counted as ``tiles_used_for_training``); of the held-out ones, those with a
    reference are evaluated and the others counted as ``tiles_without_reference``. The report
    is ``{"evaluated", "reason", "counts", "overall", "scenes"}``: ``overall`` is
    :func:`classification_scores` on the evaluated tiles and ``scenes`` the same for each scene
    that has predictions (sorted ids), with its own ``counts``. With no evaluated tile,
    ``evaluated`` is False, ``reason`` says why in one line and every score is ``None``.

    Plot rows: ``confusion_rows`` has one ``{"id", "scene", "actual", "predicted"}`` row per
    evaluated tile, in prediction order; ``curve_rows`` is :func:`threshold_curve` on the
    evaluated tiles over :func:`curve_thresholds` (values and the reference's min/max) plus the
    model's ``threshold``, when there is a threshold, an evaluated tile and exactly two classes
    (else empty); ``histogram_rows`` compares every held-out predicted tile's feature (labelled
    or not) with ``reference["histogram"]``.

    Args:
        tiles: tile-index entries (their ``reference`` is a class or None).
        predictions: batch-inference records (their ``features`` include ``feature``).
        classes: the model's ordered class list.
        held_out: whether a tile-index entry was not used for training.
        threshold: the model's threshold, or None for a model that has none.
        reference: the model's reference distribution (``histogram``, ``min``, ``max``).
        feature: the feature compared with the reference histogram.

    Raises:
        ModelError: a prediction's id is not in the tile index, appears twice, or names another
            scene than its tile; a class is not one of ``classes``; malformed histogram.
    """
    names = check_classes(classes)
    if "histogram" not in reference:
        raise ModelError("model reference has no histogram; expected {'edges', 'counts'}")
    by_id = {tile.id: tile for tile in tiles}
    seen: set[str] = set()
    counts: dict[str | None, dict[str, int]] = {}
    evaluated: list[tuple[TilePrediction, str]] = []
    held_values: list[float] = []
    for record in predictions:
        tile_id = record.id
        tile = by_id.get(tile_id)
        if tile is None:
            raise ModelError(
                f"prediction {tile_id!r} is not in the tile index: predictions and tile index "
                "are out of sync (re-run inference on this index)"
            )
        if tile_id in seen:
            raise ModelError(f"prediction {tile_id!r} appears twice; expected one per tile")
        seen.add(tile_id)
        if record.scene != tile.scene:
            raise ModelError(
                f"prediction {tile_id!r} names scene {record.scene!r} but the tile index "
                f"says {tile.scene!r}: predictions and tile index are out of sync"
            )
        scene = counts.setdefault(tile.scene, dict.fromkeys(COUNT_KEYS, 0))
        scene["tiles_predicted"] += 1
        if not held_out(tile):
            scene["tiles_used_for_training"] += 1
            continue
        scene["tiles_held_out"] += 1
        held_values.append(_feature_value(record, feature))
        if tile.reference is None:
            scene["tiles_without_reference"] += 1
            continue
        if tile.reference not in names:
            raise ModelError(
                f"tile {tile_id}: reference class {tile.reference!r} is not a class of the "
                f"model ({', '.join(names)}); map the labels onto the model's classes "
                "(ingest.labels.classes) or train a model with these classes (train.classes)"
            )
        scene["tiles_with_reference"] += 1
        evaluated.append((record, tile.reference))

    total = {key: sum(c[key] for c in counts.values()) for key in COUNT_KEYS}
    actual = [ref for _, ref in evaluated]
    predicted = [rec.prediction for rec, _ in evaluated]
    by_scene: dict[str | None, tuple[list[str], list[str]]] = {sid: ([], []) for sid in counts}
    for rec, ref in evaluated:
        by_scene[rec.scene][0].append(ref)
        by_scene[rec.scene][1].append(rec.prediction)
    scenes = {
        sid: {"counts": counts[sid], **classification_scores(*by_scene[sid], names)}
        for sid in sorted_scene_ids(counts)
    }
    report = {
        "evaluated": bool(evaluated),
        "reason": None if evaluated else _not_evaluated_reason(total),
        "counts": total,
        "overall": classification_scores(actual, predicted, names),
        "scenes": scenes,
    }
    confusion_rows = [
        {"id": rec.id, "scene": rec.scene, "actual": ref, "predicted": rec.prediction}
        for rec, ref in evaluated
    ]
    curve_rows: list[dict[str, Any]] = []
    if threshold is not None and evaluated and len(names) == 2:
        values = np.array([_feature_value(rec, feature) for rec, _ in evaluated])
        positive = np.array([ref == names[-1] for ref in actual], dtype=np.bool_)
        ref_min = float(reference.get("min", values.min()))
        ref_max = float(reference.get("max", values.max()))
        # The model's own threshold is a point of the curve; a grid point that would show the
        # same rounded threshold is dropped so the plot has one row per x.
        shown = round(float(threshold), DECIMALS)
        grid = [t for t in curve_thresholds(values, ref_min, ref_max) if t != shown]
        points = sorted([*grid, float(threshold)])
        curve_rows = threshold_curve(values, positive, points)
    hist = histogram_rows(reference["histogram"], np.array(held_values), feature)
    return EvaluationResult(report, confusion_rows, curve_rows, hist)


def evaluate_predictions(
    model: Model, index: TileIndex, predictions: PredictionSet
) -> EvaluationResult:
    """Evaluate a batch-inference document against the tile index it was run on.

    The tiles held out from training are found from the model's training record
    (:func:`satpipe.tiles.index.held_out_filter`): the tiles it was fitted on when the predictions
    come from its own tile index, none otherwise.

    Args:
        model: the model the predictions were made with.
        index: the tile index (its entries carry the reference classes).
        predictions: the batch-inference run.
    """
    held_out = held_out_filter(model.training, predictions.index_sha256)
    threshold = model.kind.details().get("threshold")  # kinds with one have a threshold curve
    return evaluate_run(
        index.tiles,
        predictions.predictions,
        model.classes,
        held_out,
        threshold if isinstance(threshold, float) else None,
        model.reference,
        feature=model.monitored,
    )
