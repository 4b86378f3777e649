"""The ``onnx`` kind: load checks, batched prediction, documents, pinning, the session cache."""

from __future__ import annotations

import json
import logging
import pickle
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from satpipe.core.errors import ModelError
from satpipe.models.kinds import onnx as onnx_kind
from satpipe.models.kinds import onnx_graph
from satpipe.models.kinds.base import TrainingSet
from satpipe.models.kinds.onnx import OnnxKind
from tests import onnx_models

CLASSES = ("dark", "bright")
NAMES = ("mean_intensity", "valid_fraction", "band_1_mean", "band_1_std")
T = 1024.0  # exactly representable in float32


def training_set(values: list[float], refs: list[str | None] | None = None) -> TrainingSet:
    """Tiles whose mean intensity is ``values`` (the other features are filler)."""
    x = np.zeros((len(values), len(NAMES)), dtype=np.float64)
    x[:, 0] = values
    x[:, 1] = 1.0
    x[:, 2] = values
    x[:, 3] = 7.0
    refs = refs if refs is not None else [None] * len(values)
    return TrainingSet(x, NAMES, tuple(refs), CLASSES)


def feature_params(path: str | Path, **extra: Any) -> dict[str, Any]:
    return {"path": str(path), "input": "features", "features": ["mean_intensity"],
            "classes": list(CLASSES), **extra}  # fmt: skip


def pixel_params(path: str | Path, **extra: Any) -> dict[str, Any]:
    return {"path": str(path), "input": "pixels", "classes": list(CLASSES), "batch": 64, **extra}


@pytest.fixture
def fresh_cache(monkeypatch: pytest.MonkeyPatch) -> dict:
    """An empty session cache for this test (as in a new process)."""
    cache: dict = {}
    monkeypatch.setattr(onnx_graph, "_SESSIONS", cache)
    return cache


def count_runs(monkeypatch: pytest.MonkeyPatch, kind: OnnxKind) -> list[int]:
    """Record the batch size of every ``session.run`` of ``kind`` (still running it)."""
    session = kind.session
    sizes: list[int] = []
    real = session.run

    def run(names: Any, feed: dict[str, np.ndarray], *args: Any) -> Any:
        sizes.append(len(next(iter(feed.values()))))
        return real(names, feed, *args)

    monkeypatch.setattr(session, "run", run)
    return sizes


# --- good graphs --------------------------------------------------------------------------------


def test_features_graph_classifies_hand_made_rows(tmp_path: Path) -> None:
    onnx_models.threshold_graph(tmp_path / "t.onnx", T)
    kind = OnnxKind.fit(training_set([10.0, 2000.0]), feature_params("t.onnx"), tmp_path)
    x = np.array([[0.0], [1023.5], [T], [1024.5], [65535.0]])
    positions, scores = kind.predict(x)
    assert positions.dtype == np.int64 and scores.dtype == np.float64
    assert positions.tolist() == [0, 0, 0, 1, 1]  # the tie x == t goes to the first class
    assert scores.tolist() == [T, 0.5, 0.0, 0.5, 65535.0 - T]
    assert kind.input == "features"
    assert kind.feature_names == ("mean_intensity",)
    assert kind.monitored == "mean_intensity"


def test_features_are_batched_across_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    onnx_models.threshold_graph(tmp_path / "t.onnx", T)
    kind = OnnxKind.fit(training_set([1.0]), feature_params("t.onnx", batch=3), tmp_path)
    sizes = count_runs(monkeypatch, kind)
    x = np.arange(1019.0, 1029.0)[:, None]  # 10 rows: 3 + 3 + 3 + 1
    positions, _ = kind.predict(x)
    assert sizes == [3, 3, 3, 1]
    assert positions.tolist() == (x[:, 0] > T).astype(int).tolist()


