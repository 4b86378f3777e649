"""Raster I/O: the only module that talks to rasterio/GDAL directly.

A :class:`Raster` is a pixel array that never travels without its georeferencing (transform, CRS,
nodata). Tiles are encoded to and decoded from GeoTIFF bytes in memory, so a tile's bytes can be
hashed before they are written and a tile file is read from disk exactly once.
GDAL errors become :mod:`satpipe.core.errors` exceptions that name the file.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.io import DatasetReader, MemoryFile
from rasterio.windows import Window

from satpipe.core.errors import NotGeoTIFFError, RasterReadError

log = logging.getLogger(__name__)

GEOTIFF_DRIVERS = frozenset({"GTiff", "COG"})
# Largest tile decode_tile accepts: a 16384 x 16384 single-band tile (tile.size's upper bound).
MAX_TILE_SAMPLES = 16384 * 16384
_WARNINGS_LOCK = threading.Lock()
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


@dataclass(frozen=True)
class Raster:
    """A ``(bands, rows, cols)`` array with its transform, CRS and nodata value."""

    data: np.ndarray
    transform: Affine
    crs: CRS | None
    nodata: float | None


def is_tiff_bytes(head: bytes) -> bool:
    """True when ``head`` starts with a classic or BigTIFF signature."""
    return head[:4] in _TIFF_MAGIC


@contextlib.contextmanager
def open_scene(
    path: Path | str, *, name: str | None = None, **options: Any
) -> Iterator[DatasetReader]:
    """Open a raster for reading, translating GDAL failures into errors naming the file.

    Args:
        path: the file to open.
        name: how to name the file in messages (defaults to ``path``; ingest passes the user's
            input, not the temporary copy it opens).
        **options: GDAL open options (e.g. ``num_threads="ALL_CPUS"``).

    Raises:
        NotGeoTIFFError: GDAL does not recognise the file as a raster.
        RasterReadError: the file cannot be opened for another reason.
    """
    name = name or str(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            src = rasterio.open(path, **options)
    except RasterioIOError as exc:
        text = str(exc)
        if "not recognized" in text or "not a supported" in text:
            raise NotGeoTIFFError(
                f"{name}: not a GeoTIFF (GDAL does not recognise the format); expected a GeoTIFF"
            ) from exc
        if "No such file" in text or not Path(path).exists():
            raise RasterReadError(f"{name}: file not found") from exc
        detail = text.removeprefix(f"{Path(path).name}: ")
        raise RasterReadError(f"{name}: cannot open raster: {detail}") from exc
    with src:
        yield src


def read_window(
    src: DatasetReader,
    window: Window,
    indexes: list[int] | None = None,
    *,
    name: str | None = None,
) -> np.ndarray:
    """Read one window of a dataset, naming file and window if the pixel data is unreadable.

    Args:
        src: an open dataset.
        window: the window to read.
        indexes: 1-based bands (None = all).
        name: how to name the file in messages (defaults to ``src.name``).

    Raises:
        RasterReadError: GDAL failed to decode the window (corrupt or truncated data).
    """
    try:
        return src.read(indexes, window=window)
    except RasterioIOError as exc:
        # rasterio's own text is "Read failed. See previous exception"; GDAL's reason is the
        # cause, prefixed with the file's base name, which may be a temporary copy's.
        detail = str(exc.__cause__ or exc).removeprefix(f"{Path(src.name).name}, ")
        raise RasterReadError(
            f"{name or src.name}: unreadable pixel data in window rows {window.row_off}-"
            f"{window.row_off + window.height - 1}, cols {window.col_off}-"
            f"{window.col_off + window.width - 1}: {detail}"
        ) from exc


def row_chunks(height: int, block_height: int, target_rows: int) -> Iterator[tuple[int, int]]:
    """Yield ``(row_off, rows)`` chunks covering ``height`` rows, aligned to whole blocks.

    Chunks hold about ``target_rows`` rows rounded up to a multiple of ``block_height`` so that
    every internal block is decoded exactly once.
    """
    step = max(block_height, math.ceil(target_rows / block_height) * block_height)
    for row_off in range(0, height, step):
        yield row_off, min(step, height - row_off)


def tile_profile(
    count: int, dtype: str, size: int, crs: CRS | None, nodata: float | None, compress: str
) -> dict[str, Any]:
    """GeoTIFF creation profile shared by every tile (and by the benchmark floor)."""
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "count": count,
        "dtype": dtype,
        "width": size,
        "height": size,
        "crs": crs,
        "nodata": nodata,
        # Band-interleaved: each band is its own compressed block. Against pixel interleave,
        # on 256x256x4 uint16 zstd tiles, encoding took 0.95 vs 1.45 ms, files are 8% smaller
        # and batch inference over 2024 tiles took 2.65-2.70 s vs 3.19-3.24 s.
        "interleave": "band",
    }
    if size % 16 == 0:
        profile.update(tiled=True, blockxsize=size, blockysize=size)
    if compress != "none":
        profile["compress"] = compress
        if compress == "zstd":
            # Level 1, no predictor: on 4-band uint16 tiles the predictor made files 16% smaller
            # but doubled encode time and slowed decoding by a fifth (benchmarks/pipeline.py).
            profile["zstd_level"] = 1
        elif np.dtype(dtype).kind in "iu":
            profile["predictor"] = 2
        elif compress == "deflate":
            profile["predictor"] = 3
    return profile


def encode_tile(data: np.ndarray, transform: Affine, profile: dict[str, Any]) -> bytes:
    """Encode a ``(bands, rows, cols)`` array as GeoTIFF bytes with the given profile."""
    prof = dict(profile, width=data.shape[2], height=data.shape[1], transform=transform)
    if data.shape[1] != profile["height"] or data.shape[2] != profile["width"]:
        prof.pop("blockxsize", None)
        prof.pop("blockysize", None)
        prof.pop("tiled", None)
    # GeoKeys as the SRS source spares GDAL an EPSG database lookup per tile (~0.3 ms of ~1.4);
    # the bytes written are identical (checked on 64 tiles of the benchmark scene).
    with rasterio.Env(GTIFF_SRS_SOURCE="GEOKEYS"), MemoryFile() as mem:
        with mem.open(**prof) as dst:
            dst.write(data)
        return mem.read()


def decode_tile(data: bytes, name: str, max_samples: int = MAX_TILE_SAMPLES) -> Raster:
    """Decode GeoTIFF bytes into a :class:`Raster`.

    The CRS is built from the file's GeoKeys alone (``GTIFF_SRS_SOURCE=GEOKEYS``): GDAL then skips
    its EPSG database lookup on every open, about a quarter of the cost of decoding a small tile.

    Raises:
        NotGeoTIFFError: the bytes are not a TIFF GDAL can read as GTiff.
        RasterReadError: the pixel data cannot be decoded, or the image declares more than
            ``max_samples`` samples (a decompression bomb).
    """
    if not is_tiff_bytes(data[:4]):
        raise NotGeoTIFFError(f"{name}: not a TIFF file (no TIFF signature); expected a GeoTIFF")
    with rasterio.Env(GTIFF_SRS_SOURCE="GEOKEYS"), MemoryFile(data) as mem:
        try:
            # catch_warnings swaps process-wide state: serialise it (opening is the cheap part).
            with _WARNINGS_LOCK, warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                src = mem.open()
        except RasterioIOError as exc:
            raise RasterReadError(f"{name}: cannot open TIFF: {exc}") from exc
        with src:
            if src.driver not in GEOTIFF_DRIVERS:
                raise NotGeoTIFFError(f"{name}: driver is {src.driver}; expected a GeoTIFF")
            if src.width * src.height * src.count > max_samples:
                raise RasterReadError(
                    f"{name}: image of {src.width}x{src.height}x{src.count} samples is larger "
                    f"than the {max_samples} allowed for a tile"
                )
            try:
                array = src.read()
            except RasterioIOError as exc:
                raise RasterReadError(f"{name}: unreadable pixel data: {exc}") from exc
            return Raster(array, src.transform, src.crs, src.nodata)


FileSignature = tuple[int, int, int, int, int]


def read_file_signed(path: Path | str) -> tuple[bytes, FileSignature]:
    """Read a whole file and its signature: device, inode, size, mtime and ctime (ns).

    The signature is taken from the open descriptor before reading, so it describes the file
    the bytes came from (through any symlink). A file whose signature is unchanged has not been
    written since (what DVC's own state database relies on to skip rehashing).

    Raises:
        RasterReadError: the file cannot be read.
    """
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
    except OSError as exc:
        raise RasterReadError(f"{path}: cannot read tile file: {exc.strerror or exc}") from exc
    return data, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def valid_mask(data: np.ndarray, nodata: float | None) -> np.ndarray:
    """Boolean ``(rows, cols)`` mask of pixels valid in every band of ``data``."""
    mask = np.ones(data.shape[1:], dtype=bool)
    floating = data.dtype.kind == "f"
    for band in data:
        if floating:
            mask &= np.isfinite(band)
        if nodata is not None and not (isinstance(nodata, float) and np.isnan(nodata)):
            mask &= band != nodata
    return mask
