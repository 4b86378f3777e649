"""Benchmark whole-scene segmentation: peak memory, ONNX speed against its floor, pixel_logistic.

Usage::

    python benchmarks/segment.py               # all: --memory 4096 10980 --onnx 2048 --pixel 4096
    python benchmarks/segment.py --onnx 4096 --reps 5    # only the ONNX speed part
    python benchmarks/segment.py --memory 10980          # only one memory run

Scenes: 4-band uint16 (B02 B03 B04 B08), tiled 512, deflate, nodata 0, smooth values plus noise,
written 512 rows at a time (never whole in memory), outside anything measured.

ONNX kind: the real ``OnnxKind`` fitted from a graph built with ``onnx.helper`` (``--layers`` 3x3
convolutions of width ``--hidden``, default 4->16->16, with ReLU, then a 1x1 head to 4 logits;
windows 256, dynamic batch) and declared params (bands by common name, scale/offset to
reflectance, per-band mean/std, ``scores: logits``), run with the pinned session options (one
intra-op thread per process). Window 256, overlap 32, Hann, batch 4 (the default) unless told;
every run writes the class COG and the probability COG (``SegmentWriter``).

``--memory``: per size, a fresh process runs the ONNX kind over the scene writing both COGs and
prints its peak RSS (``VmHWM``) and that of its imports (the baseline).

``--onnx``: a warm-up run records the ``session.run`` calls the runner makes (the normalised,
padded batches of the scene's own pixels); then ``--reps`` times, interleaved: the floor (those
calls replayed on the kind's session, bare), the run (1 worker), the run with overlap 0 and the
run with 2 local workers. Prints each, the ratios of the medians and of the minimums, the
breakdown per thread (the job's: session.run; its helper: reads, normalisation, softmax, blending;
the main one: stitching, writes), and checks
the output bytes equal across workers, reps and with Dask (2 workers) when it is installed.

``--pixel``: the pixel_logistic kind (pointwise) over a scene writing the class COG, against the
I/O floor (read the scene once, write a class COG of the same size), interleaved ``--reps`` times,
with 1 and 2 local workers; also the run writing the probability COG too (what the stage does).

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("GDAL_CACHEMAX", "16")  # as the stages set it (stages/_cli.py)
sys.path.insert(0, str(Path(__file__).resolve().parent))  # _segment_common: a sibling module

import numpy as np
import rasterio
from _segment_common import (
    CLASSES,
    COLOURS,
    WINDOW,
    hwm,
    make_graph,
    med,
    onnx_kind,
    pixel_kind,
    probed,
    record,
    replay,
    segment_to_cogs,
    show,
    write_scene,
)
from rasterio.windows import Window

from satpipe.engines.engine import Engine
from satpipe.engines.spec import EngineSpec
from satpipe.inference.segment import SegmentSettings
from satpipe.outputs.segmentation import SegmentWriter

OVERLAP = 32


def memory_child(root: str, scene: str, size: int, batch: int) -> None:
    """In a fresh process: segment the scene with the ONNX kind, write both COGs, print JSON."""
    import onnxruntime  # noqa: F401  (the imports' baseline includes it)

    base = hwm()
    start = time.perf_counter()
    kind = onnx_kind(Path(root))
    fitted = hwm()  # the session made and run once (the smoke test)
    settings = SegmentSettings(WINDOW, OVERLAP, "hann", batch)
    done = segment_to_cogs(
        kind, record(size), Path(scene), settings, None, Path(root) / f"mem{size}"
    )
    out = {
        "base_mib": base,
        "fit_mib": fitted,
        "peak_mib": hwm(),
        "windows": done.run.stats.windows,
        "seconds": time.perf_counter() - start,
    }
    print(json.dumps(out))


def memory(sizes: list[int], tmp: Path, batch: int, graph: tuple[int, int]) -> None:
    """Peak RSS of a fresh process segmenting a scene per size."""
    make_graph(tmp, *graph)
    for size in sizes:
        path = tmp / f"mem{size}.tif"
        t = time.perf_counter()
        write_scene(path, size)
        wrote = time.perf_counter() - t
        argv = [sys.executable, __file__, "--child", str(tmp), str(path), str(size), str(batch)]
        out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(
            f"memory {size}x{size}x4 uint16, ONNX ({graph[0]}x{graph[1]}) window {WINDOW}, "
            f"overlap {OVERLAP}, batch {batch}, 1 worker, both COGs written: peak RSS "
            f"{r['peak_mib']:.0f} MiB (imports "
            f"alone {r['base_mib']:.0f} MiB, with the fitted kind {r['fit_mib']:.0f} MiB, so "
            f"{r['peak_mib'] - r['base_mib']:.0f} MiB for fit and run); {r['windows']} windows "
            f"in {r['seconds']:.1f} s (scene written beforehand by this process, {wrote:.1f} s)",
            flush=True,
        )
        path.unlink()


def _engine_run(name: str, spec: EngineSpec, go: Any, digest: str) -> None:
    """One warm-up and one timed run on ``spec``'s engine; bytes compared with ``digest``."""
    try:
        with Engine(spec) as engine:
            go(engine)
            t = time.perf_counter()
            done = go(engine)
            print(
                f"  {name}: {time.perf_counter() - t:.2f} s (after a warm-up run); bytes equal "
                f"to local/1: {done.digest == digest}"
            )
    except Exception as exc:  # report, do not stop
        print(f"  {name}: not run ({type(exc).__name__}: {exc})")


