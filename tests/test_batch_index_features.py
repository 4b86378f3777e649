"""Batch inference of a feature model from the tile index: the same records, no tile decoded.

A small synthetic scene (odd size, four bands, nodata in blocks and in single bands, partial edge
tiles) is cut with ``features.bands`` a subset, so the index's feature definition is not the
default one. Each feature model is run twice through :func:`run_batch`: reading and decoding every
tile (no index spec given), and taking the features from the index entries; the predictions
documents must be the same bytes, and the second run must read no tile. A pixel-input model, a
model whose feature definition differs from the index's and an entry without a reported feature
still read their tiles.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from satpipe.core.classes import CLASSES
from satpipe.core.files import canonical_json, write_json
from satpipe.core.params import BatchInferParams
from satpipe.core.raster import Raster
from satpipe.core.records import TileEntry, TileIndex, read_index
from satpipe.inference import predict
from satpipe.inference.batch import BatchRun, run_batch
from satpipe.inference.predict import TileSource, entry_input, model_input, read_tile
from satpipe.models import model as model_lib
from satpipe.models.kinds import TrainingSet
from satpipe.models.kinds.logistic import LogisticKind
from satpipe.models.kinds.onnx import OnnxKind
from satpipe.models.kinds.threshold import ThresholdKind
from satpipe.scenes.validation import inspect_scene
from satpipe.tiles.features import FeatureSpec, feature_names
from satpipe.tiles.index import build_index
from satpipe.tiles.tiling import TilingParams, cut_scenes
from tests import onnx_models
from tests.helpers import indexed_tile, overwrite_indexed_tile
from tests.records import from_inspected

SPEC = FeatureSpec((2, 4))  # features.bands: a subset, so the index's spec is not the default
BANDS = 4
SIZE = 32


@dataclass(frozen=True)
class Indexed:
    """A tiled scene: its tiles directory, its index (read back from JSON) and its spec."""

    tiles_dir: Path
    index: TileIndex
    root: Path

    @property
    def spec(self) -> FeatureSpec:
        return FeatureSpec.from_dict(dict(self.index.feature))


def _pixels(dtype: str, nodata: float) -> Callable[[int, int, int], np.ndarray]:
    def make(count: int, height: int, width: int) -> np.ndarray:
        rng = np.random.default_rng(11)
        if np.dtype(dtype).kind == "f":
            data = rng.normal(500.0, 120.0, size=(count, height, width)).astype(dtype)
        else:
            data = rng.integers(1, 3000, size=(count, height, width)).astype(dtype)
        data[:, 40:58, 10:37] = nodata  # a block of nodata in every band (partly filled tiles)
        holes = rng.random((height, width))
        data[0][holes < 0.05] = nodata  # band 1 is not selected: these pixels stay valid
        data[1][holes > 0.97] = nodata  # band 2 is selected: these pixels are invalid
        return data

    return make


@pytest.fixture(params=[("uint16", 0.0), ("int16", -9999.0), ("float32", math.nan)])
def indexed(request: pytest.FixtureRequest, make_raster: Any, tmp_path: Path) -> Indexed:
    """A 157x131 4-band scene cut into 32-pixel tiles, partial edge tiles kept, and indexed."""
    dtype, nodata = request.param
    scene = make_raster(
        "scene.tif",
        width=157,
        height=131,
        count=BANDS,
        dtype=dtype,
        nodata=nodata,
        data=_pixels(dtype, nodata),
    )
    meta = from_inspected(inspect_scene(scene))
    tiles_dir = tmp_path / "tiles"
    tiles_dir.mkdir()
    tp = TilingParams(SIZE, SIZE, True, 0.5, "zstd", SPEC)
    [(entries, skipped)] = cut_scenes([(scene, meta, "s")], tiles_dir, tp)
    index = build_index([meta], {"size": SIZE, "stride": SIZE}, SPEC.to_dict(), entries, [skipped])
    write_json(tmp_path / "index.json", index.to_json())  # as the tile stage writes it
    return Indexed(tiles_dir, read_index(tmp_path / "index.json"), tmp_path)


def _training_set(index: TileIndex) -> TrainingSet:
    """The index's features as training rows (non-finite ones zeroed: a reference needs numbers)."""
    names = feature_names(BANDS)
    rows = [[float(t.features[n]) for n in names] for t in index.tiles]
    features = np.nan_to_num(np.array(rows, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    return TrainingSet(features, names, (None,) * len(rows), CLASSES)


def _model(kind: Any, index: TileIndex, spec: FeatureSpec = SPEC) -> model_lib.Model:
    training = {"tile_index_sha256": "ab" * 32}
    return model_lib.build(kind, _training_set(index), spec.to_dict(), training, 4)


def _median(index: TileIndex, name: str) -> float:
    values = np.array([float(t.features[name]) for t in index.tiles])
    return float(np.nanmedian(values)) if np.isfinite(values).any() else 0.0


def _logistic(index: TileIndex) -> LogisticKind:
    names = ("band_3_std", "mean_intensity", "band_4_mean", "valid_fraction")
    x = _training_set(index)
    columns = x.features[:, [x.names.index(n) for n in names]]
    return LogisticKind(
        features=names,
        classes=CLASSES,
        mean=columns.mean(axis=0).tolist(),
        std=(columns.std(axis=0) + 1.0).tolist(),
        weights=[[0.0] * len(names), [0.7, -1.3, 0.4, 2.0]],
        intercepts=[0.0, 0.1],
        l2=1.0,
        iterations=1,
        training={"labelled_tiles": 0, "accuracy": 0.0},
    )


def _onnx_features(indexed: Indexed) -> OnnxKind:
    threshold = float(np.float32(_median(indexed.index, "mean_intensity")))
    onnx_models.threshold_graph(indexed.root / "t.onnx", threshold)
    params = {"path": "t.onnx", "input": "features", "features": ["mean_intensity"]}
    return OnnxKind.fit(_training_set(indexed.index), params, indexed.root)


FEATURE_KINDS: dict[str, Callable[[Indexed], Any]] = {
    "threshold": lambda ix: ThresholdKind(_median(ix.index, "mean_intensity")),
    "threshold_band_std": lambda ix: ThresholdKind(_median(ix.index, "band_1_std"), "band_1_std"),
    "logistic": lambda ix: _logistic(ix.index),
    "onnx_features": _onnx_features,
}


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the tiles batch inference reads (reading them still)."""
    names: list[str] = []

    def counting(path: Any, *args: Any, **kwargs: Any) -> Raster:
        names.append(TileSource.of(path).name)
        return read_tile(path, *args, **kwargs)

    monkeypatch.setattr(predict, "read_tile", counting)
    return names


def _run(ix: Indexed, model: model_lib.Model, spec: FeatureSpec | None) -> BatchRun:
    params = BatchInferParams(max_failed_fraction=1.0)
    tiles = list(ix.index.tiles)
    return run_batch(model, "md5", tiles, "sha", ix.tiles_dir, params, index_spec=spec)


def _document(run: BatchRun) -> str:
    """The predictions document's bytes, as the stage writes them (floats in shortest repr)."""
    return canonical_json(run.predictions.to_json())


def test_the_fixture_exercises_nodata_partial_tiles_and_a_band_subset(indexed: Indexed) -> None:
    tiles = indexed.index.tiles
    assert indexed.spec == SPEC != FeatureSpec()
    assert any(t.valid_fraction < 0.9 for t in tiles)  # the nodata block
    assert len({t.valid_fraction for t in tiles}) > 3
    assert {(t.window.width, t.window.height) for t in tiles} > {(SIZE, SIZE)}  # partial tiles
    raster = read_tile(TileSource.of_entry(indexed.tiles_dir, tiles[0]), tiles[0].sha256)
    nodata = indexed.index.scenes["s"].nodata_value
    assert raster.nodata == nodata or (math.isnan(raster.nodata) and math.isnan(nodata))
    if nodata is not None and math.isnan(nodata):  # NaN in band 1 at valid pixels: NaN features,
        assert any(t.features["band_1_std"] == "NaN" for t in tiles)  # stored as strings


@pytest.mark.parametrize("kind", sorted(FEATURE_KINDS))
def test_index_features_give_the_same_predictions_bytes_without_reading_a_tile(
    indexed: Indexed, reads: list[str], kind: str
) -> None:
    model = _model(FEATURE_KINDS[kind](indexed), indexed.index)
    assert model.input == "features"
    decoded = _run(indexed, model, None)
    assert len(reads) == len(indexed.index.tiles)
    reads.clear()
    from_index = _run(indexed, model, indexed.spec)
    assert reads == []
    assert not decoded.predictions.failures
    assert _document(from_index) == _document(decoded)
    for a, b in zip(
        from_index.predictions.predictions, decoded.predictions.predictions, strict=True
    ):
        assert canonical_json(a.to_json()) == canonical_json(b.to_json())  # NaN == NaN too
        assert list(a.features) == list(model.reported_features) == list(b.features)
        pairs = [(a.score, b.score), *zip(a.features.values(), b.features.values(), strict=True)]
        assert all(type(x) is float and x.hex() == y.hex() for x, y in pairs)  # same bits


def test_entry_input_is_model_input_of_the_pixels(indexed: Indexed) -> None:
    model = _model(_logistic(indexed.index), indexed.index)
    for tile in indexed.index.tiles:
        source = TileSource.of_entry(indexed.tiles_dir, tile)
        expected = model_input(read_tile(source, tile.sha256), model, source.name)
        got = entry_input(tile, model)
        assert got is not None
        assert got.features == expected.features and got.valid_fraction == expected.valid_fraction
        assert got.x.dtype == expected.x.dtype and got.x.tobytes() == expected.x.tobytes()


@pytest.mark.parametrize(
    "indexed", [("uint16", 0.0), ("int16", -9999.0)], indirect=True
)  # not NaN nodata: the pixel-mean graph would score NaN
def test_a_pixel_model_still_reads_every_tile(indexed: Indexed, reads: list[str]) -> None:
    onnx_models.pixel_mean_graph(indexed.root / "p.onnx", bands=BANDS, size=SIZE, threshold=500.0)
    params = {"path": "p.onnx", "input": "pixels", "classes": list(CLASSES), "batch": 64}
    kind = OnnxKind.fit(_training_set(indexed.index), params, indexed.root)
    model = _model(kind, indexed.index)
    full = [t for t in indexed.index.tiles if (t.window.width, t.window.height) == (SIZE, SIZE)]
    ix = dataclasses.replace(indexed, index=dataclasses.replace(indexed.index, tiles=tuple(full)))
    run = _run(ix, model, indexed.spec)
    assert len(reads) == len(full) and len(run.predictions.predictions) == len(full)


def test_another_feature_definition_reads_every_tile(indexed: Indexed, reads: list[str]) -> None:
    kind = ThresholdKind(_median(indexed.index, "mean_intensity"))
    model = _model(kind, indexed.index, FeatureSpec())  # all bands: not the index's definition
    run = _run(indexed, model, indexed.spec)
    assert len(reads) == len(indexed.index.tiles)
    means = {p.id: p.features["mean_intensity"] for p in run.predictions.predictions}
    assert any(means[t.id] != t.mean_intensity for t in indexed.index.tiles)  # all 4 bands


def test_an_entry_without_a_reported_feature_reads_its_tile(
    indexed: Indexed, reads: list[str]
) -> None:
    model = _model(_logistic(indexed.index), indexed.index)
    decoded = _document(_run(indexed, model, None))
    reads.clear()
    tiles = list(indexed.index.tiles)
    lacking = {k: v for k, v in tiles[2].features.items() if k != "band_3_std"}
    tiles[2] = dataclasses.replace(tiles[2], features=lacking)
    ix = dataclasses.replace(indexed, index=dataclasses.replace(indexed.index, tiles=tuple(tiles)))
    assert _document(_run(ix, model, indexed.spec)) == decoded
    assert reads == [TileSource.of_entry(indexed.tiles_dir, tiles[2]).name]


def _tamper(ix: Indexed, tile: TileEntry) -> None:
    blob = bytearray(indexed_tile(ix.tiles_dir, tile.to_json()))
    blob[-1] ^= 0xFF
    overwrite_indexed_tile(ix.tiles_dir, tile.to_json(), bytes(blob))


def test_a_tampered_tile_fails_only_where_it_is_read(indexed: Indexed) -> None:
    """The index stands for the tiles of a feature model (DVC hashes them); pixels are checked."""
    model = _model(FEATURE_KINDS["threshold"](indexed), indexed.index)
    before = _document(_run(indexed, model, indexed.spec))
    tile = indexed.index.tiles[1]
    _tamper(indexed, tile)
    assert _document(_run(indexed, model, indexed.spec)) == before  # not read: the index stands
    run = _run(indexed, model, None)  # read: the sha256 check catches it
    [failure] = run.predictions.failures
    assert failure.id == tile.id and "the tile index says" in failure.error
    other = _model(FEATURE_KINDS["threshold"](indexed), indexed.index, FeatureSpec())
    [failure] = _run(indexed, other, indexed.spec).predictions.failures
    assert failure.id == tile.id and "the tile index says" in failure.error
