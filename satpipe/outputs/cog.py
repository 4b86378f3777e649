"""Cloud-Optimized GeoTIFFs of one band: the class map (palette, category names) and the scores.

A map is written in memory, then copied by GDAL's COG driver into a temporary file that is
renamed into place, so a failed run never leaves a half-written map. Overviews are NEAREST (a
class is never averaged into another), at least one level even for a map smaller than one block,
and nothing that varies between runs (time, path) is stored: the same array gives the same bytes.
The class map's categories live in GDAL's PAM sidecar ``<file>.aux.xml``, written beside it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol
from xml.sax.saxutils import escape

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.io import MemoryFile

from satpipe.core.classes import class_codes, class_colour
from satpipe.core.files import atomic_path, write_bytes_atomic

log = logging.getLogger(__name__)

NO_TILE = "no tile"
"""Category name of class code 0 (nodata: no tile was classified at that position)."""

# BLOCKSIZE: GDAL 3.10's COG driver declares a minimum of 128 (16 works but logs "unexpected
# value" on every write). A map is rarely larger than one 128-pixel block, so OVERVIEW_COUNT
# asks for at least one overview level where the driver's AUTO would make none.
COG_BLOCKSIZE = 128
COG_OPTIONS: dict[str, Any] = {
    "blocksize": COG_BLOCKSIZE,
    "compress": "DEFLATE",  # libdeflate, bundled with GDAL in the rasterio wheel
    "level": 9,
    "overview_resampling": "NEAREST",
    "overviews": "AUTO",
    "statistics": "NO",
}


class CogGrid(Protocol):
    """Where a map's pixels are: its size, transform, and the tiling it was drawn from."""

    @property
    def width(self) -> int:
        """Columns."""
        ...

    @property
    def height(self) -> int:
        """Rows."""
        ...

    @property
    def transform(self) -> Affine:
        """The map's affine transform."""
        ...

    @property
    def size(self) -> int:
        """Tile side, in scene pixels (recorded as a tag)."""
        ...

    @property
    def stride(self) -> int:
        """Step between tile origins, in scene pixels (recorded as a tag)."""
        ...


def _overview_count(width: int, height: int) -> int:
    """Halvings until the map fits one block (as GDAL's AUTO), but at least one if possible."""
    count, w, h = 0, width, height
    while w > COG_BLOCKSIZE or h > COG_BLOCKSIZE:
        w, h, count = math.ceil(w / 2), math.ceil(h / 2), count + 1
    # A 1 x 1 map has no smaller level (GDAL fails when asked for one).
    return max(count, 1) if max(width, height) > 1 else 0


def _write_cog(
    path: Path,
    array: np.ndarray,
    grid: CogGrid,
    crs: CRS | None,
    *,
    nodata: float,
    description: str,
    tags: dict[str, str],
    colormap: dict[int, tuple[int, int, int, int]] | None = None,
) -> None:
    """Write one band as a COG, atomically: built in memory, copied by the COG driver."""
    if array.shape != (grid.height, grid.width):
        raise ValueError(f"{path.name}: array {array.shape} does not match the map grid")
    profile = {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": 1,
        "dtype": array.dtype.name,
        "crs": crs,
        "transform": grid.transform,
        "nodata": nodata,
    }
    options = dict(COG_OPTIONS, overview_count=_overview_count(grid.width, grid.height))
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            if colormap is not None:  # before the pixels: libtiff fixes Photometric on write
                dst.write_colormap(1, colormap)
            dst.set_band_description(1, description)
            dst.update_tags(**tags)
            dst.write(array, 1)
        with mem.open() as src, atomic_path(path) as tmp:
            rasterio.shutil.copy(src, tmp, driver="COG", **options)
    log.debug("wrote %s (%dx%d)", path.name, grid.width, grid.height)


def category_names_xml(names: Sequence[str]) -> str:
    """A PAM ``.aux.xml`` document naming the categories of band 1 (GDAL's own layout)."""
    lines = ["<PAMDataset>", '  <PAMRasterBand band="1">', "    <CategoryNames>"]
    lines += [f"      <Category>{escape(name)}</Category>" for name in names]
    lines += ["    </CategoryNames>", "  </PAMRasterBand>", "</PAMDataset>", ""]
    return "\n".join(lines)


def aux_path(path: Path | str) -> Path:
    """The PAM sidecar GDAL reads beside ``path``: ``<path>.aux.xml``."""
    path = Path(path)
    return path.with_name(path.name + ".aux.xml")


def write_class_cog(
    path: Path | str,
    array: np.ndarray,
    grid: CogGrid,
    crs: CRS | None,
    classes: Sequence[str],
    colours: Sequence[tuple[int, int, int]] | None = None,
) -> list[Path]:
    """Write the class map as a styled COG and its category names as ``<path>.aux.xml``.

    The colour table gives each class its colour (``colours``, by default :func:`class_colour`)
    and code 0 (nodata) transparent
    black; a TIFF palette has no alpha, but GDAL reports the nodata entry as transparent.

    Returns:
        The files written: the COG and its sidecar.
    """
    path = Path(path)
    class_codes(classes)
    colormap = {0: (0, 0, 0, 0)}
    for i, name in enumerate(classes):
        colormap[i + 1] = (*(colours[i] if colours else class_colour(name, i)), 255)
    tags = {f"CLASS_{i + 1}": name for i, name in enumerate(classes)}
    tags.update(CLASS_0=NO_TILE, TILE_SIZE=str(grid.size), TILE_STRIDE=str(grid.stride))
    _write_cog(
        path,
        array.astype(np.uint8, copy=False),
        grid,
        crs,
        nodata=0,
        description="class",
        tags=tags,
        colormap=colormap,
    )
    # GTiff and COG keep category names only in PAM (GDAL writes a sidecar for them itself);
    # written here so that its name follows the final file, not the temporary one.
    sidecar = aux_path(path)
    write_bytes_atomic(sidecar, category_names_xml([NO_TILE, *classes]).encode())
    return [path, sidecar]


def write_score_cog(
    path: Path | str, array: np.ndarray, grid: CogGrid, crs: CRS | None
) -> list[Path]:
    """Write the score map as a float32 COG with NaN nodata.

    Returns:
        The file written.
    """
    tags = {"TILE_SIZE": str(grid.size), "TILE_STRIDE": str(grid.stride)}
    _write_cog(
        Path(path),
        array.astype(np.float32, copy=False),
        grid,
        crs,
        nodata=float("nan"),
        description="score",
        tags=tags,
    )
    return [Path(path)]
