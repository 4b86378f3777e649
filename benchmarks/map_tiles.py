"""Benchmark map tiles: the service's tile latency against rio-tiler called in process (the floor).

Usage::

    python benchmarks/map_tiles.py                         # the small 700 x 600 run, 30 rounds
    python benchmarks/map_tiles.py --size 2048 2048 --rounds 20
    python benchmarks/map_tiles.py --repo /path/to/a/per-pixel/run

The service: real uvicorn (one process, 127.0.0.1) on a per-pixel pipeline run (built here with
``dvc repro``, as ``tests/serve_fixtures.segmentation_repo`` builds it, unless ``--repo`` names
one), asked over one keep-alive HTTP connection for every tile of the first scene at its
maximum zoom level, for the ``classes`` and ``scene`` (true colour) layers. Everything a request
costs is in: HTTP, routing, the served-model dependency, the catalog check (one ``stat`` of
``dvc.lock``, one of each pinned file), the worker thread, reading, colouring, PNG encoding.

The floor: rio-tiler alone, in this process, on the same files and tiles: ``Reader(path).tile``
with nearest resampling and ``ImageData.render`` (GDAL's PNG driver) with the palette
(classes) or after a linear rescale of the three display bands (true colour). Also timed: the
service's own drawing function called in process (:mod:`satpipe.outputs.map_tiles`, no HTTP).
Each round visits every tile once, interleaving floor, service and library calls; the first
round is a warm-up (it verifies the files' md5 and builds the true-colour style). Prints medians
per layer and the ratios service / floor and library / floor. Asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import rasterio  # noqa: E402
from rio_tiler.errors import NoOverviewWarning  # noqa: E402
from rio_tiler.io import Reader  # noqa: E402

from satpipe.outputs import map_tiles  # noqa: E402
from tests.serve_fixtures import SEGMENTATION, init_pipeline, uvicorn_server  # noqa: E402


def build_repo(repo: Path, width: int, height: int) -> Path:
    """A per-pixel run (``pixel_logistic``) of a ``width`` x ``height`` synthetic scene."""
    return init_pipeline(repo, {**SEGMENTATION, "ingest": {"width": width, "height": height}})


def _floor_classes(path: Path, colours: dict[int, tuple[int, int, int, int]]) -> Callable:
    def call(z: int, x: int, y: int) -> bytes:
        with Reader(str(path)) as src:
            img = src.tile(x, y, z, resampling_method="nearest", reproject_method="nearest")
        return img.render(img_format="PNG", colormap=colours)

    return call


def _floor_scene(path: Path, style: map_tiles.TrueColour) -> Callable:
    ranges = [(lo, hi) for lo, hi in style.limits]

    def call(z: int, x: int, y: int) -> bytes:
        with Reader(str(path)) as src:
            img = src.tile(
                x,
                y,
                z,
                indexes=list(style.bands),
                resampling_method="nearest",
                reproject_method="nearest",
            )
        return img.post_process(in_range=ranges).render(img_format="PNG")

    return call


def _timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def bench_layer(
    http: httpx.Client, template: str, tiles: list, floor: Callable, library: Callable, rounds: int
) -> dict[str, list[float]]:
    """Interleaved timings (seconds) of the floor, the service and the library, per tile."""
    out: dict[str, list[float]] = {"floor": [], "service": [], "library": []}
    for r in range(rounds + 1):
        for t in tiles:
            url = template.format(z=t.z, x=t.x, y=t.y)
            timings = {
                "floor": _timed(lambda t=t: floor(t.z, t.x, t.y)),
                "service": _timed(lambda url=url: http.get(url).raise_for_status()),
                "library": _timed(lambda t=t: library(t.z, t.x, t.y)),
            }
            if r > 0:  # round 0 warms up
                for key, value in timings.items():
                    out[key].append(value)
    return out


def report(name: str, series: dict[str, list[float]]) -> None:
    """Print medians (ms) and the ratios to the floor."""
    med = {key: statistics.median(values) * 1000 for key, values in series.items()}
    print(
        f"{name:8s} n={len(series['floor']):4d}  floor {med['floor']:6.2f} ms  "
        f"service {med['service']:6.2f} ms  library {med['library']:6.2f} ms  "
        f"service/floor {med['service'] / med['floor']:.2f}  "
        f"library/floor {med['library'] / med['floor']:.2f}  "
        f"service-floor {med['service'] - med['floor']:+.2f} ms"
    )


def main() -> None:
    """Build or take the run, start the service, time every layer's tiles."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repo", type=Path, help="a DVC repo with a per-pixel run (default: build)")
    p.add_argument("--size", type=int, nargs=2, default=(700, 600), metavar=("W", "H"))
    p.add_argument("--rounds", type=int, default=30)
    args = p.parse_args()
    warnings.simplefilter("ignore", NoOverviewWarning)  # the floor opens scenes without overviews
    with tempfile.TemporaryDirectory(prefix="map-tiles-bench-") as tmp:
        repo = args.repo or build_repo(Path(tmp) / "repo", *args.size)
        with uvicorn_server(repo, Path(tmp) / "server.log") as base:
            http = httpx.Client(base_url=base, timeout=60)
            index = http.get("/maps").json()
            scene = index["scenes"][0]
            layers = {layer["name"]: layer for layer in scene["layers"]}
            class_tif = repo / f"data/segments/{scene['id']}.class.tif"
            scene_tif = repo / f"data/scenes/{scene['id']}.tif"
            preview = repo / f"data/scenes/{scene['id']}.preview.tif"
            with rasterio.open(class_tif) as src:
                palette = {k: tuple(v) for k, v in src.colormap(1).items()}
            maxzoom = Reader(str(class_tif)).maxzoom
            west, south, east, north = scene["bounds"]
            tiles = list(map_tiles.TMS.tiles(west, south, east, north, [maxzoom]))
            style = map_tiles.true_colour(preview)
            colours = [tuple(int(c) for c in palette[i][:3]) for i in range(len(palette))][:4]
            table = map_tiles.colour_table(colours)
            print(
                f"scene {scene['id']}: {len(tiles)} tiles at zoom {maxzoom}, {args.rounds} rounds"
            )
            classes = bench_layer(
                http,
                layers["classes"]["tiles"],
                tiles,
                _floor_classes(class_tif, palette),
                lambda z, x, y: map_tiles.render_categorical(class_tif, z, x, y, table),
                args.rounds,
            )
            report("classes", classes)
            true = bench_layer(
                http,
                layers["scene"]["tiles"],
                tiles,
                _floor_scene(scene_tif, style),
                lambda z, x, y: map_tiles.render_true_colour(scene_tif, z, x, y, style),
                args.rounds,
            )
            report("scene", true)
            sizes = [
                len(http.get(layers["scene"]["tiles"].format(z=t.z, x=t.x, y=t.y)).content)
                for t in tiles
            ]
            print(f"true-colour tile PNG: median {np.median(sizes) / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
