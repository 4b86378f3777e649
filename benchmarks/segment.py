"""Benchmark whole-scene segmentation: peak memory by scene size, ONNX speed against its floor.

Usage::

    python benchmarks/segment.py                          # memory at 4096 and 10980, speed at 2048
    python benchmarks/segment.py --memory 4096 --speed 1024 --pixel 2048

Memory: for each size a 4-band uint16 scene (tiled 512, deflate, nodata 0, smooth values) is
written window by window, then a fresh process runs :class:`SceneSegmentation` over it (W=256,
O=32, K=4, a pointwise numpy stand-in: the model's cost does not change the memory) with every
block consumed, and reports its peak RSS (``VmHWM``) and that of the bare imports.

Speed: a small ONNX graph built with ``onnx.helper`` (3x3 convolutions 4->16->16->4, softmax),
run by ONNX Runtime with pinned options (``ORT_ENABLE_BASIC``, one intra-op thread, sequential),
wrapped in a minimal per-pixel kind (mean/std normalisation, NaN to 0). In the same run: the
floor (bare ``session.run`` on the same number of batches of the same shape), the whole-scene run
with one worker (its breakdown: reads, normalisation+model, blending, stitching), the same with
``overlap 0`` (the cost of the overlap), two local workers, and Dask with two workers (bytes
compared with the local run). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from satpipe.engines.engine import Engine  # noqa: E402
from satpipe.engines.spec import EngineSpec  # noqa: E402
from satpipe.inference.segment import SceneSegmentation, SegmentSettings  # noqa: E402
from tests.records import scene_record  # noqa: E402

NAMES = ("B02", "B03", "B04", "B08")


def write_scene(path: Path, size: int) -> None:
    """A 4-band uint16 scene written 512 rows at a time (smooth values plus noise)."""
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
    x = np.arange(size)
    with rasterio.open(path, "w", **profile) as dst:
        dst.descriptions = NAMES
        for r in range(0, size, 512):
            rows = min(512, size - r)
            yy = np.arange(r, r + rows)[:, None]
            base = 1500 + 1000 * np.sin(yy / 300.0) * np.cos(x[None, :] / 410.0)
            data = np.stack([base * (0.6 + 0.2 * b) for b in range(4)])
            data += rng.integers(0, 200, size=data.shape)
            dst.write(data.astype(np.uint16), window=Window(0, r, size, rows))


def record(size: int) -> Any:
    """The scene's record as ingest would describe it (the fields the run reads)."""
    return scene_record(
        "bench",
        width=size,
        height=size,
        count=4,
        dtypes=("uint16",) * 4,
        nodata=0,
        band_descriptions=NAMES,
    )


class PointKind:
    """A pointwise numpy stand-in (for the memory runs): softmax of a linear map."""

    window = None
    colours = ("#0000ff", "#00ff00", "#a0522d", "#ffffff")
    output = "pixels"
    pointwise = False  # the memory of the windowed path (the general one) is what is measured

    def band_indices(self, names: Any, count: int, source: str) -> tuple[int, ...]:
        """The first four bands."""
        return (0, 1, 2, 3)

    def provenance(self) -> dict[str, str]:
        """Nothing to record."""
        return {}

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Per-pixel probabilities."""
        f = np.nan_to_num(x / np.float32(1000))
        z = np.einsum("kb,nbhw->nkhw", np.eye(4, dtype=np.float32) - 0.25, f)
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def conv_graph() -> bytes:
    """3x3 convolutions 4->16->16->4 with ReLU, then a softmax over classes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, prev, chans = [], [], "x", [4, 16, 16, 4]
    for i in range(3):
        w = rng.normal(0, 0.3, size=(chans[i + 1], chans[i], 3, 3)).astype(np.float32)
        b = rng.normal(0, 0.1, size=chans[i + 1]).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        out = f"c{i}"
        nodes.append(helper.make_node("Conv", [prev, f"w{i}", f"b{i}"], [out], pads=[1] * 4))
        if i < 2:
            nodes.append(helper.make_node("Relu", [out], [f"r{i}"]))
            out = f"r{i}"
        prev = out
    nodes.append(helper.make_node("Softmax", [prev], ["y"], axis=1))
    graph = helper.make_graph(
        nodes,
        "seg",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 256, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 256, 256])],
        inits,
    )
    return onnx.helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)]
    ).SerializeToString()


