"""Label rasters at ingest: validating a scene's label raster and resampling it onto its grid.

See :mod:`satpipe.scenes.labels` for what labels are. The user's raster (a local GeoTIFF, or a URL
downloaded and verified against its sha256 like a scene) must be one band of integer codes with
a CRS and a north-up geotransform, and overlap the scene. It is resampled onto the scene's grid
with nearest-neighbour resampling through a warped VRT, one band of rows at a time (never read
whole), and written with its codes unchanged; where it has no data (outside its footprint, or at
its nodata value) the output holds the nodata code: the raster's own nodata value, or else the
first of the type's maximum, minimum and 0 that no class lists.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from satpipe.core.errors import GeoreferencingError, LabelError, NotGeoTIFFError, RasterReadError
from satpipe.core.params import LabelParams
from satpipe.core.raster import GEOTIFF_DRIVERS, open_scene, read_window, row_chunks
from satpipe.scenes import remote
from satpipe.scenes.download import download
from satpipe.scenes.labels import LabelLookup
from satpipe.scenes.validation import check_georeferencing

log = logging.getLogger(__name__)

_CHUNK_ROWS = 512


def _fill_value(dtype: str, nodata: float | None, listed: set[int], name: str) -> int:
    """The code written where the label raster has no data: its nodata, else an unlisted code."""
    if nodata is not None and not np.isnan(nodata):
        return int(nodata)
    info = np.iinfo(dtype)
    for candidate in (info.max, info.min, 0):
        if int(candidate) not in listed:
            return int(candidate)
    raise LabelError(f"label raster {name}: no nodata value and every {dtype} code is listed")


def _acquire(labels: LabelParams, tmp: Path, root: Path, retries: int, timeout: float) -> Path:
    """The local path of the label raster (downloaded to ``tmp`` for a URL)."""
    if labels.url is not None:
        download(labels.url, tmp, sha256=labels.sha256 or "", retries=retries, timeout=timeout)
        return tmp
    path = Path(labels.path or "")
    path = path if path.is_absolute() else root / path
    if not path.is_file():
        raise LabelError(f"label raster {labels.path}: file not found (ingest.labels.path)")
    return path


def source_record(labels: LabelParams) -> dict[str, Any]:
    """Where the labels came from, with no absolute local path in it."""
    if labels.url is not None:
        return {"kind": "http", "url": labels.url, "sha256": labels.sha256}
    path = Path(labels.path or "")
    return {"kind": "file", "path": path.name if path.is_absolute() else path.as_posix()}


def write_scene_labels(
    labels: LabelParams,
    scene: Path,
    out: Path,
    root: Path,
    *,
    retries: int = 3,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """Validate a label raster and write it onto ``scene``'s grid at ``out``.

    Args:
        labels: the scene's ``labels`` params (a path or URL, and the class mapping).
        scene: the validated scene (its grid is the target).
        out: where the resampled label raster goes (ingest passes a temporary path that it
            renames into place with the scene, so a rejected scene leaves nothing behind).
        root: the directory relative paths are resolved against.
        retries: download retries for a URL.
        timeout: download socket timeout for a URL, seconds.

    Returns:
        The labels' metadata (classes, source, dtype, nodata, source CRS and resolution,
        labelled fraction), recorded in the scene's metadata.

    Raises:
        LabelError: naming the file and the value: not a GeoTIFF, no CRS, not one band of
            integer codes, or no overlap with the scene.
    """
    name = labels.url or labels.path or "labels"
    mapping = labels.classes or {}
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as raw_dir:
        src_path = _acquire(labels, Path(raw_dir) / "labels.tif", root, retries, timeout)
        meta = _resample_file(src_path, name, scene, out, mapping)
    return {"classes": mapping, "source": source_record(labels), **meta}


def _resample_file(
    src: Path | str, name: str, scene: Path, out: Path, mapping: dict[str, list[int]]
) -> dict[str, Any]:
    """Open the label raster ``src`` and write it onto ``scene``'s grid (see :func:`_resample`)."""
    try:
        with open_scene(src, name=name) as lab, open_scene(scene) as dst_grid:
            return _resample(lab, dst_grid, out, mapping, name)
    except (NotGeoTIFFError, RasterReadError, GeoreferencingError) as exc:
        raise LabelError(f"label raster {exc}") from exc


