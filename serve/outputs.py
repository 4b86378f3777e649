"""Pinned outputs: the files of a run that ``dvc.lock`` pins, found and verified before use.

``dvc.lock`` pins a file output by its md5 and a directory output by the md5 of its *listing*, a
JSON list of ``{"md5", "relpath"}`` that DVC keeps in its cache as ``<md5>.dir``. The listing is
read from the cache and checked against that md5, so every file of a pinned directory has a
pinned md5 (:func:`listing`).

A pinned file is used from the workspace when its md5 is the pinned one, else from the DVC cache
object with that md5 (DVC keeps it read-only; a service pinned at another git revision finds the
files there); if neither matches, it is not used: :class:`OutputNotPinnedError` (503) names the
file, what was found and how to get the pinned one. A file is hashed once and remembered by its
``(mtime_ns, size, inode, device)``, so later uses cost one ``stat`` (:class:`PinnedFiles`).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from satpipe.core import lockfile
from satpipe.core.errors import LockfileError
from satpipe.core.files import md5_file

_HOW = "run `dvc checkout` (or `dvc pull`) to restore it, or `dvc repro` to rebuild"


class OutputNotPinnedError(LockfileError):
    """A pinned output file is missing or differs from its pin, and the DVC cache has no copy."""


@dataclass(frozen=True)
class PinnedFile:
    """One file of a run as ``dvc.lock`` pins it.

    Attributes:
        path: the file, relative to the project root (``data/segments/x.class.tif``).
        md5: its pinned md5.
        stage: the stage whose output it is.
    """

    path: str
    md5: str
    stage: str


def _signature(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev


class PinnedFiles:
    """Finds pinned files in the workspace or the DVC cache, hashing each file once."""

    def __init__(self, root: Path, cache: Path | None) -> None:
        """Files of the project at ``root``, with its DVC cache directory (None: no cache)."""
        self.root = root
        self.cache = cache
        self._known: dict[str, tuple[tuple[int, int, int, int], str]] = {}
        self._lock = threading.Lock()

    def _md5(self, path: Path) -> str | None:
        """The md5 of ``path`` (None: missing), hashed only when its stat changed."""
        try:
            st = os.stat(path)
        except OSError:
            return None
        key, sig = str(path), _signature(st)
        with self._lock:
            known = self._known.get(key)
        if known is not None and known[0] == sig:
            return known[1]
        digest = md5_file(path)
        with self._lock:
            self._known[key] = (sig, digest)
        return digest

    def local(self, pinned: PinnedFile) -> Path:
        """Where the pinned bytes of ``pinned`` are: the workspace file or the cache object.

        Raises:
            OutputNotPinnedError: neither has the pinned md5.
        """
        workspace = self.root / pinned.path
        found = self._md5(workspace)
        if found == pinned.md5:
            return workspace
        if self.cache is not None:
            obj = lockfile.cache_object_path(self.cache, pinned.md5)
            if self._md5(obj) == pinned.md5:
                return obj
        what = "is missing" if found is None else f"has md5 {found}"
        raise OutputNotPinnedError(
            f"{pinned.path} {what}, not the md5 {pinned.md5} dvc.lock pins (stage "
            f"{pinned.stage!r}), and the DVC cache has no copy; {_HOW}"
        )

    def read_json(self, pinned: PinnedFile) -> Any:
        """The pinned JSON file's content.

        Raises:
            OutputNotPinnedError: no pinned copy, or it is not JSON.
        """
        path = self.local(pinned)
        try:
            return json.loads(path.read_bytes())
        except ValueError as exc:
            raise OutputNotPinnedError(f"{pinned.path}: not valid JSON ({exc})") from exc


def listing(cache: Path | None, out: lockfile.LockedOutput, stage: str) -> dict[str, PinnedFile]:
    """The files of a pinned directory output, by path relative to the project root.

    Raises:
        OutputNotPinnedError: no DVC cache, or its listing object is missing, corrupt or not a
            listing.
    """
    where = f"{out.path} (stage {stage!r}, md5 {out.md5})"
    if not out.md5.endswith(".dir"):
        raise OutputNotPinnedError(f"{where}: dvc.lock pins a file; expected a directory")
    if cache is None:
        raise OutputNotPinnedError(f"{where}: no DVC cache to read its listing from; {_HOW}")
    md5 = out.md5.removesuffix(".dir")
    obj = lockfile.cache_object_path(cache, md5)
    obj = obj.with_name(obj.name + ".dir")
    try:
        data = obj.read_bytes()
    except OSError:
        raise OutputNotPinnedError(
            f"{where}: its listing {obj.name} is not in the DVC cache; run `dvc pull`"
        ) from None
    if lockfile.md5_bytes(data) != md5:
        raise OutputNotPinnedError(f"{where}: the listing {obj} in the DVC cache is corrupt")
    try:
        entries = json.loads(data)
        files = {f"{out.path}/{e['relpath']}": str(e["md5"]) for e in entries}
    except (ValueError, TypeError, KeyError) as exc:
        raise OutputNotPinnedError(f"{where}: {obj} is not a DVC listing ({exc!r})") from exc
    return {path: PinnedFile(path, digest, stage) for path, digest in files.items()}


@dataclass(frozen=True)
class LockOutputs:
    """What a parsed ``dvc.lock`` pins: each stage's outputs and the md5 of its model input."""

    lock: dict[str, Any]
    source: str

    def stage(self, name: str) -> lockfile.LockedStage | None:
        """Stage ``name``'s entry, or None when the lock has no such stage."""
        if name not in self.lock["stages"]:
            return None
        return lockfile.stage(self.lock, name, self.source)

    def files(self, cache: Path | None, stage: str, path: str) -> dict[str, PinnedFile] | None:
        """The pinned files of output ``path`` of ``stage`` (a directory or one file).

        Returns:
            The files by path, or None when the lock has no such stage or output.

        Raises:
            OutputNotPinnedError: a directory's listing cannot be read.
        """
        entry = self.stage(stage)
        if entry is None or path not in entry.outs:
            return None
        out = entry.outs[path]
        if out.md5.endswith(".dir"):
            return listing(cache, out, stage)
        return {path: PinnedFile(path, out.md5, stage)}

    def dep_md5(self, stage: str, path: str) -> str | None:
        """The md5 ``stage`` recorded for its dependency ``path`` (None: not recorded)."""
        entry = self.stage(stage)
        deps = entry.entry.get("deps") if entry is not None else None
        for dep in deps or []:
            if isinstance(dep, dict) and dep.get("path") == path:
                md5 = dep.get("md5")
                return md5 if isinstance(md5, str) else None
        return None


def read_lock_outputs(root: Path, lock_file: str, rev: str | None) -> LockOutputs:
    """Parse ``dvc.lock`` in the workspace, or as it was at git revision ``rev``.

    Raises:
        LockfileError: the lock cannot be read or parsed.
    """
    if rev is None:
        return LockOutputs(lockfile.read_lock(root / lock_file), lock_file)
    source = f"{lock_file}@{rev}"
    return LockOutputs(
        lockfile.parse_lock(lockfile.read_at_rev(root, lock_file, rev), source), source
    )
