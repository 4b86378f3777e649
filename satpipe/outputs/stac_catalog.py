"""STAC catalog of a run's outputs: one item per scene, its files as assets, for any STAC tool.

A *run catalog* is a static, self-contained STAC catalog (``catalog.json`` and
``<id>/<id>.json`` per scene, relative links, no self links) that describes what a run wrote, so
QGIS's STAC browser, stac-browser or odc-stac can open it. Not to be confused with
:mod:`satpipe.scenes.stac`, which *reads* the STAC items scenes come from.

Each scene with at least one output becomes an item: its footprint in EPSG:4326 (the scene's
bounds, densified, transformed), its acquisition time as ``datetime``, the ``proj`` fields of the
scene grid (``proj:code`` or ``proj:wkt2``, shape, transform, bbox in the scene CRS), and the
provenance as ``satpipe:`` properties: the model's version, the md5 of the model file and what
the model labels (``pixels`` or ``tile``). The ``processing`` extension has no field for a model
and the ``mlm`` extension describes a model's inputs and architecture, which this is not; a
prefixed property needs no schema. Assets (see :mod:`satpipe.outputs.stac_assets`):

- ``class`` and ``probability``: the segment stage's COGs (per-pixel models), from its index;
- ``tile_classes`` and ``tile_scores``: the maps stage's COGs (one pixel per tile position);
- ``polygons`` (FlatGeobuf, scene CRS) and ``polygons_geojson`` (EPSG:4326): the vectorize
  stage's files, from its index;
- ``quicklook``, ``quicklook_classes``, ``quicklook_errors``: the maps stage's PNGs (role
  ``overview``: reduced pictures, not full-resolution ``visual`` renderings).

The files are written as canonical JSON (sorted keys), with no time and no absolute path: the
same outputs give the same bytes.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pystac
from pystac.extensions.projection import ProjectionExtension
from pystac.stac_io import DefaultStacIO
from pystac.utils import str_to_datetime
from rasterio.crs import CRS
from rasterio.warp import transform_geom

from satpipe.core.errors import SatpipeError
from satpipe.core.files import canonical_json, read_json
from satpipe.core.records import SceneRecord
from satpipe.models.model import Model
from satpipe.outputs.cog import NO_TILE
from satpipe.outputs.segmentation import CLASS_NODATA
from satpipe.outputs.stac_assets import Grid, add_classes, add_other, add_raster, class_list

CATALOG_ID = "satpipe-outputs"
PREFIX = "satpipe:"
INDEX = "index.json"
DENSIFY = 20  # segments per side of the footprint before it is transformed
PRECISION = 7  # decimal places of footprint coordinates (about 1 cm)
WGS84 = "EPSG:4326"


class CatalogError(SatpipeError, ValueError):
    """A run's outputs cannot be described: an index is missing, malformed or names no file."""


@dataclass(frozen=True)
class RunOutputs:
    """Where a run's outputs are (``polygons`` None: the run made none)."""

    segments: Path
    maps: Path
    quicklook: Path
    polygons: Path | None = None


class CanonicalStacIO(DefaultStacIO):
    """Writes STAC JSON as :func:`satpipe.core.files.canonical_json` (sorted keys, newline)."""

    def json_dumps(self, json_dict: dict[str, Any], *args: Any, **kwargs: Any) -> str:
        """The canonical JSON text of ``json_dict``."""
        return canonical_json(json_dict)


def _file(directory: Path, name: Any, index: Path, sid: str) -> Path:
    """The file an index names for a scene, which must be a plain name of an existing file."""
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        raise CatalogError(f"{index}: scene {sid!r} names {name!r}; expected a file name")
    path = directory / name
    if not path.is_file():
        raise CatalogError(f"{path}: listed in {index} for scene {sid!r} but missing")
    return path


def read_listing(directory: Path, keys: Sequence[str], model: Model) -> dict[str, dict[str, Path]]:
    """The files an output index (``<directory>/index.json``) lists, by scene id and key.

    A key absent or null for a scene means that scene has no such file.

    Raises:
        CatalogError: the index is missing or malformed, is another model's, or names a file
            that is not there.
    """
    index = directory / INDEX
    try:
        data = read_json(index)
    except FileNotFoundError:
        raise CatalogError(f"{index}: not found; expected the stage's index of its files") from None
    except ValueError as exc:
        raise CatalogError(f"{index}: not valid JSON ({exc})") from exc
    if not isinstance(data, Mapping) or not isinstance(data.get("scenes"), list):
        raise CatalogError(f"{index}: expected an object with a 'scenes' list")
    if data.get("model_version") != model.version:
        raise CatalogError(
            f"{index}: model_version {data.get('model_version')!r}; expected {model.version!r} "
            "(the model's): these outputs are another model's"
        )
    out: dict[str, dict[str, Path]] = {}
    for entry in data["scenes"]:
        sid = entry.get("id") if isinstance(entry, Mapping) else None
        if not isinstance(sid, str) or sid in out:
            raise CatalogError(f"{index}: scene entry {entry!r:.80}; expected a new scene 'id'")
        out[sid] = {
            key: _file(directory, entry[key], index, sid)
            for key in keys
            if entry.get(key) is not None
        }
    return out


