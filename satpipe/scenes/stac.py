"""STAC items: reading one, choosing a scene's bands among its assets, and the scene's grid.

A STAC Item describes one acquisition; each band is an *asset*, usually a Cloud-Optimized
GeoTIFF on object storage. ``ingest.stac.assets`` names the bands to stack, in order, each by
asset key (``B04``) or by the ``common_name`` of its ``eo:bands`` (``red``). Only raster assets
(a GeoTIFF media type, or a ``.tif`` href when the type is absent) can be chosen; thumbnails,
XML and JSON are never read. Older items (STAC 0.9's ``eo`` extension, kept by USGS Landsat
Collection 2 in 1.0.0-beta.2) give an asset's ``eo:bands`` as indices into the item's
``properties["eo:bands"]``; they are resolved there (:func:`asset_bands`).

The scene's grid is the finest chosen asset's: its ``proj:transform`` and ``proj:shape``, with
``proj:epsg``, each from the asset or else the item's properties (read from the file header only
when the item does not say). Every chosen asset must be in that CRS. An optional area of
interest (a bounding box in a stated CRS, or a GeoJSON file in longitude/latitude) crops the grid
to the pixels it touches.

What turns an asset's stored values into the scene's (the Sentinel-2 reflectance offset, scale
and offset) is :mod:`satpipe.scenes.stac_values`.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.warp import transform_bounds
from rasterio.windows import from_bounds

from satpipe.core.errors import SceneError
from satpipe.core.files import read_json

_RASTER_TYPES = ("image/tiff", "image/geotiff", "image/vnd.stac.geotiff")


class StacError(SceneError):
    """A STAC item, one of its assets, or the area of interest cannot be used."""


@dataclass(frozen=True)
class Asset:
    """One chosen band: its key, where it is, and its grid as the item declares it."""

    key: str
    href: str
    name: str  # how the user asked for it (key or common name)
    data: dict[str, Any]
    crs: CRS | None
    transform: Affine | None
    shape: tuple[int, int] | None  # (rows, cols)


@dataclass(frozen=True)
class Grid:
    """Where the scene's pixels are: CRS, transform and size (the cropped window of the grid)."""

    crs: CRS
    transform: Affine
    width: int
    height: int

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in the grid's CRS."""
        left, top = self.transform @ (0, 0)
        right, bottom = self.transform @ (self.width, self.height)
        return min(left, right), min(bottom, top), max(left, right), max(bottom, top)


