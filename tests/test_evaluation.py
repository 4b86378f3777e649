"""Evaluation: scores against hand-computed values, threshold fitting, plot rows, a whole run."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest

from satpipe.core.errors import ModelError
from satpipe.core.records import TileEntry, TilePrediction
from satpipe.evaluation.evaluate import (
    EvaluationResult,
    curve_thresholds,
    evaluate_run,
    evaluation_metrics,
    histogram_rows,
)
from satpipe.models.scores import (
    ThresholdFit,
    classification_scores,
    confusion_matrix,
    fit_threshold,
    threshold_curve,
)
from satpipe.tiles.index import is_training_tile
from tests.records import prediction, tile_entry

CLASSES = ("dark", "bright")

# Ten tiles: 6 dark, 4 bright. Of the dark ones 4 are predicted dark and 2 bright; of the bright
# ones 3 are predicted bright and 1 dark.
ACTUAL = ["dark"] * 6 + ["bright"] * 4
PREDICTED = [
    "dark",
    "dark",
    "bright",
    "dark",
    "bright",
    "dark",
    "bright",
    "dark",
    "bright",
    "bright",
]


def test_confusion_matrix_and_scores_match_hand_computed_values() -> None:
    # Rows actual (dark, bright), columns predicted (dark, bright).
    assert confusion_matrix(ACTUAL, PREDICTED, CLASSES) == [[4, 2], [1, 3]]
    scores = classification_scores(ACTUAL, PREDICTED, CLASSES)
    assert scores["tiles"] == 10
    assert scores["accuracy"] == 0.7  # (4 + 3) / 10
    # dark: precision 4 / (4 + 1) = 0.8, recall 4 / 6 = 0.666667,
    #       f1 = 2 * 0.8 * (2/3) / (0.8 + 2/3) = 8/11 = 0.727273
    # bright: precision 3 / (3 + 2) = 0.6, recall 3 / 4 = 0.75,
    #         f1 = 2 * 0.6 * 0.75 / (0.6 + 0.75) = 2/3 = 0.666667
    assert scores["per_class"] == {
        "dark": {"precision": 0.8, "recall": 0.666667, "f1": 0.727273, "support": 6},
        "bright": {"precision": 0.6, "recall": 0.75, "f1": 0.666667, "support": 4},
    }
    # balanced accuracy = (2/3 + 3/4) / 2 = 17/24 = 0.708333
    assert scores["balanced_accuracy"] == 0.708333
    assert scores["confusion"] == {"classes": ["dark", "bright"], "matrix": [[4, 2], [1, 3]]}


def test_classes_are_taken_in_the_given_order() -> None:
    reversed_classes = ("bright", "dark")
    assert confusion_matrix(ACTUAL, PREDICTED, reversed_classes) == [[3, 1], [2, 4]]
    scores = classification_scores(ACTUAL, PREDICTED, reversed_classes)
    assert list(scores["per_class"]) == ["bright", "dark"]
    assert scores["per_class"]["bright"]["precision"] == 0.6


def test_label_outside_the_classes_is_refused_by_name() -> None:
    with pytest.raises(ModelError, match="predicted class 'cloud' is not one of"):
        confusion_matrix(["dark", "bright"], ["dark", "cloud"], CLASSES)
    with pytest.raises(ModelError, match="reference class 'water' is not one of"):
        classification_scores(["water"], ["dark"], CLASSES)
    with pytest.raises(ModelError, match="2 reference labels but 1 predictions"):
        confusion_matrix(["dark", "dark"], ["dark"], CLASSES)


def test_class_never_predicted_has_no_precision() -> None:
    scores = classification_scores(["dark", "bright", "bright"], ["dark"] * 3, CLASSES)
    bright = scores["per_class"]["bright"]
    assert bright == {"precision": None, "recall": 0.0, "f1": None, "support": 2}
    # dark: precision 1/3, recall 1/1, f1 = 2 * (1/3) / (4/3) = 0.5
    assert scores["per_class"]["dark"] == {
        "precision": 0.333333,
        "recall": 1.0,
        "f1": 0.5,
        "support": 1,
    }
    assert scores["balanced_accuracy"] == 0.5  # (1 + 0) / 2


def test_class_without_support_has_no_recall_and_is_left_out_of_balanced_accuracy() -> None:
    classes = ("water", "land", "cloud")
    # water: 1 of 2 right; land: 2 of 3 right; cloud: no reference tile and never predicted.
    actual = ["water", "water", "land", "land", "land"]
    predicted = ["water", "land", "land", "land", "water"]
    scores = classification_scores(actual, predicted, classes)
    assert scores["confusion"]["matrix"] == [[1, 1, 0], [1, 2, 0], [0, 0, 0]]
    assert scores["per_class"]["cloud"] == {
        "precision": None,
        "recall": None,
        "f1": None,
        "support": 0,
    }
    # mean of water 1/2 and land 2/3 only = 7/12 (with cloud as 0 it would be 7/18)
    assert scores["balanced_accuracy"] == 0.583333


def test_f1_is_zero_when_precision_and_recall_are_zero() -> None:
    scores = classification_scores(["dark", "bright"], ["bright", "dark"], CLASSES)
    for name in CLASSES:
        assert scores["per_class"][name] == {
            "precision": 0.0,
            "recall": 0.0,
            "f1": 0.0,
            "support": 1,
        }
    assert scores["accuracy"] == 0.0
    assert scores["balanced_accuracy"] == 0.0


def test_empty_input_gives_no_score_at_all() -> None:
    scores = classification_scores([], [], CLASSES)
    assert scores["tiles"] == 0
    assert scores["accuracy"] is None
    assert scores["balanced_accuracy"] is None
    for name in CLASSES:
        assert scores["per_class"][name] == {
            "precision": None,
            "recall": None,
            "f1": None,
            "support": 0,
        }
    assert scores["confusion"]["matrix"] == [[0, 0], [0, 0]]


def test_fit_on_separable_data_is_perfect_and_sits_between_the_classes() -> None:
    values = np.array([3.0, 1.0, 7.0, 2.0, 5.0, 2.0])
    positive = np.array([False, False, True, False, True, False])
    fit = fit_threshold(values, positive)
    # max negative 3, min positive 5: midpoint 4
    assert fit == ThresholdFit(threshold=4.0, balanced_accuracy=1.0, accuracy=1.0, tiles=6)
    assert fit.to_dict() == {
        "threshold": 4.0,
        "balanced_accuracy": 1.0,
        "accuracy": 1.0,
        "tiles": 6,
    }


@pytest.mark.parametrize("lo", [1.0, float(np.nextafter(1.0, 2.0))])
def test_fit_between_adjacent_floats_still_separates(lo: float) -> None:
    # No float lies strictly between adjacent floats; the midpoint rounds to even, which is the
    # upper value when lo is odd (second case), and "value > threshold" would then fail on hi.
    hi = float(np.nextafter(lo, 2.0))
    fit = fit_threshold(np.array([lo, hi]), np.array([False, True]))
    assert lo <= fit.threshold < hi
    assert fit.accuracy == 1.0


def test_tie_on_balanced_accuracy_goes_to_higher_accuracy() -> None:
    # 4 negatives (1, 3, 4, 6), 2 positives (2, 5). Candidates 1.5 and 4.5 tie on balanced accuracy:
    #   1.5: TP 2/2, TN 1/4 -> balanced (1 + 0.25) / 2 = 0.625, accuracy 3/6
    #   4.5: TP 1/2, TN 3/4 -> balanced (0.5 + 0.75) / 2 = 0.625, accuracy 4/6
    # (2.5 -> 0.375, 3.5 -> 0.5, 5.5 -> 0.375). Higher accuracy wins over the smaller threshold.
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    positive = np.array([False, True, False, False, True, False])
    fit = fit_threshold(values, positive)
    assert fit == ThresholdFit(threshold=4.5, balanced_accuracy=0.625, accuracy=0.666667, tiles=6)


def test_full_tie_goes_to_the_smaller_threshold() -> None:
    # 1 neg, 2 pos, 3 neg, 4 pos. Candidates 1.5 (TP 2, TN 1) and 3.5 (TP 1, TN 2) both give
    # balanced accuracy 0.75 and accuracy 0.75; 2.5 gives 0.5. The smaller threshold wins.
    values = np.array([4.0, 3.0, 2.0, 1.0])
    positive = np.array([True, False, True, False])
    assert fit_threshold(values, positive).threshold == 1.5
    assert fit_threshold(values[::-1].copy(), positive[::-1].copy()).threshold == 1.5


def test_imbalanced_fit_maximises_balanced_accuracy_not_accuracy() -> None:
    # negatives 1..7, 8, 9, 10 (10 of them); positives 7.5 and 20.
    #   7.25: TP 2/2, TN 7/10 -> balanced 0.85, accuracy 9/12 = 0.75
    #   15:   TP 1/2, TN 10/10 -> balanced 0.75, accuracy 11/12 = 0.916667 (best accuracy)
    values = np.array([1, 2, 3, 4, 5, 6, 7, 7.5, 8, 9, 10, 20], dtype=float)
    positive = np.array([False] * 7 + [True, False, False, False, True])
    fit = fit_threshold(values, positive)
    assert fit == ThresholdFit(threshold=7.25, balanced_accuracy=0.85, accuracy=0.75, tiles=12)
    curve = threshold_curve(values, positive, [7.25, 15.0])
    assert curve == [
        {"threshold": 7.25, "balanced_accuracy": 0.85, "accuracy": 0.75},
        {"threshold": 15.0, "balanced_accuracy": 0.75, "accuracy": 0.916667},
    ]


def test_one_class_only_is_refused_naming_it() -> None:
    values = np.array([1.0, 2.0, 3.0])
    with pytest.raises(ModelError, match=r"only class 'dark' present \(3 tiles, 0 'bright'\)"):
        fit_threshold(values, np.zeros(3, dtype=bool), classes=CLASSES)
    with pytest.raises(ModelError, match=r"only class 'bright' present \(3 tiles, 0 'dark'\)"):
        fit_threshold(values, np.ones(3, dtype=bool), classes=CLASSES)
    with pytest.raises(ModelError, match=r"only class positive present") as info:
        fit_threshold(values, np.ones(3, dtype=bool))
    assert "\n" not in str(info.value)


def test_one_distinct_value_is_refused() -> None:
    with pytest.raises(ModelError, match=r"found 1 distinct feature value\(s\)") as info:
        fit_threshold(np.array([5.0, 5.0, 5.0]), np.array([True, False, True]))
    assert "all equal to 5.0" in str(info.value)
    assert "expected at least 2" in str(info.value)
    with pytest.raises(ModelError, match=r"found 0 distinct"):
        fit_threshold(np.array([]), np.array([], dtype=bool))


def test_malformed_fit_input_is_refused() -> None:
    with pytest.raises(ModelError, match="expected bool"):
        fit_threshold(np.array([1.0, 2.0]), np.array([0, 1]))
    with pytest.raises(ModelError, match="2 values but 3 positive flags"):
        fit_threshold(np.array([1.0, 2.0]), np.array([True, False, True]))
    with pytest.raises(ModelError, match="non-finite"):
        fit_threshold(np.array([1.0, np.nan]), np.array([True, False]))


def _brute_force(values: np.ndarray, positive: np.ndarray) -> tuple[float, Fraction, Fraction]:
    """Every midpoint scored with exact fractions; best balanced, then accuracy, then smallest."""
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    distinct = sorted(set(values.tolist()))
    best: tuple | None = None
    for lo, hi in itertools.pairwise(distinct):
        t = (lo + hi) / 2
        pred = values > t
        tp = int(np.sum(pred & positive))
        tn = int(np.sum(~pred & ~positive))
        balanced = (Fraction(tp, n_pos) + Fraction(tn, n_neg)) / 2
        accuracy = Fraction(tp + tn, values.size)
        key = (balanced, accuracy, -t)
        if best is None or key > best[0]:
            best = (key, t, balanced, accuracy)
    assert best is not None
    return best[1], best[2], best[3]


def test_large_fit_agrees_with_its_curve_and_brute_force() -> None:
    rng = np.random.default_rng(11)
    positive = rng.random(100_000) < 0.3
    # Rounded to 2 decimals: many repeated values, overlapping classes.
    values = np.round(rng.normal(0.0, 1.0, positive.size) + 1.2 * positive, 2)
    fit = fit_threshold(values, positive)  # speed is a benchmark concern, not a test's
    assert fit.tiles == 100_000
    [row] = threshold_curve(values, positive, [fit.threshold])
    assert row["balanced_accuracy"] == fit.balanced_accuracy
    assert row["accuracy"] == fit.accuracy

    pick = rng.choice(values.size, 300, replace=False)
    sub_values, sub_positive = values[pick], positive[pick]
    sub_fit = fit_threshold(sub_values, sub_positive)
    threshold, balanced, accuracy = _brute_force(sub_values, sub_positive)
    assert sub_fit.threshold == threshold
    assert sub_fit.balanced_accuracy == round(float(balanced), 6)
    assert sub_fit.accuracy == round(float(accuracy), 6)


def test_curve_without_one_class_uses_the_present_class_only() -> None:
    values = np.array([1.0, 2.0, 3.0])
    # all negative; above 1.5 are 2 and 3, so only 1 of 3 negatives is right: recall 1/3
    rows = threshold_curve(values, np.zeros(3, dtype=bool), [1.5])
    assert rows == [{"threshold": 1.5, "balanced_accuracy": 0.333333, "accuracy": 0.333333}]
    assert threshold_curve(np.array([]), np.array([], dtype=bool), [0.0]) == [
        {"threshold": 0.0, "balanced_accuracy": None, "accuracy": None}
    ]


def test_curve_thresholds_cover_values_and_reference() -> None:
    assert curve_thresholds(np.array([2.0, 5.0]), 0.0, 4.0, points=5) == [
        0.0,
        1.25,
        2.5,
        3.75,
        5.0,
    ]
    assert curve_thresholds(np.array([-1.0]), 0.0, 1.0, points=3) == [-1.0, 0.0, 1.0]
    grid = curve_thresholds(np.array([0.3, 0.7]), 0.1, 0.9)
    assert len(grid) == 101
    assert grid == curve_thresholds(np.array([0.7, 0.3]), 0.1, 0.9)
    assert grid[0] == 0.1 and grid[-1] == 0.9 and grid[50] == 0.5
    assert curve_thresholds(np.array([]), 2.0, 2.0) == [2.0]
    with pytest.raises(ModelError, match="at least 2"):
        curve_thresholds(np.array([1.0]), 0.0, 1.0, points=1)


def test_histogram_rows_shares_and_edge_bins() -> None:
    hist = {"edges": [0.0, 1.0, 2.0, 3.0], "counts": [2, 5, 3]}
    # -5 and 0.5 -> first bin; 1.5 -> second; 2.5, 3.0 (last edge) and 99 -> last bin
    values = np.array([-5.0, 0.5, 1.5, 2.5, 3.0, 99.0])
    rows = histogram_rows(hist, values, "mean_intensity")
    assert rows == [
        {"mean_intensity": 0.5, "training": 0.2, "inference": 0.333333},
        {"mean_intensity": 1.5, "training": 0.5, "inference": 0.166667},
        {"mean_intensity": 2.5, "training": 0.3, "inference": 0.5},
    ]
    assert sum(r["training"] for r in rows) == pytest.approx(1.0, abs=1e-5)
    assert sum(r["inference"] for r in rows) == pytest.approx(1.0, abs=1e-5)
    empty = histogram_rows(hist, np.array([]), "mean_intensity")
    assert [r["inference"] for r in empty] == [0.0, 0.0, 0.0]


def test_histogram_rows_refuse_a_malformed_histogram() -> None:
    with pytest.raises(ModelError, match="4 edges and 2 counts"):
        histogram_rows({"edges": [0, 1, 2, 3], "counts": [1, 2]}, np.array([1.0]), "x")
    with pytest.raises(ModelError, match="increasing"):
        histogram_rows({"edges": [0, 2, 1], "counts": [1, 2]}, np.array([1.0]), "x")


# A run: scenes a and b with predictions (interleaved), scene c in the index only. The model
# threshold is 100 and every prediction is "bright iff mean_intensity > 100".
THRESHOLD = 100.0
TRAINING_IDS = {"a/r0_c0", "b/r0_c1"}
REFERENCE = {
    "min": 0.0,
    "max": 200.0,
    "histogram": {"edges": [0, 50, 100, 150, 200], "counts": [1, 3, 4, 2]},
}
TILES = [  # id, scene, reference, mean intensity
    ("a/r0_c0", "a", "dark", 40.0),  # training: excluded
    ("a/r0_c1", "a", "bright", 160.0),  # bright -> bright
    ("a/r0_c2", "a", "dark", 120.0),  # dark -> bright
    ("a/r0_c3", "a", None, 90.0),  # no reference
    ("a/r0_c4", "a", "dark", 30.0),  # dark -> dark
    ("b/r0_c0", "b", "bright", 80.0),  # bright -> dark
    ("b/r0_c1", "b", "bright", 170.0),  # training: excluded
    ("b/r0_c2", "b", "dark", 60.0),  # dark -> dark
    ("b/r0_c3", "b", None, 250.0),  # no reference; above the last histogram edge
    ("b/r0_c4", "b", "bright", 130.0),  # bright -> bright
    ("c/r0_c0", "c", "dark", 10.0),  # never predicted
]
ORDER = [5, 0, 1, 6, 2, 7, 3, 8, 4, 9]  # prediction order: b0 a0 a1 b1 a2 b2 a3 b3 a4 b4


def _index(with_reference: bool = True) -> list[TileEntry]:
    return [
        tile_entry(tid, scene, reference=ref if with_reference else None)
        for tid, scene, ref, _ in TILES
    ]


def _predictions() -> list[TilePrediction]:
    return [
        prediction(
            TILES[i][0],
            "bright" if TILES[i][3] > THRESHOLD else "dark",
            scene=TILES[i][1],
            features={"mean_intensity": TILES[i][3]},
        )
        for i in ORDER
    ]


def _held_out(tile: TileEntry) -> bool:
    return tile.id not in TRAINING_IDS


def _run(**changes: object) -> EvaluationResult:
    args: dict = {
        "tiles": _index(),
        "predictions": _predictions(),
        "classes": CLASSES,
        "held_out": _held_out,
        "threshold": THRESHOLD,
        "reference": REFERENCE,
    }
    args.update(changes)
    return evaluate_run(**args)


def test_run_excludes_training_tiles_and_counts_unlabelled_ones() -> None:
    result = _run()
    metrics = result.report
    assert metrics["evaluated"] is True
    assert metrics["reason"] is None
    assert metrics["counts"] == {
        "tiles_predicted": 10,
        "tiles_held_out": 8,
        "tiles_with_reference": 6,
        "tiles_without_reference": 2,
        "tiles_used_for_training": 2,
    }
    overall = metrics["overall"]
    # dark: a4, b2 right, a2 -> bright; bright: a1, b4 right, b0 -> dark
    assert overall["confusion"]["matrix"] == [[2, 1], [1, 2]]
    assert overall["tiles"] == 6
    assert overall["accuracy"] == 0.666667  # 4 / 6
    assert overall["balanced_accuracy"] == 0.666667  # (2/3 + 2/3) / 2
    assert [r["id"] for r in result.confusion_rows] == [
        "b/r0_c0",
        "a/r0_c1",
        "a/r0_c2",
        "b/r0_c2",
        "a/r0_c4",
        "b/r0_c4",
    ]
    assert result.confusion_rows[0] == {
        "id": "b/r0_c0",
        "scene": "b",
        "actual": "bright",
        "predicted": "dark",
    }


def test_run_scenes_add_up_to_overall() -> None:
    metrics = _run().report
    scenes = metrics["scenes"]
    assert list(scenes) == ["a", "b"]  # c has no prediction
    assert scenes["a"]["confusion"]["matrix"] == [[1, 1], [0, 1]]
    assert scenes["b"]["confusion"]["matrix"] == [[1, 0], [1, 1]]
    for key, total in metrics["counts"].items():
        assert sum(s["counts"][key] for s in scenes.values()) == total
    summed = np.sum([s["confusion"]["matrix"] for s in scenes.values()], axis=0)
    assert summed.tolist() == metrics["overall"]["confusion"]["matrix"]
    assert sum(s["tiles"] for s in scenes.values()) == metrics["overall"]["tiles"]
    for name in CLASSES:
        assert (
            sum(s["per_class"][name]["support"] for s in scenes.values())
            == metrics["overall"]["per_class"][name]["support"]
        )


def test_run_plots() -> None:
    result = _run()
    curve = result.curve_rows
    assert [r["threshold"] for r in curve] == sorted(r["threshold"] for r in curve)
    assert curve[0]["threshold"] == 0.0 and curve[-1]["threshold"] == 200.0
    assert len(curve) == 101
    [at_model] = [r for r in curve if r["threshold"] == THRESHOLD]
    assert at_model["balanced_accuracy"] == result.report["overall"]["balanced_accuracy"]
    assert at_model["accuracy"] == result.report["overall"]["accuracy"]
    # Held-out values (training tiles 40 and 170 left out): 80, 160, 120, 60, 90, 250, 30, 130
    # -> bins [0, 50) 1, [50, 100) 3, [100, 150) 2, [150, 200] 2 (250 clipped into the last).
    assert result.histogram_rows == [
        {"mean_intensity": 25.0, "training": 0.1, "inference": 0.125},
        {"mean_intensity": 75.0, "training": 0.3, "inference": 0.375},
        {"mean_intensity": 125.0, "training": 0.4, "inference": 0.25},
        {"mean_intensity": 175.0, "training": 0.2, "inference": 0.25},
    ]
    assert _run(threshold=None).curve_rows == []
    three = _run(classes=("dark", "bright", "cloud"))
    assert three.curve_rows == []
    assert three.report["overall"]["per_class"]["cloud"]["recall"] is None


def test_run_with_unknown_prediction_id_is_refused() -> None:
    predictions = [*_predictions(), prediction("z/r9_c9", "dark", scene="z")]
    with pytest.raises(ModelError, match="'z/r9_c9' is not in the tile index"):
        _run(predictions=predictions)


def test_run_without_any_reference_is_not_evaluated() -> None:
    result = _run(tiles=_index(with_reference=False))
    metrics = result.report
    assert metrics["evaluated"] is False
    assert "no held-out tile has a reference label" in metrics["reason"]
    assert "\n" not in metrics["reason"]
    assert metrics["counts"]["tiles_without_reference"] == 8
    assert metrics["counts"]["tiles_with_reference"] == 0
    for scores in [metrics["overall"], *metrics["scenes"].values()]:
        assert scores["tiles"] == 0
        assert scores["accuracy"] is None
        assert scores["balanced_accuracy"] is None
        for name in CLASSES:
            assert scores["per_class"][name]["precision"] is None
            assert scores["per_class"][name]["recall"] is None
            assert scores["per_class"][name]["f1"] is None
    assert result.confusion_rows == []
    assert result.curve_rows == []
    assert sum(r["inference"] for r in result.histogram_rows) == pytest.approx(1.0)


def test_run_where_every_tile_trained_the_model() -> None:
    roles = {"a": "train", "b": "train", "c": "infer"}

    def held_out(tile: TileEntry) -> bool:
        return not is_training_tile(tile.id, roles[tile.scene], 0, 0.5)

    metrics = _run(held_out=held_out).report
    assert metrics["evaluated"] is False
    assert metrics["counts"]["tiles_used_for_training"] == 10
    assert metrics["counts"]["tiles_held_out"] == 0
    assert "every predicted tile trained the model" in metrics["reason"]
    assert metrics["overall"]["accuracy"] is None


def test_metrics_are_the_reports_headline_figures() -> None:
    report = _run().report
    overall = report["overall"]
    metrics = evaluation_metrics(report)
    assert metrics == {
        "accuracy": overall["accuracy"],
        "bal_acc": overall["balanced_accuracy"],
        "f1_dark": overall["per_class"]["dark"]["f1"],
        "f1_bright": overall["per_class"]["bright"]["f1"],
        "eval_tiles": overall["tiles"],
    }
    assert metrics["eval_tiles"] == 6 and metrics["accuracy"] == 0.666667
    # flat: one dvc exp show column each; counts, per-scene scores and matrices stay in the report
    assert all(v is None or type(v) in (int, float) for v in metrics.values())


def test_metrics_of_a_run_not_evaluated_are_null_not_zero() -> None:
    metrics = evaluation_metrics(_run(tiles=_index(with_reference=False)).report)
    assert metrics == {
        "accuracy": None,
        "bal_acc": None,
        "f1_dark": None,
        "f1_bright": None,
        "eval_tiles": 0,
    }
