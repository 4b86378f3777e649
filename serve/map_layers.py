"""Drawing the catalog's layers: tiles, the pixel under a point, legends and TileJSON.

Each function takes the :class:`~serve.map_catalog.Catalog` of the request's served model and
reads only pinned files, verified (:class:`~serve.outputs.PinnedFiles`). What is worked out once
per scene is kept on the catalog: the true-colour stretch (from the preview, as the quick-look
computes it), the held-out pixel grid of the errors layer, and the pinned predictions by tile.
They are blocking (file reads, GDAL): routes run them in worker threads.

The held-out grid: the judged pixels of a scene (held-out tiles' windows minus training tiles',
:func:`satpipe.evaluation.held_out.held_out_pixels`) are a union of tile windows, whose edges
fall on multiples of ``g = gcd(size, stride)`` (or on the scene's edge), so they are exactly a
mask of ``g x g``-pixel cells: a small raster on the scene's grid coarsened ``g`` times, which
rio-tiler tiles like the class raster.
"""

from __future__ import annotations

import math
from typing import Any, cast

import numpy as np
from affine import Affine

from satpipe.core.records import PredictionSet, TilePrediction
from satpipe.evaluation.held_out import HeldOutPixels, held_out_pixels
from satpipe.models.kinds.base import PixelKind
from satpipe.outputs import map_info, map_tiles
from serve.map_catalog import Catalog, Layer, SceneMaps
from serve.outputs import PinnedFiles


def true_colour(cat: Catalog, files: PinnedFiles, scene: SceneMaps) -> map_tiles.TrueColour:
    """The scene's true-colour style: the quick-look's bands and stretch (kept per scene)."""
    style = cat.styles.get(scene.id)
    if style is None:
        sources = scene.layers["scene"].sources
        preview = files.local(sources[-1])  # the preview when there is one, else the scene
        style = map_tiles.true_colour(preview, scene.header.nodata_value)
        cat.styles[scene.id] = style
    return style