def load_item(ref: str, root: Path, timeout: float = 30.0) -> tuple[dict[str, Any], str]:
    """Read a STAC Item from a path (relative to ``root``) or an http(s) URL.

    Returns:
        The item and its base location (hrefs resolve against it).

    Raises:
        StacError: not found, unreachable, not JSON, or not a STAC Item.
    """
    if ref.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(ref, timeout=timeout) as response:
                item = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise StacError(f"STAC item {ref}: server answered HTTP {exc.code}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise StacError(f"STAC item {ref}: unreachable ({reason})") from None
        except ValueError as exc:
            raise StacError(f"STAC item {ref}: not valid JSON ({exc})") from None
        base = ref
    else:
        path = Path(ref) if Path(ref).is_absolute() else root / ref
        try:
            item = read_json(path)
        except FileNotFoundError:
            raise StacError(f"STAC item {ref}: file not found (ingest.stac.item)") from None
        except ValueError as exc:
            raise StacError(f"STAC item {ref}: not valid JSON ({exc})") from None
        base = path.resolve().as_uri()
    if not isinstance(item, dict) or item.get("type") != "Feature" or "assets" not in item:
        raise StacError(f"STAC item {ref}: not a STAC Item (expected a Feature with assets)")
    for field in ("assets", "properties"):
        if not isinstance(item.get(field, {}), dict):
            raise StacError(f"STAC item {ref}: {field} is not a JSON object; expected a STAC Item")
    for key, asset in item["assets"].items():
        if not isinstance(asset, dict):
            raise StacError(f"STAC item {ref}: asset {key!r} is {asset!r}; expected a JSON object")
    return item, base


def resolve_href(href: str, base: str) -> str:
    """An asset's href made absolute: a URL, or a local path for ``file:`` locations."""
    absolute = urllib.parse.urljoin(base, href)
    if absolute.startswith("file:"):
        return urllib.request.url2pathname(urllib.parse.urlsplit(absolute).path)
    return absolute


def _is_raster(asset: dict[str, Any]) -> bool:
    media = str(asset.get("type") or "").lower()
    if media:
        return media.startswith(_RASTER_TYPES)
    return (
        urllib.parse.urlsplit(str(asset.get("href", ""))).path.lower().endswith((".tif", ".tiff"))
    )


def asset_bands(item: dict[str, Any], key: str, label: str) -> list[dict[str, Any]]:
    """The ``eo:bands`` of asset ``key``, each one a band object.

    STAC 1.0 lists band objects in the asset. Older items (the ``eo`` extension of STAC 0.9,
    kept into 1.0.0-beta.2 by USGS Landsat Collection 2) list integer indices into the item's
    ``properties["eo:bands"]`` instead; these are resolved against that list.

    Raises:
        StacError: ``eo:bands`` is not a list, an entry is neither a band object nor an integer,
            or an index is outside the item's band list (naming the item and the asset).
    """
    bands = item["assets"][key].get("eo:bands")
    if bands is None:
        return []
    if not isinstance(bands, list):
        raise StacError(
            f"{label}: asset {key!r}: eo:bands is {bands!r}; expected a list of band objects or "
            "of indices into properties.eo:bands"
        )
    listed = item.get("properties", {}).get("eo:bands")
    out = []
    for i, band in enumerate(bands):
        if isinstance(band, int) and not isinstance(band, bool):
            count = len(listed) if isinstance(listed, list) else 0
            if not 0 <= band < count:
                have = f"{count} bands (indices 0-{count - 1})" if count else "no eo:bands list"
                raise StacError(
                    f"{label}: asset {key!r}: eo:bands[{i}] is index {band}, but the item's "
                    f"properties.eo:bands has {have}"
                )
            band = listed[band]
        if not isinstance(band, dict):
            raise StacError(
                f"{label}: asset {key!r}: eo:bands[{i}] is {band!r}; expected a band object or "
                "an index into properties.eo:bands"
            )
        out.append(band)
    return out


def _common_names(bands: list[dict[str, Any]]) -> list[str]:
    return [str(b["common_name"]) for b in bands if b.get("common_name")]


def _proj(item: dict[str, Any], asset: dict[str, Any], field: str) -> Any:
    """A projection field of the asset, else of the item's properties (which apply to all)."""
    return asset[field] if field in asset else item.get("properties", {}).get(field)


def _epsg(item: dict[str, Any], key: str, label: str) -> CRS | None:
    code = _proj(item, item["assets"][key], "proj:epsg")
    if code is None:  # null: no EPSG code; the file's CRS is used
        return None
    try:
        return CRS.from_epsg(int(code))
    except (TypeError, ValueError, CRSError):
        raise StacError(
            f"{label}: asset {key!r}: proj:epsg is {code!r}; expected an EPSG code PROJ knows"
        ) from None


def _grid_fields(
    item: dict[str, Any], key: str, label: str
) -> tuple[Affine | None, tuple[int, int] | None]:
    """``proj:transform`` (6 or 9 numbers) and ``proj:shape`` (rows, cols), where given."""
    asset = item["assets"][key]
    transform, shape = _proj(item, asset, "proj:transform"), _proj(item, asset, "proj:shape")
    numbers = (int, float)
    if transform is not None and not (
        isinstance(transform, list)
        and len(transform) in (6, 9)
        and all(isinstance(v, numbers) and not isinstance(v, bool) for v in transform)
    ):
        raise StacError(
            f"{label}: asset {key!r}: proj:transform is {transform!r}; expected 6 or 9 numbers"
        )
    if shape is not None and not (
        isinstance(shape, list)
        and len(shape) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)
    ):
        raise StacError(
            f"{label}: asset {key!r}: proj:shape is {shape!r}; expected [rows, cols], two "
            "positive integers"
        )
    return (
        Affine(*(float(v) for v in transform[:6])) if transform else None,
        (shape[0], shape[1]) if shape else None,
    )


