"""Files: content hashes, canonical JSON and atomic writes.

Everything DVC tracks is written through here so that it is byte-stable (sorted keys, fixed
separators, no NaN, a trailing newline) and appears all at once: data goes to a temporary file in
the destination's directory and is renamed into place only when complete, so a failed run never
leaves a half-written output behind. A run killed outright (SIGKILL, out of memory) cannot clean
up, so each temporary is named after its output (``.<name>.satpipe-tmp-*``) and locked by its
writer while it exists, and the next write of that output removes the ones nobody holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20
TEMP_MARK = "satpipe-tmp-"  # in every temporary's name, so a cleanup can tell them apart

log = logging.getLogger(__name__)


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of a byte string."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path | str) -> str:
    """Hex sha256 of a file, streamed in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def md5_file(path: Path | str) -> str:
    """Hex md5 of a file (the hash DVC uses for outputs)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _clean(value: Any) -> Any:
    """Replace non-finite floats, which JSON cannot carry, by strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def canonical_json(value: Any, *, indent: int | None = 1) -> str:
    """Serialise ``value`` deterministically: sorted keys, no NaN, trailing newline."""
    try:  # the common case: nothing to clean (cleaning first cost as much as encoding)
        text = json.dumps(value, sort_keys=True, indent=indent, allow_nan=False)
    except ValueError:  # a non-finite float somewhere
        text = json.dumps(_clean(value), sort_keys=True, indent=indent, allow_nan=False)
    return text + "\n"


def json_digest(value: Any) -> str:
    """sha256 of the compact canonical JSON of ``value``: a content identity."""
    return sha256_bytes(canonical_json(value, indent=None).encode())


def _temp_prefix(dest: Path) -> str:
    """How the temporaries of ``dest`` are named: ``.<name>.satpipe-tmp-<random>``."""
    return f".{dest.name}.{TEMP_MARK}"


def remove_stale_temps(dest: Path | str) -> list[Path]:
    """Remove the temporaries of ``dest`` that a killed run left behind.

    Every temporary is locked (``flock``) by the process writing it for as long as it exists; the
    kernel drops the lock when that process dies, however it dies. A temporary of ``dest``
    whose lock can be taken is therefore stale and removed; one still locked belongs to a live
    writer and is left alone. Only ``dest``'s own temporaries are looked at.

    Returns:
        The paths removed.
    """
    dest = Path(dest)
    removed = []
    for candidate in sorted(dest.parent.glob(glob.escape(_temp_prefix(dest)) + "*")):
        try:
            fd = os.open(candidate, os.O_RDONLY)
        except OSError:  # gone meanwhile, or not ours to open
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a running writer holds it
            if candidate.is_dir() and not candidate.is_symlink():
                shutil.rmtree(candidate, ignore_errors=True)
            else:
                candidate.unlink(missing_ok=True)
            removed.append(candidate)
        finally:
            os.close(fd)
    if removed:
        log.info("removed %d stale temporaries of %s: %s", len(removed), dest, removed)
    return removed


@contextlib.contextmanager
def _locked(path: Path, fd: int | None = None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` while the block runs: it is being written."""
    fd = os.open(path, os.O_RDONLY) if fd is None else fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(dest: Path | str, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` if the block succeeds.

    Stale temporaries of ``dest`` from a killed run are removed first
    (:func:`remove_stale_temps`).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(dest)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(dest), suffix=suffix or ".tmp", dir=dest.parent)
    tmp_path = Path(tmp)
    try:
        with _locked(tmp_path, fd):
            yield tmp_path
            os.replace(tmp_path, dest)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(dest: Path | str) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``dest``; swap it in for ``dest`` on success.

    A DVC directory output appears whole or not at all: on failure the temporary directory is
    removed and ``dest`` (if any) is left as it was. Stale temporaries of ``dest`` from a
    killed run are removed first (:func:`remove_stale_temps`).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(dest)
    with (
        tempfile.TemporaryDirectory(prefix=_temp_prefix(dest), dir=dest.parent) as tmp,
        _locked(Path(tmp)),
    ):
        yield Path(tmp)
        if dest.exists():
            shutil.rmtree(dest)
        Path(tmp).rename(dest)
        dest.chmod(0o755)


def write_bytes_atomic(dest: Path | str, data: bytes) -> None:
    """Write ``data`` to ``dest`` atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def write_json(dest: Path | str, value: Any, *, indent: int | None = 1) -> None:
    """Write canonical JSON to ``dest`` atomically."""
    write_bytes_atomic(dest, canonical_json(value, indent=indent).encode())


def read_json(path: Path | str) -> Any:
    """Load a JSON file (``NaN`` strings stay strings)."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)
