"""Reference labels: synthetic truth, label rasters on other grids, tile references, bad labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform as warp_transform

from satpipe.core.errors import LabelError, ModelError, ParamsError
from satpipe.core.params import IngestParams, TrainParams, parse_params
from satpipe.core.records import TileIndex
from satpipe.evaluation.evaluate import evaluate_run
from satpipe.models.training import train
from satpipe.scenes import synthetic
from satpipe.scenes.ingest import ingest
from satpipe.scenes.labels import LabelLookup, tile_reference
from satpipe.tiles.features import FeatureSpec
from satpipe.tiles.tiling import cut_tiles
from tests.helpers import stage
from tests.records import prediction, tile_entry, tile_index

SCENE_CRS = "EPSG:32633"
SCENE_TRANSFORM = Affine(10.0, 0.0, 399960.0, 0.0, -10.0, 5900040.0)
TILE = 40
MAPPING = {"bright": [8, 9], "dark": [4, 5]}


# --- lookup and tile reference ------------------------------------------------------------------


def test_lookup_maps_listed_codes_and_leaves_others_unlabelled():
    lookup = LabelLookup.from_mapping({"bright": [9, 300], "dark": [-2, 4]}, nodata=0)
    codes = np.array([[9, 4, 0, 7], [300, -2, 5, 9]], dtype=np.int32)
    assert lookup.names == ("bright", "dark")  # positions index the sorted names
    assert lookup.classify(codes).tolist() == [[0, 1, -1, -1], [0, 1, -1, 0]]


def test_lookup_ignores_a_listed_code_that_is_the_nodata_value():
    lookup = LabelLookup.from_mapping({"dark": [0, 4]}, nodata=0)
    assert lookup.classify(np.array([0, 4], dtype=np.uint8)).tolist() == [-1, 0]


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16", "int32", "uint32"])
def test_class_counts_histogram_path_agrees_with_classify(dtype: str):
    lookup = LabelLookup.from_mapping({"dark": [-3, 4, 5, 300], "bright": [8, 9, 70000]}, 5)
    info = np.iinfo(dtype)
    rng = np.random.default_rng(1)
    codes = rng.integers(max(info.min, -5), min(info.max, 400) + 1, (97, 83)).astype(dtype)
    by_pixel = np.bincount(lookup.classify(codes).ravel() + 1, minlength=3)[1:]
    counts = lookup.class_counts(codes[3:90, 1:80], 2)  # a non-contiguous window too
    expected = np.bincount(lookup.classify(codes[3:90, 1:80]).ravel() + 1, minlength=3)[1:]
    assert counts.tolist() == expected.tolist()
    assert lookup.class_counts(codes, 2).tolist() == by_pixel.tolist()
    assert by_pixel.sum() > 0


def test_tile_reference_majority_fraction_and_minimum():
    lookup = LabelLookup.from_mapping(MAPPING, nodata=255)
    # 10 pixels: 4 bright, 3 dark, 3 unlabelled (code 1 unlisted, 255 nodata).
    codes = np.array([[8, 9, 8, 8, 4], [4, 5, 1, 255, 255]], dtype=np.uint8)
    ref = tile_reference(codes, lookup, min_fraction=0.7)
    assert ref.labelled_fraction == pytest.approx(0.7)
    assert ref.reference == "bright"
    below = tile_reference(codes, lookup, min_fraction=0.71)
    assert below.reference is None and below.labelled_fraction == pytest.approx(0.7)


def test_tile_reference_tie_goes_to_the_class_name_that_sorts_first():
    lookup = LabelLookup.from_mapping(MAPPING, nodata=None)
    ref = tile_reference(np.array([[8, 4], [9, 5]], dtype=np.uint8), lookup, 0.5)
    assert ref.reference == "bright"  # 2 against 2: "bright" sorts before "dark"
    other = LabelLookup.from_mapping({"water": [1], "land": [2], "cloud": [3]}, nodata=0)
    ref = tile_reference(np.array([[1, 2], [0, 0]], dtype=np.uint8), other, 0.5)
    assert ref.reference == "land"  # water and land tie; cloud has no pixel


def test_tile_reference_with_nothing_labelled():
    lookup = LabelLookup.from_mapping(MAPPING, nodata=None)
    ref = tile_reference(np.full((3, 5), 7, dtype=np.uint8), lookup, 0.01)
    assert ref == type(ref)(0.0, None)


# --- synthetic truth ----------------------------------------------------------------------------


def test_synthetic_labels_are_deterministic_and_match_the_surfaces(tmp_path: Path):
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    # Seed 42 at this size draws all five codes (water only a little).
    counts = synthetic.write_scene(
        tmp_path / "s1.tif", width=601, height=517, seed=42, labels_path=a
    )
    synthetic.write_scene(tmp_path / "s2.tif", width=601, height=517, seed=42, labels_path=b)
    assert a.read_bytes() == b.read_bytes()
    with rasterio.open(a) as lab, rasterio.open(tmp_path / "s1.tif") as src:
        assert (lab.width, lab.height, lab.crs, lab.transform) == (
            src.width,
            src.height,
            src.crs,
            src.transform,
        )
        assert lab.nodata == synthetic.LABEL_NODATA and lab.dtypes[0] == "uint8"
        codes, pixels = lab.read(1), src.read().astype(np.float64)
    assert {int(c): n for c, n in zip(*np.unique(codes, return_counts=True), strict=True)} == {
        c: n for c, n in counts.items() if n
    }
    assert ((codes == 0) == (pixels[0] == 0)).all(), "nodata code exactly where the scene is 0"
    mean = pixels.mean(axis=0)
    # Cloud pixels (blend weight >= 0.5) are at least halfway to the cloud's ~7700.
    assert all(counts[code] > 0 for code in synthetic.SURFACES)
    assert mean[codes == 4].min() > 3500
    # Under thin cloud (weight < 0.5) any surface is brighter; the typical pixel is not.
    water, veg, soil = (np.median(mean[codes == c]) for c in (1, 2, 3))
    assert water < veg < soil < 2500


def test_synthetic_ingest_records_its_labels(tmp_path: Path):
    meta = ingest(
        IngestParams(width=300, height=257, seed=7),
        tmp_path / "s.tif",
        tmp_path / "s.json",
        tmp_path,
    ).to_json()
    labels = meta["labels"]
    assert labels["file"] == "s.labels.tif" and (tmp_path / "s.labels.tif").is_file()
    assert labels["classes"] == synthetic.LABEL_CLASSES
    assert labels["codes"]["4"] == "cloud"
    assert 0.5 < labels["labelled_fraction"] <= 1.0
    assert meta["preview"] == {"file": "s.preview.tif", "step": 1}
    assert json.loads((tmp_path / "s.json").read_text())["labels"] == labels


def test_synthetic_label_classes_can_be_remapped(tmp_path: Path):
    params = IngestParams(width=300, height=257, seed=7, labels={"classes": {"bright": [3, 4]}})
    meta = ingest(params, tmp_path / "s.tif", tmp_path / "s.json", tmp_path)
    assert meta.labels["classes"] == {"bright": [3, 4]}


def test_preview_is_a_decimated_copy_of_the_scene(tmp_path: Path, make_raster):
    path = make_raster(width=2100, height=301, count=2)
    meta = ingest(
        IngestParams(source="file", path=str(path)),
        tmp_path / "o/s.tif",
        tmp_path / "o/s.json",
        tmp_path,
    )
    step = meta.preview["step"]
    assert step == 3  # ceil(2100 / 1024)
    with rasterio.open(tmp_path / "o/s.preview.tif") as pv, rasterio.open(path) as src:
        assert (pv.width, pv.height) == (700, 101)
        assert pv.transform == src.transform @ Affine.scale(3)
        assert np.array_equal(pv.read(), src.read()[:, ::3, ::3])


# --- label rasters on another grid --------------------------------------------------------------


def _checker(row: np.ndarray, col: np.ndarray) -> np.ndarray:
    """The pattern: bright (8) on tiles whose (row + col) index is even, dark (4) elsewhere."""
    return np.where(((row // TILE) + (col // TILE)) % 2 == 0, 8, 4).astype(np.uint8)


def _labels_in_other_crs(tmp_path: Path, width: int, height: int) -> Path:
    """A label raster in EPSG:3857 at ~7 m, drawing the checker pattern of the scene's tiles."""
    crs = CRS.from_epsg(3857)
    left, bottom, right, top = rasterio.transform.array_bounds(height, width, SCENE_TRANSFORM)
    xs, ys = warp_transform(SCENE_CRS, crs, [left, right, left, right], [top, top, bottom, bottom])
    res = 7.0
    x0, y0 = min(xs) - 50, max(ys) + 50
    cols = int((max(xs) + 50 - x0) / res)
    rows = int((y0 - (min(ys) - 50)) / res)
    transform = Affine(res, 0, x0, 0, -res, y0)
    jj, ii = np.meshgrid(np.arange(cols), np.arange(rows))
    cx, cy = transform @ (jj.ravel() + 0.5, ii.ravel() + 0.5)
    sx, sy = warp_transform(crs, SCENE_CRS, cx, cy)
    scene_col, scene_row = ~SCENE_TRANSFORM @ (np.array(sx), np.array(sy))
    codes = _checker(np.floor(scene_row).astype(int), np.floor(scene_col).astype(int))
    inside = (scene_row >= 0) & (scene_row < height) & (scene_col >= 0) & (scene_col < width)
    codes[~inside] = 0
    path = tmp_path / "labels_3857.tif"
    profile = {
        "driver": "GTiff",
        "width": cols,
        "height": rows,
        "count": 1,
        "dtype": "uint8",
        "crs": crs,
        "transform": transform,
        "nodata": 0,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(codes.reshape(rows, cols), 1)
    return path


def test_labels_in_another_crs_and_resolution_land_on_the_right_tiles(tmp_path: Path, make_raster):
    width, height = 203, 163  # 5 x 4 full tiles of 40, partial edges skipped
    scene = make_raster(width=width, height=height, crs=SCENE_CRS, transform=SCENE_TRANSFORM)
    labels = _labels_in_other_crs(tmp_path, width, height)
    params = IngestParams(
        source="file", path=str(scene), labels={"path": labels.name, "classes": MAPPING}
    )
    out = tmp_path / "scenes"
    meta = ingest(params, out / "s.tif", out / "s.json", tmp_path)
    assert meta.labels["source_crs"] == "EPSG:3857"
    assert meta.labels["labelled_fraction"] > 0.97
    with rasterio.open(out / "s.labels.tif") as lab:
        assert (lab.crs, lab.transform, lab.shape) == (
            CRS.from_user_input(SCENE_CRS),
            SCENE_TRANSFORM,
            (height, width),
        )
        resampled = lab.read(1)
    rr, cc = np.mgrid[0:height, 0:width]
    agree = (resampled == _checker(rr, cc)).mean()
    assert agree > 0.97, agree  # nearest resampling only moves tile borders by a pixel or so
    (tmp_path / "tiles").mkdir()
    entries, _ = cut_tiles(
        out / "s.tif",
        meta,
        tmp_path / "tiles",
        size=TILE,
        stride=TILE,
        keep_partial=False,
        max_nodata_fraction=1.0,
        compress="none",
        spec=FeatureSpec(),
        min_labelled_fraction=0.9,
    )
    assert len(entries) == 20
    for e in entries:
        i, j = e.window.row_off // TILE, e.window.col_off // TILE
        assert e.reference == ("bright" if (i + j) % 2 == 0 else "dark"), e.id
        assert e.labelled_fraction > 0.9


def test_tiles_of_an_unlabelled_scene_have_no_reference(tmp_path: Path, make_raster):
    scene = make_raster(width=97, height=83)
    meta = ingest(
        IngestParams(source="file", path=str(scene)),
        tmp_path / "o/s.tif",
        tmp_path / "o/s.json",
        tmp_path,
    )
    assert meta.labels is None and not (tmp_path / "o/s.labels.tif").exists()
    (tmp_path / "t").mkdir()
    entries, _ = cut_tiles(
        tmp_path / "o/s.tif",
        meta,
        tmp_path / "t",
        size=32,
        stride=32,
        keep_partial=False,
        max_nodata_fraction=1.0,
        compress="none",
        spec=FeatureSpec(),
    )
    assert entries and all(e.reference is None and e.labelled_fraction == 0.0 for e in entries)


# --- bad label input ----------------------------------------------------------------------------


def _ingest_with_labels(tmp_path: Path, make_raster, labels: dict) -> None:
    scene = make_raster(name="scene.tif", width=97, height=83)
    params = IngestParams(source="file", path=str(scene), labels=labels)
    ingest(params, tmp_path / "out/s.tif", tmp_path / "out/s.json", tmp_path)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("not_tiff", "labels.tif: not a GeoTIFF"),
        ("no_crs", "labels.tif: no CRS"),
        ("far_away", "labels.tif: no overlap with the scene"),
        ("float", "labels.tif: pixel type float32; expected integer class codes"),
        ("two_bands", "labels.tif: 2 bands; expected one band"),
        ("missing", "labels.tif: file not found"),
    ],
)
def test_bad_label_raster_fails_ingest_naming_file_and_value(
    tmp_path: Path, make_raster, kind: str, expected: str
):
    path = tmp_path / "labels.tif"
    if kind == "not_tiff":
        path.write_text("class,code\nbright,8\n")
    elif kind == "no_crs":
        make_raster(name="labels.tif", crs=None)
    elif kind == "far_away":
        make_raster(name="labels.tif", transform=Affine(10.0, 0, 100000.0, 0, -10.0, 100000.0))
    elif kind == "float":
        make_raster(name="labels.tif", dtype="float32")
    elif kind == "two_bands":
        make_raster(name="labels.tif", count=2)
    with pytest.raises(LabelError) as err:
        _ingest_with_labels(tmp_path, make_raster, {"path": "labels.tif", "classes": MAPPING})
    message = str(err.value)
    assert expected in message and "\n" not in message
    assert message.startswith("label raster ")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_float_codes_from_the_real_corpus(tmp_path: Path, make_raster, real_file):
    _ = make_raster  # the scene fixture
    nan_cog = real_file("cog_with_nan.tif")
    with rasterio.open(nan_cog) as src:
        crs, transform, width, height = src.crs, src.transform, src.width, src.height
    scene = make_raster(name="scene.tif", crs=crs, transform=transform, width=width, height=height)
    params = IngestParams(
        source="file", path=str(scene), labels={"path": str(nan_cog), "classes": MAPPING}
    )
    with pytest.raises(LabelError, match=r"cog_with_nan.tif: pixel type float32; expected integer"):
        ingest(params, tmp_path / "out/s.tif", tmp_path / "out/s.json", tmp_path)


