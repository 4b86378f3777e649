"""Per-pixel evaluation: a segmentation model's class rasters judged against the label rasters.

A per-pixel model writes one class raster per scene (uint8, code ``i`` = the model's class ``i``,
255 = nodata) on the scene's grid; the scene's label raster (``<scenes_dir>/<labels.file>``) keeps
its raw codes, and each model class lists the codes that mean it (``label_codes``). The pixels
judged are those of the *held-out* tiles, the tiles :mod:`satpipe.evaluation.evaluate` judges (not
training tiles, :func:`satpipe.tiles.index.held_out_filter`): the union of their windows, so a
pixel of two overlapping tiles counts once, minus every pixel inside any training tile's window
(tiles overlap when the stride is below the size), so no pixel that trained the model is judged.
Of those, nodata pixels (class 255 or the label raster's nodata) and unlabelled pixels (a code in
no model class's ``label_codes``) are excluded and counted, never scored as a class. A code that
the scene's own mapping (``labels.classes``) lists but no model class lists is an error: the model
cannot be judged on a class it lacks.

Rasters are read in blocks of 512 rows (only where held-out windows are), never whole. The
confusion matrix is exact counts (rows actual); the scores (:func:`pixel_scores`) follow rules:

- IoU = TP / (TP + FP + FN) and F1 = Dice = 2TP / (2TP + FP + FN) are ``None`` for a class absent
  from both the labels and the predictions, and 0.0 for a class present in one only (a model that
  never predicts a present class scores 0 on it, not ``None``); precision is ``None`` for a class
  never predicted, recall for a class with no labelled pixel;
- ``macro`` averages each score over the classes where it is defined; ``micro`` pools the counts
  (precision = recall = F1 = accuracy for one label per pixel; IoU = sum TP / sum(TP+FP+FN));
  ``weighted`` is the support-weighted mean over classes with support;
- Cohen's kappa = (N trace - sum r_k c_k) / (N^2 - sum r_k c_k), in exact integers, ``None``
  with no pixel or when chance agreement is total;
- ``miou`` is the macro IoU: the mean over classes with a defined IoU. Floats are rounded to 6
  decimals, so the report is byte-stable JSON.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from satpipe.core.errors import ModelError
from satpipe.core.records import TileIndex, sorted_scene_ids
from satpipe.evaluation.held_out import BLOCK_ROWS, HeldOutPixels, held_out_pixels
from satpipe.models.kinds.pixels import PixelClasses
from satpipe.models.model import Model
from satpipe.models.pixel_sample import check_label_codes
from satpipe.models.scores import check_classes, rounded

NODATA_CLASS = 255
COUNT_KEYS = ("pixels_held_out", "pixels_in_training_tiles", "pixels_nodata", "pixels_unlabelled")


@dataclass(frozen=True)
class CodeLookup:
    """Label code -> model class position (sorted codes, for any integer code range)."""

    codes: np.ndarray
    positions: np.ndarray

    @classmethod
    def from_label_codes(cls, label_codes: Sequence[Sequence[int]]) -> CodeLookup:
        """From each class's label codes, in class order (:class:`ModelError`: a code twice)."""
        pairs = sorted((int(c), k) for k, codes in enumerate(label_codes) for c in codes)
        codes = [c for c, _ in pairs]
        twice = sorted({c for c in codes if codes.count(c) > 1})
        if twice:
            raise ModelError(f"label codes {twice} belong to two model classes; expected one")
        return cls(np.array(codes, dtype=np.int64), np.array([k for _, k in pairs], np.int64))

    def classify(self, codes: np.ndarray) -> Any:
        """Class position of every code; -1 where no model class lists it."""
        flat = codes.astype(np.int64, copy=False)
        out = np.full(flat.shape, -1, dtype=np.int64)
        if self.codes.size:
            pos = np.clip(np.searchsorted(self.codes, flat), 0, self.codes.size - 1)
            hit = self.codes[pos] == flat
            out[hit] = self.positions[pos[hit]]
        return out