def session(graph: bytes) -> Any:
    """An ONNX Runtime CPU session with pinned options."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])


class OnnxPixelKind(PointKind):
    """A minimal per-pixel kind around an ONNX Runtime session (built once per process)."""

    window = 256

    def __init__(self, graph: bytes) -> None:
        self.graph = graph
        self.mean = np.full((1, 4, 1, 1), 1500, dtype=np.float32)
        self.scale = np.full((1, 4, 1, 1), 1 / 600, dtype=np.float32)
        self._session: Any = None
        self.seconds = {"normalise": 0.0, "run": 0.0}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_session": None}

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Normalise, then run the graph (timing both)."""
        if self._session is None:
            self._session = session(self.graph)
        t = time.perf_counter()
        z = x - self.mean  # float32 throughout, in place after the first pass
        z *= self.scale
        np.copyto(z, 0.0, where=np.isnan(z))
        t1 = time.perf_counter()
        y = self._session.run(None, {"x": z})[0]
        self.seconds["normalise"] += t1 - t
        self.seconds["run"] += time.perf_counter() - t1
        return y


def _hwm() -> float:
    """This process's peak RSS, MiB (``VmHWM``: unlike ``ru_maxrss`` it restarts at exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_child(path: str, size: int) -> None:
    """In a fresh process: run over the scene and print peak RSS (MiB) as JSON."""
    base = _hwm()
    settings = SegmentSettings(256, 32, "hann", 8)
    start = time.perf_counter()
    run = SceneSegmentation(PointKind(), record(size), path, settings)  # type: ignore[arg-type]
    blocks = sum(1 for _ in run.blocks())
    peak = _hwm()
    print(
        json.dumps(
            {
                "base_mib": base,
                "peak_mib": peak,
                "blocks": blocks,
                "windows": run.stats.windows,
                "seconds": time.perf_counter() - start,
            }
        )
    )


def memory(sizes: list[int], tmp: Path) -> None:
    """Peak RSS of a whole-scene run per scene size."""
    for size in sizes:
        path = tmp / f"mem{size}.tif"
        t = time.perf_counter()
        write_scene(path, size)
        wrote = time.perf_counter() - t
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(path), str(size)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(
            f"memory {size}x{size}x4: peak RSS {r['peak_mib']:.0f} MiB (imports alone "
            f"{r['base_mib']:.0f} MiB), {r['windows']} windows, {r['seconds']:.1f} s "
            f"(scene written in {wrote:.1f} s)"
        )
        path.unlink()


def _digest(run: SceneSegmentation) -> str:
    h = hashlib.sha256()
    for block in run.blocks():
        h.update(block.classes.tobytes())
        h.update(block.probabilities.tobytes())
    return h.hexdigest()


def speed(size: int, tmp: Path, batch: int) -> None:
    """ONNX whole-scene runs against the bare session.run floor, in one run."""
    path = tmp / f"speed{size}.tif"
    write_scene(path, size)
    graph = conv_graph()
    rec = record(size)
    results: dict[str, Any] = {}

    def timed(name: str, overlap: int, engine: Engine | None) -> SceneSegmentation:
        kind = OnnxPixelKind(graph)
        kind.scores(np.zeros((batch, 4, 256, 256), dtype=np.float32))  # warm the session
        kind.seconds = {"normalise": 0.0, "run": 0.0}
        run = SceneSegmentation(
            kind, rec, path, SegmentSettings(256, overlap, "hann", batch), engine
        )  # type: ignore[arg-type]
        t = time.perf_counter()
        results[name] = (_digest(run), time.perf_counter() - t, run, kind)
        return run

    one = timed("local/1 O=32", 32, None)
    windows = one.stats.windows
    calls = -(-windows // batch)
    run_calls = calls
    sess = session(graph)
    x = np.random.default_rng(0).normal(size=(batch, 4, 256, 256)).astype(np.float32)
    sess.run(None, {"x": x})
    t = time.perf_counter()
    for _ in range(calls):
        sess.run(None, {"x": x})
    floor = time.perf_counter() - t
    timed("local/1 O=0", 0, None)
    with Engine(EngineSpec("local", 2)) as engine:
        timed("local/2 O=32", 32, engine)
    try:
        with Engine(EngineSpec("dask", 2)) as engine:
            timed("dask/2 O=32", 32, engine)
    except Exception as exc:  # report, do not stop
        print(f"dask: not run ({type(exc).__name__}: {exc})")

    digest, wall, run, kind = results["local/1 O=32"]
    print(f"speed {size}x{size}, batch {batch}, {windows} windows ({calls} calls), 1 thread:")
    print(
        f"  floor (bare session.run x {calls}): {floor:.2f} s; the run made {run_calls} calls "
        "(only the scene's last batch is padded)"
    )
    print(f"  whole scene, 1 worker: {wall:.2f} s = {wall / floor:.3f} x floor")
    s = run.seconds
    print(
        f"  breakdown: reads {s['read']:.2f} s, normalisation {kind.seconds['normalise']:.2f} s, "
        f"session.run {kind.seconds['run']:.2f} s, blending {s['blend']:.2f} s, "
        f"stitching/finalising {s['stitch']:.2f} s, waiting for reads {s['wait']:.2f} s (reads "
        "and stitching overlap the model; no writes: blocks are hashed)"
    )
    _, w0, r0, _ = results["local/1 O=0"]
    print(
        f"  overlap: O=0 {r0.stats.windows} windows {w0:.2f} s; O=32 {windows} windows "
        f"{wall:.2f} s ({wall / w0:.3f} x)"
    )
    d2, w2, _, _ = results["local/2 O=32"]
    print(f"  2 local workers: {w2:.2f} s, {wall / w2:.2f} x one; bytes equal: {d2 == digest}")
    if "dask/2 O=32" in results:
        dd, wd, _, _ = results["dask/2 O=32"]
        print(f"  dask 2 workers: {wd:.2f} s; bytes equal to local: {dd == digest}")
    path.unlink()


def pixel_kind() -> Any:
    """A pixel_logistic kind fitted on a small deterministic sample (bands, NDWI, NDVI)."""
    from satpipe.models.kinds.base import PixelSample, TrainingSet
    from satpipe.models.kinds.pixel_logistic import PixelLogisticKind

    rng = np.random.default_rng(2)
    values = rng.integers(200, 3000, size=(4000, 4)).astype(np.float64)
    classes = np.argmax(values @ (np.eye(4) - 0.25), axis=1)
    colours = ("#0000ff", "#00ff00", "#a0522d", "#ffffff")
    params = {
        "features": ["bands", "ndwi", "ndvi"],
        "pixels": {"classes": [{"name": f"c{i}", "colour": c} for i, c in enumerate(colours)]},
    }
    train = TrainingSet(np.zeros((0, 0)), (), (), tuple(f"c{i}" for i in range(4)))
    train = TrainingSet(train.features, (), (), train.classes, PixelSample(values, classes, NAMES))
    return PixelLogisticKind.fit(train, params, ROOT)


def pointwise(size: int, tmp: Path, batch: int) -> None:
    """The pixel_logistic kind over a whole scene, written as COGs, against the I/O floor."""
    from satpipe.outputs.segmentation import SegmentWriter

    path = tmp / f"pixel{size}.tif"
    write_scene(path, size)
    kind, rec = pixel_kind(), record(size)
    t = time.perf_counter()  # the floor: read the scene once, write a class COG of its size
    with (
        rasterio.open(path) as src,
        SegmentWriter(tmp / "floor.tif", rec, kind.classes, kind.colours) as writer,
    ):
        for r in range(0, size, 512):
            data = src.read(window=Window(0, r, size, min(512, size - r)))
            valid = np.all(data != 0, axis=0)
            writer.write(
                r,
                np.argmax(data, axis=0).astype(np.uint8),
                np.ones((1, *valid.shape), np.uint8),
                valid,
            )
    floor = time.perf_counter() - t

    def timed(engine: Engine | None) -> tuple[float, SceneSegmentation]:
        t = time.perf_counter()
        run = SceneSegmentation(kind, rec, path, SegmentSettings(256, 32, "hann", batch), engine)
        with SegmentWriter(
            tmp / "class.tif", rec, kind.classes, kind.colours, probability_path=tmp / "prob.tif"
        ) as writer:
            for block in run.blocks():
                writer.write(block)
        return time.perf_counter() - t, run

    wall, run = timed(None)
    with Engine(EngineSpec("local", 2)) as engine:
        wall2, _ = timed(engine)
    s = run.seconds
    print(f"pixel_logistic {size}x{size} (window 256, overlap 32, batch {batch}, 1 worker):")
    print(
        f"  I/O floor (read once + class COG): {floor:.2f} s; run + class and probability "
        f"COGs: {wall:.2f} s = {wall / floor:.3f} x floor"
    )
    print(
        f"  breakdown: reads {s['read']:.2f} s, model {s['model']:.2f} s, blending "
        f"{s['blend']:.2f} s, stitching {s['stitch']:.2f} s (pointwise: each pixel scored once)"
    )
    print(f"  2 local workers: {wall2:.2f} s = {wall2 / floor:.3f} x floor")
    path.unlink()


def main() -> None:
    """Parse arguments and run the benchmarks."""
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        memory_child(sys.argv[2], int(sys.argv[3]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--memory", type=int, nargs="*", default=[4096, 10980])
    ap.add_argument("--speed", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--pixel", type=int, default=4096, help="pixel_logistic scene side (0: skip)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        memory(args.memory, Path(tmp))
        if args.speed:
            speed(args.speed, Path(tmp), args.batch)
        if args.pixel:
            pointwise(args.pixel, Path(tmp), args.batch)


if __name__ == "__main__":
    main()
