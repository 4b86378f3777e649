"""Helpers of ``benchmarks/segment.py``: scenes, fitted kinds, timing probes, COG writing.

Not a benchmark itself. The kinds are the real ones: :class:`OnnxKind` fitted from a graph built
with ``onnx.helper`` (``tests/onnx_models.segment_graph``) and params as a user declares them, and
:class:`PixelLogisticKind` fitted on a small deterministic sample.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GDAL_CACHEMAX", "16")  # as the stages set it (stages/_cli.py)

import numpy as np  # noqa: E402
import rasterio  # noqa: E402
from rasterio.crs import CRS  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402
from rasterio.windows import Window  # noqa: E402

from satpipe.inference.segment import SceneSegmentation  # noqa: E402
from satpipe.models.kinds import onnx as onnx_kind_module  # noqa: E402
from satpipe.models.kinds import onnx_pixels  # noqa: E402
from satpipe.outputs.segmentation import SegmentWriter  # noqa: E402
from tests.records import scene_record  # noqa: E402

NAMES = ("B02", "B03", "B04", "B08")
COLOURS = ("#0000ff", "#00ff00", "#a0522d", "#ffffff")
CLASSES = ("water", "vegetation", "soil", "cloud")
WINDOW = 256
ONNX_FILE = "segment.onnx"
# What a user declares for an S2 L2A export: DN -> reflectance (baseline 04.00), then mean/std.
ONNX_PARAMS: dict[str, Any] = {
    "path": ONNX_FILE,
    "input": "pixels",
    "output": "pixels",
    "batch": 8,
    "size": WINDOW,
    "scores": "logits",
    "bands": ["blue", "green", "red", "nir"],
    "scale": [1e-4] * 4,
    "offset": [-0.1] * 4,
    "mean": [0.03, 0.05, 0.06, 0.12],
    "std": [0.05, 0.06, 0.07, 0.09],
    "pixels": {
        "classes": [
            {"name": n, "colour": c, "codes": [i + 1]}
            for i, (n, c) in enumerate(zip(CLASSES, COLOURS, strict=True))
        ]
    },
}


def write_scene(path: Path, size: int) -> None:
    """A 4-band uint16 scene (tiled 512, deflate, nodata 0) written 512 rows at a time."""
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 4,
        "dtype": "uint16",
        "crs": "EPSG:32633",
        "transform": from_origin(500000, 4000000, 10, 10),
        "nodata": 0,
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
        "bigtiff": "if_safer",
    }
    rng = np.random.default_rng(1)
    x = np.arange(size, dtype=np.float32)
    with rasterio.open(path, "w", **profile) as dst:
        dst.descriptions = NAMES
        for r in range(0, size, 512):
            rows = min(512, size - r)
            yy = np.arange(r, r + rows, dtype=np.float32)[:, None]
            base = 1500 + 1000 * np.sin(yy / 300) * np.cos(x[None, :] / 410)
            noise = rng.integers(0, 200, size=(4, rows, size), dtype=np.uint16)
            data = np.stack([base * (0.6 + 0.2 * b) for b in range(4)]).astype(np.uint16)
            dst.write(data + noise, window=Window(0, r, size, rows))


def record(size: int) -> Any:
    """The scene's record as ingest describes it (the fields the run and the writer read)."""
    return scene_record(
        "bench",
        width=size,
        height=size,
        count=4,
        dtypes=("uint16",) * 4,
        nodata=0,
        band_descriptions=NAMES,
        crs_wkt=CRS.from_epsg(32633).to_wkt(),
        transform=(10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0),
    )


def make_graph(root: Path, layers: int = 2, hidden: int = 16) -> None:
    """The ONNX file: ``layers`` 3x3 convolutions of width ``hidden``, ReLU, a 1x1 head to 4."""
    from tests.onnx_models import segment_graph

    segment_graph(root / ONNX_FILE, 4, 4, size=WINDOW, layers=layers, hidden=hidden)


def onnx_kind(root: Path) -> Any:
    """The real :class:`OnnxKind` fitted from ``root/segment.onnx`` with :data:`ONNX_PARAMS`."""
    from satpipe.models.kinds.base import PixelSample, TrainingSet
    from satpipe.models.kinds.onnx import OnnxKind

    sample = PixelSample(np.zeros((1, 4)), np.zeros(1, np.int64), NAMES)
    train = TrainingSet(np.zeros((1, 2)), ("mean_intensity", "x"), (None,), CLASSES, sample)
    return OnnxKind.fit(train, ONNX_PARAMS, root)


