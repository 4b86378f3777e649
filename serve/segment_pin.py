"""The pinned segmentation: the ``segment`` stage's params and class COGs, as the lock pins them.

``/segment`` answers with exactly what the ``segment`` stage made or would make, so it reads the
stage's entry in the lock the served model came from (the workspace ``dvc.lock``, or the one at
the served git revision): the ``segment`` params it ran with (window, overlap, blend, batch: an
upload is run with them, never with today's ``params.yaml``) and its ``data/segments`` output,
whose files are found and verified by :mod:`serve.outputs` (the ``.dir`` listing in the DVC
cache names each file's md5; a class COG is read only from bytes with that md5).

The stage must have run with the served model: its ``data/model.json`` dependency must carry the
served model's md5. If it does not (the lock was rewritten for another model, or the stage never
ran since training), nothing of it is served: ``/segment`` answers 503, naming both md5s.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from satpipe.core.errors import LockfileError
from satpipe.core.params import SegmentParams
from serve.errors import SceneNotFoundError
from serve.outputs import OutputNotPinnedError, PinnedFile, PinnedFiles, read_lock_outputs
from serve.service import LoadedModel
from serve.settings import Settings

CLASS_SUFFIX = ".class.tif"
_HOW = "run `dvc repro` (or `dvc pull`) so that the segment stage's outputs are there"


@dataclass(frozen=True)
class SegmentPin:
    """The segment stage as the lock pins it: its params and its class COGs.

    Attributes:
        params: the ``segment`` section the stage ran with.
        cogs: scene id -> its pinned class COG; None when the directory's listing cannot be
            read (``missing`` says why; uploads need only ``params``).
        source: the lock it was read from (``dvc.lock`` or ``dvc.lock@<rev>``).
        missing: why ``cogs`` is None.
    """

    params: SegmentParams
    cogs: dict[str, PinnedFile] | None
    source: str
    missing: str = ""


class PinnedSegments:
    """Reads the segment stage's pin and finds its verified class COGs (thread-safe).

    The pin is read once per served model and ``dvc.lock`` version (one ``stat`` tells), not
    per request; a COG is hashed once per version of the file (:class:`PinnedFiles`).
    """

    def __init__(self, settings: Settings, cache: Path | None) -> None:
        self.settings = settings
        self.cache = cache
        self.files = PinnedFiles(settings.repo_root, cache)
        self._lock = threading.Lock()
        self._pinned: tuple[LoadedModel, object, SegmentPin] | None = None

    def _lock_key(self, loaded: LoadedModel) -> object:
        if loaded.rev is not None:
            return loaded.rev
        try:
            st = os.stat(self.settings.path(self.settings.lock_file))
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev

    def pin(self, loaded: LoadedModel) -> SegmentPin:
        """The segment stage's pin in the lock ``loaded`` came from.

        Raises:
            LockfileError: no segment stage or params, or the stage ran with another model.
        """
        key = self._lock_key(loaded)
        with self._lock:
            if self._pinned is not None and self._pinned[0] is loaded and self._pinned[1] == key:
                return self._pinned[2]
        pin = self._read(loaded)
        with self._lock:
            self._pinned = (loaded, key, pin)
        return pin

    def _read(self, loaded: LoadedModel) -> SegmentPin:
        s = self.settings
        outputs = read_lock_outputs(s.repo_root, s.lock_file, loaded.rev)
        source, name = outputs.source, s.segment_stage
        stage = outputs.stage(name)
        if stage is None:
            raise LockfileError(f"{source}: no stage {name!r}; {_HOW}")
        used = outputs.dep_md5(name, s.model_path)
        if used != loaded.md5:
            raise LockfileError(
                f"{source}: stage {name!r} ran with {s.model_path} md5 {used}, not the served "
                f"model's {loaded.md5}; {_HOW}"
            )
        try:
            params = SegmentParams.model_validate(stage.section("segment"))
        except ValueError as exc:
            raise LockfileError(
                f"{source}: stage {name!r}: unusable segment params ({exc})"
            ) from exc
        try:
            files = outputs.files(self.cache, name, s.segments_dir)
        except OutputNotPinnedError as exc:
            return SegmentPin(params, None, source, str(exc))
        if files is None:
            return SegmentPin(params, None, source, f"stage {name!r} has no {s.segments_dir}")
        prefix = s.segments_dir.rstrip("/") + "/"
        cogs = {
            path.removeprefix(prefix).removesuffix(CLASS_SUFFIX): pinned
            for path, pinned in files.items()
            if path.startswith(prefix) and path.endswith(CLASS_SUFFIX)
        }
        return SegmentPin(params, cogs, source)

    def class_cog(self, pin: SegmentPin, scene: str) -> tuple[Path, PinnedFile]:
        """The verified class COG of ``scene`` (workspace file or DVC cache object) and its pin.

        Raises:
            SceneNotFoundError: the pinned segmentation has no such scene.
            LockfileError: the listing is unreadable, or no copy has the pinned md5.
        """
        if pin.cogs is None:
            raise LockfileError(f"{pin.source}: {pin.missing}; {_HOW}")
        pinned = pin.cogs.get(scene)
        if pinned is None:
            known = ", ".join(sorted(pin.cogs)) or "none"
            raise SceneNotFoundError(
                f"scene {scene!r}: the pinned segmentation has no such scene (it has: {known})"
            )
        return self.files.local(pinned), pinned