def _coarse(spans: np.ndarray, g: int) -> np.ndarray:
    """Row and column spans in scene pixels as spans of ``g``-pixel cells (ends rounded up)."""
    return np.stack(
        [spans[:, 0] // g, -(-spans[:, 1] // g), spans[:, 2] // g, -(-spans[:, 3] // g)], axis=1
    ).reshape(-1, 4)


def judged_grid(cat: Catalog, scene: SceneMaps) -> map_tiles.MaskGrid:
    """The scene's held-out pixels as a :class:`MaskGrid` (see the module docstring)."""
    grid = cat.judged.get(scene.id)
    if grid is None:
        held = held_out_pixels(cat.loaded.model, cat.index, cat.index_sha256, scene.id)
        tiling = cat.index.tiling
        size = int(tiling["size"])
        g = math.gcd(size, int(tiling.get("stride") or size))
        rows, cols = -(-held.height // g), -(-held.width // g)
        coarse = HeldOutPixels(cols, rows, _coarse(held.held_out, g), _coarse(held.training, g))
        mask, _ = coarse.masks(0, rows, 0, cols)
        transform = Affine(*[float(v) for v in scene.header.transform[:6]]) @ Affine.scale(g)
        grid = map_tiles.MaskGrid(mask, transform, scene.header.crs_wkt or scene.header.crs)
        cat.judged[scene.id] = grid
    return grid


def render(
    cat: Catalog, files: PinnedFiles, scene: SceneMaps, layer: Layer, z: int, x: int, y: int
) -> bytes:
    """The PNG of tile ``(z, x, y)`` of ``layer`` (a fully transparent one outside it).

    Raises:
        OutputNotPinnedError: a source file is not the pinned one.
    """
    model = cat.loaded.model
    raster = files.local(layer.sources[0])
    if layer.name == "scene":
        return map_tiles.render_true_colour(raster, z, x, y, true_colour(cat, files, scene))
    if layer.name == "classes":
        return map_tiles.render_categorical(raster, z, x, y, map_tiles.colour_table(model.colours))
    if layer.name == "probability":
        return map_tiles.render_ramp(raster, z, x, y)
    if layer.name == "errors":
        labels = files.local(layer.sources[1])
        codes = cast(PixelKind, model.kind).label_codes
        grid = judged_grid(cat, scene)
        return map_tiles.render_errors(raster, labels, codes, z, x, y, grid)
    table = map_tiles.colour_table(model.colours, first_code=1)  # tiles: 0 is "no tile"
    return map_tiles.render_categorical(raster, z, x, y, table)


def legends(cat: Catalog, scene: SceneMaps) -> list[dict[str, Any]]:
    """Each of the scene's layers' legend: ``{layer, kind, entries}`` (see map_tiles)."""
    model = cat.loaded.model
    out = []
    for name in scene.layers:
        if name in ("classes", "tiles"):
            first = 0 if name == "classes" else 1
            entries = map_info.categorical_legend(model.classes, model.colours, first)
            out.append({"layer": name, "kind": "categorical", "entries": entries})
        elif name == "probability":
            out.append({"layer": name, "kind": "ramp", "entries": map_info.ramp_legend()})
        elif name == "errors":
            entries = map_info.error_legend(model.classes[0])
            out.append({"layer": name, "kind": "categorical", "entries": entries})
    return out


def tilejson(files: PinnedFiles, scene: SceneMaps, layer: Layer, tiles_url: str) -> dict[str, Any]:
    """TileJSON 3.0.0 of a layer whose tiles are at ``tiles_url``."""
    raster = files.local(layer.sources[0])
    doc = map_info.tilejson(raster, tiles_url, f"{scene.id} {layer.name}")
    doc["version"] = layer.md5
    return doc


def _records(
    cat: Catalog, files: PinnedFiles, layer: Layer
) -> dict[tuple[str | None, int, int], TilePrediction]:
    if cat.records is None:
        found: dict[tuple[str | None, int, int], TilePrediction] = {}
        if len(layer.sources) > 1:
            doc = files.read_json(layer.sources[1])
            for rec in PredictionSet.from_json(doc, layer.sources[1].path).predictions:
                found[rec.scene, rec.window.row_off, rec.window.col_off] = rec
        cat.records = found
    return cat.records


def _tile_at(
    cat: Catalog, files: PinnedFiles, scene: SceneMaps, lon: float, lat: float
) -> dict[str, Any] | None:
    layer = scene.layers["tiles"]
    pixel = map_info.pixel_at(files.local(layer.sources[0]), lon, lat)
    if pixel is None or pixel.values[0] is None:
        return None
    stride = int(cat.index.tiling.get("stride") or cat.index.tiling["size"])
    rec = _records(cat, files, layer).get((scene.id, pixel.row * stride, pixel.col * stride))
    if rec is None:
        return None
    return {
        "id": rec.id,
        "prediction": rec.prediction,
        "score": rec.score,
        "features": dict(rec.features),
        "window": rec.window.to_json(),
    }


def point(
    cat: Catalog, files: PinnedFiles, scene: SceneMaps, lon: float, lat: float
) -> dict[str, Any]:
    """What the scene's layers hold under ``(lon, lat)``: pixel, class, probability, tile."""
    model = cat.loaded.model
    out: dict[str, Any] = {"inside": False, "row": None, "col": None, "class_code": None}
    out.update(class_name=None, probability=None, tile=None)
    base = scene.layers.get("classes") or scene.layers.get("scene")
    pixel = map_info.pixel_at(files.local(base.sources[0]), lon, lat) if base else None
    if pixel is not None:
        out.update(inside=True, row=pixel.row, col=pixel.col)
        code = pixel.values[0]
        if base is not None and base.name == "classes" and code is not None:
            out["class_code"] = int(code)
            if code < len(model.classes):
                out["class_name"] = model.classes[int(code)]
        out["probability"] = _probability(files, scene, lon, lat, out["class_code"])
    if "tiles" in scene.layers:
        out["tile"] = _tile_at(cat, files, scene, lon, lat)
    return out


def _probability(
    files: PinnedFiles, scene: SceneMaps, lon: float, lat: float, code: int | None
) -> float | None:
    layer = scene.layers.get("probability")
    if layer is None or code is None:
        return None
    pixel = map_info.pixel_at(files.local(layer.sources[0]), lon, lat)
    if pixel is None:
        return None
    values = pixel.values
    value = values[0] if len(values) == 1 else values[code] if code < len(values) else None
    return None if value is None else round(value / 255, 4)