def select_assets(item: dict[str, Any], names: list[str], base: str, label: str) -> list[Asset]:
    """The assets ``names`` asks for, in order, each by key or by ``eo:bands`` common name.

    Common names are those of the raster assets' bands (see :func:`asset_bands`). An asset's
    grid is its ``proj:transform`` / ``proj:shape`` / ``proj:epsg``, else the item properties'
    (which apply to every asset), else unknown here (read from the file).

    Raises:
        StacError: a name matches no asset (listing the keys and common names there are), more
            than one asset by common name, a non-raster asset, an asset without an href, or a
            malformed ``eo:bands``, ``proj:epsg``, ``proj:transform`` or ``proj:shape``.
    """
    assets: dict[str, dict[str, Any]] = item["assets"]
    # Resolved only when a name is not a key, and only for assets that could be chosen.
    bands: dict[str, list[dict[str, Any]]] | None = None
    out = []
    for name in names:
        if name in assets:
            key = name
        else:
            if bands is None:
                rasters = [k for k, a in assets.items() if _is_raster(a)]
                bands = {k: asset_bands(item, k, label) for k in rasters}
            matches = [k for k, b in bands.items() if name in _common_names(b)]
            single = [k for k in matches if len(bands[k]) == 1]
            matches = single or matches  # "red" is B04, not the 3-band "visual"
            if not matches:
                common = sorted({c for b in bands.values() for c in _common_names(b)})
                raise StacError(
                    f"{label}: no asset {name!r}; asset keys: {', '.join(assets)}; common names: "
                    f"{', '.join(common) or 'none'}"
                )
            if len(matches) > 1:
                raise StacError(
                    f"{label}: common name {name!r} matches assets {', '.join(matches)}; name "
                    "the asset key instead"
                )
            key = matches[0]
        data = assets[key]
        if not _is_raster(data):
            raise StacError(
                f"{label}: asset {key!r} is {data.get('type') or 'not a raster'}; expected a "
                "GeoTIFF band"
            )
        if not isinstance(data.get("href"), str) or not data["href"]:
            raise StacError(f"{label}: asset {key!r} has no href; expected the band's location")
        transform, shape = _grid_fields(item, key, label)
        out.append(
            Asset(
                key=key,
                href=resolve_href(data["href"], base),
                name=name,
                data=data,
                crs=_epsg(item, key, label),
                transform=transform,
                shape=shape,
            )
        )
    return out


def crop(grid: Grid, bounds: tuple[float, float, float, float], label: str) -> Grid:
    """The part of ``grid`` covering ``bounds`` (in the grid's CRS), snapped outward to pixels.

    Raises:
        StacError: ``bounds`` do not overlap the grid.
    """
    left, bottom, right, top = grid.bounds
    b = bounds
    if not (b[0] < right and b[2] > left and b[1] < top and b[3] > bottom):
        box = ", ".join(f"{v:.6g}" for v in b)
        have = ", ".join(f"{v:.6g}" for v in grid.bounds)
        raise StacError(
            f"{label}: the area of interest ({box} in the scene's CRS) is outside the item, "
            f"which covers ({have})"
        )
    raw = from_bounds(*b, transform=grid.transform)
    eps = 1e-6  # pixels: a bound on a pixel edge up to float noise does not add a pixel
    col0 = max(0, math.floor(raw.col_off + eps))
    row0 = max(0, math.floor(raw.row_off + eps))
    col1 = min(grid.width, math.ceil(raw.col_off + raw.width - eps))
    row1 = min(grid.height, math.ceil(raw.row_off + raw.height - eps))
    return Grid(grid.crs, grid.transform @ Affine.translation(col0, row0), col1 - col0, row1 - row0)


def aoi_bounds(
    aoi: dict[str, Any], crs: CRS, root: Path, label: str
) -> tuple[float, float, float, float]:
    """The area of interest's bounds in ``crs``: a ``bbox`` in ``aoi['crs']`` or a GeoJSON file.

    Raises:
        StacError: an unknown CRS, or the GeoJSON file is missing or has no coordinates.
    """
    if aoi.get("bbox") is not None:
        try:
            src_crs = CRS.from_user_input(aoi.get("crs") or "EPSG:4326")
        except CRSError:
            raise StacError(
                f"{label}: ingest.stac.aoi.crs {aoi.get('crs')!r} is not a CRS PROJ knows"
            ) from None
        box = tuple(float(v) for v in aoi["bbox"])
    else:
        path = Path(aoi["geojson"])
        path = path if path.is_absolute() else root / path
        try:
            doc = read_json(path)
        except (FileNotFoundError, ValueError) as exc:
            raise StacError(f"{label}: area of interest {aoi['geojson']}: {exc}") from None
        xs, ys = _coordinates(doc)
        if not xs:
            raise StacError(f"{label}: area of interest {aoi['geojson']}: no coordinates")
        src_crs = CRS.from_epsg(4326)  # RFC 7946: GeoJSON is longitude/latitude
        box = (min(xs), min(ys), max(xs), max(ys))
    left, bottom, right, top = transform_bounds(src_crs, crs, *box, densify_pts=21)
    return left, bottom, right, top


def _coordinates(doc: Any) -> tuple[list[float], list[float]]:
    xs: list[float] = []
    ys: list[float] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key in ("features", "geometry", "geometries", "coordinates"):
                if key in value:
                    walk(value[key])
        elif isinstance(value, list):
            if len(value) >= 2 and all(isinstance(v, int | float) for v in value[:2]):
                xs.append(float(value[0]))
                ys.append(float(value[1]))
            else:
                for v in value:
                    walk(v)

    walk(doc)
    return xs, ys