def _ring(left: float, bottom: float, right: float, top: float) -> list[tuple[float, float]]:
    """The closed, counter-clockwise outline of a box, :data:`DENSIFY` segments per side."""
    corners = [(left, bottom), (right, bottom), (right, top), (left, top), (left, bottom)]
    ring: list[tuple[float, float]] = []
    for (x0, y0), (x1, y1) in itertools.pairwise(corners):
        ring.extend(
            (x0 + (x1 - x0) * i / DENSIFY, y0 + (y1 - y0) * i / DENSIFY) for i in range(DENSIFY)
        )
    return [*ring, corners[0]]


def _points(coordinates: Any) -> list[list[float]]:
    """Every position of a GeoJSON ``coordinates`` array."""
    if isinstance(coordinates[0], int | float):
        return [list(coordinates)]
    return [p for c in coordinates for p in _points(c)]


def _lists(value: Any) -> Any:
    """Nested tuples as nested lists (what the JSON holds)."""
    return [_lists(v) for v in value] if isinstance(value, list | tuple) else value


def footprint(crs: CRS, bounds: Sequence[float]) -> tuple[dict[str, Any], list[float]]:
    """The GeoJSON geometry and bbox, in EPSG:4326, of ``bounds`` in ``crs`` (densified).

    A footprint across the antimeridian is cut there (a MultiPolygon) and its bbox spans
    -180..180.
    """
    left, bottom, right, top = (float(v) for v in bounds)
    box = {"type": "Polygon", "coordinates": [_ring(left, bottom, right, top)]}
    moved = transform_geom(crs, WGS84, box, precision=PRECISION)
    geometry = {"type": moved["type"], "coordinates": _lists(moved["coordinates"])}
    xs, ys = zip(*_points(geometry["coordinates"]), strict=True)
    return geometry, [min(xs), min(ys), max(xs), max(ys)]


def scene_item(scene: SceneRecord, model: Model, model_md5: str) -> tuple[pystac.Item, Grid]:
    """A scene's item, without assets, and the grid its ``proj`` fields state.

    Raises:
        CatalogError: the scene has no CRS or no (parsable) acquisition time.
    """
    if not scene.crs_wkt:
        raise CatalogError(f"scene {scene.id!r}: no CRS in the manifest; expected one")
    try:
        when = str_to_datetime(scene.acquisition_time or "")
    except (ValueError, OverflowError):
        raise CatalogError(
            f"scene {scene.id!r}: acquisition_time {scene.acquisition_time!r}; expected an "
            "ISO 8601 time"
        ) from None
    crs = CRS.from_wkt(scene.crs_wkt)
    geometry, bbox = footprint(crs, scene.bounds)
    properties = {
        f"{PREFIX}model_version": model.version,
        f"{PREFIX}model_md5": model_md5,
        f"{PREFIX}output": model.output,
    }
    item = pystac.Item(scene.id, geometry, bbox, when, properties)
    grid = Grid.of(crs, scene.width, scene.height, scene.transform)
    ProjectionExtension.ext(item, add_if_missing=True).apply(
        code=grid.code,
        wkt2=grid.wkt2,
        shape=list(grid.shape),
        transform=list(grid.transform),
        bbox=[float(v) for v in scene.bounds],
    )
    return item, grid


def _add_segments(item: pystac.Item, grid: Grid, files: Mapping[str, Path], model: Model) -> None:
    """The segment stage's class and probability COGs."""
    if "class" in files:
        asset = add_raster(
            item, "class", files["class"], grid, title="Class of each pixel (0: first class)"
        )
        codes = class_list(
            model.classes, model.colours, first=0, nodata=CLASS_NODATA, nodata_title="no data"
        )
        add_classes(asset, codes)
    if "probability" in files:
        asset = add_raster(item, "probability", files["probability"], grid, title="", scale=1 / 255)
        winner = len(asset.extra_fields["raster:bands"]) == 1
        what = "the winning class" if winner else "each class (a band per class, in order)"
        asset.title = f"Probability of {what} (byte = round(255 p))"