def scene_confusion(
    class_path: Path | str,
    label_path: Path | str,
    judged: HeldOutPixels,
    lookup: CodeLookup,
    label_nodata: int | float | None,
    n_classes: int,
    block_rows: int = BLOCK_ROWS,
) -> tuple[np.ndarray, dict[str, int]]:
    """Exact ``(K, K)`` confusion counts (rows actual) of one scene, and its pixel counts.

    Counts: ``pixels_held_out`` (judged pixels), ``pixels_in_training_tiles`` (in a held-out
    window but also a training one: excluded), ``pixels_nodata`` and ``pixels_unlabelled``
    (judged but excluded), ``pixels`` (scored).

    Raises:
        ModelError: a raster is not on the scene's grid, or a class code is no model class.
    """
    matrix = np.zeros(n_classes * n_classes, dtype=np.int64)
    counts = dict.fromkeys(COUNT_KEYS, 0)
    with rasterio.open(class_path) as pred_ds, rasterio.open(label_path) as label_ds:
        for ds, what in ((pred_ds, "class raster"), (label_ds, "label raster")):
            if (ds.width, ds.height) != (judged.width, judged.height):
                raise ModelError(
                    f"{ds.name}: {what} is {ds.width}x{ds.height}; expected the scene's "
                    f"{judged.width}x{judged.height}"
                )
        for win in judged.blocks(block_rows):
            r0, c0, rows, cols = int(win.row_off), int(win.col_off), int(win.height), int(win.width)
            mask, in_training = judged.masks(r0, rows, c0, cols)
            counts["pixels_in_training_tiles"] += int(np.count_nonzero(in_training))
            if not mask.any():
                continue
            pred = pred_ds.read(1, window=win)[mask].astype(np.int64)
            label = label_ds.read(1, window=win)[mask]
            nodata = pred == NODATA_CLASS
            if label_nodata is not None:
                nodata |= label == label_nodata
            actual = lookup.classify(label)
            scored = ~nodata & (actual >= 0)
            bad = scored & (pred >= n_classes)
            if bad.any():
                raise ModelError(
                    f"{class_path}: class code {int(pred[bad][0])} is not a class of the model "
                    f"(0..{n_classes - 1}, {NODATA_CLASS} nodata)"
                )
            counts["pixels_held_out"] += int(mask.sum())
            counts["pixels_nodata"] += int(np.count_nonzero(nodata))
            counts["pixels_unlabelled"] += int(np.count_nonzero(~nodata & (actual < 0)))
            flat = actual[scored] * n_classes + pred[scored]
            matrix += np.bincount(flat, minlength=n_classes * n_classes)
    counts["pixels"] = int(matrix.sum())
    return matrix.reshape(n_classes, n_classes), counts


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def _weighted(values: Sequence[float | None], weights: Sequence[int]) -> float | None:
    pairs = [(v, w) for v, w in zip(values, weights, strict=True) if v is not None and w]
    den = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / den if den else None


def pixel_scores(matrix: Any, classes: Sequence[str]) -> dict[str, Any]:
    """Every score of a ``(K, K)`` confusion matrix (rows actual), by the module's rules.

    Returns:
        ``{"pixels", "accuracy", "kappa", "miou", "per_class": {class: {"iou", "f1",
        "precision", "recall", "support", "predicted"}}, "macro", "micro", "weighted" (each
        {"iou", "f1", "precision", "recall"}), "confusion": {"classes", "matrix"}}``.
    """
    names = check_classes(classes)
    m = [[int(v) for v in row] for row in np.asarray(matrix, dtype=np.int64)]
    k = len(names)
    if len(m) != k or any(len(row) != k for row in m):
        raise ModelError(f"confusion matrix is not {k}x{k} for classes {names}")
    n = sum(map(sum, m))
    trace = sum(m[i][i] for i in range(k))
    rows = [sum(m[i]) for i in range(k)]
    cols = [sum(m[i][j] for i in range(k)) for j in range(k)]
    per: dict[str, dict[str, Any]] = {}
    raw: list[dict[str, float | None]] = []
    for i, name in enumerate(names):
        tp, support, predicted = m[i][i], rows[i], cols[i]
        scores = {
            "iou": _ratio(tp, support + predicted - tp),
            "f1": _ratio(2 * tp, support + predicted),
            "precision": _ratio(tp, predicted),
            "recall": _ratio(tp, support),
        }
        raw.append(scores)
        rounded_scores = {key: rounded(v) for key, v in scores.items()}
        per[name] = {**rounded_scores, "support": support, "predicted": predicted}
    keys = ("iou", "f1", "precision", "recall")
    macro = {key: rounded(_weighted([s[key] for s in raw], [1] * k)) for key in keys}
    accuracy = _ratio(trace, n)
    micro = {"iou": rounded(_ratio(trace, 2 * n - trace))}
    micro |= dict.fromkeys(keys[1:], rounded(accuracy))
    weighted = {key: rounded(_weighted([s[key] for s in raw], rows)) for key in keys}
    chance = sum(r * c for r, c in zip(rows, cols, strict=True))
    return {
        "pixels": n,
        "accuracy": rounded(accuracy),
        "kappa": rounded(_ratio(n * trace - chance, n * n - chance)),
        "miou": macro["iou"],
        "per_class": per,
        "macro": macro,
        "micro": micro,
        "weighted": weighted,
        "confusion": {"classes": names, "matrix": m},
    }


