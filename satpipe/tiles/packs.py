"""Tile packs: each scene's tiles stored, uncompressed, in one ZIP file.

DVC's costs are per file: at 100,000 one-file tiles a no-op ``dvc status`` took about 12 s
(building the directory hash: a ``stat`` and a state-database lookup per file, then a cache check
per file) and a ``dvc push`` over a minute. So the tiles of scene ``<id>`` are written, in grid
order, as the members ``<id>/r<row>_c<col>.tif`` of ``<tiles_dir>/<id>.zip``, stored without
compression: each member's bytes are exactly the tile GeoTIFF, and the tile index records where
they are (``pack``, ``offset``, ``length``) beside their sha256. Readers take those bytes with one
``pread``; they never parse the ZIP directory.

The packs are ordinary ZIP files (ZIP64 past 65,535 members), so a user still opens a tile in
place with GDAL or QGIS at ``/vsizip/data/tiles/<id>.zip/<id>/r..._c....tif``, or unpacks the
old one-file-per-tile layout with ``cd data/tiles && unzip <id>.zip``. Every member has a fixed
timestamp and mode, so a pack's bytes depend only on its tiles.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from types import TracebackType

from satpipe.core.errors import RasterReadError

PACK_SUFFIX = ".zip"
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a ZIP entry can carry
_MODE = 0o644 << 16  # -rw-r--r--, in the high bits of external_attr
_UNIX = 3  # create_system: the "version made by" host, fixed so bytes do not depend on the OS

# A pack member's signature: the pack file's (device, inode, size, mtime ns, ctime ns) and the
# member's (offset, length). Unchanged, it stands for the same bytes (see VerifiedFiles).
MemberSignature = tuple[int, int, int, int, int, int, int]


def pack_name(scene_id: str | None) -> str:
    """The pack file of a scene's tiles, relative to the tiles directory."""
    return f"{scene_id or 'tiles'}{PACK_SUFFIX}"


def vsi_path(pack: Path | str, member: str) -> str:
    """The GDAL path of a pack member, which GDAL and QGIS open in place."""
    return f"/vsizip/{pack}/{member}"


class PackWriter:
    """Append tiles to a new pack, in the order given; :meth:`close` writes the ZIP directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = open(path, "wb")
        self._zip = zipfile.ZipFile(self._fh, "w", zipfile.ZIP_STORED, allowZip64=True)

    def add(self, member: str, data: bytes) -> tuple[int, int]:
        """Store ``data`` as ``member``; return where its bytes are: ``(offset, length)``."""
        info = zipfile.ZipInfo(member, date_time=_EPOCH)
        info.create_system = _UNIX
        info.external_attr = _MODE
        info.compress_type = zipfile.ZIP_STORED
        self._zip.writestr(info, data)
        end = self._fh.tell()  # stored, no data descriptor: the member's bytes end here
        return end - len(data), len(data)

    def close(self) -> None:
        """Write the central directory and close the file."""
        try:
            self._zip.close()
        finally:
            self._fh.close()

    def __enter__(self) -> PackWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def read_member(
    path: Path | str, offset: int, length: int, name: str | None = None
) -> tuple[bytes, MemberSignature]:
    """Read ``length`` bytes at ``offset`` of a pack, with the member's signature.

    The signature is taken from the open descriptor before reading (see
    :func:`satpipe.core.raster.read_file_signed`). Errors name ``name`` (default: the pack).

    Raises:
        RasterReadError: the pack cannot be read, or ends before the member does.
    """
    name = str(path) if name is None else name
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise RasterReadError(f"{name}: cannot read tile pack: {exc.strerror or exc}") from exc
    try:
        st = os.fstat(fd)
        data = os.pread(fd, length, offset)
    except OSError as exc:
        raise RasterReadError(f"{name}: cannot read tile pack: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    if len(data) != length:
        raise RasterReadError(
            f"{name}: tile pack is {st.st_size} bytes; expected a tile at bytes "
            f"{offset}-{offset + length} (the pack is cut short: re-run `dvc checkout`)"
        )
    sig = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, offset, length)
    return data, sig