def pixel_kind() -> Any:
    """A pixel_logistic kind fitted on a small deterministic sample (bands, NDWI, NDVI)."""
    from satpipe.models.kinds.base import PixelSample, TrainingSet
    from satpipe.models.kinds.pixel_logistic import PixelLogisticKind

    rng = np.random.default_rng(2)
    values = rng.integers(200, 3000, size=(4000, 4)).astype(np.float64)
    classes = np.argmax(values @ (np.eye(4) - 0.25), axis=1)
    params = {
        "features": ["bands", "ndwi", "ndvi"],
        "pixels": {
            "classes": [{"name": n, "colour": c} for n, c in zip(CLASSES, COLOURS, strict=True)]
        },
    }
    sample = PixelSample(values, classes, NAMES)
    train = TrainingSet(np.zeros((0, 0)), (), (), CLASSES, sample)
    return PixelLogisticKind.fit(train, params, ROOT)


def hwm() -> float:
    """This process's peak RSS, MiB (``VmHWM``: unlike ``ru_maxrss`` it restarts at exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


@dataclass
class Probe:
    """Seconds spent in the ONNX kind's steps (this process), and the session calls it made."""

    seconds: dict[str, float] = field(
        default_factory=lambda: {"normalise": 0.0, "session": 0.0, "softmax": 0.0}
    )
    calls: list[tuple[Any, Any, Any]] = field(default_factory=list)  # session, names, feed


class _Session:
    """A session whose ``run`` is timed (and its arguments kept when recording)."""

    def __init__(self, real: Any, probe: Probe, keep: bool) -> None:
        self.real, self.probe, self.keep = real, probe, keep

    def run(self, names: Any, feed: Any) -> Any:
        if self.keep:
            self.probe.calls.append((self.real, names, feed))
        t = time.perf_counter()
        out = self.real.run(names, feed)
        self.probe.seconds["session"] += time.perf_counter() - t
        return out


def _timed(fn: Any, probe: Probe, key: str) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            probe.seconds[key] += time.perf_counter() - t

    return wrapper


@contextmanager
def probed(keep: bool = False) -> Iterator[Probe]:
    """Time the ONNX kind's normalisation, ``session.run`` and softmax in this process.

    With ``keep``, every ``session.run`` call's arguments (the normalised, padded batches the
    runner fed) are kept in order for the floor to replay.
    """
    probe = Probe()
    real_for = onnx_kind_module.session_for
    with ExitStack() as stack:
        stack.enter_context(
            mock.patch.object(
                onnx_kind_module,
                "session_for",
                lambda *a, **k: _Session(real_for(*a, **k), probe, keep),
            )
        )
        for name, key in (("normalise", "normalise"), ("probabilities", "softmax")):
            fn = getattr(onnx_pixels, name)
            stack.enter_context(mock.patch.object(onnx_pixels, name, _timed(fn, probe, key)))
        yield probe


def replay(calls: list[tuple[Any, Any, Any]]) -> float:
    """The floor: the recorded ``session.run`` calls made again, bare; seconds."""
    t = time.perf_counter()
    for session, names, feed in calls:
        session.run(names, feed)
    return time.perf_counter() - t


@dataclass
class Written:
    """One timed whole-scene run with its outputs written."""

    wall: float
    run: SceneSegmentation
    write: float  # SegmentWriter.write calls (blocks into the staged GeoTIFFs)
    close: float  # SegmentWriter.close (the COG copies with overviews, renames)
    digest: str  # sha256 of the output files' bytes


def segment_to_cogs(
    kind: Any, rec: Any, scene: Path, settings: Any, engine: Any, out: Path, prob: bool = True
) -> Written:
    """Run over ``scene`` and write the class COG (and the probability COG); timed."""
    t0 = time.perf_counter()
    run = SceneSegmentation(kind, rec, scene, settings, engine)
    paths = [out.with_suffix(".class.tif")] + ([out.with_suffix(".prob.tif")] if prob else [])
    write = 0.0
    writer = SegmentWriter(
        paths[0],
        rec,
        CLASSES,
        COLOURS,
        tags={k: str(v) for k, v in run.provenance.items()},
        probability_path=paths[1] if prob else None,
    )
    with writer:
        for block in run.blocks():
            t = time.perf_counter()
            writer.write(block)
            write += time.perf_counter() - t
        t = time.perf_counter()
        writer.close()
        close = time.perf_counter() - t
    wall = time.perf_counter() - t0
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return Written(wall, run, write, close, h.hexdigest())


def med(values: list[float]) -> float:
    """The median."""
    return statistics.median(values)


def show(values: list[float]) -> str:
    """``a, b, c s (median m, min n)``."""
    each = ", ".join(f"{v:.2f}" for v in values)
    return f"{each} s (median {med(values):.2f}, min {min(values):.2f})"
