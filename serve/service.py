"""The service state: the pinned model, verified, swapped in when the pin changes.

:meth:`Service.load` reads ``dvc.lock`` (in the workspace, or at the git revision the settings
name), takes the model and tile index bytes whose md5 the lock pins (workspace file, else DVC
cache object, else DVC's API at that revision), and keeps the model in memory. If that fails the
service is *not ready*: it logs one line saying what is missing and how to get it, and every
route that needs the model answers 503 with that reason.

Model updates without downtime: :class:`PinWatcher` calls :meth:`Service.check_pin` in a
background thread every ``reload_interval`` seconds. That costs one ``stat`` of ``dvc.lock``
while nothing changes. When the lock changes, the new pin is read (a lock caught while DVC is
rewriting it is read again, never taken for a new pin: see :meth:`Service.check_pin`), the
model it names is loaded and verified in that thread, and the whole :class:`Serving` state is
replaced by one attribute assignment. A request takes the state once, at its start, so it
finishes on the model it started with, and its answer names that model. If the new pin cannot
be loaded, the service is not ready (503, ``satpipe_model_ready 0``,
``satpipe_pin_load_failures_total``) rather than serve a model the lock no longer names.

Classification goes through :func:`satpipe.inference.predict.predict_file` (tiles on disk, with the
sha256 check batch inference does) and :func:`satpipe.inference.predict.predict_raster` (uploads):
the same functions as batch inference, so the same pixels give the same answer.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from satpipe.core import lockfile
from satpipe.core.errors import LockfileError, ModelError, SatpipeError
from satpipe.core.raster import decode_tile
from satpipe.core.records import TileEntry, TileIndex, read_index
from satpipe.inference.predict import (
    Prediction,
    TileSource,
    VerifiedFiles,
    predict_file,
    predict_raster,
)
from satpipe.models import model as model_lib
from serve.errors import NotReadyError
from serve.expectations import Expectations
from serve.paths import TileFile, TileRoots, resolve_tile_path
from serve.registry import Assignment, resolve, tags_signature
from serve.schemas import InferResult, Window
from serve.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """The verified pinned model and what came with it."""

    model: model_lib.Model
    md5: str
    origin: str
    pin: lockfile.Pin
    expectations: Expectations
    # The workspace tile index, by file name, read with this pin (it describes data/tiles).
    index: dict[str, TileEntry] = field(default_factory=dict)
    scene_crs: dict[str, str | None] = field(default_factory=dict)
    rev: str | None = None  # the git revision the pin was read at (None: the workspace)
    assignment: Assignment | None = None  # the registry assignment that named ``rev``


@dataclass(frozen=True)
class Serving:
    """What the service answers with: a verified model, or why there is none to serve.

    ``loaded`` may be set while ``reason`` is not empty: the last verified model is kept (a
    lock that returns to its pin is served again at once) but is not served.
    """

    loaded: LoadedModel | None
    reason: str

    @property
    def ready(self) -> bool:
        """Whether ``loaded`` is the model the current pin names."""
        return self.loaded is not None and not self.reason


def _load_json(blob: lockfile.PinnedBytes, what: str) -> Any:
    try:
        return json.loads(blob.data)
    except ValueError as exc:
        raise ModelError(f"{blob.origin}: {what} is not valid JSON ({exc})") from exc


def _lookups(index: TileIndex) -> tuple[dict[str, TileEntry], dict[str, str | None]]:
    return {t.file: t for t in index.tiles}, {sid: sc.crs for sid, sc in index.scenes.items()}


class Service:
    """Everything the routes need: built by :meth:`load`, kept current by :meth:`check_pin`."""

    def __init__(
        self, settings: Settings, on_change: Callable[[Serving, Serving], None] | None = None
    ) -> None:
        self.settings = settings
        root = settings.repo_root
        self.lock_path = root / settings.lock_file
        self.tiles_dir = root / settings.tiles_dir
        self.serving = Serving(None, "not loaded yet")
        self.cache: Path | None = None
        self.roots = TileRoots.from_dirs(self.tiles_dir, None)
        self.verified = VerifiedFiles()
        self.on_change = on_change
        self._lock_signature: tuple[object, ...] | None = None
        self._unreadable_since: float | None = None
        self._retry_at = 0.0  # while not ready with nothing changed: when to try again
        self._checking = threading.Lock()

    @classmethod
    def load(
        cls, settings: Settings, on_change: Callable[[Serving, Serving], None] | None = None
    ) -> Service:
        """Load the pinned model; on failure the service is not ready and says why."""
        service = cls(settings, on_change)
        try:
            service.cache = lockfile.cache_dir(settings.repo_root)
        except LockfileError as exc:
            log.warning("no DVC cache: %s", exc)
        service.roots = TileRoots.from_dirs(service.tiles_dir, service.cache)
        service._lock_signature = service._signature()
        try:
            rev, assignment = service._source()
            loaded = service._load_model(service._read_pin(rev), rev, assignment)
        except SatpipeError as exc:
            service._set(Serving(None, str(exc)))
        else:
            service._set(Serving(loaded, ""))
        return service

    def _set(self, serving: Serving) -> None:
        """Replace the state (one assignment: a request sees the old state or the new one)."""
        previous, self.serving = self.serving, serving
        if serving.ready and serving.loaded is not None:
            if previous.loaded is not serving.loaded or not previous.ready:
                m = serving.loaded
                log.info("serving model %s (md5 %s) from %s", m.model.version, m.md5, m.origin)
        elif serving.reason != previous.reason:
            log.error("not ready: %s", serving.reason)
        if self.on_change is not None:
            self.on_change(previous, serving)

    def _source(self) -> tuple[str | None, Assignment | None]:
        """The revision to read the pin at, and the assignment that named it (if any)."""
        s = self.settings
        if s.artifact is not None and s.stage is not None:
            assignment = resolve(s.repo_root, s.artifact, s.stage)
            return assignment.rev, assignment
        return s.rev, None

    def _read_pin(self, rev: str | None) -> lockfile.Pin:
        s = self.settings
        if rev is None:
            lock, source = lockfile.read_lock(self.lock_path), s.lock_file
        else:
            source = f"{s.lock_file}@{rev}"
            raw = lockfile.read_at_rev(s.repo_root, s.lock_file, rev)
            lock = lockfile.parse_lock(raw, source)
        return lockfile.pin(
            lock,
            source,
            model_path=s.model_path,
            tile_index_path=s.tile_index_path,
            train_stage=s.train_stage,
            tile_stage=s.tile_stage,
        )

    def _load_model(
        self, pin: lockfile.Pin, rev: str | None, assignment: Assignment | None = None
    ) -> LoadedModel:
        root, cache = self.settings.repo_root, self.cache
        if rev is not None:
            blob = lockfile.read_pinned_at_rev(root, pin.model, rev)
            index_blob = lockfile.read_pinned_at_rev(root, pin.tile_index, rev)
        else:
            blob = lockfile.read_pinned(root, pin.model, cache)
            index_blob = lockfile.read_pinned(root, pin.tile_index, cache)
        model = model_lib.from_dict(_load_json(blob, "model"), blob.origin, root)
        index = TileIndex.from_json(_load_json(index_blob, "tile index"), index_blob.origin)
        try:
            expectations = Expectations.from_pin(pin, index)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise LockfileError(f"{index_blob.origin}: no usable tiling ({exc!r})") from exc
        if rev is None and index_blob.origin == f"workspace:{self.settings.tile_index_path}":
            lookups, crs = _lookups(index)  # the workspace index is the pinned one: parse once
        else:
            lookups, crs = self._workspace_index()
        return LoadedModel(
            model, blob.md5, blob.origin, pin, expectations, lookups, crs, rev, assignment
        )

    def _workspace_index(self) -> tuple[dict[str, TileEntry], dict[str, str | None]]:
        """The workspace tile index by file name (it describes the tiles directory)."""
        path = self.settings.path(self.settings.tile_index_path)
        try:
            index = read_index(path)
        except SatpipeError as exc:
            log.warning("%s: no tile lookups (%s); tiles served without id or window", path, exc)
            return {}, {}
        return _lookups(index)

    def _signature(self) -> tuple[object, ...] | None:
        """What changes when the pin may have: ``dvc.lock``'s stat, or the registry's tags."""
        if self.settings.artifact is not None:
            return tags_signature(self.settings.repo_root)
        try:
            st = os.stat(self.lock_path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def check_pin(self) -> None:
        """Look at the pin once; load, verify and swap in the model of a new one.

        Costs one ``stat`` while ``dvc.lock`` is unchanged and the service is ready (serving
        by registry stage: a ``stat`` of the tag refs, and GTO reads the registry only when
        they change). A lock
        that changes while it is read, or cannot be parsed, may be one DVC is rewriting: it is
        read again on the next call, and reported (not ready) only if it is still unreadable
        ``reload_settle`` seconds later. A new pin whose model cannot be loaded makes the
        service not ready, naming the pin; it is tried again whenever the pin changes and every
        :data:`RETRY_SECONDS` otherwise, so a ``dvc pull`` or ``dvc repro`` that provides it makes
        the service ready again without a restart.
        """
        if self.settings.rev is not None:
            return
        with self._checking:  # one check at a time (the watcher, or a test calling it)
            signature = self._signature()
            if signature == self._lock_signature:
                if self.serving.ready or time.monotonic() < self._retry_at:
                    return
                self._retry_at = time.monotonic() + RETRY_SECONDS
            try:
                rev, assignment = self._source()
                pin = self._read_pin(rev)
            except LockfileError as exc:
                self._unreadable(signature, str(exc))
                return
            if self._signature() != signature:
                return  # rewritten while being read: read it again next time
            self._unreadable_since = None
            self._lock_signature = signature
            self._take(pin, rev, assignment)

    def _unreadable(self, signature: tuple[object, ...] | None, reason: str) -> None:
        now = time.monotonic()
        if self._unreadable_since is None:
            self._unreadable_since = now
        if now - self._unreadable_since >= self.settings.reload_settle:
            self._lock_signature = signature
            if self.serving.reason != reason:
                self._set(Serving(self.serving.loaded, reason))

    def _take(self, pin: lockfile.Pin, rev: str | None, assignment: Assignment | None) -> None:
        current = self.serving.loaded
        if (
            current is not None
            and current.md5 == pin.model.md5
            and current.pin.tile_index.md5 == pin.tile_index.md5
        ):
            if current.assignment != assignment:  # another version naming the same model
                self._set(Serving(replace(current, rev=rev, assignment=assignment), ""))
            elif not self.serving.ready:
                self._set(Serving(current, ""))
            return
        try:
            loaded = self._load_model(pin, rev, assignment)
        except SatpipeError as exc:
            reason = f"{pin.source} now pins {pin.model.path} md5 {pin.model.md5}: {exc}"
            if reason != self.serving.reason:
                self._set(Serving(current, reason))
        else:
            self._set(Serving(loaded, ""))

    def require_ready(self) -> LoadedModel:
        """The model the current pin names, verified (taken once per request).

        Raises:
            NotReadyError: no verified model for the current pin; the detail says why.
        """
        serving = self.serving
        if not serving.ready or serving.loaded is None:
            raise NotReadyError(f"model not ready: {serving.reason}")
        return serving.loaded

    def resolve(self, raw: str, loaded: LoadedModel) -> TileFile:
        """Check and resolve a client's tile path (cheap: text checks and an ``lstat`` or two).

        A path ``loaded``'s tile index lists resolves to its bytes in its pack; any other to a
        tile file in the tiles directory.

        Raises:
            TilePathError, TileNotFoundError: the path is refused or names no tile.
        """
        return resolve_tile_path(raw, self.roots, loaded.index)

    def classify(self, tile: TileFile, loaded: LoadedModel) -> InferResult:
        """Classify a resolved tile with :func:`predict_file`, checking its sha256 when indexed.

        A tile unchanged since its bytes last matched the index is not hashed again
        (:class:`~satpipe.inference.predict.VerifiedFiles`).

        Raises:
            SatpipeError: the tile cannot be classified (the message names ``tile.raw``).
        """
        entry = loaded.index.get(tile.raw)
        source = TileSource(tile.path, str(tile.path), tile.offset, tile.size)
        try:
            sha = entry.sha256 if entry else None
            pred = predict_file(source, loaded.model, sha, self.verified)
        except SatpipeError as exc:
            # Name the tile as the client did, not by the server's absolute path.
            raise type(exc)(str(exc).replace(str(tile.path), tile.raw)) from exc
        scene = entry.scene if entry is not None else None
        crs = loaded.scene_crs.get(scene) if scene is not None else None
        return _result(pred, loaded, entry, tile.raw, crs)

    def infer_path(self, raw: str, loaded: LoadedModel) -> InferResult:
        """Resolve and classify the tile at ``raw`` (relative to the tiles directory)."""
        return self.classify(self.resolve(raw, loaded), loaded)

    def infer_upload(self, data: bytes, filename: str, loaded: LoadedModel) -> InferResult:
        """Classify an uploaded GeoTIFF tile after checking it against the expectations.

        Raises:
            NotGeoTIFFError: not a TIFF. RasterReadError: undecodable.
            TileError: wrong shape, bands, dtype or CRS, or no valid pixel.
        """
        name = f"upload {filename!r}"
        loaded.expectations.check_header(data, name)  # before decoding: no decompression bomb
        raster = decode_tile(data, name)
        loaded.expectations.check(raster, name)
        pred = predict_raster(raster, loaded.model, name)
        rows, cols = raster.data.shape[1:]
        xs, ys = zip(*(raster.transform @ (c, r) for c, r in ((0, 0), (cols, rows))), strict=True)
        bounds = (min(xs), min(ys), max(xs), max(ys))
        crs = raster.crs.to_string() if raster.crs is not None else None
        return _result(pred, loaded, None, None, crs, bounds)


def _result(
    pred: Prediction,
    loaded: LoadedModel,
    entry: TileEntry | None,
    raw: str | None,
    crs: str | None,
    bounds: tuple[float, float, float, float] | None = None,
) -> InferResult:
    if entry is not None:
        window, bounds = Window(**entry.window.to_json()), entry.bounds
        tile_id: str | None = entry.id
    else:
        window, tile_id = None, None if raw is None else Path(raw).stem
    return InferResult(
        tile_id=tile_id,
        tile_path=raw,
        in_index=entry is not None,
        window=window,
        bounds=bounds,
        crs=crs if bounds is not None else None,
        prediction=pred.prediction,
        score=pred.score,
        features=pred.features,
        valid_fraction=pred.valid_fraction,
        model_version=pred.model_version,
        model_md5=loaded.md5,
    )


# While not ready and nothing changed, try loading the pin again this often (a `dvc pull` that
# brings the model changes no file the watcher stats).
RETRY_SECONDS = 5.0


class PinWatcher:
    """Call :meth:`Service.check_pin` every ``interval`` seconds in a daemon thread."""

    def __init__(self, service: Service, interval: float) -> None:
        self.service = service
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="satpipe-pin-watcher", daemon=True)

    def start(self) -> None:
        """Start watching (returns at once)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop watching and wait for a check in progress to finish."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.service.check_pin()
            except Exception:  # never let one bad check end the watching
                log.exception("checking %s failed", self.service.lock_path)