def onnx_speed(size: int, tmp: Path, batch: int, reps: int, graph: tuple[int, int]) -> None:
    """The ONNX kind over a whole scene against the bare session.run floor, interleaved."""
    path = tmp / f"onnx{size}.tif"
    write_scene(path, size)
    make_graph(tmp, *graph)
    kind, rec = onnx_kind(tmp), record(size)

    def go(overlap: int, engine: Engine | None, out: str) -> Any:
        settings = SegmentSettings(WINDOW, overlap, "hann", batch)
        return segment_to_cogs(kind, rec, path, settings, engine, tmp / out)

    floors: list[float] = []
    ones: list[Any] = []
    zeros: list[Any] = []
    twos: list[Any] = []
    probes = []
    with Engine(EngineSpec("local", 2, None)) as two:
        go(OVERLAP, two, "two")  # warm the workers (forked first: no copy-on-write faults later)
        with probed(keep=True) as rec_probe:  # warm-up: page cache, session; the runner's calls
            warm = go(OVERLAP, None, "warm")
        calls = rec_probe.calls
        shapes = {tuple(feed.shape) for _, _, f in calls for feed in f.values()}
        windows = warm.run.stats.windows
        for _ in range(reps):
            floors.append(replay(calls))
            with probed() as probe:
                ones.append(go(OVERLAP, None, "one"))
            probes.append(probe)
            zeros.append(go(0, None, "zero"))
            twos.append(go(OVERLAP, two, "two"))
    walls = [r.wall for r in ones]
    print(
        f"onnx {size}x{size}, graph {graph[0]} 3x3 convolutions of width {graph[1]}, window "
        f"{WINDOW}, overlap {OVERLAP}, hann, batch {batch}, 1 thread "
        f"per process, {reps} reps interleaved (floor, run, run O=0, run 2 workers):"
    )
    print(
        f"  {windows} windows, {len(calls)} session.run calls of {sorted(shapes)} (the last "
        f"padded with copies of the scene's last window: {len(calls) * batch - windows})"
    )
    print(f"  floor (those calls replayed, bare): {show(floors)}")
    print(f"  run, 1 worker, both COGs written:   {show(walls)}")
    per_rep = [f"{w / f:.3f}" for w, f in zip(walls, floors, strict=True)]
    print(
        f"  run / floor: median {med(walls) / med(floors):.3f}x, min "
        f"{min(walls) / min(floors):.3f}x (per rep: {', '.join(per_rep)})"
    )
    i = walls.index(sorted(walls)[(len(walls) - 1) // 2])  # the (lower) median rep's breakdown
    s, p, w = ones[i].run.seconds, probes[i].seconds, ones[i]
    other = s["model"] - p["session"]
    print(
        f"  breakdown of the median run ({w.wall:.2f} s): job thread: waited for batches "
        f"{s['wait']:.2f} s, session.run {p['session']:.2f} s, other model glue {other:.2f} s, "
        f"waited for the helper {s['behind']:.2f} s; helper thread: reads {s['read']:.2f} s, "
        f"model input {s['prepare']:.2f} s (normalisation {p['normalise']:.2f} s), "
        f"probabilities {s['finish']:.2f} s (softmax {p['softmax']:.2f} s), quantise + "
        f"blending {s['blend']:.2f} s; main thread: stitching {s['stitch']:.2f} s, writes "
        f"{w.write:.2f} s, COG build at close {w.close:.2f} s"
    )
    z = [r.wall for r in zeros]
    nz = zeros[0].run.stats.windows
    print(
        f"  overlap 0: {nz} windows, {show(z)}; overlap {OVERLAP} costs {med(walls) / med(z):.3f}x "
        f"({med(walls) - med(z):.2f} s, windows x{windows / nz:.3f})"
    )
    t2 = [r.wall for r in twos]
    same = {r.digest for r in ones} == {warm.digest} == {r.digest for r in twos}
    print(
        f"  2 local workers: {show(t2)}; speed-up over 1: median {med(walls) / med(t2):.2f}x, "
        f"min {min(walls) / min(t2):.2f}x; bytes equal (1 and 2 workers, every rep): {same}"
    )

    def on_dask(engine: Engine) -> Any:
        return go(OVERLAP, engine, "dask")

    _engine_run("dask, 2 workers (LocalCluster)", EngineSpec("dask", 2, None), on_dask, warm.digest)
    path.unlink()


def io_floor(path: Path, rec: Any, out: Path) -> float:
    """Read the scene once (512-row windows) and write a class COG of its size; seconds."""
    t = time.perf_counter()
    with (
        rasterio.open(path) as src,
        SegmentWriter(out, rec, CLASSES, COLOURS) as writer,
    ):
        for r in range(0, src.height, 512):
            data = src.read(window=Window(0, r, src.width, min(512, src.height - r)))
            valid = np.all(data != 0, axis=0)
            cls = np.argmax(data, axis=0).astype(np.uint8)
            writer.write(r, cls, np.ones((1, *valid.shape), np.uint8), valid)
    return time.perf_counter() - t


def pixel_speed(size: int, tmp: Path, batch: int, reps: int) -> None:
    """The pixel_logistic kind over a whole scene against the I/O floor, interleaved."""
    path = tmp / f"pixel{size}.tif"
    write_scene(path, size)
    kind, rec = pixel_kind(), record(size)
    settings = SegmentSettings(WINDOW, OVERLAP, "hann", batch)

    def go(engine: Engine | None, out: str, prob: bool = False) -> Any:
        return segment_to_cogs(kind, rec, path, settings, engine, tmp / out, prob)

    floors: list[float] = []
    ones: list[Any] = []
    boths: list[Any] = []
    twos: list[Any] = []
    with Engine(EngineSpec("local", 2, None)) as two:
        go(two, "ptwo")  # warm the workers (forked first: no copy-on-write faults later)
        io_floor(path, rec, tmp / "floor.tif")  # warm-up: page cache
        warm = go(None, "pwarm")
        for _ in range(reps):
            floors.append(io_floor(path, rec, tmp / "floor.tif"))
            ones.append(go(None, "pone"))
            boths.append(go(None, "pboth", prob=True))
            twos.append(go(two, "ptwo"))
    walls, w2, wb = [r.wall for r in ones], [r.wall for r in twos], [r.wall for r in boths]
    print(
        f"pixel_logistic {size}x{size} (pointwise: overlap 0, window {WINDOW}, batch {batch}), "
        f"{reps} reps interleaved (floor, run, run + probability COG, run 2 workers):"
    )
    print(f"  I/O floor (read once + class COG): {show(floors)}")
    print(f"  run + class COG, 1 worker:         {show(walls)}")
    print(
        f"  run / floor: median {med(walls) / med(floors):.3f}x, min "
        f"{min(walls) / min(floors):.3f}x"
    )
    i = walls.index(sorted(walls)[(len(walls) - 1) // 2])
    s, w = ones[i].run.seconds, ones[i]
    print(
        f"  breakdown of the median run ({w.wall:.2f} s): reads {s['read']:.2f} s (waited for "
        f"{s['wait']:.2f} s), model {s['model']:.2f} s, blending {s['blend']:.2f} s, stitching "
        f"{s['stitch']:.2f} s, writes {w.write:.2f} s, COG build {w.close:.2f} s"
    )
    print(
        f"  run + class and probability COGs (the stage's outputs), 1 worker: {show(wb)} = "
        f"{med(wb) / med(floors):.3f}x floor (medians)"
    )
    same = {r.digest for r in ones} == {warm.digest} == {r.digest for r in twos}
    print(
        f"  2 local workers + class COG: {show(w2)} = {med(w2) / med(floors):.3f}x floor, "
        f"{med(walls) / med(w2):.2f}x one worker (medians); bytes equal (every run): {same}"
    )
    path.unlink()


def main() -> None:
    """Parse arguments and run the parts asked for (all of them when none is)."""
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        memory_child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--memory", type=int, nargs="+", metavar="SIZE", help="scene sides")
    ap.add_argument("--onnx", type=int, metavar="SIZE", help="ONNX speed: scene side")
    ap.add_argument("--pixel", type=int, metavar="SIZE", help="pixel_logistic: scene side")
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions (default 3)")
    ap.add_argument("--batch", type=int, default=4, help="windows per model call (default 4)")
    ap.add_argument("--layers", type=int, default=2, help="ONNX graph: 3x3 convolutions (2)")
    ap.add_argument("--hidden", type=int, default=16, help="ONNX graph: their width (16)")
    args = ap.parse_args()
    if args.memory is None and args.onnx is None and args.pixel is None:
        args.memory, args.onnx, args.pixel = [4096, 10980], 2048, 4096
    with tempfile.TemporaryDirectory() as tmp:
        if args.memory:
            memory(args.memory, Path(tmp), args.batch, (args.layers, args.hidden))
        if args.onnx:
            onnx_speed(args.onnx, Path(tmp), args.batch, args.reps, (args.layers, args.hidden))
        if args.pixel:
            pixel_speed(args.pixel, Path(tmp), args.batch, args.reps)


if __name__ == "__main__":
    main()