@pytest.mark.parametrize(
    ("classes", "expected"),
    [
        ({" cloud": [8]}, "class name ' cloud' is empty or has surrounding spaces"),
        (
            {"bright": [8, 9], "dark": [9]},
            "code 9 is listed under two classes ('bright' and 'dark')",
        ),
        ({"bright": [8.5]}, "ingest.labels.classes.bright.0=8.5"),
        ({"bright": []}, "class 'bright' lists no code"),
    ],
)
def test_bad_label_mapping_is_a_params_error(classes: dict, expected: str):
    data = {
        "ingest": {
            "source": "file",
            "path": "x.tif",
            "labels": {"path": "l.tif", "classes": classes},
        }
    }
    with pytest.raises(ParamsError) as err:
        parse_params(data)
    assert expected in str(err.value), str(err.value)


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"path": "l.tif"}, "ingest.labels needs classes"),
        ({"classes": MAPPING}, "ingest.labels needs a path or a url"),
        (
            {"url": "http://x/l.tif", "classes": MAPPING},
            "ingest.labels.url needs ingest.labels.sha256",
        ),
    ],
)
def test_incomplete_labels_params(labels: dict, expected: str):
    with pytest.raises(ParamsError, match=expected):
        parse_params({"ingest": {"source": "file", "path": "x.tif", "labels": labels}})


