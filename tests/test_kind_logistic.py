"""The logistic kind: fitting, determinism, its JSON document and its errors."""

from __future__ import annotations

import itertools
import json
from typing import Any

import numpy as np
import pytest

from satpipe.core.errors import ModelError
from satpipe.models.kinds.base import TrainingSet
from satpipe.models.kinds.logistic import LogisticKind

NAMES = ("mean_intensity", "valid_fraction", "band_1_mean", "band_1_std")


def clusters(
    centres: list[list[float]], per_class: int, spread: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` rows around each centre, and their class positions."""
    rng = np.random.default_rng(seed)
    rows = [np.asarray(c) + rng.normal(0.0, spread, (per_class, len(c))) for c in centres]
    return np.concatenate(rows), np.repeat(np.arange(len(centres)), per_class)


def training_set(
    x: np.ndarray,
    y: np.ndarray,
    classes: tuple[str, ...] = ("dark", "bright"),
    names: tuple[str, ...] = NAMES,
) -> TrainingSet:
    return TrainingSet(
        features=np.asarray(x, dtype=np.float64),
        names=names,
        references=tuple(classes[int(k)] for k in y),
        classes=classes,
    )


def two_class(seed: int = 0) -> TrainingSet:
    """60 separable rows: three used features, plus a valid_fraction the default skips."""
    x, y = clusters([[100.0, 10.0, 5.0], [300.0, 30.0, 9.0]], 30, 5.0, seed)
    valid = np.random.default_rng(seed + 1).uniform(0.5, 1.0, (60, 1))
    return training_set(np.column_stack([x[:, :1], valid, x[:, 1:]]), y)


def three_class() -> TrainingSet:
    centres = [[100.0, 0.0, 1.0, 1.0], [200.0, 0.0, 5.0, 1.0], [300.0, 0.0, 1.0, 5.0]]
    x, y = clusters(centres, 40, 0.3, seed=3)
    return training_set(x, y, classes=("water", "land", "cloud"))


def reload(kind: LogisticKind) -> LogisticKind:
    return LogisticKind.from_dict(json.loads(json.dumps(kind.to_dict())), "model.json", None)


def used_columns(train: TrainingSet, kind: LogisticKind) -> np.ndarray:
    return train.features[:, [train.names.index(n) for n in kind.feature_names]]


def one_line_error(call: Any, *needles: str) -> str:
    with pytest.raises(ModelError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message
    return message


# --- fitting ---------------------------------------------------------------------------------


def test_separable_two_classes_are_learnt() -> None:
    train = two_class()
    kind = LogisticKind.fit(train, {}, None)
    assert kind.feature_names == ("mean_intensity", "band_1_mean", "band_1_std")
    assert kind.monitored == "mean_intensity"
    assert kind.to_dict()["training"] == {"labelled_tiles": 60, "accuracy": 1.0}
    positions, scores = kind.predict(used_columns(train, kind))
    assert positions.dtype == np.int64 and scores.dtype == np.float64
    np.testing.assert_array_equal(positions, train.labelled()[1])
    assert np.all(scores > 0.5)


def test_three_clusters_are_recovered() -> None:
    train = three_class()
    kind = LogisticKind.fit(
        train, {"features": ["band_1_mean", "band_1_std", "mean_intensity"]}, None
    )
    assert kind.to_dict()["training"]["accuracy"] == 1.0
    centres = np.array([[1.0, 1.0, 100.0], [5.0, 1.0, 200.0], [1.0, 5.0, 300.0]])
    positions, scores = kind.predict(centres)
    np.testing.assert_array_equal(positions, [0, 1, 2])
    assert np.all(scores > 0.9)


def test_fit_is_the_penalised_optimum() -> None:
    train = three_class()
    l2 = 1.0
    doc = LogisticKind.fit(train, {"l2": l2}, None).to_dict()
    x, y = train.labelled()
    z = (x[:, [0, 2, 3]] - np.array(doc["mean"])) / np.array(doc["std"])
    w, b = np.array(doc["weights"]), np.array(doc["intercepts"])
    s = z @ w.T + b
    p = np.exp(s - s.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    residual = p - np.eye(3)[y]
    # Zero gradient up to the 10-digit rounding of the stored numbers.
    assert np.abs(residual.T @ z + l2 * w).max() < 1e-6
    assert np.abs(residual.sum(axis=0)).max() < 1e-6
    assert abs(b.sum()) < 1e-8  # the intercepts are centred


def test_monitored_is_the_first_feature_without_mean_intensity() -> None:
    kind = LogisticKind.fit(two_class(), {"features": ["band_1_std", "band_1_mean"]}, None)
    assert kind.feature_names == ("band_1_std", "band_1_mean")
    assert kind.monitored == "band_1_std"


def test_class_without_labelled_tiles_is_never_predicted() -> None:
    base = two_class()
    train = TrainingSet(base.features, base.names, base.references, ("dark", "snow", "bright"))
    kind = LogisticKind.fit(train, {}, None)
    doc = kind.to_dict()
    assert doc["classes"] == ["dark", "snow", "bright"]
    assert doc["intercepts"][1] is None and doc["weights"][1] == [0.0, 0.0, 0.0]
    assert doc["training"]["accuracy"] == 1.0
    positions, scores = kind.predict(used_columns(train, kind))
    np.testing.assert_array_equal(positions, train.labelled()[1])
    assert 1 not in positions
    again = reload(kind).predict(used_columns(train, kind))
    np.testing.assert_array_equal(again[0], positions)
    assert again[1].tobytes() == scores.tobytes()


# --- determinism -----------------------------------------------------------------------------


def test_fitting_twice_gives_the_same_document() -> None:
    first = LogisticKind.fit(three_class(), {}, None).to_dict()
    second = LogisticKind.fit(three_class(), {}, None).to_dict()
    assert first == second
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    json.dumps(first, allow_nan=False)  # JSON-native


def test_reloaded_model_predicts_bitwise_the_same() -> None:
    train = three_class()
    kind = LogisticKind.fit(train, {}, None)
    loaded = reload(kind)
    assert loaded.to_dict() == kind.to_dict()
    x = np.random.default_rng(7).uniform([50, 0, 0], [350, 6, 6], (500, 3))
    positions, scores = kind.predict(x)
    again_positions, again_scores = loaded.predict(x)
    np.testing.assert_array_equal(positions, again_positions)
    assert scores.tobytes() == again_scores.tobytes()


def test_row_order_does_not_change_the_model() -> None:
    # Guaranteed: every sum over tiles is an exact integer sum, every other step is per row.
    train = three_class()
    order = np.random.default_rng(11).permutation(len(train.references))
    shuffled = TrainingSet(
        train.features[order],
        train.names,
        tuple(train.references[i] for i in order),
        train.classes,
    )
    first = json.dumps(LogisticKind.fit(train, {}, None).to_dict(), sort_keys=True)
    assert json.dumps(LogisticKind.fit(shuffled, {}, None).to_dict(), sort_keys=True) == first


def test_every_stored_number_has_ten_significant_digits() -> None:
    doc = LogisticKind.fit(three_class(), {"l2": 0.3}, None).to_dict()
    numbers = [*doc["mean"], *doc["std"], *doc["intercepts"], doc["l2"]]
    numbers += [v for row in doc["weights"] for v in row]
    assert all(v == float(f"{v:.10g}") for v in numbers)


# --- standardisation and the penalty ---------------------------------------------------------


def test_constant_feature_does_not_produce_nan() -> None:
    base = two_class()
    features = base.features.copy()
    features[:, 3] = 0.123456789012345  # band_1_std constant
    train = TrainingSet(features, base.names, base.references, base.classes)
    kind = LogisticKind.fit(train, {}, None)
    doc = kind.to_dict()
    assert doc["std"][2] == 1.0
    flat = [*doc["mean"], *doc["std"], *doc["intercepts"], *np.ravel(doc["weights"])]
    assert all(np.isfinite(flat))
    positions, scores = kind.predict(used_columns(train, kind))
    assert np.all(np.isfinite(scores))
    assert doc["training"]["accuracy"] == 1.0
    np.testing.assert_array_equal(positions, train.labelled()[1])


def test_larger_l2_gives_smaller_weights() -> None:
    train = three_class()
    norms = [
        np.linalg.norm(LogisticKind.fit(train, {"l2": l2}, None).to_dict()["weights"])
        for l2 in (0.01, 1.0, 10.0, 100.0)
    ]
    assert all(a > b for a, b in itertools.pairwise(norms))


# --- probabilities ---------------------------------------------------------------------------


def test_scores_are_the_softmax_maximum() -> None:
    train = three_class()
    kind = LogisticKind.fit(train, {"l2": 5.0}, None)
    doc = kind.to_dict()
    x = np.random.default_rng(5).uniform([50, 0, 0], [350, 6, 6], (400, 3))
    positions, scores = kind.predict(x)
    z = (x - np.array(doc["mean"])) / np.array(doc["std"])
    s = z @ np.array(doc["weights"]).T + np.array(doc["intercepts"])
    p = np.exp(s - s.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    np.testing.assert_array_equal(positions, p.argmax(axis=1))
    np.testing.assert_allclose(scores, p.max(axis=1), rtol=1e-12, atol=0)
    assert np.all(scores > 0) and np.all(scores <= 1)
    assert np.all(scores >= 1 / 3)


def test_ties_go_to_the_first_class() -> None:
    doc = LogisticKind.fit(two_class(), {}, None).to_dict()
    doc["weights"][1] = list(doc["weights"][0])
    doc["intercepts"][1] = doc["intercepts"][0]
    positions, scores = LogisticKind.from_dict(doc, "tie.json", None).predict(np.ones((4, 3)))
    np.testing.assert_array_equal(positions, [0, 0, 0, 0])
    np.testing.assert_array_equal(scores, [0.5] * 4)


def test_empty_batch() -> None:
    kind = LogisticKind.fit(two_class(), {}, None)
    positions, scores = kind.predict(np.empty((0, 3)))
    assert positions.shape == scores.shape == (0,)


def test_details() -> None:
    details = LogisticKind.fit(two_class(), {"l2": 2, "iterations": 30}, None).details()
    assert details == {
        "features": ["mean_intensity", "band_1_mean", "band_1_std"],
        "classes": ["dark", "bright"],
        "l2": 2.0,
        "iterations": 30,
        "solver": "newton",
    }


# --- errors ----------------------------------------------------------------------------------


def test_no_labelled_tile() -> None:
    base = two_class()
    train = TrainingSet(base.features, base.names, (None,) * 60, base.classes)
    one_line_error(lambda: LogisticKind.fit(train, {}, None), "none of the 60 training tiles")


def test_one_class_only() -> None:
    base = two_class()
    references = tuple(r if r == "bright" else None for r in base.references)
    train = TrainingSet(base.features, base.names, references, base.classes)
    one_line_error(lambda: LogisticKind.fit(train, {}, None), "'bright'", "at least two")


def test_unknown_feature_lists_the_available_ones() -> None:
    message = one_line_error(
        lambda: LogisticKind.fit(two_class(), {"features": ["band_9_mean"]}, None),
        "train.logistic.features",
        "'band_9_mean'",
    )
    assert "mean_intensity, valid_fraction, band_1_mean, band_1_std" in message


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"l2": -1.0}, "train.logistic.l2: -1.0"),
        ({"l2": "big"}, "train.logistic.l2: 'big'"),
        ({"iterations": 0}, "train.logistic.iterations: 0"),
        ({"iterations": 2.5}, "train.logistic.iterations: 2.5"),
        ({"features": []}, "train.logistic.features: []"),
        ({"features": ["band_1_mean", "band_1_mean"]}, "'band_1_mean'"),
        ({"step": 0.1}, "train.logistic.step"),
    ],
)
def test_bad_params(params: dict[str, Any], needle: str) -> None:
    one_line_error(lambda: LogisticKind.fit(two_class(), params, None), needle)


def test_non_finite_feature_rows_are_counted() -> None:
    base = two_class()
    features = base.features.copy()
    features[3, 0] = np.nan
    features[7, 2] = np.inf
    train = TrainingSet(features, base.names, base.references, base.classes)
    one_line_error(lambda: LogisticKind.fit(train, {}, None), "2 of 60")
    # A non-finite value in a feature the model does not use is ignored.
    features = base.features.copy()
    features[3, 1] = np.nan  # valid_fraction
    LogisticKind.fit(TrainingSet(features, base.names, base.references, base.classes), {}, None)


def test_predict_checks_its_input() -> None:
    kind = LogisticKind.fit(two_class(), {}, None)
    one_line_error(lambda: kind.predict(np.ones((2, 4))), "(2, 4)", "mean_intensity")
    one_line_error(lambda: kind.predict(np.array([[1.0, np.nan, 1.0]])), "1 of 1")


def _without(key: str) -> dict[str, Any]:
    doc = LogisticKind.fit(two_class(), {}, None).to_dict()
    del doc[key]
    return doc


def _with(key: str, value: Any) -> dict[str, Any]:
    return {**LogisticKind.fit(two_class(), {}, None).to_dict(), key: value}


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        (_without("weights"), "missing key 'weights'"),
        (_with("weights", [[1.0, 2.0, 3.0]]), "weights has 1 rows"),
        (_with("weights", [[1.0, 2.0], [1.0, 2.0]]), "weights[0] has 2 values"),
        (_with("mean", [0.0, "x", 1.0]), "mean holds 'x'"),
        (_with("std", [1.0, 0.0, 1.0]), "std holds 0.0"),
        (_with("intercepts", [0.5, None]), "intercepts is [0.5, None]"),
        (_with("classes", ["dark"]), "classes is ['dark']"),
        (_with("iterations", True), "iterations is True"),
        (_with("solver", "lbfgs"), "solver is 'lbfgs'"),
        (_with("training", {}), "training is {}"),
        (_with("colour", "red"), "unknown key 'colour'"),
        ([], "the document is list"),
    ],
)
def test_malformed_document(doc: Any, needle: str) -> None:
    one_line_error(
        lambda: LogisticKind.from_dict(doc, "models/m.json", None), "models/m.json", needle
    )