def write_asset_labels(
    href: str,
    name: str,
    mapping: dict[str, list[int]],
    scene: Path,
    out: Path,
    *,
    retries: int = 3,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """Write a STAC item's label asset, read in place at ``href``, onto ``scene``'s grid.

    Args:
        href: what GDAL opens (``/vsicurl/<url>`` or a local path).
        name: how messages name it (item and asset).
        mapping: the class mapping (``ingest.labels.classes``).
        scene: the written scene (its grid is the target).
        out: where the resampled label raster goes.
        retries: HTTP retries.
        timeout: HTTP timeout, seconds.

    Returns:
        The labels' metadata, as :func:`write_scene_labels` returns it.

    Raises:
        LabelError: the asset is not one band of integer codes, or does not overlap the scene.
    """
    with remote.gdal_env(retries, timeout):
        meta = _resample_file(href, name, scene, out, mapping)
    return {"classes": mapping, "source": {"kind": "stac-asset"}, **meta}


def _resample(
    lab: rasterio.io.DatasetReader,
    grid: rasterio.io.DatasetReader,
    tmp: Path,
    mapping: dict[str, list[int]],
    name: str,
) -> dict[str, Any]:
    """Write ``lab`` resampled onto ``grid`` at ``tmp``; return its metadata."""
    if lab.driver not in GEOTIFF_DRIVERS:
        raise LabelError(
            f"label raster {name}: driver is {lab.driver}; expected a GeoTIFF of class codes"
        )
    check_georeferencing(lab, name)
    if lab.count != 1:
        raise LabelError(
            f"label raster {name}: {lab.count} bands; expected one band of integer class codes"
        )
    dtype = lab.dtypes[0]
    if np.dtype(dtype).kind not in "iu":
        raise LabelError(f"label raster {name}: pixel type {dtype}; expected integer class codes")
    _check_overlap(lab, grid, name)
    listed = {code for codes in mapping.values() for code in codes}
    fill = _fill_value(dtype, lab.nodata, listed, name)
    lookup = LabelLookup.from_mapping(mapping, fill)
    labelled = 0
    profile = {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": 1,
        "dtype": dtype,
        "crs": grid.crs,
        "transform": grid.transform,
        "nodata": fill,
        "tiled": True,
        "blockxsize": _CHUNK_ROWS,
        "blockysize": _CHUNK_ROWS,
        "compress": "deflate",
    }
    with (
        WarpedVRT(
            lab,
            crs=grid.crs,
            transform=grid.transform,
            width=grid.width,
            height=grid.height,
            resampling=Resampling.nearest,
            nodata=fill,
        ) as vrt,
        rasterio.open(tmp, "w", **profile) as dst,
    ):
        for row_off, rows in row_chunks(grid.height, _CHUNK_ROWS, _CHUNK_ROWS):
            window = Window(0, row_off, grid.width, rows)
            codes = read_window(vrt, window, [1], name=name)
            dst.write(codes, window=window)
            labelled += int(lookup.class_counts(codes, len(lookup.names)).sum())
    return {
        "dtype": dtype,
        "nodata": fill,
        "source_crs": _crs_name(lab.crs),
        "source_res": list(lab.res),
        "labelled_fraction": labelled / (grid.width * grid.height),
    }


def _crs_name(crs: CRS) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def _check_overlap(
    lab: rasterio.io.DatasetReader, grid: rasterio.io.DatasetReader, name: str
) -> None:
    try:
        left, bottom, right, top = transform_bounds(lab.crs, grid.crs, *lab.bounds, densify_pts=21)
    except Exception as exc:  # PROJ cannot relate the two CRSs at all
        raise LabelError(
            f"label raster {name}: cannot transform its bounds from {_crs_name(lab.crs)} "
            f"to the scene's {_crs_name(grid.crs)} ({exc})"
        ) from exc
    g = grid.bounds
    if not (left < g.right and right > g.left and bottom < g.top and top > g.bottom):
        box = ", ".join(f"{v:.6g}" for v in (left, bottom, right, top))
        scene = ", ".join(f"{v:.6g}" for v in g)
        raise LabelError(
            f"label raster {name}: no overlap with the scene: its bounds in the scene's CRS "
            f"are ({box}); the scene covers ({scene}); expected labels covering part of it"
        )
