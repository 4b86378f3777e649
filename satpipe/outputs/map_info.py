"""Map information: what a map client needs besides tiles (TileJSON, legends, a pixel's values).

- *TileJSON* (3.0.0) of a raster's tiles: bounds in WGS84 degrees, zoom levels from the raster's
  resolution (rio-tiler's ``minzoom``/``maxzoom``), the tile URL template.
- *Legends* built from the same declarations as the tiles' colours: a class raster's classes
  and their colours (the palette :func:`satpipe.outputs.map_tiles.colour_table` paints), the
  error kinds (:data:`satpipe.outputs.mask_quicklook.ERROR_COLOURS`), stops of the probability
  ramp (:func:`satpipe.outputs.map_tiles.ramp_table`).
- *The pixel under a point*: a raster's values there and its row and column (rio-tiler's
  ``point``), for a click on a map.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rio_tiler.constants import WGS84_CRS
from rio_tiler.errors import PointOutsideBounds

from satpipe.outputs.map_tiles import open_reader, ramp_table
from satpipe.outputs.mask_quicklook import ERROR_COLOURS


@dataclass(frozen=True)
class PixelValue:
    """A raster's pixel under a point: its band values (None where nodata) and position."""

    values: tuple[float | None, ...]
    row: int
    col: int


def pixel_at(path: Path | str, lon: float, lat: float) -> PixelValue | None:
    """The pixel of a raster under ``(lon, lat)`` (WGS84 degrees), or None outside it."""
    with open_reader(path) as src:
        # Outside the raster's lon/lat bounds first: far away, the point may be outside the
        # raster CRS's domain (a UTM zone), where projecting it fails.
        west, south, east, north = src.get_geographic_bounds(WGS84_CRS)
        if not (west <= lon <= east and south <= lat <= north):
            return None
        try:
            point = src.point(lon, lat)
        except PointOutsideBounds:
            return None
    col, row = point.pixel_location or (0, 0)
    values = tuple(
        None if masked else float(v)
        for v, masked in zip(point.array.data, np.ma.getmaskarray(point.array), strict=True)
    )
    return PixelValue(values, int(row), int(col))


def tilejson(
    path: Path | str, tiles_url: str, name: str, description: str | None = None
) -> dict[str, Any]:
    """TileJSON 3.0.0 of a raster's tiles at ``tiles_url`` (a ``{z}/{x}/{y}`` template).

    ``bounds`` are the raster's in WGS84 degrees; ``minzoom`` is the level at which it fits
    one tile, ``maxzoom`` the one nearest its resolution (rio-tiler's); ``center`` is the
    middle of the bounds, two levels in from ``minzoom``.
    """
    with open_reader(path) as src:
        west, south, east, north = src.get_geographic_bounds(WGS84_CRS)
        minzoom, maxzoom = int(src.minzoom), int(src.maxzoom)
    doc: dict[str, Any] = {
        "tilejson": "3.0.0",
        "name": name,
        "scheme": "xyz",
        "tiles": [tiles_url],
        "minzoom": minzoom,
        "maxzoom": maxzoom,
        "bounds": [west, south, east, north],
        "center": [(west + east) / 2, (south + north) / 2, min(maxzoom, minzoom + 2)],
    }
    if description:
        doc["description"] = description
    return doc


def hex_colour(rgb: Sequence[int]) -> str:
    """``#rrggbb`` of an RGB(A) colour."""
    return "#{:02x}{:02x}{:02x}".format(*rgb[:3])


def categorical_legend(
    names: Sequence[str], colours: Sequence[tuple[int, int, int]], first_code: int = 0
) -> list[dict[str, Any]]:
    """Legend entries ``{value, name, colour}`` of a class raster, in code order."""
    return [
        {"value": first_code + i, "name": name, "colour": hex_colour(colour)}
        for i, (name, colour) in enumerate(zip(names, colours, strict=True))
    ]


def error_legend(positive_name: str) -> list[dict[str, Any]]:
    """Legend entries of the error layer (``value``: the kind's code in :func:`error_kinds`)."""
    names = {
        "correct": "correct",
        "false_positive": f"false positive (predicted {positive_name})",
        "false_negative": f"false negative (labelled {positive_name})",
        "other_error": "other error",
    }
    return [
        {"value": i, "name": names[kind], "colour": hex_colour(rgb)}
        for i, (kind, rgb) in enumerate(ERROR_COLOURS.items())
    ]


def ramp_legend(stops: int = 5) -> list[dict[str, Any]]:
    """Legend stops of the probability ramp: probability ``p`` is byte ``round(255 p)``."""
    table = ramp_table()
    out = []
    for i in range(stops):
        p = i / (stops - 1)
        out.append({"value": p, "name": f"{p:.0%}", "colour": hex_colour(table[round(255 * p)])})
    return out