def _add_maps(item: pystac.Item, grid: Grid, maps: Path, model: Model) -> None:
    """The maps stage's tile class and score maps, if the scene has them."""
    classes, scores = maps / f"{item.id}.classes.tif", maps / f"{item.id}.scores.tif"
    if classes.is_file():
        title = "Class of each tile (one pixel per tile position; 1: first class)"
        asset = add_raster(item, "tile_classes", classes, grid, title=title)
        add_classes(
            asset, class_list(model.classes, model.colours, first=1, nodata=0, nodata_title=NO_TILE)
        )
    if scores.is_file():
        title = "Score of each tile (one pixel per tile position)"
        add_raster(item, "tile_scores", scores, grid, title=title)


def _add_polygons(item: pystac.Item, files: Mapping[str, Path]) -> None:
    """The vectorize stage's polygons: FlatGeobuf in the scene CRS, GeoJSON in EPSG:4326."""
    if "flatgeobuf" in files:
        title = "Class polygons (FlatGeobuf, scene CRS)"
        add_other(
            item,
            "polygons",
            files["flatgeobuf"],
            pystac.MediaType.FLATGEOBUF,
            title=title,
            roles=["data"],
        )
    if "geojson" in files:
        title = "Class polygons (GeoJSON, EPSG:4326)"
        asset = add_other(
            item,
            "polygons_geojson",
            files["geojson"],
            pystac.MediaType.GEOJSON,
            title=title,
            roles=["data"],
        )
        ProjectionExtension.ext(asset, add_if_missing=True).code = WGS84


QUICKLOOKS = (
    ("quicklook", "{id}.png", "Quick-look: the scene with its tile predictions"),
    ("quicklook_classes", "{id}.classes.png", "Quick-look of the pixel classes"),
    ("quicklook_errors", "{id}.errors.png", "Quick-look of the held-out pixel errors"),
)


def _add_quicklooks(item: pystac.Item, quicklook: Path) -> None:
    """The maps stage's PNGs, if the scene has them."""
    for key, pattern, title in QUICKLOOKS:
        path = quicklook / pattern.format(id=item.id)
        if path.is_file():
            add_other(item, key, path, pystac.MediaType.PNG, title=title, roles=["overview"])


def build_catalog(
    scenes: Sequence[SceneRecord], model: Model, model_md5: str, outputs: RunOutputs
) -> pystac.Catalog:
    """The catalog of a run: an item per scene that has an output, in manifest order.

    Asset hrefs are absolute until :func:`save_catalog` makes them relative.

    Raises:
        CatalogError: an index is missing, malformed, another model's, names a missing file or a
            scene the manifest lacks; a scene has no CRS or acquisition time.
    """
    segments = read_listing(outputs.segments, ("class", "probability"), model)
    polygons = {}
    if outputs.polygons is not None:
        polygons = read_listing(outputs.polygons, ("flatgeobuf", "geojson"), model)
    known = {scene.id for scene in scenes}
    for directory, listed in ((outputs.segments, segments), (outputs.polygons, polygons)):
        for sid in sorted(set(listed) - known):
            raise CatalogError(f"{directory}/{INDEX}: scene {sid!r} is not in the scene manifest")
    catalog = pystac.Catalog(
        CATALOG_ID,
        f"Outputs of satpipe model {model.version} ({model.output} labels), one item per scene",
        title="satpipe run outputs",
    )
    for scene in scenes:
        item, grid = scene_item(scene, model, model_md5)
        _add_segments(item, grid, segments.get(scene.id, {}), model)
        _add_maps(item, grid, outputs.maps, model)
        _add_polygons(item, polygons.get(scene.id, {}))
        _add_quicklooks(item, outputs.quicklook)
        if item.assets:
            catalog.add_item(item)
    return catalog


def save_catalog(catalog: pystac.Catalog, root: Path, into: Path | None = None) -> None:
    """Save ``catalog`` self-contained as if at ``root`` (hrefs relative to it), into ``into``.

    Args:
        catalog: from :func:`build_catalog` (asset hrefs absolute).
        root: the directory ``catalog.json`` belongs in: relative hrefs are computed from there.
        into: the directory written (default ``root``), e.g. a temporary one renamed to ``root``
            afterwards: it must be a sibling of ``root`` for the relative hrefs to hold.
    """
    catalog.normalize_hrefs(os.path.abspath(root))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(
        pystac.CatalogType.SELF_CONTAINED,
        dest_href=os.path.abspath(into if into is not None else root),
        stac_io=CanonicalStacIO(),
    )
