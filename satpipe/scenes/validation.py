"""Scenes: validating an input GeoTIFF and describing it.

:func:`inspect_scene` is the gate every scene passes before the pipeline uses it. It checks the
driver (not the extension), the pixel type, the georeferencing (a CRS and a north-up affine
geotransform; GCP- or RPC-only files are refused), reads every internal block once (so truncated
or corrupt pixel data fails here, naming the window) while a second thread hashes the file, counts
valid pixels, and finds the acquisition time. It returns the metadata written beside the scene.

The same pass keeps every k-th pixel of every k-th row (nearest-neighbour decimation, k chosen so
the long side is at most :data:`PREVIEW_MAX_SIDE`) and can write them as the scene's *preview*: a
small GeoTIFF with all bands, the scene's CRS and a transform scaled by k, from which quick-look
images are drawn without reading the scene again.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.io import DatasetReader
from rasterio.windows import Window

from satpipe.core.errors import (
    AcquisitionTimeError,
    EmptySceneError,
    GeoreferencingError,
    NotGeoTIFFError,
    RasterReadError,
    UnsupportedDtypeError,
)
from satpipe.core.files import sha256_file
from satpipe.core.params import parse_iso8601
from satpipe.core.raster import GEOTIFF_DRIVERS, open_scene, read_window, row_chunks, valid_mask

log = logging.getLogger(__name__)

SUPPORTED_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")
# Tags that carry an acquisition time, most specific first. TIFFTAG_DATETIME is the TIFF
# "DateTime" field; producers of satellite GeoTIFFs commonly set it to the sensing time.
TIME_TAGS = (
    "ACQUISITION_TIME",
    "ACQUISITIONDATETIME",
    "ACQUISITION_DATETIME",
    "SENSING_TIME",
    "DATATAKE_SENSING_START",
    "PRODUCT_START_TIME",
    "DATETIME",
    "TIFFTAG_DATETIME",
)
_CHUNK_BYTES = 16 << 20
PREVIEW_MAX_SIDE = 1024


def parse_time_tag(value: str) -> dt.datetime | None:
    """Parse a tag value as ISO 8601 or TIFF ``YYYY:MM:DD HH:MM:SS`` (UTC); None if neither."""
    text = value.strip()
    try:
        return parse_iso8601(text)
    except ValueError:
        pass
    try:
        return dt.datetime.strptime(text, "%Y:%m:%d %H:%M:%S").replace(tzinfo=dt.UTC)
    except ValueError:
        return None


def _format_time(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def find_acquisition_time(tags: dict[str, str], fallback: str | None, name: str) -> tuple[str, str]:
    """Return ``(time, source)``: from the first parseable time tag, else from ``fallback``.

    Raises:
        AcquisitionTimeError: no tag carries a time and no fallback is given.
    """
    upper = {key.upper(): value for key, value in tags.items()}
    if "DATE_ACQUIRED" in upper:  # Landsat MTL convention: date and centre time apart
        upper.setdefault(
            "ACQUISITION_TIME",
            f"{upper['DATE_ACQUIRED']}T{upper.get('SCENE_CENTER_TIME', '00:00:00Z')}",
        )
    for key in TIME_TAGS:
        if key in upper and (when := parse_time_tag(upper[key])) is not None:
            return _format_time(when), f"tag:{key}"
    if fallback is not None:
        return _format_time(parse_iso8601(fallback)), "params:ingest.acquisition_time"
    raise AcquisitionTimeError(
        f"{name}: no acquisition time in the tags (looked for {', '.join(TIME_TAGS)}); "
        "set ingest.acquisition_time in params.yaml, e.g. 2024-07-15T10:30:00Z"
    )


def check_georeferencing(src: DatasetReader, name: str | None = None) -> None:
    """Refuse scenes without a CRS and a north-up affine geotransform.

    Args:
        src: the open scene.
        name: how to name the scene in messages (defaults to ``src.name``).

    Raises:
        GeoreferencingError: naming what is missing or wrong.
    """
    name = name or src.name
    transform = src.transform
    gcps, gcp_crs = src.gcps
    if src.crs is None or transform.is_identity:
        if gcps:
            raise GeoreferencingError(
                f"{name}: georeferenced only by {len(gcps)} GCPs ({gcp_crs}); expected a CRS "
                "and an affine geotransform: warp it first (gdalwarp -tps or rio warp)"
            )
        if src.rpcs is not None:
            raise GeoreferencingError(
                f"{name}: georeferenced only by RPCs; expected a CRS and an affine "
                "geotransform: orthorectify it first (gdalwarp -rpc)"
            )
        if src.crs is None and transform.is_identity:
            raise GeoreferencingError(
                f"{name}: not georeferenced (no CRS, identity geotransform); "
                "expected a GeoTIFF with a CRS and a geotransform"
            )
        if src.crs is None:
            raise GeoreferencingError(f"{name}: no CRS; expected a GeoTIFF with a CRS")
        raise GeoreferencingError(
            f"{name}: identity geotransform; expected a real pixel-to-map transform"
        )
    if transform.b != 0 or transform.d != 0:
        raise GeoreferencingError(
            f"{name}: rotated or sheared geotransform (b={transform.b}, d={transform.d}); "
            "expected a north-up transform: warp it first"
        )
    if transform.a <= 0 or transform.e >= 0:
        raise GeoreferencingError(
            f"{name}: geotransform pixel size ({transform.a}, {transform.e}); expected a "
            "positive width and a negative height (north-up)"
        )


def preview_step(width: int, height: int, max_side: int = PREVIEW_MAX_SIDE) -> int:
    """The decimation factor that brings the long side to at most ``max_side`` pixels."""
    return max(1, math.ceil(max(width, height) / max_side))


def count_valid_pixels(
    src: DatasetReader,
    nodata: float | None,
    name: str | None = None,
    preview: list[np.ndarray] | None = None,
    step: int = 1,
) -> int:
    """Read every block once (windowed, row order) and count pixels valid in every band.

    Args:
        src: the open scene.
        nodata: its nodata value (None: only non-finite values are invalid).
        name: how to name the scene in messages.
        preview: if given, receives each chunk's every ``step``-th pixel of every ``step``-th
            row (rows and columns 0, step, 2*step, ... of the scene), in row order.
        step: the preview's decimation factor.

    Raises:
        RasterReadError: a block cannot be decoded, naming the file and that block's window.
    """
    block_height = src.block_shapes[0][0]
    row_bytes = src.width * src.count * np.dtype(src.dtypes[0]).itemsize
    target = max(1, _CHUNK_BYTES // row_bytes)
    valid = 0
    for row_off, rows in row_chunks(src.height, block_height, target):
        chunk = Window(0, row_off, src.width, rows)
        try:
            data = read_window(src, chunk, name=name)
        except RasterReadError:
            _raise_first_bad_block(src, chunk, name)
            raise
        valid += int(np.count_nonzero(valid_mask(data, nodata)))
        if preview is not None:
            preview.append(data[:, (-row_off) % step :: step, ::step].copy())
    return valid


def write_preview(
    path: Path | str, src: DatasetReader, parts: list[np.ndarray], step: int, nodata: float | None
) -> None:
    """Write the decimated pixels ``parts`` (from :func:`count_valid_pixels`) as a GeoTIFF."""
    data = np.concatenate(parts, axis=1)
    profile = {
        "driver": "GTiff",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": src.count,
        "dtype": src.dtypes[0],
        "crs": src.crs,
        "transform": src.transform @ Affine.scale(step),
        "nodata": nodata,
        "compress": "deflate",
        "predictor": 2 if np.dtype(src.dtypes[0]).kind in "iu" else 3,
        "interleave": "pixel",
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = src.descriptions
        dst.colorinterp = src.colorinterp
        dst.update_tags(PREVIEW_STEP=str(step))


def _raise_first_bad_block(src: DatasetReader, chunk: Window, name: str | None) -> None:
    """Re-read ``chunk`` block by block so the error names the block at fault, not the chunk."""
    for _, block in src.block_windows(1):
        if chunk.row_off <= block.row_off < chunk.row_off + chunk.height:
            read_window(src, block, name=name)


def inspect_scene(
    path: Path | str,
    *,
    nodata_override: float | None = None,
    acquisition_time: str | None = None,
    name: str | None = None,
    preview_out: Path | str | None = None,
) -> dict[str, Any]:
    """Validate a scene file and return its metadata.

    Args:
        path: the GeoTIFF to check.
        nodata_override: nodata value to use instead of the file's (e.g. when it declares none).
        acquisition_time: ISO 8601 time used when the tags carry none.
        name: how to name the scene in messages (defaults to ``path``).
        preview_out: where to write the scene's preview (see the module docstring), if anywhere.

    Raises:
        SceneError: one of its subclasses, naming the file, the value and what was expected.
        RasterReadError: the pixel data is unreadable.
    """
    name = name or str(path)
    with ThreadPoolExecutor(max_workers=1) as pool:
        digest = pool.submit(sha256_file, path)
        with open_scene(path, name=name, num_threads="ALL_CPUS") as src:
            meta = _describe(src, name, nodata_override, acquisition_time)
            step = preview_step(src.width, src.height)
            parts: list[np.ndarray] | None = [] if preview_out is not None else None
            valid = count_valid_pixels(src, meta["nodata"], name, parts, step)
            if preview_out is not None and valid:
                write_preview(preview_out, src, parts or [], step, meta["nodata"])
                meta["preview_step"] = step
        meta["sha256"] = digest.result()
    if valid == 0:
        nodata, floating = meta["nodata"], np.dtype(meta["dtypes"][0]).kind == "f"
        if nodata is None or np.isnan(nodata):
            invalid = "NaN"
        else:
            invalid = f"nodata ({nodata!r})" + (" or NaN" if floating else "")
        raise EmptySceneError(
            f"{name}: no valid pixel: all {meta['width']}x{meta['height']} pixels are {invalid}; "
            "expected at least one valid pixel (check ingest.nodata)"
        )
    meta["valid_fraction"] = valid / (meta["width"] * meta["height"])
    meta["size_bytes"] = Path(path).stat().st_size
    return meta


def _describe(
    src: DatasetReader, name: str, nodata_override: float | None, acquisition_time: str | None
) -> dict[str, Any]:
    if src.driver not in GEOTIFF_DRIVERS:
        raise NotGeoTIFFError(f"{name}: driver is {src.driver}; expected a GeoTIFF (GTiff)")
    dtypes = list(src.dtypes)
    bad = sorted({d for d in dtypes if d not in SUPPORTED_DTYPES})
    if bad:
        raise UnsupportedDtypeError(
            f"{name}: unsupported pixel type {', '.join(bad)}; expected one of "
            f"{', '.join(SUPPORTED_DTYPES)}"
        )
    if len(set(dtypes)) > 1:
        raise UnsupportedDtypeError(
            f"{name}: bands have mixed pixel types {dtypes}; expected one type for all bands"
        )
    check_georeferencing(src, name)
    nodata = src.nodata if nodata_override is None else nodata_override
    time, time_source = find_acquisition_time(src.tags(), acquisition_time, name)
    epsg = src.crs.to_epsg()
    return {
        "driver": src.driver,
        "width": src.width,
        "height": src.height,
        "count": src.count,
        "dtypes": dtypes,
        "crs_wkt": src.crs.to_wkt(),
        "epsg": epsg,
        "crs": f"EPSG:{epsg}" if epsg else src.crs.to_wkt(),
        "transform": list(src.transform)[:6],
        "bounds": list(src.bounds),
        "res": list(src.res),
        "nodata": nodata,
        "nodata_source": "params"
        if nodata_override is not None
        else ("file" if src.nodata is not None else None),
        "acquisition_time": time,
        "acquisition_time_source": time_source,
        "band_descriptions": list(src.descriptions),
        "block_shape": list(src.block_shapes[0]),
    }