def test_synthetic_scene_refuses_a_label_file():
    with pytest.raises(ParamsError, match="a synthetic scene carries its own labels"):
        parse_params({"ingest": {"labels": {"path": "l.tif", "classes": MAPPING}}})


def test_ingest_stage_prints_one_line_for_bad_labels(repo_root: Path, tmp_path: Path, make_raster):
    make_raster(name="scene.tif")
    make_raster(name="labels.tif", dtype="float32")
    (tmp_path / "params.yaml").write_text(
        "ingest:\n  source: file\n  path: scene.tif\n"
        "  labels: {path: labels.tif, classes: {bright: [8], dark: [4]}}\n"
    )
    done = stage(
        "ingest", "data/scenes", "data/scenes.json", "data/m.json", "data/r.json", cwd=tmp_path
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: scene 'scene': label raster labels.tif: pixel type float32")
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "data/scenes").exists()


# --- training on labels -------------------------------------------------------------------------


def _index(values: list[float], refs: list[str | None]) -> TileIndex:
    entries = [
        tile_entry(f"s/r{i:06d}_c000000", mean_intensity=v, reference=r)
        for i, (v, r) in enumerate(zip(values, refs, strict=True))
    ]
    return tile_index(entries, {"s": "train"})


def test_fit_method_separates_separable_labels_perfectly():
    values = [10.0, 12.0, 30.0, 14.0, 50.0, 55.0, 11.0, 60.0]
    refs = ["dark", "dark", "bright", "dark", "bright", "bright", "dark", "bright"]
    result = train(_index(values, refs), "f" * 64, TrainParams(method="fit"), "idx.json")
    assert (
        result.model.kind.details()["threshold"] == 22.0
    )  # midpoint of the max dark (14) and the min bright (30)
    assert result.model.training["method"] == "fit"
    assert result.model.training["figures"] == {
        "labelled_tiles": 8,
        "accuracy": 1.0,
        "balanced_accuracy": 1.0,
    }
    mean = train(_index(values, refs), "f" * 64, TrainParams(method="mean"), "idx.json")
    assert mean.model.kind.details()["threshold"] == pytest.approx(np.mean(values))
    assert mean.model.training["figures"]["accuracy"] < 1.0  # the mean (30.25) misses 30