def test_pixels_graph_classifies_in_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    onnx_models.pixel_mean_graph(tmp_path / "p.onnx", bands=3, size=4, threshold=100.0)
    kind = OnnxKind.fit(training_set([1.0]), pixel_params("p.onnx"), tmp_path)
    assert kind.input == "pixels"
    assert kind.feature_names == ()
    assert kind.monitored == "mean_intensity"
    assert kind.to_dict()["bands"] == 3 and kind.to_dict()["size"] == 4  # read from the graph
    sizes = count_runs(monkeypatch, kind)
    fill = np.where(np.arange(150) % 3 == 0, 250.0, 20.0).astype(np.float32)
    tiles = np.broadcast_to(fill[:, None, None, None], (150, 3, 4, 4)).copy()
    tiles[:5, 0] = 0.0  # one band dark: means 500/3 > 100 for the bright ones, 40/3 for the dark
    positions, scores = kind.predict(tiles)
    assert sizes == [64, 64, 22]
    means = tiles.astype(np.float64).mean(axis=(1, 2, 3))
    assert positions.tolist() == (means > 100.0).astype(int).tolist()
    np.testing.assert_allclose(scores, np.abs(means - 100.0), rtol=1e-6)


def test_pixels_graph_with_dynamic_shape_takes_params(tmp_path: Path) -> None:
    onnx_models.pixel_mean_graph(tmp_path / "p.onnx", bands=None, size=None, threshold=100.0)
    kind = OnnxKind.fit(training_set([1.0]), pixel_params("p.onnx", bands=2, size=8), tmp_path)
    assert (kind.to_dict()["bands"], kind.to_dict()["size"]) == (2, 8)
    positions, _ = kind.predict(np.full((2, 2, 8, 8), [[[[101.0]]], [[[99.0]]]], np.float32))
    assert positions.tolist() == [1, 0]
    with pytest.raises(ModelError, match=r"pixels of shape \(1, 2, 4, 4\) given; expected \(N, 2"):
        kind.predict(np.zeros((1, 2, 4, 4), np.float32))


def test_fit_runs_the_graph_and_logs_training_accuracy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    onnx_models.threshold_graph(tmp_path / "t.onnx", T)
    train = training_set([5.0, 2000.0, 3000.0, 7.0], ["dark", "bright", "dark", None])
    with caplog.at_level(logging.INFO, logger="satpipe.models.kinds.onnx"):
        OnnxKind.fit(train, feature_params("t.onnx"), tmp_path)
    assert "ran on 4 training tiles; accuracy on the 3 labelled ones 0.6667" in caplog.text


def test_feature_columns_are_picked_by_name(tmp_path: Path) -> None:
    onnx_models.wide_features_graph(tmp_path / "w.onnx", columns=3)
    names = ["band_1_std", "mean_intensity", "valid_fraction"]
    kind = OnnxKind.fit(training_set([1.0]), feature_params("w.onnx", features=names), tmp_path)
    assert kind.feature_names == tuple(names)
    assert kind.monitored == "band_1_std"  # the first declared feature
    # W = [[0, 1], [2, 3], [4, 5]]: scores = [2b + 4c, a + 3b + 5c]
    positions, scores = kind.predict(np.array([[1.0, 0.0, 0.0], [-10.0, 1.0, 0.0]]))
    assert positions.tolist() == [1, 0]
    assert scores.tolist() == [1.0, 2.0]


def test_double_input_graph_is_accepted(tmp_path: Path) -> None:
    onnx_models.threshold_graph(tmp_path / "d.onnx", 0.1, dtype=np.float64)
    kind = OnnxKind.fit(training_set([1.0]), feature_params("d.onnx"), tmp_path)
    positions, _ = kind.predict(np.array([[0.1], [np.nextafter(0.1, 1.0)]]))
    assert positions.tolist() == [0, 1]


def test_predict_from_several_threads(tmp_path: Path) -> None:
    onnx_models.threshold_graph(tmp_path / "t.onnx", T)
    kind = OnnxKind.fit(training_set([1.0]), feature_params("t.onnx", batch=7), tmp_path)
    x = np.random.default_rng(3).uniform(0, 2048, (500, 1))
    expected = kind.predict(x)[0]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: kind.predict(x)[0], range(16)))
    for got in results:
        np.testing.assert_array_equal(got, expected)


