"""Per-pixel evaluation: hand-computed scores, held-out pixels, exclusions, blockwise reads."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import rasterio
import rasterio.transform

from satpipe.core.errors import ModelError
from satpipe.core.records import TileWindow
from satpipe.evaluation.pixels import (
    CodeLookup,
    HeldOutPixels,
    class_iou_rows,
    confusion_rows,
    evaluate_pixels,
    pixel_metrics,
    pixel_scores,
    scene_confusion,
)
from satpipe.tiles.index import build_index, is_training_tile
from tests.records import scene_record, tile_entry

W, H = 301, 257  # odd sizes: blocks and tiles do not divide the scene
CLASSES = ("water", "land", "cloud")
CODES = ((1,), (2, 3), (4,))  # code 0 unlabelled, 9 the label nodata
LABEL_NODATA = 9


def test_scores_match_hand_computed_values() -> None:
    # rows actual (water, land, cloud), columns predicted; cloud is absent from both
    scores = pixel_scores([[3, 1, 0], [1, 2, 0], [0, 0, 0]], CLASSES)
    assert scores["pixels"] == 7
    assert scores["accuracy"] == 0.714286  # 5 / 7
    assert scores["per_class"]["water"] == {
        "iou": 0.6,  # 3 / (3 + 1 + 1)
        "f1": 0.75,  # 2*3 / (4 + 4)
        "precision": 0.75,
        "recall": 0.75,
        "support": 4,
        "predicted": 4,
    }
    assert scores["per_class"]["land"]["iou"] == 0.5  # 2 / 4
    assert scores["per_class"]["land"]["f1"] == 0.666667
    assert scores["per_class"]["cloud"] == {
        "iou": None,
        "f1": None,
        "precision": None,
        "recall": None,
        "support": 0,
        "predicted": 0,
    }
    assert scores["miou"] == scores["macro"]["iou"] == 0.55  # over the two defined classes
    assert scores["macro"]["f1"] == 0.708333
    assert scores["micro"] == {
        "iou": 0.555556,  # 5 / (5 + 2 + 2)
        "f1": 0.714286,
        "precision": 0.714286,
        "recall": 0.714286,
    }
    assert scores["weighted"]["iou"] == 0.557143  # (4 * 0.6 + 3 * 0.5) / 7
    # kappa: po = 5/7, pe = (4*4 + 3*3) / 49 -> (7*5 - 25) / (49 - 25) = 10 / 24
    assert scores["kappa"] == 0.416667
    assert scores["confusion"]["matrix"] == [[3, 1, 0], [1, 2, 0], [0, 0, 0]]


def test_undefined_and_zero_scores() -> None:
    # land predicted once but never present: recall undefined, precision/IoU/F1 zero
    scores = pixel_scores([[2, 1], [0, 0]], ("water", "land"))
    land = scores["per_class"]["land"]
    assert (land["recall"], land["precision"], land["iou"], land["f1"]) == (None, 0.0, 0.0, 0.0)
    assert scores["kappa"] == 0.0  # (3*2 - 6) / (9 - 6)
    # one class everywhere: chance agreement is total, kappa undefined
    assert pixel_scores([[5]], ("water",))["kappa"] is None
    empty = pixel_scores(np.zeros((2, 2), np.int64), ("water", "land"))
    assert empty["accuracy"] is None and empty["kappa"] is None and empty["miou"] is None
    json.dumps(empty)  # nulls, not NaN


def _write(path: Path, data: np.ndarray, nodata: int | None) -> Path:
    profile = {
        "driver": "GTiff",
        "width": data.shape[1],
        "height": data.shape[0],
        "count": 1,
        "dtype": data.dtype.name,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": 64,
        "blockysize": 64,
        "crs": "EPSG:32633",
        "transform": rasterio.transform.from_origin(400000.0, 5900000.0, 10.0, 10.0),
    }
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data, 1)
    return path


def _rasters(tmp: Path) -> tuple[np.ndarray, np.ndarray, Path, Path]:
    rng = np.random.default_rng(7)
    label = rng.choice([0, 1, 2, 3, 4, LABEL_NODATA], size=(H, W), p=[0.1, 0.3, 0.2, 0.2, 0.1, 0.1])
    pred = rng.integers(0, 3, size=(H, W)).astype(np.uint8)
    pred[rng.random((H, W)) < 0.05] = 255
    return (
        label.astype(np.int16),
        pred,
        _write(tmp / "s.labels.tif", label.astype(np.int16), LABEL_NODATA),
        _write(tmp / "s.class.tif", pred, 255),
    )


def _brute(label: np.ndarray, pred: np.ndarray, held: list, train: list) -> tuple[Any, int]:
    inside = np.zeros((H, W), bool)
    for w in held:
        inside[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] = True
    trained = np.zeros((H, W), bool)
    for w in train:
        trained[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] = True
    position = {1: 0, 2: 1, 3: 1, 4: 2}
    matrix = np.zeros((3, 3), np.int64)
    for r, c in zip(*np.nonzero(inside & ~trained), strict=True):
        code, p = int(label[r, c]), int(pred[r, c])
        if p != 255 and code in position:
            matrix[position[code], p] += 1
    return matrix, int(np.count_nonzero(inside & trained))


@pytest.mark.parametrize("block_rows", [512, 50, 7])
def test_overlapping_tiles_count_once_and_training_pixels_are_excluded(
    tmp_path: Path, block_rows: int
) -> None:
    label, pred, label_path, class_path = _rasters(tmp_path)
    # overlapping held-out tiles (stride 40 < size 64) crossing block edges, one past the scene
    held = [TileWindow(r, c, 64, 64) for r in (0, 40, 200) for c in (0, 40, 260)]
    train = [TileWindow(20, 20, 64, 64), TileWindow(230, 280, 64, 64)]
    judged = HeldOutPixels.from_windows(held, train, W, H)
    lookup = CodeLookup.from_label_codes(CODES)
    matrix, counts = scene_confusion(
        class_path, label_path, judged, lookup, LABEL_NODATA, 3, block_rows
    )
    expected, in_training = _brute(label, pred, held, train)
    assert matrix.tolist() == expected.tolist()
    assert counts["pixels"] == int(expected.sum())
    assert counts["pixels_in_training_tiles"] == in_training
    assert (
        counts["pixels_held_out"]
        == counts["pixels"] + counts["pixels_nodata"] + counts["pixels_unlabelled"]
    )
    mask = judged.masks(0, H)[0]
    assert int(mask.sum()) == counts["pixels_held_out"]


def _model(index_sha: str = "idx", fraction: float = 0.5) -> Any:
    kind = SimpleNamespace(label_codes=CODES, output="pixels")
    training = {
        "tile_index_sha256": index_sha,
        "scenes": {"s": {"role": "both"}},
        "params": {"seed": 3, "fraction": fraction},
    }
    return SimpleNamespace(kind=kind, classes=CLASSES, training=training, version="v1")


def _index(labels: dict[str, Any] | None) -> Any:
    entries = [
        tile_entry(f"s/r{r}_c{c}", window=TileWindow(r, c, 64, 64))
        for r in range(0, H, 48)
        for c in range(0, W, 48)
    ]
    scene = scene_record("s", width=W, height=H, labels=labels)
    return build_index([scene], {"size": 64, "stride": 48}, {}, entries, [{}])


LABELS = {"file": "s.labels.tif", "classes": {"water": [1], "land": [2, 3]}, "nodata": LABEL_NODATA}


def test_evaluate_pixels_judges_the_held_out_tiles_of_evaluate(tmp_path: Path) -> None:
    label, pred, _, class_path = _rasters(tmp_path)
    index = _index(LABELS)
    report = evaluate_pixels(_model(), index, "idx", {"s": class_path}, tmp_path, block_rows=100)
    tiles = index.tiles
    training = [is_training_tile(t.id, "both", 3, 0.5) for t in tiles]
    assert 0 < sum(training) < len(tiles)
    held = [t.window for t, tr in zip(tiles, training, strict=True) if not tr]
    train = [t.window for t, tr in zip(tiles, training, strict=True) if tr]
    expected, _ = _brute(label, pred, held, train)
    assert report["overall"]["confusion"]["matrix"] == expected.tolist()
    assert report["scenes"]["s"]["confusion"]["matrix"] == expected.tolist()
    assert report["evaluated"] and report["scenes"]["s"]["evaluated"]
    metrics = pixel_metrics(report)
    assert set(metrics) == {
        "miou",
        "pixel_accuracy",
        "kappa",
        "iou_water",
        "iou_land",
        "iou_cloud",
        "eval_pixels",
    }
    assert metrics["eval_pixels"] == int(expected.sum())
    rows = confusion_rows(report)
    assert len(rows) == 9 and sum(r["pixels"] for r in rows) == int(expected.sum())
    assert [r["class"] for r in class_iou_rows(report)] == list(CLASSES)
    json.dumps(report, allow_nan=False)
    # another index: no tile trained the model, so every tile's pixels are judged
    other = evaluate_pixels(_model("other"), index, "idx", {"s": class_path}, tmp_path)
    everything, _ = _brute(label, pred, [t.window for t in tiles], [])
    assert other["overall"]["confusion"]["matrix"] == everything.tolist()


def test_a_label_code_the_model_lacks_is_one_line(tmp_path: Path) -> None:
    _, _, _, class_path = _rasters(tmp_path)
    labels = {**LABELS, "classes": {"water": [1], "snow": [7]}}
    with pytest.raises(ModelError, match=r"label code 7 \('snow'.*no class of the model") as err:
        evaluate_pixels(_model(), _index(labels), "idx", {"s": class_path}, tmp_path)
    assert "\n" not in str(err.value)


def test_a_scene_without_labels_is_not_evaluated(tmp_path: Path) -> None:
    _, _, _, class_path = _rasters(tmp_path)
    report = evaluate_pixels(_model(), _index(None), "idx", {"s": class_path}, tmp_path)
    assert not report["evaluated"] and report["scenes"]["s"]["reason"]
    assert pixel_metrics(report)["miou"] is None
