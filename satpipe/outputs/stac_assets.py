"""STAC assets: one output file described for any STAC tool (its format, grid, bands, classes).

An *asset* here is a :class:`pystac.Asset` for one file a run wrote, added to its item with the
fields the extensions define, read from the file itself (never from what a stage meant to write):

- every asset: the ``file`` extension's ``file:size`` and ``file:checksum``, the file's md5 as a
  multihash (``d510`` + hex: code 0xd5 = md5, 0x10 = 16 bytes). That md5 is the one DVC
  records: the plain md5 of the bytes, which for a file inside a directory output is its entry
  in the cache's ``.dir`` listing;
- a raster (:func:`add_raster`): ``raster:bands`` (data type, nodata, spatial resolution, the
  scale that turns a probability byte into a probability) and, where the file's grid is not the
  item's, the ``proj`` fields ``proj:code`` / ``proj:shape`` / ``proj:transform`` of the file;
- a class raster also carries the ``classification`` extension's ``classification:classes``:
  each class's code, name, title and colour hint, and the nodata code (:func:`class_list`).

Extension schema versions are pystac's: classification 2.0.0, file 2.1.0, projection 2.0.0,
raster 1.1.0.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pystac
import rasterio
from pystac.extensions.classification import Classification, ClassificationExtension
from pystac.extensions.file import FileExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, NoDataStrings, RasterBand, RasterExtension, Sampling
from rasterio.crs import CRS

from satpipe.core.files import md5_file

MD5_MULTIHASH = "d510"  # multihash prefix of an md5 digest: function code 0xd5, length 0x10
_NAME = re.compile(r"[^0-9A-Za-z_-]+")  # what the classification schema forbids in a name


@dataclass(frozen=True)
class Grid:
    """A raster grid as the ``proj`` extension states it (``code`` None: ``wkt2`` says it)."""

    code: str | None
    wkt2: str | None
    shape: tuple[int, int]
    transform: tuple[float, ...]

    @classmethod
    def of(cls, crs: CRS, width: int, height: int, transform: Sequence[float]) -> Grid:
        """The grid of ``height x width`` pixels at ``transform`` (6 coefficients) in ``crs``."""
        authority = crs.to_authority()
        code = f"{authority[0]}:{authority[1]}" if authority else None
        wkt2 = None if code else crs.to_wkt(version="WKT2_2019")
        return cls(code, wkt2, (int(height), int(width)), tuple(float(v) for v in transform[:6]))

    @property
    def resolution(self) -> float:
        """Mean side of a pixel, in CRS units."""
        return (abs(self.transform[0]) + abs(self.transform[4])) / 2


def checksum(path: Path) -> str:
    """The ``file:checksum`` of ``path``: its md5 as a multihash (``d510`` + 32 hex digits)."""
    return MD5_MULTIHASH + md5_file(path)


def class_name(name: str, value: int) -> str:
    """A class name as the classification schema allows (``[0-9A-Za-z_-]+``)."""
    return _NAME.sub("_", name).strip("_") or f"class_{value}"


def hex_colour(rgb: Sequence[int]) -> str:
    """An RGB triple as a ``color_hint`` (``rrggbb``)."""
    return "".join(f"{int(v):02x}" for v in rgb[:3])


def class_list(
    classes: Sequence[str],
    colours: Sequence[Sequence[int]],
    *,
    first: int,
    nodata: int,
    nodata_title: str,
) -> list[Classification]:
    """The ``classification:classes`` of a class raster: code ``first + i`` is ``classes[i]``.

    Args:
        classes: the model's class names, in order.
        colours: each class's RGB colour.
        first: the code of the first class (0 in a class COG, 1 in a tile class map).
        nodata: the nodata code, listed last with ``nodata: true``.
        nodata_title: what the nodata code means.
    """
    out = []
    for i, (name, rgb) in enumerate(zip(classes, colours, strict=True)):
        value = first + i
        safe = class_name(name, value)
        out.append(
            Classification.create(
                value=value,
                name=safe,
                title=name if safe != name else None,
                color_hint=hex_colour(rgb),
            )
        )
    out.append(Classification.create(value=nodata, name="nodata", title=nodata_title, nodata=True))
    return out


def _nodata(value: float | None) -> float | NoDataStrings | None:
    """A band's nodata as the raster extension writes it (NaN and infinities as strings)."""
    if value is None:
        return None
    if math.isfinite(value):
        return int(value) if float(value).is_integer() else float(value)
    if math.isnan(value):
        return NoDataStrings.NAN
    return NoDataStrings.INF if value > 0 else NoDataStrings.NINF


def add_file(item: pystac.Item, key: str, asset: pystac.Asset, path: Path) -> pystac.Asset:
    """Add ``asset`` (of the file at ``path``) to ``item`` as ``key``, with its size and md5."""
    item.add_asset(key, asset)
    FileExtension.ext(asset, add_if_missing=True).apply(
        checksum=checksum(path), size=os.path.getsize(path)
    )
    return asset


def add_raster(
    item: pystac.Item,
    key: str,
    path: Path,
    item_grid: Grid,
    *,
    title: str,
    scale: float | None = None,
) -> pystac.Asset:
    """Add the COG at ``path`` to ``item``: raster bands, and its grid where it differs.

    Args:
        item: the scene's item.
        key: the asset key.
        path: the COG (its absolute path is the asset's href until the catalog is saved).
        item_grid: the item's grid (``proj`` fields at item level).
        title: the asset's title.
        scale: multiplier from pixel value to quantity (a probability byte: 1/255).
    """
    with rasterio.open(path) as src:
        grid = Grid.of(src.crs, src.width, src.height, src.transform)
        bands = [
            RasterBand.create(
                data_type=DataType(dtype),
                nodata=_nodata(nodata),
                sampling=Sampling.AREA,
                spatial_resolution=grid.resolution,
                scale=scale,
                offset=0.0 if scale is not None else None,
            )
            for dtype, nodata in zip(src.dtypes, src.nodatavals, strict=True)
        ]
    asset = pystac.Asset(
        href=os.path.abspath(path), media_type=pystac.MediaType.COG, title=title, roles=["data"]
    )
    add_file(item, key, asset, path)
    RasterExtension.ext(asset, add_if_missing=True).apply(bands)
    proj = ProjectionExtension.ext(asset, add_if_missing=True)
    if (grid.code, grid.wkt2) != (item_grid.code, item_grid.wkt2):
        proj.code, proj.wkt2 = grid.code, grid.wkt2
    if grid.shape != item_grid.shape:
        proj.shape = list(grid.shape)
    if grid.transform != item_grid.transform:
        proj.transform = list(grid.transform)
    return asset


def add_classes(asset: pystac.Asset, classes: list[Classification]) -> None:
    """Give a class raster asset its ``classification:classes``."""
    ClassificationExtension.ext(asset, add_if_missing=True).classes = classes


def add_other(
    item: pystac.Item,
    key: str,
    path: Path,
    media_type: str,
    *,
    title: str,
    roles: Sequence[str],
) -> pystac.Asset:
    """Add a file that is not a raster (vector data, a picture) to ``item``."""
    asset = pystac.Asset(
        href=os.path.abspath(path), media_type=media_type, title=title, roles=list(roles)
    )
    return add_file(item, key, asset, path)
