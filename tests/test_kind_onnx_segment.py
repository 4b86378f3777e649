"""The ``onnx`` kind with ``output: pixels``: segmentation graphs, normalisation, checks."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest
from onnx import TensorProto

from satpipe.core.errors import ModelError
from satpipe.core.params import OnnxParams, TrainParams
from satpipe.models.kinds import KINDS, onnx_graph
from satpipe.models.kinds.base import PixelSample, TrainingSet
from satpipe.models.kinds.onnx import OnnxKind
from tests import onnx_models

PIXELS = TrainParams().pixels.model_dump()  # water, vegetation, soil, cloud
NAMES = tuple(c["name"] for c in PIXELS["classes"])
THREE = {"classes": PIXELS["classes"][:3], "samples": 100}
SCENE_BANDS = ("B02", "B03", "B04", "B08")


def training(classes: tuple[str, ...] = NAMES, bands: tuple[str, ...] | None = None) -> TrainingSet:
    """One training tile; with ``bands``, a labelled pixel sample from a scene with those bands."""
    sample = None
    if bands is not None:
        sample = PixelSample(np.zeros((1, len(bands))), np.zeros(1, np.int64), bands)
    return TrainingSet(np.zeros((1, 2)), ("mean_intensity", "x"), (None,), classes, sample)


def seg_params(path: str | Path, **extra: Any) -> dict[str, Any]:
    return {"path": str(path), "input": "pixels", "output": "pixels", "batch": 4,
            "pixels": PIXELS, **extra}  # fmt: skip


def windows(n: int, bands: int = 4, side: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 3000, (n, bands, side, side)).astype(np.float32)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z.astype(np.float64) - z.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def fresh_cache(monkeypatch: pytest.MonkeyPatch) -> dict:
    cache: dict = {}
    monkeypatch.setattr(onnx_graph, "_SESSIONS", cache)
    return cache


# --- scores -------------------------------------------------------------------------------------


def test_probabilities_graph_gives_probabilities_as_is(tmp_path: Path) -> None:
    onnx_models.segment_graph(tmp_path / "s.onnx", 4, 4, softmax=True)
    kind = OnnxKind.fit(training(), seg_params("s.onnx", scale=[1e-4] * 4), tmp_path)
    assert kind.output == "pixels" and kind.input == "pixels" and kind.classes == NAMES
    x = windows(3)
    p = kind.scores(x)
    assert p.shape == (3, 4, 16, 16) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    (raw,) = kind.session.run(None, {"pixels": (x.astype(np.float64) * 1e-4).astype(np.float32)})
    np.testing.assert_array_equal(p, raw)


def test_logits_are_softmaxed_deterministically(tmp_path: Path) -> None:
    onnx_models.segment_graph(tmp_path / "s.onnx", 4, 4)
    kind = OnnxKind.fit(training(), seg_params("s.onnx", scores="logits"), tmp_path)
    x = windows(2) / 1000
    (raw,) = kind.session.run(None, {"pixels": x})
    p = kind.scores(x)
    np.testing.assert_array_equal(p, softmax(raw))
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    assert kind.scores(x).tobytes() == p.tobytes()


def test_normalisation_is_scale_offset_then_mean_std_and_invalid_pixels_are_zero(
    tmp_path: Path,
) -> None:
    onnx_models.identity_pixels_graph(tmp_path / "i.onnx", 3)
    # a blank window normalises to (0.5, 0.25, 0.25): sums to 1, as declared probabilities must
    norm = {"scale": [2.0, 3.0, 4.0], "offset": [1.5, 2.0, 2.5], "mean": [0.5, 1.0, 0.5],
            "std": [2.0, 4.0, 8.0]}  # fmt: skip
    kind = OnnxKind.fit(training(NAMES[:3]), seg_params("i.onnx", pixels=THREE, **norm), tmp_path)
    x = windows(2, bands=3, side=5)
    x[1, 2, 3, 4] = np.nan
    col = {k: np.array(v).reshape(1, 3, 1, 1) for k, v in norm.items()}
    expected = ((x.astype(np.float64) * col["scale"] + col["offset"]) - col["mean"]) / col["std"]
    expected[1, :, 3, 4] = 0.0
    np.testing.assert_array_equal(kind.scores(x), expected.astype(np.float32))


def test_fixed_window_and_batch_come_from_the_graph(tmp_path: Path) -> None:
    onnx_models.segment_graph(tmp_path / "w.onnx", 4, 4, size=64, batch_dim=2, softmax=True)
    kind = OnnxKind.fit(training(), seg_params("w.onnx", size=64), tmp_path)
    assert (kind.window, kind.batch) == (64, 2)
    x = windows(3, side=64)
    p = kind.scores(x)  # runs of 2, the last padded
    assert p.shape == (3, 4, 64, 64)
    np.testing.assert_array_equal(p[2:], kind.scores(np.concatenate([x[2:], x[:1]]))[:1])
    onnx_models.segment_graph(tmp_path / "d.onnx", 4, 4, softmax=True)
    assert OnnxKind.fit(training(), seg_params("d.onnx"), tmp_path).window is None
    declared = OnnxKind.fit(training(), seg_params("d.onnx", size=128), tmp_path)
    assert (declared.window, declared.batch) == (128, None)


def test_bands_by_name_common_name_or_number(tmp_path: Path) -> None:
    onnx_models.segment_graph(tmp_path / "s.onnx", 3, 4, softmax=True)
    kind = OnnxKind.fit(training(), seg_params("s.onnx", bands=["nir", "B03", 1]), tmp_path)
    assert kind.band_indices(["B02", "B03", "B04", "B8"], 4, "scene.tif") == (3, 1, 0)
    with pytest.raises(ModelError, match=r"^scene.tif: the model reads band 'nir'") as err:
        kind.band_indices(["B02", "B03", "B04"], 3, "scene.tif")
    assert "\n" not in str(err.value) and "'B04'" in str(err.value)
    counted = OnnxKind.fit(training(), seg_params("s.onnx", bands=3), tmp_path)
    assert counted.band_indices([None] * 5, 5, "scene.tif") == (0, 1, 2)
    first = OnnxKind.fit(training(), seg_params("s.onnx"), tmp_path)  # null: the graph's C
    assert first.band_indices([None] * 3, 3, "scene.tif") == (0, 1, 2)


def test_predict_labels_tiles_by_their_valid_pixels_majority(tmp_path: Path) -> None:
    onnx_models.identity_pixels_graph(tmp_path / "i.onnx", 3)
    params = seg_params("i.onnx", pixels=THREE, scores="logits", bands=["nir", "green", "blue"])
    kind = OnnxKind.fit(training(NAMES[:3], SCENE_BANDS), params, tmp_path)
    assert kind.to_dict()["band_indices"] == [3, 1, 0]
    x = np.zeros((3, 4, 4, 4), dtype=np.float32)
    x[0, 3] = 5.0  # nir largest everywhere: class 0
    x[1, 1, :3] = 5.0  # green largest in 12 of 16 pixels: class 1 ...
    x[1, 0, 3] = 9.0  # ... blue in the other 4
    x[2, 0] = 5.0  # blue largest, but ...
    x[2, :, :, :3] = np.nan  # ... only the last column is valid
    x[2, 3, :, 3] = 9.0  # and there nir wins
    positions, shares = kind.predict(x)
    assert positions.tolist() == [0, 1, 0]
    assert shares.tolist() == [1.0, 0.75, 1.0]
    empty = kind.predict(np.zeros((0, 4, 4, 4), np.float32))
    assert empty[0].shape == (0,) and empty[1].shape == (0,)


def test_named_bands_without_a_training_scene_cannot_pick_tile_bands(tmp_path: Path) -> None:
    onnx_models.identity_pixels_graph(tmp_path / "i.onnx", 3)
    params = seg_params("i.onnx", pixels=THREE, scores="logits", bands=["nir", "green", "blue"])
    kind = OnnxKind.fit(training(NAMES[:3]), params, tmp_path)
    assert kind.to_dict()["band_indices"] is None
    assert kind.band_indices(SCENE_BANDS, 4, "s.tif") == (3, 1, 0)  # scenes still resolve them
    with pytest.raises(ModelError, match="bands None read"):
        kind.predict(np.zeros((1, 4, 4, 4), np.float32))


def test_params_model_dump_fits_and_provenance_is_pinned(tmp_path: Path) -> None:
    onnx_models.segment_graph(tmp_path / "s.onnx", 4, 4)
    dump = OnnxParams(path="s.onnx", input="pixels", output="pixels", scores="logits").model_dump()
    assert OnnxKind.output_for({**dump, "pixels": PIXELS}) == "pixels"
    assert OnnxKind.output_for({}) == "tile"
    kind = OnnxKind.fit(training(), {**dump, "pixels": PIXELS}, tmp_path)
    assert (kind.colours, kind.label_codes) == (
        ("#1f78b4", "#33a02c", "#b15928", "#f0f0f0"),
        ((1,), (2,), (3,), (4,)),
    )
    assert kind.provenance() == {
        "onnxruntime": onnxruntime.__version__,
        "provider": "CPUExecutionProvider",
        "graph_optimization_level": "ORT_ENABLE_ALL",
        "intra_op_num_threads": "1",
        "inter_op_num_threads": "1",
        "execution_mode": "ORT_SEQUENTIAL",
        "use_deterministic_compute": "true",
    }
    assert isinstance(kind, KINDS["onnx"])


# --- documents and pinning ----------------------------------------------------------------------


def test_document_round_trip_keeps_everything(tmp_path: Path) -> None:
    onnx_models.segment_graph(tmp_path / "s.onnx", 3, 4, size=32, batch_dim=2)
    norm = {"scale": [1e-4] * 3, "offset": [-0.1] * 3, "mean": [0.1, 0.2, 0.3], "std": [1, 2, 3]}
    params = seg_params("s.onnx", scores="logits", bands=["red", "B03", 1], **norm)
    kind = OnnxKind.fit(training(bands=SCENE_BANDS), params, tmp_path)
    doc = kind.to_dict()
    keys = ("output", "provider", "bands", "scores", "size", "graph_batch")
    assert {k: doc[k] for k in keys} == {
        "output": "pixels", "provider": "cpu", "bands": ["red", "B03", 1], "scores": "logits",
        "size": 32, "graph_batch": 2,
    }  # fmt: skip
    assert doc["band_indices"] == [2, 1, 0] and doc["pixel_classes"] == PIXELS["classes"]
    assert doc["std"] == [1.0, 2.0, 3.0] and doc["classes"] == list(NAMES)
    text = json.dumps(doc, sort_keys=True)
    again = OnnxKind.from_dict(json.loads(text), "model.json", tmp_path)
    assert json.dumps(again.to_dict(), sort_keys=True) == text
    assert (again.window, again.batch, again.colours) == (kind.window, kind.batch, kind.colours)
    x = windows(2, bands=3, side=32)
    assert again.scores(x).tobytes() == kind.scores(x).tobytes()
    assert again.details()["output"] == "pixels"
    for key, value in (("graph_batch", None), ("pixel_classes", "x"), ("band_indices", [-1])):
        with pytest.raises(ModelError, match=r"^model.json: ") as err:
            OnnxKind.from_dict({**doc, key: value}, "model.json", tmp_path)
        assert "\n" not in str(err.value)
    with pytest.raises(ModelError, match=r"window 32; expected train.onnx.size 64"):
        OnnxKind.from_dict({**doc, "size": 64}, "model.json", tmp_path)


def test_changed_or_truncated_file_is_refused(tmp_path: Path, fresh_cache: dict) -> None:
    path = onnx_models.segment_graph(tmp_path / "s.onnx", 4, 4, softmax=True)
    kind = OnnxKind.fit(training(), seg_params("s.onnx"), tmp_path)
    doc = kind.to_dict()
    path.write_bytes(path.read_bytes()[:-40])
    fresh_cache.clear()  # as in a new process
    for attempt in (
        lambda: OnnxKind.from_dict(doc, "model.json", tmp_path),
        lambda: kind.scores(windows(1)),
        lambda: kind.predict(windows(1)),
    ):
        with pytest.raises(ModelError, match=rf"^{path}: sha256 is [0-9a-f]{{64}}; the model pins"):
            attempt()
    with pytest.raises(ModelError, match=rf"^{path}: does not load as ONNX"):
        OnnxKind.fit(training(), seg_params("s.onnx"), tmp_path)


def test_tile_output_keeps_its_document_and_refuses_normalisation(tmp_path: Path) -> None:
    onnx_models.pixel_mean_graph(tmp_path / "p.onnx", bands=2, size=3, threshold=10.0)
    dump = OnnxParams(path="p.onnx", input="pixels", classes=["dark", "bright"], batch=64)
    params = {**dump.model_dump(), "pixels": PIXELS}
    kind = OnnxKind.fit(training(("dark", "bright")), params, tmp_path)
    assert kind.output == "tile" and kind.window is None and kind.colours == ()
    assert "provider" not in kind.to_dict() and "output" not in kind.to_dict()
    with pytest.raises(ModelError, match="output is 'tile'; expected 'pixels'"):
        kind.scores(np.zeros((1, 2, 3, 3), np.float32))
    with pytest.raises(ModelError, match=r"train.onnx.mean is \[1.0\] for tile output"):
        OnnxKind.fit(training(("dark", "bright")), {**params, "mean": [1.0]}, tmp_path)


# --- bad models and params: one line naming the file --------------------------------------------

Build = Callable[[Path], Any]

BAD: dict[str, tuple[Build, dict[str, Any], str]] = {
    "output (N, K)": (
        lambda p: onnx_models.pooled_output_graph(p, 4, 4),
        {},
        "output 'scores' has shape (N, 4); expected (N, 4, H, W), one score per class of "
        "['water', 'vegetation', 'soil', 'cloud']",
    ),
    "wrong K": (
        lambda p: onnx_models.segment_graph(p, 4, 3),
        {},
        "output 'scores' has shape (N, 3, height, width); expected (N, 4, H, W)",
    ),
    "band count": (
        lambda p: onnx_models.segment_graph(p, 4, 4),
        {"bands": ["blue", "green", "red"]},
        "input 'pixels' has shape (N, 4, height, width), 4 bands; expected 3, one per band of "
        "train.onnx.bands ['blue', 'green', 'red']",
    ),
    "band count as a number": (
        lambda p: onnx_models.segment_graph(p, 4, 4),
        {"bands": 3},
        "4 bands; expected 3",
    ),
    "dynamic bands, none declared": (
        lambda p: onnx_models.segment_graph(p, None, 4),
        {},
        "a dynamic band count; expected train.onnx.bands to say which bands it reads",
    ),
    "scale length": (
        lambda p: onnx_models.segment_graph(p, 4, 4),
        {"scale": [1e-4, 1e-4]},
        "train.onnx.scale has 2 values [0.0001, 0.0001]; expected 4, one per band read",
    ),
    "offset length": (lambda p: onnx_models.segment_graph(p, 4, 4), {"offset": [0.0]}, "offset"),
    "mean length": (lambda p: onnx_models.segment_graph(p, 4, 4), {"mean": [0.0] * 5}, "has 5"),
    "std length": (lambda p: onnx_models.segment_graph(p, 4, 4), {"std": [1.0] * 3}, "std has 3"),
    "std zero": (
        lambda p: onnx_models.segment_graph(p, 4, 4),
        {"std": [1.0, 0.0, 1.0, 1.0]},
        "train.onnx.std is [1.0, 0.0, 1.0, 1.0]; expected a list of positive numbers",
    ),
    "fixed window vs size": (
        lambda p: onnx_models.segment_graph(p, 4, 4, size=64),
        {"size": 256},
        "input 'pixels' has shape (N, 4, 64, 64), window 64; expected train.onnx.size 256",
    ),
    "int64 input": (
        lambda p: onnx_models.segment_graph(p, 4, 4, elem=TensorProto.INT64),
        {},
        "input 'pixels' is tensor(int64); expected tensor(float) (float32) or tensor(double)",
    ),
    "logits declared probabilities": (
        lambda p: onnx_models.segment_graph(p, 4, 4),
        {"scores": "probabilities"},
        "train.onnx.scores is 'probabilities' but a blank window's scores sum to",
    ),
    "unknown output": (
        lambda p: onnx_models.segment_graph(p, 4, 4),
        {"output": "mask"},
        "train.onnx.output is 'mask'; expected 'tile' or 'pixels'",
    ),
    "unknown scores": (
        lambda p: onnx_models.segment_graph(p, 4, 4),
        {"scores": "softmax"},
        "train.onnx.scores is 'softmax'; expected 'logits' or 'probabilities'",
    ),
    "classes for output pixels": (
        lambda p: onnx_models.segment_graph(p, 4, 4),
        {"classes": list(NAMES)},
        "train.onnx.classes is ['water', 'vegetation', 'soil', 'cloud'] for output pixels",
    ),
    "no pixel classes": (
        lambda p: onnx_models.segment_graph(p, 4, 4),
        {"pixels": None},
        "train.pixels is None; expected its classes",
    ),
    "training scene lacks a band": (
        lambda p: onnx_models.segment_graph(p, 2, 4, softmax=True),
        {"bands": ["swir16", "nir"]},
        "the training scene: the model reads band 'swir16' (['swir16', 'nir']); the scene has 4 "
        "bands: ['B02', 'B03', 'B04', 'B08']",
    ),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_segmentation_model_gives_one_line_error_naming_the_file(
    tmp_path: Path, case: str
) -> None:
    build, overrides, phrase = BAD[case]
    path = tmp_path / "bad.onnx"
    build(path)
    with pytest.raises(ModelError) as err:
        OnnxKind.fit(training(bands=SCENE_BANDS), seg_params("bad.onnx", **overrides), tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert phrase in message


def test_model_classes_must_be_the_pixel_classes(tmp_path: Path) -> None:
    path = onnx_models.segment_graph(tmp_path / "s.onnx", 4, 4, softmax=True)
    with pytest.raises(ModelError, match=rf"^{path}: train.pixels.classes are \['water'"):
        OnnxKind.fit(training(("dark", "bright")), seg_params("s.onnx"), tmp_path)


def test_wrong_window_at_run_time_is_one_line(tmp_path: Path) -> None:
    path = onnx_models.segment_graph(tmp_path / "w.onnx", 4, 4, size=64, softmax=True)
    kind = OnnxKind.fit(training(), seg_params("w.onnx"), tmp_path)
    for x in (windows(1, side=32), windows(1, bands=3, side=64)):
        with pytest.raises(ModelError, match=rf"^{path}: ") as err:
            kind.scores(x)
        assert "\n" not in str(err.value)


def test_cuda_provider_is_refused_cleanly_without_the_gpu_build(tmp_path: Path) -> None:
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("the GPU build of onnxruntime is installed here")
    path = onnx_models.segment_graph(tmp_path / "s.onnx", 4, 4, softmax=True)
    with pytest.raises(ModelError) as err:
        OnnxKind.fit(training(), seg_params("s.onnx", provider="cuda"), tmp_path)
    message = str(err.value)
    assert message.startswith(f"{path}: train.onnx.provider is 'cuda' but onnxruntime ")
    assert "expected the GPU build" in message and "\n" not in message


def test_stages_compose_to_scores_bit_for_bit_in_any_thread(tmp_path: Path) -> None:
    # finish(run(prepare(x))) is scores(x): fixed batch (runs of 2, the last padded),
    # normalisation, NaN pixels, logits, no windows; each stage may run in another thread.
    from concurrent.futures import ThreadPoolExecutor

    onnx_models.segment_graph(tmp_path / "w.onnx", 4, 4, size=32, batch_dim=2)
    norm = {"scale": [1e-4] * 4, "offset": [-0.1] * 4, "mean": [0.03, 0.05, 0.06, 0.12],
            "std": [0.05, 0.06, 0.07, 0.09]}  # fmt: skip
    params = seg_params("w.onnx", size=32, scores="logits", **norm)
    kind = OnnxKind.fit(training(), params, tmp_path)
    prepare, run, finish = kind.stages()
    x = windows(3, side=32)
    x[1, 2, 4, 5] = np.nan
    p = kind.scores(x)
    assert p.dtype == np.float32 and finish(run(prepare(x))).tobytes() == p.tobytes()
    col = {k: np.array(v).reshape(1, 4, 1, 1) for k, v in norm.items()}
    feed = ((x[:2].astype(np.float64) * col["scale"] + col["offset"]) - col["mean"]) / col["std"]
    feed[1, :, 4, 5] = 0.0
    (raw,) = kind.session.run(None, {"pixels": feed.astype(np.float32)})
    np.testing.assert_array_equal(p[:2], softmax(raw))
    with ThreadPoolExecutor(2) as pool:
        batches = [windows(2, side=32, seed=s) for s in range(6)]
        fed = list(pool.map(prepare, batches))
        done = list(pool.map(finish, [run(f) for f in fed]))
    for b, q in zip(batches, done, strict=True):
        assert q.tobytes() == kind.scores(b).tobytes()
    empty = finish(run(prepare(x[:0])))
    assert empty.shape == (0, 4, 32, 32) and empty.tobytes() == kind.scores(x[:0]).tobytes()
    with pytest.raises(ModelError, match="expected \\(N, 4, H, W\\)"):
        prepare(x[:, :3])
