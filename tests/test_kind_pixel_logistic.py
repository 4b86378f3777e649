"""The pixel_logistic kind and its pixel sample: exact fits, per-pixel classes, refusals.

A small synthetic scene (odd size, all four surfaces) is cut into 64-pixel tiles split half and
half by the tile-id hash; the kind is fitted on a sample of the training half and judged on the
other half's pixels. On the real Sen1Floods11 chip (skipped where ``../shared`` lacks it) its
water IoU on the held-out half must reach 0.78.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from satpipe.core.errors import ModelError
from satpipe.core.params import TrainParams
from satpipe.core.records import TileWindow
from satpipe.models import model as model_lib
from satpipe.models.kinds import KINDS
from satpipe.models.kinds.base import PixelSample, TrainingSet
from satpipe.models.kinds.pixel_logistic import PixelLogisticKind
from satpipe.models.kinds.pixels import PixelClasses
from satpipe.models.pixel_sample import SceneSource, check_label_codes, draw_sample
from satpipe.models.training import kind_params, train
from satpipe.scenes.synthetic import write_scene
from satpipe.tiles.features import FeatureSpec
from satpipe.tiles.index import build_index, is_training_tile
from tests.records import scene_record, tile_entry

SEN1FLOODS11 = Path(__file__).resolve().parents[2] / "shared/data/labelled/sen1floods11"
WIDTH, HEIGHT, SEED = 513, 451, 1  # seed 1 has water, vegetation, soil and cloud at this size
TILE = 64


def grid(scene: str, width: int, height: int, seed: int = 0) -> tuple[list, list]:
    """``(training, held-out)`` ``(tile id, window)`` pairs of a 64-pixel grid, hash-split."""
    parts: tuple[list, list] = ([], [])
    for r in range(0, height, TILE):
        for c in range(0, width, TILE):
            tid = f"{scene}/r{r:06d}_c{c:06d}"
            window = TileWindow(r, c, min(TILE, width - c), min(TILE, height - r))
            parts[0 if is_training_tile(tid, "both", seed, 0.5) else 1].append((tid, window))
    return parts


def pixel_params(**section: Any) -> dict[str, Any]:
    """``train.pixel_logistic`` (defaults, overridden by ``section``) plus ``pixels``."""
    tp = TrainParams(model="pixel_logistic")
    return {**kind_params(tp), **section}


def fit(sample: PixelSample, **section: Any) -> PixelLogisticKind:
    """The kind fitted on ``sample``."""
    params = pixel_params(**section)
    names = tuple(c["name"] for c in params["pixels"]["classes"])
    data = TrainingSet(np.zeros((1, 1)), ("mean_intensity",), (None,), names, sample)
    return PixelLogisticKind.fit(data, params, Path("."))


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic scene ``syn.tif`` and its labels ``syn.labels.tif``."""
    d = tmp_path_factory.mktemp("scene")
    counts = write_scene(
        d / "syn.tif", width=WIDTH, height=HEIGHT, seed=SEED, labels_path=d / "syn.labels.tif"
    )
    assert all(counts[code] > 1000 for code in (1, 2, 3, 4))
    return d


@pytest.fixture(scope="module")
def sample(scene: Path) -> PixelSample:
    """5000 labelled pixels of the training tiles."""
    training, held = grid("syn", WIDTH, HEIGHT)
    src = SceneSource(
        "syn",
        scene / "syn.tif",
        scene / "syn.labels.tif",
        0,
        0,
        tuple(w for _, w in training),
        tuple(w for _, w in held),
    )
    classes = PixelClasses.from_params(pixel_params()["pixels"]["classes"])
    return draw_sample([src], classes, 5000, 0)


def held_out_pixels(scene: Path, name: str, invalid: int) -> tuple[np.ndarray, np.ndarray]:
    """The held-out tiles' valid pixels ``(B, P)`` and their label codes ``(P,)``."""
    with rasterio.open(scene / f"{name}.tif") as src:
        data = src.read().astype(np.float64)
        nodata = src.nodata
    with rasterio.open(scene / f"{name}.labels.tif") as src:
        labels = src.read(1).astype(np.int64)
    _, held = grid(name, data.shape[2], data.shape[1])
    mask = np.zeros(labels.shape, dtype=bool)
    for _, w in held:
        mask[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] = True
    mask &= labels != invalid
    if nodata is not None:
        mask &= np.all(data != nodata, axis=0)
    return data[:, mask], labels[mask]


def test_registered_and_declares_pixels() -> None:
    assert KINDS["pixel_logistic"] is PixelLogisticKind
    assert PixelLogisticKind.output_for({}) == "pixels"
    assert kind_params(TrainParams(model="pixel_logistic"))["pixels"]["samples"] == 20000
    assert "pixels" not in kind_params(TrainParams(model="logistic"))


