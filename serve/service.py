"""The service state: the pinned model, verified once at startup, and the tile lookups.

:meth:`Service.load` reads ``dvc.lock`` (in the workspace, or at the git revision the settings
name), takes the model and tile index bytes whose md5 the lock pins (workspace file, else DVC
cache object, else DVC's API at that revision), and keeps the model in memory. If that fails the
service is *not ready*: it logs one line saying what is missing and how to get it, and every
route that needs the model answers 503 with that reason. While serving, a cheap ``stat`` of
``dvc.lock`` per request notices a new pin, and the service stops answering rather than serve a
model the lock no longer pins.

Classification goes through :func:`satpipe.inference.predict_file` (tiles on disk, with the
sha256 check batch inference does) and :func:`satpipe.inference.predict_raster` (uploads): the
same functions as batch inference, so the same pixels give the same answer.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from satpipe import lockfile
from satpipe import model as model_lib
from satpipe.errors import LockfileError, ModelError, SatpipeError
from satpipe.inference import Prediction, VerifiedFiles, predict_file, predict_raster
from satpipe.raster import decode_tile
from satpipe.records import TileEntry, TileIndex, read_index
from serve.errors import NotReadyError
from serve.expectations import Expectations
from serve.paths import TileFile, TileRoots, resolve_tile_path
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


def _load_json(blob: lockfile.PinnedBytes, what: str) -> Any:
    try:
        return json.loads(blob.data)
    except ValueError as exc:
        raise ModelError(f"{blob.origin}: {what} is not valid JSON ({exc})") from exc


class Service:
    """Everything the routes need, built once by :meth:`load` in the app's lifespan."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        root = settings.repo_root
        self.lock_path = root / settings.lock_file
        self.tiles_dir = root / settings.tiles_dir
        self.loaded: LoadedModel | None = None
        self.reason = "not loaded yet"
        self.index: dict[str, TileEntry] = {}
        self.scene_crs: dict[str, str | None] = {}
        self.roots = TileRoots.from_dirs(self.tiles_dir, None)
        self._lock_signature: tuple[int, int, int] | None = None
        self._stale: str | None = None
        self.verified = VerifiedFiles()

    @classmethod
    def load(cls, settings: Settings) -> Service:
        """Load the pinned model; on failure the service is not ready and says why."""
        service = cls(settings)
        root = settings.repo_root
        try:
            cache: Path | None = lockfile.cache_dir(root)
        except LockfileError as exc:
            log.warning("no DVC cache: %s", exc)
            cache = None
        service.roots = TileRoots.from_dirs(service.tiles_dir, cache)
        service._load_index()
        try:
            service.loaded = service._load_model(cache)
        except SatpipeError as exc:
            service.reason = str(exc)
            log.error("not ready: %s", exc)
        else:
            service.reason = ""
            log.info(
                "serving model %s (md5 %s) from %s",
                service.loaded.model.version,
                service.loaded.md5,
                service.loaded.origin,
            )
        return service

    def _read_pin(self) -> lockfile.Pin:
        s = self.settings
        if s.rev is None:
            self._lock_signature = self._signature()
            lock, source = lockfile.read_lock(self.lock_path), s.lock_file
        else:
            source = f"{s.lock_file}@{s.rev}"
            raw = lockfile.read_at_rev(s.repo_root, s.lock_file, s.rev)
            lock = lockfile.parse_lock(raw, source)
        return lockfile.pin(
            lock,
            source,
            model_path=s.model_path,
            tile_index_path=s.tile_index_path,
            train_stage=s.train_stage,
            tile_stage=s.tile_stage,
        )

    def _load_model(self, cache: Path | None) -> LoadedModel:
        pin = self._read_pin()
        root, rev = self.settings.repo_root, self.settings.rev
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
        return LoadedModel(model, blob.md5, blob.origin, pin, expectations)

    def _load_index(self) -> None:
        """Index the workspace tile index by file name (it describes the tiles directory)."""
        path = self.settings.path(self.settings.tile_index_path)
        try:
            index = read_index(path)
            self.index = {t.file: t for t in index.tiles}
            self.scene_crs = {sid: sc.crs for sid, sc in index.scenes.items()}
        except SatpipeError as exc:
            log.warning("%s: no tile lookups (%s); tiles served without id or window", path, exc)

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.lock_path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def _check_lock(self, loaded: LoadedModel) -> None:
        """Notice a changed ``dvc.lock`` (one ``stat``) and refuse once it pins another model."""
        signature = self._signature()
        if signature == self._lock_signature:
            return
        self._lock_signature = signature
        try:
            md5 = self._read_pin().model.md5
        except LockfileError as exc:
            self._stale = f"{exc}; restart the service once dvc.lock is restored"
        else:
            self._stale = (
                None
                if md5 == loaded.md5
                else f"{self.lock_path} now pins {loaded.pin.model.path} md5 {md5}, not the "
                f"loaded {loaded.md5}; restart the service to serve the new pin"
            )
        if self._stale:
            log.error("not ready: %s", self._stale)

    def require_ready(self) -> LoadedModel:
        """The loaded model, if it is still the pinned one.

        Raises:
            NotReadyError: no verified model, or ``dvc.lock`` now pins another one.
        """
        loaded = self.loaded
        if loaded is None:
            raise NotReadyError(f"model not ready: {self.reason}")
        if self.settings.rev is None:
            self._check_lock(loaded)
            if self._stale:
                raise NotReadyError(f"model not ready: {self._stale}")
        return loaded

    def resolve(self, raw: str) -> TileFile:
        """Check and resolve a client's tile path (cheap: text checks and one ``lstat``).

        Raises:
            TilePathError, TileNotFoundError: the path is refused or names no tile.
        """
        return resolve_tile_path(raw, self.roots)

    def classify(self, tile: TileFile, loaded: LoadedModel) -> InferResult:
        """Classify a resolved tile with :func:`predict_file`, checking its sha256 when indexed.

        A tile unchanged since its bytes last matched the index is not hashed again
        (:class:`~satpipe.inference.VerifiedFiles`).

        Raises:
            SatpipeError: the tile cannot be classified (the message names ``tile.raw``).
        """
        entry = self.index.get(tile.raw)
        try:
            sha = entry.sha256 if entry else None
            pred = predict_file(tile.path, loaded.model, sha, self.verified)
        except SatpipeError as exc:
            # Name the tile as the client did, not by the server's absolute path.
            raise type(exc)(str(exc).replace(str(tile.path), tile.raw)) from exc
        crs = self.scene_crs.get(entry.scene) if entry is not None else None
        return _result(pred, loaded, entry, tile.raw, crs)

    def infer_path(self, raw: str, loaded: LoadedModel) -> InferResult:
        """Resolve and classify the tile at ``raw`` (relative to the tiles directory)."""
        return self.classify(self.resolve(raw), loaded)

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