def test_fit_without_labelled_training_tiles_is_one_line():
    with pytest.raises(ModelError) as err:
        train(_index([1.0, 2.0], [None, None]), "f" * 64, TrainParams(method="fit"), "idx.json")
    assert "idx.json: train.method 'fit' needs training tiles with a reference class" in str(
        err.value
    )
    assert "\n" not in str(err.value)


def test_fit_with_one_labelled_class_names_it():
    with pytest.raises(ModelError) as err:
        train(_index([1.0, 2.0, 3.0], ["dark"] * 3), "f" * 64, TrainParams(method="fit"), "i.json")
    assert str(err.value) == (
        "i.json: train.method 'fit': only class 'dark' present (3 tiles, 0 'bright'); "
        "expected tiles of both classes"
    )


@pytest.mark.slow  # six stages end to end
def test_pipeline_without_any_reference_evaluates_nothing_and_says_so(tmp_path: Path, make_raster):
    make_raster(name="scene.tif", width=131, height=97, count=3)
    (tmp_path / "params.yaml").write_text(
        "ingest: {source: file, path: scene.tif}\ntile: {size: 32}\n"
    )
    steps = [
        ("ingest", "scenes", "scenes.json", "ingest.json", "reports/ingest.json"),
        ("tile", "scenes", "scenes.json", "tiles", "index.json", "tile.json", "reports/tile.json"),
        ("train", "index.json", "model.json", "train.json", "reports/train.json"),
        ("batch_infer", "model.json", "index.json", "tiles", "pred.json", "pred.geojson"),
        (
            "evaluate",
            "model.json",
            "index.json",
            "pred.json",
            "evaluate.json",
            "reports/evaluate.json",
            "plots",
        ),
        ("maps", "scenes", "index.json", "pred.json", "model.json", "maps", "quicklook"),
    ]
    for name, *args in steps:
        done = stage(name, *args, cwd=tmp_path)
        assert done.returncode == 0, f"{name}: {done.stderr}"
    ev = json.loads((tmp_path / "reports/evaluate.json").read_text())
    assert ev["evaluated"] is False
    assert ev["reason"].startswith("no held-out tile has a reference label")
    assert ev["overall"]["accuracy"] is None and ev["overall"]["balanced_accuracy"] is None
    assert ev["counts"]["tiles_without_reference"] == ev["counts"]["tiles_held_out"] > 0
    assert json.loads((tmp_path / "plots/confusion.json").read_text()) == []
    assert json.loads((tmp_path / "plots/threshold_curve.json").read_text()) == []
    assert (tmp_path / "quicklook/scene.png").is_file()
    train_metrics = json.loads((tmp_path / "reports/train.json").read_text())
    assert train_metrics["training_set"] == {
        "labelled_tiles": 0,
        "accuracy": None,
        "balanced_accuracy": None,
    }
    # The headline files keep every column, undefined scores as null (shown as `-`), never 0.
    assert json.loads((tmp_path / "evaluate.json").read_text()) == {
        "accuracy": None,
        "bal_acc": None,
        "f1_dark": None,
        "f1_bright": None,
        "eval_tiles": 0,
    }
    assert json.loads((tmp_path / "train.json").read_text()) == {"train_bal_acc": None}


