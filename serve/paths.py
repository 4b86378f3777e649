"""Tile paths: turning a client's ``tile_path`` into a file the service may read.

A tile path is relative to the tiles directory, written with ``/`` and nothing else: no absolute
paths or drive letters, no ``..``, ``.`` or empty segments, no NUL, backslash, percent-encoding or
other characters outside ``[A-Za-z0-9._-/]``, and a ``.tif``/``.tiff`` name. These checks are on
the text, so encoded or doubled tricks are refused before the file system is touched. A path
the tile index lists is read from its scene's pack (:mod:`satpipe.tiles.packs`) at the index's
offset; any other ``.tif`` in the tiles directory is read as a file. What is read, pack or file, is
resolved through symlinks and must land inside the tiles directory or inside the DVC
cache's file objects (DVC may check tiles out as symlinks into its cache); hardlinks and copies
are plain files inside the tiles directory.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from satpipe.core.records import TileEntry
from serve.errors import TileNotFoundError, TilePathError

TILE_SUFFIXES = (".tif", ".tiff")
_ALLOWED = re.compile(r"[A-Za-z0-9._/-]+")
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class TileRoots:
    """Real (symlink-free) directories a tile path may resolve into."""

    tiles: str
    cache_objects: str | None

    @classmethod
    def from_dirs(cls, tiles_dir: Path, cache_dir: Path | None) -> TileRoots:
        """Resolve the tiles directory and the cache's ``files/md5`` directory once."""
        objects = None if cache_dir is None else os.path.realpath(cache_dir / "files" / "md5")
        return cls(os.path.realpath(tiles_dir), objects)

    def contains(self, real: str) -> bool:
        """True when the real path ``real`` is inside one of the roots."""
        return real.startswith(self.tiles + os.sep) or (
            self.cache_objects is not None and real.startswith(self.cache_objects + os.sep)
        )


def check_tile_path(raw: str) -> str:
    """Refuse any tile path that is not a plain relative ``.tif`` path; return it unchanged.

    Raises:
        TilePathError: naming the rule the path breaks.
    """
    if not raw:
        raise TilePathError("tile_path '': empty; expected a path relative to the tiles directory")
    shown = repr(raw) if len(raw) <= 120 else repr(raw[:120]) + "..."
    if "\x00" in raw:
        raise TilePathError(f"tile_path {shown}: contains a NUL byte")
    if "\\" in raw:
        raise TilePathError(f"tile_path {shown}: backslashes are refused; separate with '/'")
    if "%" in raw:
        raise TilePathError(
            f"tile_path {shown}: percent-encoding is refused; send the plain relative path"
        )
    if raw.startswith(("/", "~")) or _DRIVE.match(raw):
        raise TilePathError(
            f"tile_path {shown}: must be relative to the tiles directory, not absolute"
        )
    if not _ALLOWED.fullmatch(raw):
        bad = next(c for c in raw if not _ALLOWED.fullmatch(c))
        raise TilePathError(
            f"tile_path {shown}: character {bad!r} is refused (letters, digits, '.', '_', "
            "'-' and '/' only)"
        )
    parts = raw.split("/")
    if ".." in parts:
        raise TilePathError(f"tile_path {shown}: '..' segments are refused")
    if "" in parts or "." in parts:
        raise TilePathError(f"tile_path {shown}: empty or '.' segments are refused")
    if not raw.lower().endswith(TILE_SUFFIXES):
        raise TilePathError(f"tile_path {shown}: not a tile; expected a .tif or .tiff file")
    return raw


@dataclass(frozen=True)
class TileFile:
    """A checked tile path: as the client wrote it, where its bytes really are, and their size.

    An indexed tile's bytes are ``size`` bytes at ``offset`` of its pack (``path``); a tile
    file outside the index is the whole file (``offset`` None).
    """

    raw: str
    path: Path
    size: int
    offset: int | None = None


def _real_path(root: str, rel: str) -> tuple[str, os.stat_result]:
    """Resolve ``root/rel`` with one ``lstat`` per segment; ``realpath`` only past a symlink.

    ``root`` is already real and ``rel`` has no ``..``, so only its own segments can be links.
    """
    path = root
    for part in rel.split("/"):
        path = os.path.join(path, part)
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            real = os.path.realpath(os.path.join(root, rel))
            return real, os.stat(real)
    return path, st


def resolve_tile_path(
    raw: str, roots: TileRoots, index: Mapping[str, TileEntry] | None = None
) -> TileFile:
    """Check ``raw`` (see :func:`check_tile_path`) and resolve it to where its bytes are.

    A path ``index`` lists resolves to its bytes in its pack; any other to a tile file.

    Raises:
        TilePathError: the path is refused, or it (or its pack) resolves outside the roots or
            is not a file.
        TileNotFoundError: no such file, or its pack is not in the tiles directory.
    """
    rel = check_tile_path(raw)
    entry = None if index is None else index.get(rel)
    if entry is None:
        real, st = _resolve(rel, rel, roots)
        return TileFile(rel, Path(real), st.st_size)
    parts = entry.pack.split("/")
    if entry.pack.startswith("/") or ".." in parts or "" in parts:
        raise TilePathError(f"tile_path {rel!r}: the tile index names a bad pack {entry.pack!r}")
    real, _ = _resolve(rel, entry.pack, roots)
    return TileFile(rel, Path(real), entry.length, entry.offset)


def _resolve(raw: str, rel: str, roots: TileRoots) -> tuple[str, os.stat_result]:
    """The real path and stat of ``rel`` in the tiles directory (``raw``: as the client said)."""
    what = "" if rel == raw else f"its pack {rel!r} "
    try:
        real, st = _real_path(roots.tiles, rel)
    except FileNotFoundError:
        # A dangling link must not reveal whether its outside target exists: check first.
        real = os.path.realpath(os.path.join(roots.tiles, rel))
        if not roots.contains(real):
            raise TilePathError(
                f"tile_path {raw!r}: {what}resolves outside the tiles directory and the DVC cache"
            ) from None
        if rel == raw:
            raise TileNotFoundError(
                f"tile_path {raw!r}: no such tile in the tiles directory"
            ) from None
        raise TileNotFoundError(
            f"tile_path {raw!r}: its pack {rel!r} is not in the tiles directory "
            "(run `dvc pull` or `dvc repro`)"
        ) from None
    except OSError as exc:
        raise TilePathError(f"tile_path {raw!r}: cannot be read ({exc.strerror})") from exc
    if not roots.contains(real):
        raise TilePathError(
            f"tile_path {raw!r}: {what}resolves outside the tiles directory and the DVC cache"
        )
    if not stat.S_ISREG(st.st_mode):
        raise TilePathError(f"tile_path {raw!r}: {what}not a regular file")
    return real, st
