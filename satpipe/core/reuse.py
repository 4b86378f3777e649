"""Per-scene reuse: a stage keeps the outputs of the scenes whose inputs did not change.

DVC reruns a stage when any of its dependencies changes, so adding one scene to an archive of
ten would ingest and tile all eleven again. The per-scene stages (``ingest``, ``tile``) instead
declare their output directory ``persist: true`` (DVC leaves the previous run's files in place
while the stage runs) and keep a *reuse record*, an untracked JSON file under ``.dvc/tmp``:
for each scene, the fingerprint of what its files were made from and each file's size, inode
and modification time as the stage wrote it.

On the next run, a scene whose fingerprint is unchanged and whose files are untouched since
(same size, inode and mtime: the test DVC's own state database uses) is hard-linked from the old
directory into the new one instead of being computed again; the other scenes are computed; a
scene no longer listed goes with the old directory, which the new one replaces whole
(:func:`satpipe.core.files.atomic_dir`). A fingerprint is a digest of the stage, the code of the
``satpipe`` and ``stages`` packages, the params the scene's files depend on, and the identity
(size, inode, mtime) of the input files it was made from; anything else unknown (no record, a
file replaced by ``dvc checkout``, another code version) computes the scene again. Reuse never
changes output bytes, only whether they are computed: the stages are deterministic.

The record holds machine-specific inodes and times, so it lives outside everything DVC tracks;
outside a DVC repository (a stage run by hand) there is no record and every scene is computed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from satpipe.core.files import canonical_json, write_json

log = logging.getLogger(__name__)

RECORD_SCHEMA = 1
RECORD_DIR = Path(".dvc") / "tmp" / "satpipe-reuse"


def file_identity(path: Path) -> list[int]:
    """``[size, inode, mtime_ns]`` of ``path``; what :class:`Reuse` compares."""
    st = path.stat()
    return [st.st_size, st.st_ino, st.st_mtime_ns]


@cache
def code_digest() -> str:
    """sha256 of every ``.py`` file of the ``satpipe`` and ``stages`` packages (path and bytes)."""
    root = Path(__file__).resolve().parents[2]
    digest = hashlib.sha256()
    for package in ("satpipe", "stages"):
        for path in sorted((root / package).rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def fingerprint(stage: str, params: Any, inputs: list[Path]) -> str:
    """The digest of what a scene's outputs are made from (see the module docstring).

    Args:
        stage: the stage's name.
        params: JSON-able params the outputs depend on.
        inputs: the files read; identified by path, size, inode and mtime.
    """
    ids = {str(p.resolve()): file_identity(p) for p in inputs}
    blob = canonical_json({"stage": stage, "code": code_digest(), "params": params, "inputs": ids})
    return hashlib.sha256(blob.encode()).hexdigest()


def _repo_root(start: Path) -> Path | None:
    for parent in [start.resolve(), *start.resolve().parents]:
        if (parent / ".dvc").is_dir():
            return parent
    return None


@dataclass
class Reuse:
    """The reuse record of one stage's output directory.

    Use: :meth:`open` before the run; per scene :meth:`take` (returns its stored result and
    links its files into the new directory, or None) or, once computed, :meth:`put`; after the
    new directory has replaced the old one, :meth:`save`.
    """

    record: Path | None
    previous: Path
    old: dict[str, Any] = field(default_factory=dict)
    new: dict[str, Any] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, stage: str, out_dir: Path | str, record: Path | None = None) -> Reuse:
        """The record of ``stage``'s output ``out_dir`` (default: in the DVC repo's .dvc/tmp)."""
        out_dir = Path(out_dir)
        if record is None:
            root = _repo_root(out_dir.parent)
            if root is not None:
                record = root / RECORD_DIR / f"{stage}.json"
        old: dict[str, Any] = {}
        if record is not None and record.is_file() and out_dir.is_dir():
            try:
                doc = json.loads(record.read_text())
                if doc.get("schema") == RECORD_SCHEMA and doc.get("dir") == str(out_dir.resolve()):
                    old = doc["scenes"]
            except (OSError, ValueError, KeyError, TypeError):
                old = {}  # an unreadable record: nothing is reused
        return cls(record, out_dir, old)

    def take(self, key: str, fp: str, dest: Path) -> Any | None:
        """Link ``key``'s files into ``dest`` and return its stored result, if reusable.

        Reusable: the record has ``key`` with fingerprint ``fp``, and each of its files is in
        the previous directory, untouched since it was written. Otherwise nothing is linked and
        None is returned.
        """
        entry = self.old.get(key)
        if entry is None or entry.get("fingerprint") != fp:
            return None
        files = entry["files"]
        try:
            if any(file_identity(self.previous / name) != ids for name, ids in files.items()):
                return None
            for name in files:
                target = dest / name
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(self.previous / name, target)
        except OSError as exc:
            log.info("cannot reuse %s (%s): computing it", key, exc)
            for name in files:
                (dest / name).unlink(missing_ok=True)
            return None
        self.new[key] = entry
        self.reused.append(key)
        return entry["result"]

    def put(self, key: str, fp: str, dest: Path, files: list[str], result: Any) -> None:
        """Record that ``key``'s ``files`` (relative to ``dest``) were made from ``fp``."""
        self.new[key] = {
            "fingerprint": fp,
            "files": {name: file_identity(dest / name) for name in files},
            "result": result,
        }

    def save(self) -> None:
        """Write the record of the new directory (call after it replaced the old one)."""
        if self.record is None:
            return
        self.record.parent.mkdir(parents=True, exist_ok=True)
        doc = {"schema": RECORD_SCHEMA, "dir": str(self.previous.resolve()), "scenes": self.new}
        write_json(self.record, doc, indent=None)
