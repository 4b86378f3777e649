"""Whole-scene segmentation: exact blending, chunking invariance, nodata, bad input and seams.

The models are numpy stand-ins for per-pixel kinds (module-level, so worker processes unpickle
them by name): a pointwise one (a softmax of a fixed linear map of the bands, with ``exp``
replaced by ``(1 + z/16)^16`` so that every pixel's result is the same IEEE arithmetic whatever
the array's shape), a 3x3 neighbourhood one, and one that depends on where a pixel sits in its
window (so neighbouring windows disagree at their seams).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from threading import get_ident
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from satpipe.core.errors import ModelError, SceneError
from satpipe.core.params import SegmentParams
from satpipe.core.records import SceneRecord
from satpipe.engines.engine import Engine
from satpipe.engines.spec import EngineSpec
from satpipe.inference.segment import SceneSegmentation, SegmentSettings, settings_for
from satpipe.inference.stitch import origins, quantise, reflect, taper
from tests.records import scene_record

WIDTH, HEIGHT = 203, 157
NAMES = ("B02", "B03", "B04", "B08")
WEIGHTS = np.array(
    [[1.0, -0.5, 0.2, -1.0], [-0.4, 1.2, -0.3, 0.1], [0.3, 0.2, -1.1, 0.9], [-0.6, -0.2, 0.5, 0.4]],
    dtype=np.float32,
)
COLOURS = ("#0000ff", "#00ff00", "#a0522d", "#ffffff")
BIASES = np.array([0.1, -0.2, 0.05, 0.0], dtype=np.float32)


@dataclass
class PointKind:
    """Pointwise: softmax-like of a linear map of the bands (NaN read as 0)."""

    window: int | None = None
    colours: tuple[str, ...] = ("#0000ff", "#00ff00", "#a0522d", "#ffffff")
    output: str = "pixels"
    pointwise: bool = False  # the windowed path; True: the runner scores each pixel once

    def band_indices(self, names: Sequence[str | None], count: int, source: str) -> tuple[int, ...]:
        return (0, 1, 2, 3)

    def provenance(self) -> dict[str, str]:
        return {"stand_in": "point"}

    def features(self, x: np.ndarray) -> np.ndarray:
        return np.nan_to_num(x.astype(np.float32) / np.float32(1000.0))

    def head(self, f: np.ndarray) -> np.ndarray:
        z = [BIASES[k] + sum(WEIGHTS[k, b] * f[:, b] for b in range(4)) for k in range(4)]
        e = []
        for zk in z:
            v = np.maximum(np.float32(1) + zk / np.float32(16), np.float32(0))
            for _ in range(4):
                v = v * v
            e.append(v)
        total = e[0] + e[1] + e[2] + e[3] + np.float32(1e-30)
        return np.stack([v / total for v in e], axis=1).astype(np.float32)

    def scores(self, x: np.ndarray) -> np.ndarray:
        return self.head(self.features(x))


@dataclass
class NeighbourKind(PointKind):
    """The 3x3 mean of each band (edge-padded inside the window), then the same head."""

    def scores(self, x: np.ndarray) -> np.ndarray:
        f = np.pad(self.features(x), ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
        h, w = x.shape[2:]
        mean = sum(f[:, :, i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9
        return self.head(mean.astype(np.float32))


@dataclass
class PositionKind(PointKind):
    """Pointwise plus a ramp across the window: windows disagree where they overlap."""

    def scores(self, x: np.ndarray) -> np.ndarray:
        f = self.features(x)
        ramp = np.linspace(-3, 3, x.shape[3], dtype=np.float32)
        f[:, 0] += ramp
        return self.head(f)


@dataclass
class BatchKind(PointKind):
    """Scores shift with the mean of the whole batch and with the slot: only fixed batches agree."""

    calls: int = 0

    def scores(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        f = self.features(x)
        slot = np.arange(len(x), dtype=np.float32).reshape(-1, 1, 1, 1)
        return self.head(f + f.mean(axis=(0, 2, 3), keepdims=True) * np.float32(0.3) + slot)


@dataclass
class StagedKind(NeighbourKind):
    """Its scores the middle of three stages, each noting the threads it ran in."""

    threads: dict[str, set[int]] = field(default_factory=dict)

    def stages(self) -> tuple[Any, Any, Any]:
        def step(name: str, fn: Any) -> Any:
            return lambda v: (self.threads.setdefault(name, set()).add(get_ident()), fn(v))[1]

        return step("prepare", np.array), step("run", super().scores), step("finish", np.asarray)


@dataclass
class WrongShapeKind(PointKind):
    def scores(self, x: np.ndarray) -> np.ndarray:
        return super().scores(x)[:, :3]


def _pixels(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(200, 3000, size=(4, 12, 14)).astype(np.float64)
    yy = np.linspace(0, 11, HEIGHT)
    xx = np.linspace(0, 13, WIDTH)
    smooth = np.stack(
        [np.array([np.interp(xx, np.arange(14), row) for row in band]) for band in coarse]
    )
    smooth = np.stack([np.array([np.interp(yy, np.arange(12), c) for c in b.T]).T for b in smooth])
    data = smooth + rng.integers(0, 300, size=smooth.shape)
    data = np.maximum(data, 1).astype(np.uint16)
    data[:, :, 60:70] = 0  # a nodata strip
    data[:, 100:, 150:] = 0  # a nodata corner: whole windows skipped
    return data


def _write(path: Path, data: np.ndarray, nodata: float | None) -> SceneRecord:
    profile = {"driver": "GTiff", "width": WIDTH, "height": HEIGHT, "count": 4,
               "dtype": str(data.dtype), "crs": "EPSG:32633", "nodata": nodata,
               "transform": from_origin(500000, 4000000, 10, 10), "tiled": True,
               "blockxsize": 64, "blockysize": 64}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = NAMES
    return scene_record("scene-a", width=WIDTH, height=HEIGHT, count=4, nodata=nodata,
                        dtypes=(str(data.dtype),) * 4, band_descriptions=NAMES)  # fmt: skip


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SceneRecord, np.ndarray]:
    path = tmp_path_factory.mktemp("segment") / "scene.tif"
    data = _pixels(7)
    return path, _write(path, data, 0), data


def _settings(window: int = 32, overlap: int = 8, **kw: object) -> SegmentSettings:
    return SegmentSettings(
        window=window,
        overlap=overlap,
        blend=kw.pop("blend", "hann"),  # type: ignore[arg-type]
        batch=kw.pop("batch", 5),  # type: ignore[arg-type]
        probabilities=kw.pop("probabilities", "winner"),  # type: ignore[arg-type]
        job_windows=kw.pop("job_windows", None),  # type: ignore[arg-type]
    )


def _run(
    scene: tuple[Path, SceneRecord, np.ndarray],
    kind: PointKind,
    settings: SegmentSettings,
    engine: Engine | None = None,
    direct: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, SceneSegmentation]:
    path, record, _ = scene
    run = SceneSegmentation(kind, record, path, settings, engine)
    run.ctx = replace(run.ctx, direct=direct)  # False: integer sums even with overlap 0
    blocks = list(run.blocks())
    rows = [b.row_off for b in blocks]
    assert rows == sorted(rows) and rows[0] == 0
    classes = np.concatenate([b.classes for b in blocks])
    probs = np.concatenate([b.probabilities for b in blocks], axis=1)
    valid = np.concatenate([b.valid for b in blocks])
    assert classes.shape == (HEIGHT, WIDTH)
    return classes, probs, valid, run


def _whole_scene(data: np.ndarray, kind: PointKind) -> tuple[np.ndarray, np.ndarray]:
    """The model applied to the whole scene at once: classes and winner bytes."""
    x = data.astype(np.float32)
    valid = np.all(data != 0, axis=0)
    x[:, ~valid] = np.nan
    q = quantise(kind.scores(x[None])[0])
    classes = np.argmax(q, axis=0).astype(np.uint8)
    top = q.max(axis=0).astype(np.int64)
    probs = ((510 * top + (1 << 15)) // (2 << 15)).astype(np.uint8)
    classes[~valid], probs[~valid] = 255, 0
    return classes, probs


@pytest.mark.parametrize(
    ("window", "overlap", "blend"),
    [(32, 8, "hann"), (40, 20, "tukey"), (16, 0, "flat"), (256, 64, "hann")],
)
def test_pointwise_model_equals_whole_scene(scene, window: int, overlap: int, blend: str) -> None:
    expected_classes, expected_probs = _whole_scene(scene[2], PointKind())
    classes, probs, valid, run = _run(scene, PointKind(), _settings(window, overlap, blend=blend))
    assert np.array_equal(classes, expected_classes)
    assert np.array_equal(probs[0], expected_probs)
    assert np.array_equal(valid, np.all(scene[2] != 0, axis=0))
    assert run.stats.seam_disagree == 0
    assert run.stats.seam_compared > 0 or overlap == 0 or window > WIDTH  # one window


def _pixel_logistic(pointwise: bool) -> PointKind:
    """A pixel_logistic kind fitted on a deterministic sample; ``pointwise`` False: windowed."""
    from satpipe.models.kinds.base import PixelSample, TrainingSet
    from satpipe.models.kinds.pixel_logistic import PixelLogisticKind

    class Windowed(PixelLogisticKind):
        pointwise = False

    rng = np.random.default_rng(3)
    values = rng.integers(200, 3000, size=(2000, 4)).astype(np.float64)
    classes = np.argmax(values @ (np.eye(4) - 0.25), axis=1)
    params = {
        "features": ["bands", "ndwi", "ndvi"],
        "pixels": {"classes": [{"name": f"c{i}", "colour": c} for i, c in enumerate(COLOURS)]},
    }
    sample = PixelSample(values, classes, NAMES)
    train = TrainingSet(np.zeros((0, 0)), (), (), tuple(f"c{i}" for i in range(4)), sample)
    kind = PixelLogisticKind.fit(train, params, Path("."))
    return Windowed(kind.to_dict()) if not pointwise else kind  # type: ignore[return-value]


@pytest.mark.parametrize("stand_in", [True, False], ids=["stand-in", "pixel_logistic"])
@pytest.mark.parametrize(("window", "overlap"), [(32, 8), (40, 20), (256, 64), (40, 0), (16, 0)])
def test_pointwise_fast_path_gives_the_windowed_bytes(
    scene, stand_in: bool, window: int, overlap: int
) -> None:
    def kind(fast: bool) -> PointKind:
        return PointKind(pointwise=fast) if stand_in else _pixel_logistic(fast)

    for every in (False, True):  # bytes per window (direct) as the summed (Hann, or flat)
        settings = _settings(window, overlap, probabilities="all" if every else "winner")
        fast = _run(scene, kind(True), settings)
        runs = [_run(scene, kind(f), settings, direct=False) for f in (False, True)]  # summed
        with Engine(EngineSpec("local", 2)) as engine:
            runs.append(_run(scene, kind(True), replace(settings, job_windows=5), engine))
        assert fast[3].ctx.overlap == runs[1][3].ctx.overlap == 0 and fast[3].ctx.every == every
        assert runs[0][3].ctx.overlap == overlap and (fast[3].stats.windows_skipped or window > 99)
        for run in runs:
            assert [fast[i].tobytes() for i in range(3)] == [run[i].tobytes() for i in range(3)]
            a, b = fast[3].stats, run[3].stats
            assert a.seam_compared == 0 and fast[3].provenance == run[3].provenance
            for name in ("class_counts", "probability_counts", "band_sample", "valid_pixels"):
                assert np.array_equal(getattr(a, name), getattr(b, name)), name
            same = (a.windows, a.windows_skipped) == (b.windows, b.windows_skipped)
            assert same or run[3].ctx.overlap  # the same grid: the same windows


@pytest.mark.parametrize("kind", [NeighbourKind(), BatchKind(), StagedKind()])
def test_bytes_do_not_depend_on_job_split_or_engine(scene, kind: PointKind) -> None:
    reference = _run(scene, kind, _settings(job_windows=5))
    with Engine(EngineSpec("local", 2)) as engine:
        runs = [
            _run(scene, kind, _settings(job_windows=10)),
            _run(scene, kind, _settings(job_windows=100)),
            _run(scene, kind, _settings()),
            _run(scene, kind, _settings(job_windows=15), engine),
        ]
    for classes, probs, valid, run in runs:
        assert classes.tobytes() == reference[0].tobytes()
        assert probs.tobytes() == reference[1].tobytes()
        assert np.array_equal(valid, reference[2])
        a, b = run.stats, reference[3].stats
        assert (a.seam_compared, a.seam_disagree) == (b.seam_compared, b.seam_disagree)
        assert np.array_equal(a.band_sample, b.band_sample)
        assert np.array_equal(a.probability_counts, b.probability_counts)
    if isinstance(kind, StagedKind):  # the model alone in the job's thread, the rest in a helper
        kind.threads.clear()
        staged = _run(scene, kind, _settings())[1].tobytes()
        assert not kind.threads["run"] & (kind.threads["prepare"] | kind.threads["finish"])
        assert staged == _run(scene, NeighbourKind(), _settings())[1].tobytes()


def test_batches_are_fixed_and_only_the_last_is_padded(scene) -> None:
    kind = BatchKind()
    run = _run(scene, kind, _settings(job_windows=10))[3]
    total = origins(HEIGHT, 32, 8).size * origins(WIDTH, 32, 8).size
    assert [(j.g0, j.g1) for j in run.jobs()][-1] == (total - total % 10 or total - 10, total)
    assert all(j.g0 % 5 == 0 for j in run.jobs())
    # Every batch holding a kept window is one call; batches of skipped windows only, none.
    assert kind.calls <= -(-total // 5) and kind.calls * 5 >= run.stats.windows


def test_nodata_pixels_and_all_nodata_windows(scene) -> None:
    classes, probs, valid, run = _run(scene, PointKind(), _settings())
    nodata = np.all(scene[2] == 0, axis=0)
    assert np.all(classes[nodata] == 255) and np.all(probs[:, nodata] == 0)
    assert not valid[nodata].any() and np.all(classes[~nodata] < 4)
    s = run.stats
    rows, cols = origins(HEIGHT, 32, 8), origins(WIDTH, 32, 8)
    assert s.windows + s.windows_skipped == rows.size * cols.size
    assert s.windows_skipped >= 4
    assert (
        s.valid_pixels == int((~nodata).sum()) == s.class_counts.sum() == s.probability_counts.sum()
    )
    assert np.array_equal(s.class_counts, np.bincount(classes[~nodata], minlength=4))
    grid = np.zeros(nodata.shape, dtype=bool)
    grid[8::16, 8::16] = True
    assert np.array_equal(s.band_sample, scene[2][:, grid & ~nodata].T.astype(np.float64))
    assert s.band_names == NAMES
    assert run.provenance == {
        "window": 32,
        "overlap": 8,
        "blend": "hann",
        "batch": 5,
        "stand_in": "point",
    }


def test_every_class_probability(scene) -> None:
    classes, probs, _, _ = _run(scene, PointKind(), _settings(probabilities="all"))
    winner, _, _, _ = _run(scene, PointKind(), _settings())
    assert probs.shape == (4, HEIGHT, WIDTH)
    assert np.array_equal(classes, winner)


@pytest.mark.parametrize("nodata", [0.0, float("nan")])
def test_nan_outside_nodata_is_refused(tmp_path: Path, nodata: float) -> None:
    data = _pixels(3).astype(np.float32)
    if np.isnan(nodata):
        data[data == 0] = np.nan
    data[2, 130, 17] = np.inf
    data[2, 131, 17] = -np.inf if np.isnan(nodata) else np.nan
    record = _write(tmp_path / "f.tif", data, nodata)
    run = SceneSegmentation(PointKind(), record, tmp_path / "f.tif", _settings())
    with pytest.raises(SceneError) as exc:
        list(run.blocks())
    text = str(exc.value)
    assert "\n" not in text and "scene-a" in text and "band B04 has 2 NaN or infinite" in text


def test_nan_nodata_is_nodata(tmp_path: Path) -> None:
    data = _pixels(3).astype(np.float32)
    data[data == 0] = np.nan
    record = _write(tmp_path / "f.tif", data, float("nan"))
    _, _, valid, _ = _run((tmp_path / "f.tif", record, data), PointKind(), _settings())
    assert np.array_equal(valid, np.all(np.isfinite(data), axis=0))


def test_seams_disagree_for_a_position_dependent_model(scene) -> None:
    s = _run(scene, PositionKind(), _settings())[3].stats
    assert 0 < s.seam_disagree < s.seam_compared


def test_window_and_output_checks(scene) -> None:
    with pytest.raises(
        ModelError, match=r"segment\.window is 32 but the model's window is fixed at 64"
    ):
        settings_for(PointKind(window=64), SegmentParams(window=32, overlap=8))  # type: ignore[arg-type]
    assert settings_for(PointKind(window=64), SegmentParams(overlap=8)).window == 64  # type: ignore[arg-type]
    assert settings_for(PointKind(), SegmentParams()).window == 256  # type: ignore[arg-type]
    run = SceneSegmentation(WrongShapeKind(), scene[1], scene[0], _settings())
    with pytest.raises(ModelError, match=r"shape \(5, 3, 32, 32\); expected"):
        list(run.blocks())
    with pytest.raises(ModelError, match="before the run ended"):
        _ = run.stats


def test_grid_padding_and_taper() -> None:
    assert np.array_equal(reflect(np.arange(-3, 8), 4), [3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1])
    assert np.array_equal(reflect(np.arange(-2, 3), 1), [0] * 5)
    assert list(origins(100, 32, 8)) == [-4, 20, 44, 68]
    assert list(origins(10, 32, 8)) == [-4]
    for blend in ("hann", "tukey", "flat"):
        t = taper(blend, 32, 8)  # type: ignore[arg-type]
        assert t.min() >= 1 and t.max() <= 127 and np.array_equal(t, t[::-1])
    assert np.array_equal(taper("tukey", 32, 8)[8:24], [127] * 16)


@pytest.mark.skipif(
    importlib.util.find_spec("distributed") is None, reason="the 'distributed' package is absent"
)
def test_dask_bytes_equal_local(scene) -> None:
    reference = _run(scene, NeighbourKind(), _settings())
    with Engine(EngineSpec("dask", 2)) as engine:
        classes, probs, _, run = _run(scene, NeighbourKind(), _settings(job_windows=15), engine)
    assert classes.tobytes() == reference[0].tobytes()
    assert probs.tobytes() == reference[1].tobytes()
    assert run.stats.seam_disagree == reference[3].stats.seam_disagree