def test_classifies_the_four_surfaces(scene: Path, sample: PixelSample) -> None:
    kind = fit(sample)
    values, codes = held_out_pixels(scene, "syn", 0)
    predicted = kind.classify(values)
    accuracy = float(np.mean(predicted == codes - 1))  # codes 1..4 are classes 0..3
    assert accuracy > 0.94
    assert set(np.unique(predicted).tolist()) == {0, 1, 2, 3}
    assert kind.to_dict()["training"]["labelled_pixels"] == 5000


def test_same_bytes_twice_and_for_any_row_order(sample: PixelSample) -> None:
    first = json.dumps(fit(sample).to_dict())
    assert json.dumps(fit(sample).to_dict()) == first
    order = np.random.default_rng(3).permutation(sample.classes.size)
    shuffled = PixelSample(sample.values[order], sample.classes[order], sample.bands)
    assert json.dumps(fit(shuffled).to_dict()) == first


def test_round_trip_scores_identically(sample: PixelSample) -> None:
    kind = fit(sample)
    again = PixelLogisticKind.from_dict(json.loads(json.dumps(kind.to_dict())), "model.json", None)
    x = np.random.default_rng(0).uniform(0, 9000, (2, 4, 33, 17)).astype(np.float32)
    x[0, 1, 3, 4] = np.nan
    a, b = kind.scores(x), again.scores(x)
    assert a.shape == (2, 4, 33, 17) and a.dtype == np.float32
    assert a.tobytes() == b.tobytes()
    assert np.isfinite(a).all()
    assert np.allclose(a.sum(axis=1), 1.0, atol=1e-6)
    positions, shares = kind.predict(x)
    assert positions.tolist() == again.predict(x)[0].tolist()
    assert (shares > 0).all()


def test_nan_pixels_do_not_vote() -> None:
    values = np.array([[100.0] * 50 + [5000.0] * 50, [100.0] * 50 + [5000.0] * 50])
    two = PixelSample(values.T, np.array([0] * 50 + [3] * 50), ("B02", "B03"))
    kind = fit(two, features=["bands"])
    x = np.full((1, 2, 4, 4), 5000.0, dtype=np.float32)
    x[0, :, :3, :] = np.nan  # three quarters invalid
    positions, shares = kind.predict(x)
    assert positions.tolist() == [3] and shares.tolist() == [1.0]


def test_band_selection_and_indices(sample: PixelSample) -> None:
    kind = fit(sample, features=["green", "B08", "ndwi"])
    assert kind.bands == ("B03", "B08")
    assert kind.details()["features"] == ["B03", "B08", "ndwi"]
    names = ["B08", "B03", "B02"]  # another scene, other order: found by name
    assert kind.band_indices(names, 3, "other.tif") == (1, 0)
    with pytest.raises(ModelError, match=r"other.tif: the model reads band 'B08'") as exc:
        kind.band_indices(["B02", "B03"], 2, "other.tif")
    assert "\n" not in str(exc.value)


def test_refuses_missing_bands(sample: PixelSample) -> None:
    with pytest.raises(ModelError, match=r"mndwi.*'swir16'.*'B02', 'B03', 'B04', 'B08'"):
        fit(sample, features=["bands", "mndwi"])
    with pytest.raises(ModelError, match=r"'B11'"):
        fit(sample, features=["B11"])
    with pytest.raises(ModelError, match=r"'B03' is listed twice"):
        fit(sample, features=["bands", "green"])
    with pytest.raises(ModelError, match=r"train.pixel_logistic.alpha: unknown key"):
        fit(sample, alpha=1)


def test_refuses_one_class() -> None:
    sample = PixelSample(np.ones((10, 2)), np.zeros(10, dtype=np.int64), ("B02", "B03"))
    with pytest.raises(ModelError, match=r"one class \(water, 10 pixels\)"):
        fit(sample, features=["bands"])


def test_refuses_unknown_label_codes() -> None:
    classes = PixelClasses.from_params(pixel_params()["pixels"]["classes"])
    labels = {"classes": {"bright": [4, 5]}, "codes": {"5": "snow"}, "nodata": 0}
    with pytest.raises(ModelError, match=r"label code 5 \('snow', class 'bright'.*maps to no"):
        check_label_codes("s1", labels, classes)
    check_label_codes("s1", {"classes": {"dark": [1, 2, 3], "bright": [4]}}, classes)


def test_sample_skips_held_out_and_repeated_pixels(scene: Path) -> None:
    classes = PixelClasses.from_params(pixel_params()["pixels"]["classes"])
    first = TileWindow(100, 100, 40, 40)
    src = SceneSource(
        "syn",
        scene / "syn.tif",
        scene / "syn.labels.tif",
        0,
        0,
        (first, TileWindow(120, 100, 40, 40)),  # overlaps the first by 20 rows
        (TileWindow(100, 100, 40, 10),),  # held out: 10 rows of the first
    )
    got = draw_sample([src], classes, 100_000, 0)
    assert got.classes.size == 30 * 40 + 20 * 40  # every pixel labelled here, none twice
    small = draw_sample([src], classes, 500, 0)
    assert small.values.tobytes() == draw_sample([src], classes, 500, 0).values.tobytes()
    assert small.classes.size == 500


