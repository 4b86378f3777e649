"""Health: the report comparing what inference saw with what training saw, overall and per scene.

The tiles compared are those not used for training when inference ran on the training index
(held-out tiles of ``both`` scenes and every tile of ``infer`` scenes), otherwise every inferred
tile. For each, the model's monitored feature is compared with the reference distribution stored
in the model (:mod:`satpipe.evaluation.drift`), with the failure rate and the shift in class shares;
the worst check sets the status, overall and for each scene. Statuses are ``healthy``,
``insufficient data`` (fewer than ``health.min_samples`` tiles: the drift checks could not be
judged and nothing judged is wrong), ``warning`` and ``critical``, in that order of severity.

A per-pixel model (output ``pixels``) is also judged on its whole-scene runs: given the segment
stage's per-scene summaries, :func:`health_document` adds :func:`satpipe.evaluation.mask_health.
mask_health`'s report under ``masks`` and the status is the worse of the two (the tile report's
figures stay at the top level, so every consumer of the tile report reads it unchanged).

The report (:func:`health_document`) holds every figure, check and threshold, overall and per
scene, with recommendations; its metrics (:func:`health_metrics`) are the status alone, read from
it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from satpipe.core.errors import ModelError
from satpipe.core.params import HealthParams
from satpipe.core.records import PredictionSet, TilePrediction, by_scene, sorted_scene_ids
from satpipe.evaluation.drift import INSUFFICIENT, STATUSES, health_report, worst_status
from satpipe.evaluation.mask_health import mask_health
from satpipe.models.model import Model
from satpipe.tiles.index import held_out_filter


def _compare(
    records: Sequence[TilePrediction], failed: int, total: int, model: Model, hp: HealthParams
) -> dict[str, Any]:
    values = np.array([r.features[model.monitored] for r in records], dtype=np.float64)
    fractions = {
        c: (sum(r.prediction == c for r in records) / len(records) if records else 0.0)
        for c in model.classes
    }
    report = health_report(values, model.reference, failed, total, fractions, hp)
    return {
        "status": report["status"],
        "tiles_failed": failed,
        "prediction_fractions": {c: round(v, 6) for c, v in fractions.items()},
        **{k: v for k, v in report.items() if k != "status"},
    }


def health_document(
    model: Model,
    predictions: PredictionSet,
    hp: HealthParams,
    summaries: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The health report of a predictions document: status, figures, checks, per scene.

    Args:
        model: the model the predictions were made with.
        predictions: the batch-inference run.
        hp: the ``health`` params (warning and critical thresholds).
        summaries: for a per-pixel model, the segment stage's scene summaries
            (:func:`satpipe.evaluation.mask_health.scene_summary`); the stage passes them for
            every per-pixel model (without them the report is the tile report alone).

    Raises:
        ModelError: summaries given for a tile-label model.
    """
    meta, failed = predictions.metadata, predictions.failures
    same_index = predictions.index_sha256 == model.training["tile_index_sha256"]
    held_out = held_out_filter(model.training, predictions.index_sha256)
    # leave out the tiles the model was fitted on
    records = [r for r in predictions.predictions if held_out(r)]
    overall = _compare(records, len(failed), meta["tiles_total"], model, hp)
    scenes: dict[str | None, dict[str, Any]] = {}
    records_by, failed_by = by_scene(records), by_scene(failed)
    for sid in sorted_scene_ids(records_by.keys() | failed_by.keys()):
        mine, n_failed = records_by.get(sid, []), len(failed_by.get(sid, []))
        scene = _compare(mine, n_failed, len(mine) + n_failed, model, hp)
        scenes[sid] = {k: scene[k] for k in ("status", "figures", "prediction_fractions")}
    by_status = {
        s: sorted_scene_ids(k for k, v in scenes.items() if v["status"] == s) for s in STATUSES
    }
    judged = ("warning", "critical")
    worse = [
        sid
        for sid, v in scenes.items()
        if v["status"] in judged and STATUSES.index(v["status"]) > STATUSES.index(overall["status"])
    ]
    if worse:
        overall["recommendations"].append(
            f"Scenes {', '.join(str(sid) for sid in worse)} look worse than the whole: see "
            "scenes.<id> in this report and inspect them before trusting their predictions."
        )
    few = by_status[INSUFFICIENT]
    if few and overall["status"] != INSUFFICIENT:
        overall["recommendations"].append(
            f"Scenes {', '.join(str(sid) for sid in few)} have fewer than {hp.min_samples} "
            "tiles compared: their drift checks say insufficient data."
        )
    report = {
        "status": overall.pop("status"),
        "model_version": model.version,
        "compared": "tiles not used for training" if same_index else "all inferred tiles",
        "tiles_inferred": meta["tiles_inferred"],
        **overall,
        "scenes": scenes,
        "scenes_by_status": {s: len(v) for s, v in by_status.items()},
        "thresholds": hp.model_dump(),
    }
    if summaries is not None:
        if model.kind.output != "pixels":
            raise ModelError(
                "health: scene summaries are for a per-pixel model; this model labels tiles"
            )
        masks = mask_health(model, summaries, hp)
        report["masks"] = masks
        report["status"] = worst_status([report["status"], masks["status"]])
        if masks["status"] != "healthy":  # the masks' advice leads; "no action" no longer holds
            tile_advice = [r for r in report["recommendations"] if not r.startswith("No action")]
            report["recommendations"] = [*masks["recommendations"], *tile_advice]
    return report


def health_metrics(report: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of a health report: the health stage's DVC metrics file.

    ``health``: the overall status (``healthy``, ``insufficient data``, ``warning`` or
    ``critical``), read from the report; the worst check sets it, so it stands for the drift
    figures (and, for a per-pixel model, the mask checks) in one column. The
    figures, the checks with their thresholds (params, not metrics), the recommendations and the
    scenes stay in the report.

    Args:
        report: the report of :func:`health_document`.
    """
    return {"health": report["status"]}
