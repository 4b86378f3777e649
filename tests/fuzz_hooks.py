"""Schemathesis hooks: realistic tile paths, uploads, scene ids and bboxes, so requests reach code.

Loaded by ``schemathesis run`` through ``SCHEMATHESIS_HOOKS=tests.fuzz_hooks``. What is real comes
from the JSON file named by ``SATPIPE_FUZZ_TILES``: ``{"paths": [...], "uploads": [...],
"scene_uploads": [...], "scenes": [{"id", "bounds", "lonlat"}], "map_tiles": [{"scene",
"layer", "md5", "z", "x", "y"}]}``: tile paths relative to the tiles directory, tiles to upload
to ``/infer/upload``, small scenes (with the band names the model reads) to upload to
``/segment``, the pinned scenes with their bounds in their CRS and in EPSG:4326, and map tiles
over them at the layers' current versions (so tile requests reach the drawing code, not a 404
for an unknown version).

Two kinds of hook, so that every request keeps the right label (schema-valid or not), which the
checks ``positive_data_acceptance`` and ``negative_data_rejection`` judge by:

- Case hooks replace a drawn case's JSON body, path parameters or query with a real tile path, a
  real scene id or a bbox over the scene, alone or bent the ways clients get them wrong
  (traversal, absolute, encoded, trailing parts). Schemathesis sees the change and validates the
  new values against the schema, labelling the case valid or invalid accordingly.
- Body hooks mix real uploads (a real GeoTIFF's bytes, whole, cut short or with one byte flipped,
  never empty) into the bodies drawn for the upload routes. Schemathesis cannot validate binary
  parts afterwards, so these are added to the strategy itself: every one of them is a non-empty
  file, which is what the schema admits.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import strategies as st

_TILES = json.loads(Path(os.environ["SATPIPE_FUZZ_TILES"]).read_text())
_PATHS: list[str] = _TILES["paths"]
_BLOBS: list[bytes] = [Path(p).read_bytes() for p in _TILES["uploads"]]
_SCENE_BLOBS: list[bytes] = [Path(p).read_bytes() for p in _TILES.get("scene_uploads", [])]
_SCENES: list[dict[str, Any]] = _TILES.get("scenes", [])
_MAP_TILES: list[dict[str, Any]] = _TILES.get("map_tiles", [])
TILE_ROUTE = "/maps/{scene}/{layer}/{md5}/{z}/{x}/{y}.png"

_PREFIXES = ["", "", "", "./", "../", "/", "data/tiles/", "%2e%2e/", "..\\", "//", " "]
_SUFFIXES = ["", "", "", "/", ".aux.xml", ".ovr", "%00", "\x00", " ", "/..", "?x=1", ".TIF"]
_SCENE_BENDS = ["../{}", "{}/..", "..", "%2e%2e", "{}.class.tif", ".{}", " {}", "{}%2F..", "~{}"]


def _bend(path: str, prefix: str, suffix: str, upper: bool) -> str:
    bent = prefix + path + suffix
    return bent.upper() if upper else bent


def _paths() -> st.SearchStrategy[str]:
    real = st.sampled_from(_PATHS)
    bent = st.builds(
        _bend, real, st.sampled_from(_PREFIXES), st.sampled_from(_SUFFIXES), st.booleans()
    )
    return st.one_of(real, bent)


def _damage(blob: bytes, how: str, at: int) -> bytes:
    at = 1 + at % max(1, len(blob) - 1)  # never empty: an empty file is not what the schema admits
    if how == "cut":
        return blob[:at]
    if how == "flip":
        return blob[:at] + bytes([blob[at] ^ 0xFF]) + blob[at + 1 :]
    return blob


def _uploads(blobs: list[bytes]) -> st.SearchStrategy[bytes]:
    return st.builds(
        _damage,
        st.sampled_from(blobs),
        st.sampled_from(["whole", "whole", "cut", "flip"]),
        st.integers(min_value=0, max_value=1 << 20),
    )


def _scene_ids() -> st.SearchStrategy[str]:
    ids = st.sampled_from([s["id"] for s in _SCENES] or ["no-scene"])
    return st.one_of(ids, ids, st.builds(str.format, st.sampled_from(_SCENE_BENDS), ids))


def _box(bounds: list[float], a: float, b: float, c: float, d: float) -> str:
    """A box over ``bounds`` (reaching past them a little) from four fractions."""
    left, bottom, right, top = bounds
    w, h = right - left, top - bottom
    x0, x1 = sorted((left + w * (a * 1.2 - 0.1), left + w * (b * 1.2 - 0.1)))
    y0, y1 = sorted((bottom + h * (c * 1.2 - 0.1), bottom + h * (d * 1.2 - 0.1)))
    return ",".join(f"{v:.6f}" for v in (x0, y0, x1 + w / 1000, y1 + h / 1000))


def _bboxes() -> st.SearchStrategy[tuple[str, str]]:
    if not _SCENES:
        return st.just(("0,0,1,1", "scene"))
    unit = st.floats(min_value=0, max_value=1)
    crs = st.sampled_from(["scene", "EPSG:4326"])

    def build(scene: dict[str, Any], crs: str, a: float, b: float, c: float, d: float) -> tuple:
        bounds = scene["bounds"] if crs == "scene" else scene["lonlat"]
        return _box(bounds, a, b, c, d), crs

    return st.builds(build, st.sampled_from(_SCENES), crs, unit, unit, unit, unit)


def _with_tile_path(drawn: tuple[Any, str | None]) -> Any:
    case, path = drawn
    if path is not None:
        case.body = {"tile_path": path}
    return case


def _with_scene(drawn: tuple[Any, str | None, tuple[str, str] | None]) -> Any:
    case, scene, box = drawn
    if scene is not None:
        case.path_parameters = {**(case.path_parameters or {}), "scene": scene}
    if box is not None and case.operation.path == "/segment/{scene}":
        case.query = {**(case.query or {}), "bbox": box[0], "bbox_crs": box[1]}
    if box is not None and case.operation.path == "/maps/{scene}/point" and box[1] != "scene":
        west, south, east, north = (float(v) for v in box[0].split(","))
        case.query = {**(case.query or {}), "lon": (west + east) / 2, "lat": (south + north) / 2}
    return case


def _with_map_tile(drawn: tuple[Any, dict[str, Any] | None]) -> Any:
    case, tile = drawn
    if tile is not None:
        case.path_parameters = {**(case.path_parameters or {}), **tile}
    return case


@schemathesis.hook
def before_generate_case(ctx: Any, strategy: st.SearchStrategy) -> st.SearchStrategy:
    """Give /infer real tile paths, and the scene routes real scene ids and bboxes."""
    path = ctx.operation.path
    if path == "/infer":
        return st.tuples(strategy, st.one_of(st.none(), _paths())).map(_with_tile_path)
    if path == TILE_ROUTE and _MAP_TILES:
        tile = st.one_of(st.none(), st.sampled_from(_MAP_TILES), st.sampled_from(_MAP_TILES))
        return st.tuples(strategy, tile).map(_with_map_tile)
    if "{scene}" in path:
        scene = st.one_of(st.none(), _scene_ids(), _scene_ids(), _scene_ids())
        box = st.one_of(st.none(), _bboxes(), _bboxes(), _bboxes())
        return st.tuples(strategy, scene, box).map(_with_scene)
    return strategy


@schemathesis.hook
def before_generate_body(ctx: Any, strategy: st.SearchStrategy) -> st.SearchStrategy:
    """Mix real tile paths into batches and real GeoTIFFs into uploads."""
    path = ctx.operation.path
    if path == "/infer/batch":
        paths = st.lists(_paths(), min_size=1, max_size=8)
        return st.one_of(strategy, st.fixed_dictionaries({"tile_paths": paths}))
    blobs = {"/infer/upload": _BLOBS, "/segment": _SCENE_BLOBS}.get(path)
    if blobs:
        return st.one_of(strategy, st.fixed_dictionaries({"file": _uploads(blobs)}))
    return strategy
