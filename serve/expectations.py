"""Upload expectations: what a tile must look like for the pinned model to classify it.

The model was fitted on tiles cut with the ``tile`` params recorded in ``dvc.lock`` from the
training scenes, whose band counts and dtypes the pinned tile index records. An uploaded tile must
match: the tile size (or at most that size when partial edge tiles were kept), the band count, the
dtype, and it must carry a CRS. A mismatch is refused with every difference named, never
silently classified.

Size and band count are checked twice: first from the TIFF header alone (:func:`tiff_shape`),
before any pixel is decoded, so that a small upload that would decompress into gigabytes (a
"decompression bomb") is refused cheaply; then on the decoded raster.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from satpipe.core import lockfile
from satpipe.core.errors import RasterReadError, TileError
from satpipe.core.raster import Raster, is_tiff_bytes
from satpipe.core.records import TileIndex

# TIFF tags and field types read by tiff_shape (TIFF 6.0 and BigTIFF).
_WIDTH, _LENGTH, _SAMPLES = 256, 257, 277
_INT_TYPES = {3: "H", 4: "I", 16: "Q"}  # SHORT, LONG, LONG8


def tiff_shape(data: bytes, name: str) -> tuple[int, int, int] | None:
    """``(width, height, samples per pixel)`` of the first image, from the header alone.

    Returns None when ``data`` has no TIFF signature (the decoder then names the format).

    Raises:
        RasterReadError: the header or first directory is truncated or malformed.
    """
    if not is_tiff_bytes(data[:4]):
        return None
    order = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"+\x00", b"\x00+")
    try:
        if big:
            (offset,) = struct.unpack_from(order + "Q", data, 8)
            (entries,) = struct.unpack_from(order + "Q", data, offset)
            first, size, head = offset + 8, 20, order + "HHQ"
        else:
            (offset,) = struct.unpack_from(order + "I", data, 4)
            (entries,) = struct.unpack_from(order + "H", data, offset)
            first, size, head = offset + 2, 12, order + "HHI"
        found: dict[int, int] = {}
        for k in range(min(entries, 4096)):
            at = first + k * size
            tag, kind, _count = struct.unpack_from(head, data, at)
            if tag in (_WIDTH, _LENGTH, _SAMPLES) and kind in _INT_TYPES:
                value_at = at + struct.calcsize(head)
                (found[tag],) = struct.unpack_from(order + _INT_TYPES[kind], data, value_at)
    except struct.error as exc:
        raise RasterReadError(f"{name}: truncated or malformed TIFF header ({exc})") from exc
    if _WIDTH not in found or _LENGTH not in found:
        raise RasterReadError(f"{name}: TIFF header has no image width or length")
    return found[_WIDTH], found[_LENGTH], found.get(_SAMPLES, 1)


@dataclass(frozen=True)
class Expectations:
    """What an uploaded tile must look like: the tiling the pinned model was trained on."""

    size: int
    keep_partial: bool
    counts: tuple[int, ...]
    dtypes: tuple[str, ...]

    @classmethod
    def from_pin(cls, pin: lockfile.Pin, index: TileIndex) -> Expectations:
        """Tile size from the lock's ``tile`` params; bands and dtypes of the training scenes.

        The training scenes are those of the pinned tile index with the role ``train`` or
        ``both``; when they differ, any of their band counts and dtypes is accepted.
        """
        scenes = [s for s in index.scenes.values() if s.role != "infer"]
        return cls(
            int(pin.tile_params["size"]),
            bool(pin.tile_params.get("keep_partial", False)),
            tuple(sorted({s.count for s in scenes})),
            tuple(sorted({s.dtypes[0] for s in scenes})),
        )

    @property
    def max_pixel_bytes(self) -> int:
        """Bytes of pixels in the largest tile these expectations accept."""
        itemsize = max(np.dtype(d).itemsize for d in self.dtypes)
        return self.size * self.size * max(self.counts) * itemsize

    def _shape_problems(self, cols: int, rows: int, count: int) -> list[str]:
        problems = []
        if self.keep_partial:
            if not (1 <= rows <= self.size and 1 <= cols <= self.size):
                problems.append(f"{cols}x{rows} pixels, expected at most {self.size}x{self.size}")
        elif (rows, cols) != (self.size, self.size):
            problems.append(f"{cols}x{rows} pixels, expected {self.size}x{self.size}")
        if count not in self.counts:
            problems.append(f"{count} bands, expected {' or '.join(map(str, self.counts))}")
        return problems

    def _refuse(self, name: str, problems: list[str]) -> None:
        if problems:
            raise TileError(
                f"{name}: {'; '.join(problems)} (tile.size from dvc.lock, bands and dtype "
                "from the pinned tile index)"
            )

    def check_header(self, data: bytes, name: str) -> None:
        """Refuse, before decoding, a TIFF whose header shows the wrong size or band count.

        Raises:
            TileError: wrong size or band count. RasterReadError: malformed header.
        """
        shape = tiff_shape(data, name)
        if shape is not None:
            self._refuse(name, self._shape_problems(*shape))

    def check(self, raster: Raster, name: str) -> None:
        """Refuse a tile unlike the training tiles, naming every mismatch and the expectation.

        Raises:
            TileError: wrong size, band count or dtype, or no CRS.
        """
        count, rows, cols = raster.data.shape
        problems = self._shape_problems(cols, rows, count)
        if raster.data.dtype.name not in self.dtypes:
            problems.append(f"dtype {raster.data.dtype.name}, expected {' or '.join(self.dtypes)}")
        if raster.crs is None:
            problems.append("no CRS, expected a georeferenced GeoTIFF")
        self._refuse(name, problems)

    def to_dict(self) -> dict[str, Any]:
        """JSON form, shown by ``GET /model``."""
        return {
            "width": self.size,
            "height": self.size,
            "partial_tiles_allowed": self.keep_partial,
            "count": self.counts[0] if len(self.counts) == 1 else list(self.counts),
            "dtype": self.dtypes[0] if len(self.dtypes) == 1 else list(self.dtypes),
            "crs_required": True,
        }