def evaluate_pixels(
    model: Model,
    index: TileIndex,
    index_sha256: str,
    class_rasters: Mapping[str, Path | str],
    scenes_dir: Path | str,
    block_rows: int = BLOCK_ROWS,
) -> dict[str, Any]:
    """Judge each scene's class raster against its label raster on the held-out pixels.

    Args:
        model: the per-pixel model (classes, ``kind.label_codes``, ``training``).
        index: the tile index (scene header with each scene's labels; tile windows).
        index_sha256: that index file's sha256 (held-out tiles, as in evaluate).
        class_rasters: each scene's class raster path, by scene id.
        scenes_dir: where the label rasters are (``<scenes_dir>/<labels.file>``).
        block_rows: rows read per block.

    Returns:
        ``{"evaluated", "reason", "classes", "counts", "overall", "scenes"}``: ``overall`` is
        :func:`pixel_scores` on the summed matrices; each scene has ``evaluated``, ``reason``
        (None, or why not: no label raster), ``counts`` and its scores. Every score is ``None``
        with no scored pixel.

    Raises:
        ModelError: a scene's label mapping lists a code no model class lists; a raster off the
            scene grid; a class code the model lacks.
    """
    names = check_classes(model.classes)
    k = len(names)
    codes = getattr(model.kind, "label_codes", None)
    if codes is None:
        raise ModelError("per-pixel evaluation needs a per-pixel model (one with label codes)")
    lookup = CodeLookup.from_label_codes(codes)
    pixel_classes = PixelClasses(tuple(names), tuple(tuple(c) for c in codes), ())
    total = np.zeros((k, k), dtype=np.int64)
    counts_all = dict.fromkeys((*COUNT_KEYS, "pixels"), 0)
    scenes: dict[str | None, dict[str, Any]] = {}
    for sid in sorted_scene_ids(class_rasters):
        assert sid is not None
        judged = held_out_pixels(model, index, index_sha256, sid)
        labels = index.scenes[sid].labels
        matrix, counts = np.zeros((k, k), np.int64), dict.fromkeys((*COUNT_KEYS, "pixels"), 0)
        reason: str | None = "the scene has no label raster (ingest.labels)"
        if labels and labels.get("file"):
            nodata = labels.get("nodata")
            check_label_codes(sid, labels, pixel_classes)
            label_path = Path(scenes_dir) / str(labels["file"])
            matrix, counts = scene_confusion(
                class_rasters[sid], label_path, judged, lookup, nodata, k, block_rows
            )
            reason = None if counts["pixels"] else "no labelled held-out pixel"
        total += matrix
        counts_all = {key: v + counts[key] for key, v in counts_all.items()}
        scenes[sid] = {
            "evaluated": reason is None,
            "reason": reason,
            "counts": counts,
            **pixel_scores(matrix, names),
        }
    evaluated = counts_all["pixels"] > 0
    return {
        "evaluated": evaluated,
        "reason": None if evaluated else "no labelled held-out pixel in any scene",
        "classes": names,
        "counts": counts_all,
        "overall": pixel_scores(total, names),
        "scenes": scenes,
    }


def pixel_metrics(report: dict[str, Any]) -> dict[str, Any]:
    """The headline of a pixel report (DVC metrics; ``dvc exp show`` ranks by ``miou``).

    ``miou`` (mean IoU over the classes with a defined IoU), ``pixel_accuracy``, ``kappa``,
    ``iou_<class>`` per class and ``eval_pixels`` (pixels scored), from ``overall``.
    """
    overall = report["overall"]
    return {
        "miou": overall["miou"],
        "pixel_accuracy": overall["accuracy"],
        "kappa": overall["kappa"],
        **{f"iou_{name}": s["iou"] for name, s in overall["per_class"].items()},
        "eval_pixels": overall["pixels"],
    }


def confusion_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Plot rows of the overall confusion matrix: every (actual, predicted) pair, exact counts.

    Each row is ``{"actual", "predicted", "pixels", "share"}``; ``share`` is the row-normalised
    count (pixels / the actual class's pixels; None when it has none).
    """
    confusion = report["overall"]["confusion"]
    names, matrix = confusion["classes"], confusion["matrix"]
    return [
        {"actual": a, "predicted": p, "pixels": n, "share": rounded(_ratio(n, sum(row)))}
        for a, row in zip(names, matrix, strict=True)
        for p, n in zip(names, row, strict=True)
    ]


def class_iou_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Plot rows of the per-class IoU: ``{"class", "iou"}`` in the model's class order."""
    return [{"class": c, "iou": s["iou"]} for c, s in report["overall"]["per_class"].items()]
