"""Benchmark POST /segment: an upload's latency against bare ONNX Runtime on the same windows.

Usage::

    python benchmarks/segment_serve.py                    # 256 x 256, 30 reps, GeoTIFF answer
    python benchmarks/segment_serve.py --reps 50 --format json --repo /path/to/segmented/run

The service: ``create_app`` on a small per-pixel pipeline run (built here with ``dvc repro``
unless ``--repo`` names one, as ``tests/serve_fixtures.segmentation_repo`` builds it), called in
process through Starlette's ``TestClient`` (multipart encoding and parsing, routing, the worker
thread, the answer included; no sockets). Its served model is then swapped, in memory, for an ONNX
per-pixel model: the real ``OnnxKind`` of ``benchmarks/_segment_common`` (a ``onnx.helper`` graph,
``--layers`` 3x3 convolutions of width ``--hidden``, default 2 x 16, and a 1x1 head, window 256,
the pinned session options), so the route runs exactly its code with an ONNX model; the segment
params are the pinned run's (overlap 64, Hann, batch 4).

The upload: a 4-band uint16 GeoTIFF (``write_scene``: tiled, deflate, band names B02..B08).

The floor: the ``session.run`` calls one request makes (recorded on a warm-up request: the
normalised, padded batches of the upload's windows), replayed bare on the same session. Reps are
interleaved (floor, then one request, then the same segmentation called directly without HTTP);
prints each series, medians, the ratio service / floor and the fixed overhead (service - floor).
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _segment_common: a sibling module

from _segment_common import make_graph, med, onnx_kind, probed, replay, show, write_scene

from serve.app import create_app
from serve.segment_routes import encode_answer
from serve.segmenting import Segmenting
from serve.service import Serving
from serve.settings import Settings
from tests.serve_fixtures import SEGMENTATION, init_pipeline


def build_repo(repo: Path) -> Path:
    """The small per-pixel run (``pixel_logistic``), as ``segmentation_repo`` builds it."""
    return init_pipeline(repo, SEGMENTATION)


def bench(repo: Path, tmp: Path, size: int, reps: int, fmt: str, graph: tuple[int, int]) -> None:
    """Interleaved reps of the floor, a request and a direct call; prints the figures."""
    from fastapi.testclient import TestClient

    make_graph(tmp, *graph)
    kind = onnx_kind(tmp)
    upload = tmp / "upload.tif"
    write_scene(upload, size)
    data = upload.read_bytes()
    app = create_app(Settings(repo=repo, reload_interval=0, log_level="WARNING"))
    with TestClient(app) as client:
        service = app.state.service
        pinned = service.require_ready()
        loaded = replace(pinned, model=replace(pinned.model, kind=kind))
        service.serving = Serving(loaded, "")  # the ONNX model, served as the pinned one
        segmenting = Segmenting(app.state.settings, service.cache)

        def request() -> Any:
            files = {"file": ("upload.tif", data, "image/tiff")}
            got = client.post(f"/segment?format={fmt}", files=files)
            assert got.status_code == 200, got.text
            return got

        def direct() -> dict[str, float]:
            with probed() as probe:
                t = time.perf_counter()
                raster = segmenting.upload(data, "upload.tif", loaded)
                t2 = time.perf_counter()
            encode_answer(raster, fmt, loaded)  # type: ignore[arg-type]
            parts = {"total": time.perf_counter() - t, "encode": time.perf_counter() - t2}
            return parts | probe.seconds | {"segment": t2 - t}

        with probed(keep=True) as warm:
            request()
        calls = warm.calls
        shapes = sorted({tuple(f.shape) for _, _, feed in calls for f in feed.values()})
        request()
        direct()
        floors, served, directs = [], [], []
        for _ in range(reps):
            floors.append(replay(calls))
            t = time.perf_counter()
            request()
            served.append(time.perf_counter() - t)
            directs.append(direct())
    f, s, d = med(floors), med(served), med([p["total"] for p in directs])
    parts = {k: 1000 * med([p[k] for p in directs]) for k in directs[0]}
    print(
        f"POST /segment {size}x{size}x4 uint16 (format {fmt}), ONNX {graph[0]} 3x3 convolutions "
        f"of width {graph[1]}, window 256, overlap 64, hann, batch 4, {reps} reps interleaved:"
    )
    print(f"  {len(calls)} session.run call(s) of {shapes}")
    print(f"  floor (those calls replayed, bare): {_ms(floors)}")
    print(f"  POST /segment (TestClient):         {_ms(served)}")
    print(f"  same, called directly (no HTTP):    {_ms([p['total'] for p in directs])}")
    other = parts["segment"] - parts["session"] - parts["normalise"] - parts["softmax"]
    print(
        f"  medians of the direct call: segmentation {parts['segment']:.1f} ms (session.run "
        f"{parts['session']:.1f}, normalisation {parts['normalise']:.1f}, softmax "
        f"{parts['softmax']:.1f}, the rest: header check, temporary file, reads, blending, "
        f"threads {other:.1f}), answer encoding {parts['encode']:.1f} ms"
    )
    print(
        f"  service / floor: {s / f:.2f}x (medians); fixed overhead service - floor "
        f"{1000 * (s - f):.1f} ms (of which HTTP and the worker thread {1000 * (s - d):.1f} ms); "
        f"target: service <= 1.2 x floor + overhead, i.e. overhead <= {1000 * (s - 1.2 * f):.1f} "
        f"ms beyond 1.2 x floor"
    )


def _ms(values: list[float]) -> str:
    return show([1000 * v for v in values]).replace(" s (", " ms (")


def main() -> None:
    """Parse arguments, build or take the run, and benchmark."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256, help="upload side, pixels (256)")
    ap.add_argument("--reps", type=int, default=30, help="interleaved repetitions (30)")
    ap.add_argument("--format", default="geotiff", choices=["geotiff", "geojson", "json"])
    ap.add_argument("--repo", type=Path, help="a segmented run to serve (default: build one)")
    ap.add_argument("--layers", type=int, default=2, help="ONNX graph: 3x3 convolutions (2)")
    ap.add_argument("--hidden", type=int, default=16, help="ONNX graph: their width (16)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="segment-serve-") as name:
        tmp = Path(name)
        repo = args.repo or build_repo(tmp / "repo")
        bench(repo, tmp, args.size, args.reps, args.format, (args.layers, args.hidden))


if __name__ == "__main__":
    main()