def test_empty_batch(tmp_path: Path) -> None:
    onnx_models.threshold_graph(tmp_path / "t.onnx", T)
    kind = OnnxKind.fit(training_set([]), feature_params("t.onnx"), tmp_path)
    positions, scores = kind.predict(np.zeros((0, 1)))
    assert positions.shape == scores.shape == (0,)


# --- float32 and float64 exactness --------------------------------------------------------------


def uint16_means(n: int, seed: int) -> np.ndarray:
    """Float64 values like tile means of uint16 data: half uniform, half means of 37 pixels."""
    rng = np.random.default_rng(seed)
    uniform = rng.uniform(0.0, 65535.0, n // 2)
    means = rng.integers(0, 65536, (n - n // 2, 37), dtype=np.uint16).mean(axis=1)
    return np.concatenate([uniform, means])


def test_float32_graph_equals_threshold_rule_on_random_values(tmp_path: Path) -> None:
    t = 32768.25  # near the centre of the means; exactly representable in float32
    assert float(np.float32(t)) == t
    onnx_models.threshold_graph(tmp_path / "t.onnx", t)
    kind = OnnxKind.fit(training_set([1.0]), feature_params("t.onnx"), tmp_path)
    x = uint16_means(1000, seed=20240601)
    assert 200 < int((x > t).sum()) < 800  # both classes well represented
    positions, _ = kind.predict(x[:, None])
    np.testing.assert_array_equal(positions, (x > t).astype(np.int64))


def test_float32_graph_rounds_values_within_half_an_ulp_of_the_threshold(tmp_path: Path) -> None:
    """The documented limit: float32(x) == t for x just above t, so the tie goes to 'dark'."""
    onnx_models.threshold_graph(tmp_path / "t.onnx", T)
    kind = OnnxKind.fit(training_set([1.0]), feature_params("t.onnx"), tmp_path)
    just_above = np.nextafter(T, np.inf)
    assert just_above > T and np.float32(just_above) == np.float32(T)
    x = np.array([[just_above], [T], [float(np.nextafter(np.float32(T), np.float32(np.inf)))]])
    positions, _ = kind.predict(x)
    assert positions.tolist() == [0, 0, 1]  # float32(x) > t, not x > t
    np.testing.assert_array_equal(positions, (x[:, 0].astype(np.float32) > T).astype(np.int64))


def test_float64_graph_equals_threshold_rule_bit_for_bit(tmp_path: Path) -> None:
    t = 32767.3  # not representable in float32: only a double graph keeps it
    assert float(np.float32(t)) != t
    onnx_models.threshold_graph(tmp_path / "d.onnx", t, dtype=np.float64)
    kind = OnnxKind.fit(training_set([1.0]), feature_params("d.onnx", batch=100), tmp_path)
    edges = [t, np.nextafter(t, np.inf), np.nextafter(t, -np.inf), float(np.float32(t))]
    x = np.concatenate([uint16_means(1000, seed=7), edges])
    positions, _ = kind.predict(x[:, None])
    np.testing.assert_array_equal(positions, (x > t).astype(np.int64))
    assert positions[-4:].tolist() == [0, 1, 0, int(float(np.float32(t)) > t)]


# --- documents, paths, pinning ------------------------------------------------------------------


def test_document_round_trips(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    onnx_models.threshold_graph(tmp_path / "models" / "t.onnx", T)
    params = feature_params(tmp_path / "models" / "t.onnx", batch=32)  # absolute, under root
    kind = OnnxKind.fit(training_set([1.0]), params, tmp_path)
    doc = kind.to_dict()
    assert doc == {
        "path": "models/t.onnx",
        "sha256": kind.sha256,
        "input": "features",
        "features": ["mean_intensity"],
        "classes": ["dark", "bright"],
        "batch": 32,
        "bands": None,
        "size": None,
        "opset": onnx_models.OPSET,
        "input_name": "features",
        "output_name": "scores",
    }
    assert kind.details() == {
        "path": "models/t.onnx",
        "sha256": kind.sha256,
        "input": "features",
        "features": ["mean_intensity"],
        "classes": ["dark", "bright"],
    }
    text = json.dumps(doc, sort_keys=True)
    again = OnnxKind.from_dict(json.loads(text), "model.json", tmp_path)
    assert json.dumps(again.to_dict(), sort_keys=True) == text
    x = np.array([[1000.0], [2000.0]])
    np.testing.assert_array_equal(again.predict(x)[0], kind.predict(x)[0])


def test_pixel_document_round_trips(tmp_path: Path) -> None:
    onnx_models.pixel_mean_graph(tmp_path / "p.onnx", bands=2, size=3, threshold=10.0)
    kind = OnnxKind.fit(training_set([1.0]), pixel_params("p.onnx", bands=2), tmp_path)
    again = OnnxKind.from_dict(kind.to_dict(), "model.json", tmp_path)
    assert again.to_dict() == kind.to_dict()
    assert again.input == "pixels" and again.to_dict()["features"] == []


def test_path_outside_root_is_stored_relative(tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    (tmp_path / "elsewhere").mkdir()
    onnx_models.threshold_graph(tmp_path / "elsewhere" / "t.onnx", T)
    params = feature_params(tmp_path / "elsewhere" / "t.onnx")
    kind = OnnxKind.fit(training_set([1.0]), params, tmp_path / "repo")
    assert kind.to_dict()["path"] == "../elsewhere/t.onnx"
    assert OnnxKind.from_dict(kind.to_dict(), "m.json", tmp_path / "repo").file == kind.file


def test_moved_project_resolves_against_the_new_root(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    onnx_models.threshold_graph(tmp_path / "a" / "t.onnx", T)
    doc = OnnxKind.fit(training_set([1.0]), feature_params("t.onnx"), tmp_path / "a").to_dict()
    (tmp_path / "a").rename(tmp_path / "b")
    kind = OnnxKind.from_dict(doc, "m.json", tmp_path / "b")
    assert kind.file == tmp_path / "b" / "t.onnx"


def test_relative_path_without_root_is_refused(tmp_path: Path) -> None:
    onnx_models.threshold_graph(tmp_path / "t.onnx", T)
    doc = OnnxKind.fit(training_set([1.0]), feature_params("t.onnx"), tmp_path).to_dict()
    with pytest.raises(ModelError) as err:
        OnnxKind.from_dict(doc, "runs/model.json", None)
    assert str(err.value) == (
        "runs/model.json: onnx path 't.onnx' is relative and no root was given; expected a root "
        "directory to resolve it against"
    )


def flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_tampered_file_is_refused_by_from_dict(tmp_path: Path) -> None:
    path = onnx_models.threshold_graph(tmp_path / "t.onnx", T)
    kind = OnnxKind.fit(training_set([1.0]), feature_params("t.onnx"), tmp_path)
    pinned = kind.sha256
    flip_one_byte(path)
    actual = onnx_kind.sha256_bytes(path.read_bytes())
    with pytest.raises(ModelError) as err:
        OnnxKind.from_dict(kind.to_dict(), "model.json", tmp_path)
    assert str(err.value) == f"{path}: sha256 is {actual}; the model pins {pinned}"


def test_tampered_file_is_refused_when_a_new_process_first_predicts(
    tmp_path: Path, fresh_cache: dict
) -> None:
    path = onnx_models.threshold_graph(tmp_path / "t.onnx", T)
    kind = OnnxKind.fit(training_set([1.0]), feature_params("t.onnx"), tmp_path)
    fresh_cache.clear()  # as in a worker that has not loaded the model yet
    flip_one_byte(path)
    with pytest.raises(ModelError, match="sha256 is .*; the model pins " + kind.sha256):
        kind.predict(np.array([[1.0]]))


def test_malformed_documents_name_the_source(tmp_path: Path) -> None:
    onnx_models.threshold_graph(tmp_path / "t.onnx", T)
    doc = OnnxKind.fit(training_set([1.0]), feature_params("t.onnx"), tmp_path).to_dict()
    for broken, phrase in [
        ({k: v for k, v in doc.items() if k != "sha256"}, "lacks ['sha256']"),
        ({**doc, "sha256": "abc"}, "onnx sha256 is 'abc'; expected 64 hex digits"),
        ({**doc, "input_name": "x"}, "onnx input_name is 'x'; the file"),
        ({**doc, "input": "tiles"}, "train.onnx.input is 'tiles'"),
    ]:
        with pytest.raises(ModelError) as err:
            OnnxKind.from_dict(broken, "model.json", tmp_path)
        assert str(err.value).startswith("model.json: ")
        assert phrase in str(err.value)


# --- the session cache --------------------------------------------------------------------------


def test_one_session_per_file_hash(tmp_path: Path, fresh_cache: dict) -> None:
    a = onnx_models.threshold_graph(tmp_path / "a.onnx", T)
    (tmp_path / "copy.onnx").write_bytes(a.read_bytes())
    onnx_models.threshold_graph(tmp_path / "b.onnx", 2048.0)
    train = training_set([1.0])
    first = OnnxKind.fit(train, feature_params("a.onnx"), tmp_path)
    second = OnnxKind.fit(train, feature_params("a.onnx", batch=8), tmp_path)
    copy = OnnxKind.fit(train, feature_params("copy.onnx"), tmp_path)
    loaded = OnnxKind.from_dict(first.to_dict(), "m.json", tmp_path)
    other = OnnxKind.fit(train, feature_params("b.onnx"), tmp_path)
    assert first.session is second.session is copy.session is loaded.session
    assert other.session is not first.session
    assert len(fresh_cache) == 2
    assert {sha for _, sha in fresh_cache} == {first.sha256, other.sha256}


def test_pickled_kind_loads_its_session_lazily(tmp_path: Path, fresh_cache: dict) -> None:
    onnx_models.threshold_graph(tmp_path / "t.onnx", T)
    kind = OnnxKind.fit(training_set([1.0]), feature_params("t.onnx"), tmp_path)
    clone = pickle.loads(pickle.dumps(kind))
    fresh_cache.clear()
    assert clone.predict(np.array([[2000.0]]))[0].tolist() == [1]
    assert len(fresh_cache) == 1
    assert clone.session is kind.session


# --- errors -------------------------------------------------------------------------------------

Build = Callable[[Path], Any]

BAD: dict[str, tuple[Build, dict[str, Any], str]] = {
    "missing": (lambda p: None, {}, "no such file; expected the ONNX model train.onnx.path names"),
    "not onnx": (onnx_models.not_onnx, {}, "does not load as ONNX"),
    "text file": (lambda p: p.write_text("hello\n"), {}, "does not load as ONNX"),
    "two inputs": (
        onnx_models.two_input_graph,
        {},
        "declares 2 inputs ['a', 'b']; expected exactly one (features)",
    ),
    "int64 input": (
        onnx_models.int64_input_graph,
        {},
        "input 'features' is tensor(int64); expected tensor(float) (float32) or tensor(double)",
    ),
    "feature count": (
        onnx_models.wide_features_graph,
        {},
        "input 'features' has shape (N, 3); expected (N, 1), one column per train.onnx.features",
    ),
    "three classes": (
        onnx_models.three_class_graph,
        {},
        "output 'scores' has shape (N, 3); expected (N, 2), one score per class of "
        "['dark', 'bright']",
    ),
    "rank 1 output": (
        onnx_models.rank1_output_graph,
        {},
        "output 'scores' has shape (N); expected (N, 2)",
    ),
    "fixed batch": (
        lambda p: onnx_models.threshold_graph(p, T, batch_dim=1),
        {},
        "has shape (1, 1); expected a dynamic batch dimension (N)",
    ),
    "unknown input": (
        lambda p: onnx_models.threshold_graph(p, T),
        {"input": "tiles"},
        "train.onnx.input is 'tiles'; expected 'features' or 'pixels'",
    ),
    "no features": (
        lambda p: onnx_models.threshold_graph(p, T),
        {"features": []},
        "train.onnx.features is []; expected the graph's feature columns",
    ),
    "feature not in training set": (
        lambda p: onnx_models.threshold_graph(p, T),
        {"features": ["band_9_mean"]},
        "train.onnx.features lists ['band_9_mean'], which the training set lacks",
    ),
    "classes differ": (
        lambda p: onnx_models.threshold_graph(p, T),
        {"classes": ["bright", "dark"]},
        "train.onnx.classes are ['bright', 'dark']; expected the model's classes",
    ),
    "pixels rank": (
        lambda p: onnx_models.threshold_graph(p, T),
        {"input": "pixels", "features": None, "batch": 64},
        "input 'features' has shape (N, 1); expected rank 4 (N, bands, size, size)",
    ),
    "pixels bands": (
        lambda p: onnx_models.pixel_mean_graph(p, 3, 4, 10.0),
        {"input": "pixels", "features": None, "batch": 64, "bands": 4},
        "input 'pixels' has shape (N, 3, 4, 4), bands 3; expected train.onnx.bands 4",
    ),
    "pixels size": (
        lambda p: onnx_models.pixel_mean_graph(p, 3, 4, 10.0),
        {"input": "pixels", "features": None, "batch": 64, "size": 8},
        "input 'pixels' has shape (N, 3, 4, 4), size 4; expected train.onnx.size 8",
    ),
    "pixels small batch": (
        lambda p: onnx_models.pixel_mean_graph(p, 3, 4, 10.0),
        {"input": "pixels", "features": None, "batch": 16},
        "train.onnx.batch is 16; expected an integer >= 64 for pixels input",
    ),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_model_gives_one_line_error_naming_the_file(tmp_path: Path, case: str) -> None:
    build, overrides, phrase = BAD[case]
    path = tmp_path / "bad.onnx"
    build(path)
    params = {**feature_params("bad.onnx"), **overrides}
    params = {k: v for k, v in params.items() if v is not None}
    with pytest.raises(ModelError) as err:
        OnnxKind.fit(training_set([1.0, 2000.0]), params, tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert phrase in message


def test_unknown_param_is_refused(tmp_path: Path) -> None:
    onnx_models.threshold_graph(tmp_path / "t.onnx", T)
    with pytest.raises(ModelError, match=r"train.onnx: unknown keys \['batchsize'\]"):
        OnnxKind.fit(training_set([1.0]), feature_params("t.onnx", batchsize=3), tmp_path)


def test_wrong_feature_width_at_predict(tmp_path: Path) -> None:
    path = onnx_models.threshold_graph(tmp_path / "t.onnx", T)
    kind = OnnxKind.fit(training_set([1.0]), feature_params("t.onnx"), tmp_path)
    with pytest.raises(ModelError) as err:
        kind.predict(np.zeros((3, 2)))
    assert str(err.value) == f"{path}: features of shape (3, 2) given; expected (N, 1)"


def test_nan_scores_are_an_error(tmp_path: Path) -> None:
    path = onnx_models.threshold_graph(tmp_path / "t.onnx", T)
    kind = OnnxKind.fit(training_set([1.0]), feature_params("t.onnx"), tmp_path)
    with pytest.raises(ModelError) as err:
        kind.predict(np.array([[1.0], [np.nan]]))
    assert str(err.value) == (
        f"{path}: output 'scores' is NaN for 1 of 2 tiles; expected a number per class"
    )