def test_malformed_documents_are_refused(sample: PixelSample) -> None:
    doc = fit(sample).to_dict()
    for key, value in [
        ("solver", "lbfgs"),
        ("positions", [0, 1]),
        ("mean", [0.0]),
        ("intercepts", [1.0, None, None, None]),
        ("features", [{"name": "x", "bands": [9]}]),
    ]:
        with pytest.raises(ModelError, match=r"^m.json: malformed pixel_logistic model: "):
            PixelLogisticKind.from_dict({**doc, key: value}, "m.json", None)
    with pytest.raises(ModelError, match=r"keys"):
        PixelLogisticKind.from_dict({k: v for k, v in doc.items() if k != "l2"}, "m.json", None)


def test_train_builds_the_sample_and_the_pixel_reference(scene: Path) -> None:
    training, held = grid("syn", WIDTH, HEIGHT)
    entries = [tile_entry(tid, "syn", window=w) for tid, w in training + held]
    labels = {
        "file": "syn.labels.tif",
        "nodata": 0,
        "classes": {"dark": [1, 2, 3], "bright": [4]},
        "codes": {"1": "water", "2": "vegetation", "3": "soil", "4": "cloud"},
    }
    record = scene_record("syn", width=WIDTH, height=HEIGHT, count=4, nodata=0, labels=labels)
    index = build_index(
        [record],
        {"size": TILE, "stride": TILE},
        FeatureSpec().to_dict(),
        entries,
        [{"partial": 0, "nodata": 0, "empty": 0}],
    )
    pixels = {**TrainParams().pixels.model_dump(), "samples": 3000}
    tp = TrainParams.model_validate({"model": "pixel_logistic", "pixels": pixels})
    with pytest.raises(ModelError, match=r"expected the scenes directory"):
        train(index, "0" * 64, tp, "idx")
    result = train(index, "0" * 64, tp, "idx", scenes_dir=scene)
    model = result.model
    assert model.output == "pixels"
    assert model.classes == ("water", "vegetation", "soil", "cloud")
    pixels = model.reference["pixels"]
    assert pixels["samples"] == 3000
    assert set(pixels["bands"]) == {"B02", "B03", "B04", "B08"}
    assert abs(sum(pixels["class_fractions"].values()) - 1.0) < 1e-9
    assert model.training["figures"]["accuracy"] > 0.94
    assert result.report["training_set"]["labelled_pixels"] == 3000
    again = model_lib.from_dict(json.loads(json.dumps(model.to_dict())), "m", None)
    assert again.version == model.version
    bad = tp.model_copy(
        update={"pixels": tp.pixels.model_copy(update={"classes": tp.pixels.classes[:3]})}
    )
    with pytest.raises(ModelError, match=r"^idx: scene syn: label code 4 \('cloud'"):
        train(index, "0" * 64, bad, "idx", scenes_dir=scene)


@pytest.mark.skipif(not SEN1FLOODS11.is_dir(), reason=f"{SEN1FLOODS11} is absent")
def test_sen1floods11_water_iou(tmp_path: Path) -> None:
    """Trained on half the 64-px tiles of the real chip, judged on the other half's pixels."""
    name = "sen1floods11"
    (tmp_path / f"{name}.tif").symlink_to(SEN1FLOODS11 / "Spain_7370579_S2Hand.tif")
    (tmp_path / f"{name}.labels.tif").symlink_to(SEN1FLOODS11 / "Spain_7370579_LabelHand.tif")
    training, held = grid(name, 512, 512)
    src = SceneSource(
        name,
        tmp_path / f"{name}.tif",
        tmp_path / f"{name}.labels.tif",
        0,
        -1,
        tuple(w for _, w in training),
        tuple(w for _, w in held),
    )
    params = pixel_params(features=["bands"])
    params["pixels"]["classes"] = [
        {"name": "dry", "codes": [0], "colour": "#b15928"},
        {"name": "water", "codes": [1], "colour": "#1f78b4"},
    ]
    classes = PixelClasses.from_params(params["pixels"]["classes"])
    sample = draw_sample([src], classes, 20000, 0)
    data = TrainingSet(np.zeros((1, 1)), ("mean_intensity",), (None,), classes.names, sample)
    kind = PixelLogisticKind.fit(data, params, Path("."))
    values, codes = held_out_pixels(tmp_path, name, -1)
    predicted = kind.classify(values)
    water, truth = predicted == 1, codes == 1
    iou = float(np.sum(water & truth) / np.sum(water | truth))
    assert iou >= 0.78, f"water IoU {iou:.4f}"
