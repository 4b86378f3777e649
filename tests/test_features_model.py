"""Features, the threshold model and its JSON form."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from satpipe.core.errors import ModelError
from satpipe.core.raster import valid_mask
from satpipe.models import model as model_lib
from satpipe.tiles.features import FeatureSpec, tile_features
from tests.models import threshold_model


def test_mean_over_valid_pixels_only() -> None:
    data = np.array([[[0, 10], [20, 30]], [[5, 10], [0, 50]]], dtype=np.uint16)
    feats = tile_features(data, 0, FeatureSpec())
    # Pixel (0,0) has band 1 = nodata and pixel (1,0) band 2 = nodata: both invalid.
    assert feats.valid_fraction == 0.5
    assert feats.mean_intensity == (10 + 30 + 10 + 50) / 4


def test_nan_is_invalid_for_float_data() -> None:
    data = np.array([[[np.nan, 1.0], [2.0, 3.0]]], dtype=np.float32)
    feats = tile_features(data, float("nan"), FeatureSpec())
    assert feats.valid_fraction == 0.75
    assert feats.mean_intensity == pytest.approx(2.0)
    feats = tile_features(data, None, FeatureSpec())
    assert feats.mean_intensity == pytest.approx(2.0)


def test_band_selection() -> None:
    data = np.stack([np.full((3, 5), v, dtype=np.int16) for v in (-100, 7, 9)])
    assert tile_features(data, None, FeatureSpec((2, 3))).mean_intensity == 8.0
    assert tile_features(data, None, FeatureSpec((1,))).mean_intensity == -100.0


def test_no_valid_pixel() -> None:
    data = np.zeros((2, 4, 4), dtype=np.uint8)
    feats = tile_features(data, 0, FeatureSpec())
    assert feats == type(feats)(0.0, None)


def test_integer_mean_is_exact_and_layout_independent() -> None:
    rng = np.random.default_rng(0)
    big = rng.integers(0, 65535, size=(4, 300, 300), dtype=np.uint16)
    view = big[:, 11:267, 5:261]  # non-contiguous
    copy = np.ascontiguousarray(view)
    a = tile_features(view, 0, FeatureSpec()).mean_intensity
    b = tile_features(copy, 0, FeatureSpec()).mean_intensity
    assert a == b
    mask = valid_mask(copy, 0)
    assert a == int(copy[:, mask].astype(np.int64).sum()) / (4 * mask.sum())


@pytest.mark.parametrize("invalid_fraction", [0.0, 0.01, 0.3, 0.5, 0.7, 0.99])
@pytest.mark.parametrize("dtype", ["uint16", "int16", "uint8", "int32"])
def test_integer_mean_equals_the_plain_masked_sum(invalid_fraction: float, dtype: str) -> None:
    # Mostly-valid and mostly-invalid tiles take different (cheaper) sums; both must give the
    # exact mean over valid pixels, on an odd-sized tile.
    rng = np.random.default_rng(int(invalid_fraction * 100))
    info = np.iinfo(dtype)
    data = rng.integers(max(info.min, -30000), min(info.max, 60000), (3, 37, 53), dtype=dtype)
    nodata = 1 if info.min == 0 else -1
    data[data == nodata] = 2
    holes = rng.random((37, 53)) < invalid_fraction
    data[rng.integers(0, 3, size=holes.sum()), *np.nonzero(holes)] = nodata
    mask = valid_mask(data, nodata)
    feats = tile_features(data, nodata, FeatureSpec())
    assert feats.valid_fraction == mask.sum() / mask.size
    assert feats.mean_intensity == int(data[:, mask].astype(np.int64).sum()) / (3 * mask.sum())
    sel = tile_features(data, nodata, FeatureSpec((3, 1)))
    sub = data[[2, 0]]
    sub_mask = valid_mask(sub, nodata)
    assert sel.mean_intensity == int(sub[:, sub_mask].astype(np.int64).sum()) / (2 * sub_mask.sum())


def _fit(values: list[float]) -> model_lib.Model:
    return threshold_model(values, bins=4)


def test_threshold_is_mean_and_prediction_splits_on_it() -> None:
    model = _fit([1.0, 2.0, 3.0, 10.0])
    assert model.kind.details()["threshold"] == 4.0
    classes, scores = model.predict(np.array([[4.0], [4.0001]]))
    assert classes == ["dark", "bright"]
    assert scores.tolist() == [0.0, pytest.approx(0.0001)]
    assert model.reference["class_fractions"] == {"dark": 0.75, "bright": 0.25}
    assert model.reference["quantiles"][0] == 1.0 and model.reference["quantiles"][-1] == 10.0
    assert sum(model.reference["histogram"]["counts"]) == 4


def test_version_is_content_derived() -> None:
    a, b, c = _fit([1.0, 2.0]), _fit([1.0, 2.0]), _fit([1.0, 2.5])
    assert a.version == b.version
    assert a.version != c.version
    assert len(a.version) == 36 and a.version[14] == "5"  # a version-5 UUID


def test_round_trip_and_tamper_detection(tmp_path: Path) -> None:
    model = _fit([1.0, 2.0, 3.0])
    path = tmp_path / "model.json"
    path.write_text(json.dumps(model.to_dict()))
    assert model_lib.load(path) == model
    doc = model.to_dict()
    doc["model"]["threshold"] = 99.0
    path.write_text(json.dumps(doc))
    with pytest.raises(ModelError, match="does not match its content"):
        model_lib.load(path)


def test_fit_rejects_empty_and_load_rejects_non_models(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no training tile"):
        _fit([])
    path = tmp_path / "x.json"
    path.write_text("[1, 2]")
    with pytest.raises(ModelError, match="not a model document"):
        model_lib.load(path)
    path.write_text(json.dumps({**_fit([1.0, 2.0]).to_dict(), "kind": "forest"}))
    with pytest.raises(
        ModelError, match=r"unknown model kind 'forest'; expected one of .*threshold"
    ):
        model_lib.load(path)
    with pytest.raises(ModelError, match="model file not found"):
        model_lib.load(tmp_path / "missing.json")
