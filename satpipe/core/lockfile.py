"""The lock file: what ``dvc.lock`` pins, and where to find the pinned bytes.

``dvc.lock`` records, for every stage, the params it ran with and the md5 of each output. A *pin*
is what a consumer of the model needs from it: the ``train`` stage's model output (path and md5),
the ``train`` params, and the ``tile`` stage's params and tile index output, which say what a
tile the model can classify looks like. The current ``params.yaml`` is never consulted: it may
have been edited since the lock was written.

Pinned bytes are looked up by md5, never trusted by path: first the workspace file, then the DVC
cache object (DVC 3 layout: ``<cache>/files/md5/<first 2 hex>/<other 30 hex>``), or, for a pin at
another git revision, through DVC's own API. Whatever is returned has been hashed and matches.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from satpipe.core.errors import LockfileError

log = logging.getLogger(__name__)

LOCK_SCHEMA = "2.0"
_MD5 = re.compile(r"^[0-9a-f]{32}$")
_HOW_TO_GET = "run `dvc pull` to fetch it or `dvc repro` to rebuild it"


@dataclass(frozen=True)
class LockedOutput:
    """One output of a stage as the lock records it."""

    path: str
    md5: str
    size: int | None = None


@dataclass(frozen=True)
class LockedStage:
    """One stage entry of ``dvc.lock``: its params (``params.yaml`` sections) and outputs."""

    name: str
    params: dict[str, Any]
    outs: dict[str, LockedOutput]
    entry: dict[str, Any] = field(repr=False)
    source: str = "dvc.lock"

    def out(self, path: str) -> LockedOutput:
        """The output at ``path`` (as written in ``dvc.yaml``).

        Raises:
            LockfileError: the stage has no such output.
        """
        try:
            return self.outs[path]
        except KeyError:
            raise LockfileError(
                f"{self.source}: stage {self.name!r} has no output {path!r} "
                f"(it has: {', '.join(sorted(self.outs)) or 'none'})"
            ) from None

    def section(self, name: str) -> dict[str, Any]:
        """The ``params.yaml`` section ``name`` the stage ran with.

        DVC records a section declared whole (``- train``) as a nested mapping and keys declared
        one by one (``- train.fraction``) as dotted keys; both give ``{"fraction": ...}``.

        Raises:
            LockfileError: the stage recorded no key of that section.
        """
        whole = self.params.get(name)
        values = dict(whole) if isinstance(whole, dict) else {}
        prefix = f"{name}."
        values.update({k[len(prefix) :]: v for k, v in self.params.items() if k.startswith(prefix)})
        if not values:
            raise LockfileError(
                f"{self.source}: stage {self.name!r} recorded no params section {name!r}"
            )
        return values


@dataclass(frozen=True)
class Pin:
    """What ``dvc.lock`` pins for serving: the model, its params, and the tiling it expects."""

    model: LockedOutput
    tile_index: LockedOutput
    train: LockedStage
    tile: LockedStage
    source: str

    @property
    def train_params(self) -> dict[str, Any]:
        """The ``train`` section the model was trained with, as ``params.yaml`` gave it."""
        return self.train.section("train")

    @property
    def tile_params(self) -> dict[str, Any]:
        """The ``tile`` section the tiles were cut with, as ``params.yaml`` gave it."""
        return self.tile.section("tile")


def parse_lock(text: str | bytes, source: str = "dvc.lock") -> dict[str, Any]:
    """Parse the text of a lock file and check it is a DVC 3 lock.

    Raises:
        LockfileError: not YAML, not a mapping of stages, or another schema.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise LockfileError(f"{source}: not valid YAML{where}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("stages"), dict):
        raise LockfileError(f"{source}: not a DVC lock file (no 'stages' mapping)")
    if str(data.get("schema")) != LOCK_SCHEMA:
        raise LockfileError(
            f"{source}: lock schema {data.get('schema')!r}; expected {LOCK_SCHEMA!r} (DVC 3)"
        )
    return data


def read_lock(path: Path | str) -> dict[str, Any]:
    """Read and parse ``dvc.lock``.

    Raises:
        LockfileError: the file is missing, unreadable, or not a DVC 3 lock.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LockfileError(f"{path}: not found; {_HOW_TO_GET}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LockfileError(f"{path}: cannot read: {exc}") from exc
    return parse_lock(text, str(path))


def _output(raw: Any, stage: str, source: str) -> LockedOutput:
    if not isinstance(raw, dict) or not isinstance(raw.get("path"), str):
        raise LockfileError(f"{source}: stage {stage!r} has an output without a path")
    md5 = raw.get("md5")
    if not isinstance(md5, str) or not _MD5.match(md5.removesuffix(".dir")):
        raise LockfileError(
            f"{source}: stage {stage!r} output {raw['path']!r} has md5 {md5!r}; "
            "expected 32 hexadecimal characters"
        )
    size = raw.get("size")
    return LockedOutput(raw["path"], md5, size if isinstance(size, int) else None)


def stage(lock: dict[str, Any], name: str, source: str = "dvc.lock") -> LockedStage:
    """The entry of stage ``name`` in a parsed lock.

    Raises:
        LockfileError: the stage is absent or malformed.
    """
    entry = lock["stages"].get(name)
    if not isinstance(entry, dict):
        known = ", ".join(sorted(lock["stages"])) or "none"
        raise LockfileError(
            f"{source}: no stage {name!r} (stages: {known}); run `dvc repro` to create it"
        )
    params = entry.get("params") or {}
    params = params.get("params.yaml") if isinstance(params, dict) else None
    outs = [_output(o, name, source) for o in entry.get("outs") or []]
    return LockedStage(name, dict(params or {}), {o.path: o for o in outs}, entry, source)


def pin(
    lock: dict[str, Any],
    source: str = "dvc.lock",
    *,
    model_path: str = "data/model.json",
    tile_index_path: str = "data/tile_index.json",
    train_stage: str = "train",
    tile_stage: str = "tile",
) -> Pin:
    """Extract the :class:`Pin` from a parsed lock.

    Raises:
        LockfileError: a stage, output or params section is missing.
    """
    train, tile = stage(lock, train_stage, source), stage(lock, tile_stage, source)
    result = Pin(train.out(model_path), tile.out(tile_index_path), train, tile, source)
    result.train_params  # noqa: B018 - fail now, naming the section, rather than later
    result.tile_params  # noqa: B018
    return result


def cache_object_path(cache_dir: Path | str, md5: str) -> Path:
    """Where DVC 3 stores the object with this md5 under ``cache_dir`` (``.dvc/cache``).

    Raises:
        LockfileError: ``md5`` is not 32 hexadecimal characters (a ``.dir`` listing is not a
            file object this function resolves).
    """
    if not _MD5.match(md5):
        raise LockfileError(f"md5 {md5!r} is not 32 lowercase hexadecimal characters")
    return Path(cache_dir) / "files" / "md5" / md5[:2] / md5[2:]


def cache_dir(repo_root: Path | str) -> Path:
    """The project's DVC cache directory, as DVC's own configuration sets it.

    Honours ``cache.dir`` in ``.dvc/config``, ``.dvc/config.local`` and the global config.

    Raises:
        LockfileError: ``repo_root`` is not a DVC project.
    """
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(repo_root)) as repo:
            return Path(repo.cache.local_cache_dir)
    except DvcException as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LockfileError(f"{repo_root}: not a DVC project ({reason})") from exc


def md5_bytes(data: bytes) -> str:
    """Hex md5 of a byte string (the hash DVC records for file outputs)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class PinnedBytes:
    """The bytes of a pinned output, verified against its md5, and where they came from."""

    data: bytes
    md5: str
    origin: str


def read_pinned(repo_root: Path | str, out: LockedOutput, cache: Path | str | None) -> PinnedBytes:
    """Read a pinned file output: the workspace file if its md5 matches, else the cache object.

    A workspace file whose md5 differs (edited, or stale after a checkout) is logged and
    skipped; the pinned object is then taken from the cache, which DVC keeps read-only.

    Args:
        repo_root: the DVC project.
        out: the output as the lock pins it.
        cache: the DVC cache directory (None: none to fall back on).

    Raises:
        LockfileError: neither copy exists with the pinned md5; the message says what is
            missing and how to get it.
    """
    workspace = Path(repo_root) / out.path
    found: str | None = None
    try:
        data = workspace.read_bytes()
    except FileNotFoundError:
        found = "is missing"
    except OSError as exc:
        found = f"cannot be read ({exc.strerror or exc})"
    else:
        if (got := md5_bytes(data)) == out.md5:
            return PinnedBytes(data, got, f"workspace:{out.path}")
        found = f"has md5 {got}, not the pinned {out.md5}"
        log.warning("%s %s; looking for the pinned object in the DVC cache", out.path, found)
    if cache is None:
        raise LockfileError(f"{out.path} {found} and there is no DVC cache; {_HOW_TO_GET}")
    obj = cache_object_path(cache, out.md5)
    try:
        data = obj.read_bytes()
    except OSError:
        cached = f"the pinned object is not in the DVC cache ({obj})"
    else:
        if (got := md5_bytes(data)) == out.md5:
            return PinnedBytes(data, got, f"cache:{obj}")
        cached = f"the DVC cache object {obj} is corrupt (md5 {got})"
    raise LockfileError(f"{out.path} {found} and {cached}; {_HOW_TO_GET}")


def read_at_rev(repo_root: Path | str, path: str, rev: str) -> bytes:
    """Read ``path`` as it was at git revision ``rev``, through DVC's API.

    Git-tracked files (``dvc.lock``) come from git; DVC outputs come from the cache or the
    default remote, by the md5 that revision's lock pins.

    Raises:
        LockfileError: the revision or the file at that revision cannot be read.
    """
    import dvc.api
    from dvc.exceptions import DvcException
    from scmrepo.exceptions import SCMError

    try:
        return dvc.api.read(path, repo=str(repo_root), rev=rev, mode="rb")
    except (DvcException, SCMError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LockfileError(
            f"{path} at revision {rev!r}: cannot read ({reason}); check the revision with "
            f"`git rev-parse {rev}` and fetch its outputs with `dvc fetch --all-commits`"
        ) from exc


def read_pinned_at_rev(repo_root: Path | str, out: LockedOutput, rev: str) -> PinnedBytes:
    """Read a pinned output at git revision ``rev`` and check its md5 against that lock.

    Raises:
        LockfileError: the bytes cannot be read, or their md5 is not the pinned one.
    """
    data = read_at_rev(repo_root, out.path, rev)
    if (got := md5_bytes(data)) != out.md5:
        raise LockfileError(
            f"{out.path} at revision {rev!r} has md5 {got}, not the pinned {out.md5}"
        )
    return PinnedBytes(data, got, f"rev:{rev}:{out.path}")