def test_labels_and_a_model_with_their_own_class_names_train_and_evaluate():
    """Class names are the labels' and the model's, not a fixed dark/bright."""
    names = ["water", "land", "cloud"]
    values = [1.0, 2.0, 1.5, 10.0, 11.0, 12.0, 30.0, 31.0, 29.0, 2.5, 10.5, 30.5]
    refs = [names[0]] * 3 + [names[1]] * 3 + [names[2]] * 3 + names
    index = _index(values, refs)
    tp = TrainParams(model="logistic", classes=names)
    model = train(index, "f" * 64, tp, "idx.json").model
    assert model.classes == tuple(names)
    assert model.training["figures"]["accuracy"] == 1.0
    rows = np.array([[t.features[n] for n in model.kind.feature_names] for t in index.tiles])
    labels, _ = model.predict(rows)
    predictions = [
        prediction(t.id, label, features=dict(t.features))
        for t, label in zip(index.tiles, labels, strict=True)
    ]
    result = evaluate_run(
        index.tiles, predictions, model.classes, lambda tile: True, None, model.reference
    )
    assert result.report["overall"]["accuracy"] == 1.0
    assert set(result.report["overall"]["per_class"]) == set(names)


def test_labels_the_model_cannot_name_fail_training_and_evaluation_in_one_line():
    values = [1.0, 2.0, 30.0, 31.0]
    index = _index(values, ["water", "water", "cloud", "cloud"])
    with pytest.raises(ModelError) as err:
        train(index, "f" * 64, TrainParams(method="fit"), "idx.json")
    message = str(err.value)
    assert "training reference class 'cloud' is not a model class" in message
    assert "dark, bright" in message and "train.classes" in message and "\n" not in message
    with pytest.raises(ModelError, match="training reference class 'cloud'"):
        train(index, "f" * 64, TrainParams(), "idx.json")  # mean does not fit labels either
    unlabelled = _index(values, [None] * 4)
    model = train(unlabelled, "f" * 64, TrainParams(), "idx.json").model
    records = [prediction(t.id, "dark", features=dict(t.features)) for t in index.tiles]
    with pytest.raises(ModelError, match=r"reference class 'water' is not a class of the model"):
        evaluate_run(index.tiles, records, model.classes, lambda t: True, None, model.reference)


@pytest.mark.parametrize(
    ("classes", "expected"),
    [
        (["dark"], "train.classes"),
        (["dark", "dark"], "repeat a name"),
        (["dark", ""], "is empty or has surrounding spaces"),
    ],
)
def test_bad_model_classes_are_a_params_error(classes: list, expected: str):
    with pytest.raises(ParamsError) as err:
        parse_params({"train": {"classes": classes}})
    assert expected in str(err.value) and "train.classes" in str(err.value), str(err.value)
