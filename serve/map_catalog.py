"""The map catalog: the scenes and map layers the pinned outputs give for the served model.

A *layer* is one picture of a scene, tiled by :mod:`satpipe.outputs.map_tiles` (bottom to top):

- ``scene``: the scene in true colour (``data/scenes/<id>.tif`` and its preview);
- ``probability``: the winning class's probability (``data/segments/<id>.probability.tif``);
- ``classes``: each pixel's class (``data/segments/<id>.class.tif``);
- ``errors``: the class raster against the scene's labels on held-out pixels (per-pixel models,
  labelled scenes), as the error quick-look draws them;
- ``tiles``: each tile's predicted class (``data/maps/<id>.classes.tif``; a click also reads
  ``data/predictions.json``).

Each layer has a *version*, ``md5``: the md5 of its render version, the served model's md5
where the model's classes colour it, and the path and pinned md5 of every file it is drawn
from. Tile URLs carry it, so a changed output or model gives new URLs and a cache never serves
an old map for a new one.

The catalog is built from ``dvc.lock`` (:mod:`serve.outputs`) for one served model and one state
of the lock: a lock that pins another model than the one served (the service is about to reload)
answers 503 until the service catches up. Stages whose recorded model input is not the served
model are left out and named in :attr:`Catalog.notes`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass, field

from affine import Affine
from rasterio.warp import transform_bounds

from satpipe.core.errors import LockfileError
from satpipe.core.records import IndexedScene, TileIndex, TilePrediction
from satpipe.outputs.map_tiles import MaskGrid, TrueColour
from serve.errors import NotReadyError, TileNotFoundError
from serve.outputs import LockOutputs, PinnedFile, PinnedFiles, read_lock_outputs
from serve.service import LoadedModel, Service

log = logging.getLogger(__name__)

LAYERS = ("scene", "probability", "classes", "errors", "tiles")
RENDER_VERSION = "1"  # bump when a layer's pictures change for the same inputs
SCENES = ("ingest", "data/scenes")
SEGMENTS = ("segment", "data/segments")
MAPS = ("maps", "data/maps")
PREDICTIONS = ("batch_infer", "data/predictions.json")
_COLOURED_BY_MODEL = {"classes", "errors", "tiles"}


class MapNotFoundError(TileNotFoundError):
    """No such scene, layer or layer version among the pinned outputs (404)."""


@dataclass(frozen=True)
class Layer:
    """One layer of a scene: its name, its version and the pinned files it is drawn from.

    ``sources[0]`` is the raster whose tiles, bounds and zoom levels the layer has.
    """

    name: str
    md5: str
    sources: tuple[PinnedFile, ...]


def layer(name: str, sources: list[PinnedFile], model_md5: str) -> Layer:
    """A layer with its version computed from its inputs (see the module docstring)."""
    lines = [f"satpipe map layer {name} render {RENDER_VERSION}"]
    if name in _COLOURED_BY_MODEL:
        lines.append(f"model {model_md5}")
    lines += [f"{f.path} {f.md5}" for f in sources]
    digest = hashlib.md5("\n".join(lines).encode(), usedforsecurity=False).hexdigest()
    return Layer(name, digest, tuple(sources))


@dataclass(frozen=True)
class SceneMaps:
    """A scene's layers (in :data:`LAYERS` order), its grid and its bounds in WGS84 degrees."""

    id: str
    header: IndexedScene
    layers: dict[str, Layer]
    bounds: tuple[float, float, float, float]


def lonlat_bounds(header: IndexedScene) -> tuple[float, float, float, float]:
    """A scene's bounds (west, south, east, north) in WGS84 degrees, from its grid."""
    t = Affine(*[float(v) for v in header.transform[:6]])
    xs = [t.c, t.c + t.a * header.width]
    ys = [t.f, t.f + t.e * header.height]
    crs = header.crs_wkt or header.crs
    west, south, east, north = transform_bounds(
        crs, "EPSG:4326", min(xs), min(ys), max(xs), max(ys), densify_pts=21
    )
    return float(west), float(south), float(east), float(north)


@dataclass
class Catalog:
    """The map layers of the pinned outputs for one served model and one state of the lock."""

    loaded: LoadedModel
    signature: object
    scenes: dict[str, SceneMaps]
    index: TileIndex
    index_sha256: str
    notes: list[str]
    # Worked out on first use, per scene id (see serve.map_layers): true-colour styles,
    # held-out pixel grids; and the pinned predictions by (scene, row_off, col_off).
    styles: dict[str, TrueColour] = field(default_factory=dict)
    judged: dict[str, MaskGrid] = field(default_factory=dict)
    records: dict[tuple[str | None, int, int], TilePrediction] | None = None

    def scene(self, scene_id: str) -> SceneMaps:
        """The scene ``scene_id``.

        Raises:
            MapNotFoundError: no pinned output of that scene.
        """
        found = self.scenes.get(scene_id)
        if found is None:
            known = ", ".join(sorted(self.scenes)) or "none"
            raise MapNotFoundError(f"scene {scene_id!r}: no pinned map output (scenes: {known})")
        return found

    def layer(self, scene_id: str, name: str) -> Layer:
        """Layer ``name`` of scene ``scene_id``.

        Raises:
            MapNotFoundError: no such scene, or it has no such layer.
        """
        scene = self.scene(scene_id)
        found = scene.layers.get(name)
        if found is None:
            have = ", ".join(scene.layers)
            raise MapNotFoundError(f"scene {scene_id!r} has no layer {name!r} (it has: {have})")
        return found


def _fresh(
    lock: LockOutputs, files: dict[str, PinnedFile] | None, stage: str, loaded: LoadedModel
) -> tuple[dict[str, PinnedFile], str | None]:
    """A stage's files, or none (and why) when it ran with another model than the served one."""
    if files is None:
        return {}, None
    used = lock.dep_md5(stage, loaded.pin.model.path)
    if used is not None and used != loaded.md5:
        return {}, (
            f"stage {stage!r} ran with model md5 {used}, not the served {loaded.md5}: its "
            "layers are left out until `dvc repro` runs it again"
        )
    return files, None


def _scene_layers(
    sid: str,
    header: IndexedScene,
    pinned: dict[str, PinnedFile],
    loaded: LoadedModel,
    index_pin: PinnedFile,
) -> dict[str, Layer]:
    def get(path: str) -> PinnedFile | None:
        return pinned.get(path)

    scenes, segments, maps = SCENES[1], SEGMENTS[1], MAPS[1]
    image = get(f"{scenes}/{sid}.tif")
    preview = get(f"{scenes}/{header.preview['file']}") if header.preview else None
    labels = get(f"{scenes}/{header.labels['file']}") if header.labels else None
    classes = get(f"{segments}/{sid}.class.tif")
    probability = get(f"{segments}/{sid}.probability.tif")
    tile_map = get(f"{maps}/{sid}.classes.tif")
    predictions = get(PREDICTIONS[1])
    found: dict[str, list[PinnedFile]] = {}
    if image is not None:
        found["scene"] = [image] + ([preview] if preview is not None else [])
    if probability is not None:
        found["probability"] = [probability]
    if classes is not None:
        found["classes"] = [classes]
        if labels is not None and loaded.model.output == "pixels":
            found["errors"] = [classes, labels, index_pin]
    if tile_map is not None:
        found["tiles"] = [tile_map] + ([predictions] if predictions is not None else [])
    return {name: layer(name, found[name], loaded.md5) for name in LAYERS if name in found}


def build_catalog(
    service: Service, loaded: LoadedModel, files: PinnedFiles, signature: object
) -> Catalog:
    """Read ``dvc.lock`` and the pinned listings: the scenes and layers there are to serve.

    Raises:
        NotReadyError: the lock pins another model than the served one (503).
        LockfileError: the lock or a pinned listing or file cannot be read (503).
    """
    settings = service.settings
    lock = read_lock_outputs(settings.repo_root, settings.lock_file, loaded.rev)
    train = lock.stage(loaded.pin.train.name)
    pinned_model = train.out(loaded.pin.model.path).md5 if train is not None else None
    if pinned_model != loaded.md5:
        raise NotReadyError(
            f"{lock.source} pins model md5 {pinned_model}, the service still serves "
            f"{loaded.md5}; it reloads within {settings.reload_interval:g} s"
        )
    index_pin = PinnedFile(loaded.pin.tile_index.path, loaded.pin.tile_index.md5, "tile")
    raw = files.local(index_pin).read_bytes()
    index = TileIndex.from_json(json.loads(raw), index_pin.path)
    cache, notes = service.cache, []
    pinned: dict[str, PinnedFile] = {}
    for stage, path in (SCENES, SEGMENTS, MAPS, PREDICTIONS):
        got, note = _fresh(lock, lock.files(cache, stage, path), stage, loaded)
        pinned.update(got)
        if note:
            notes.append(note)
    scenes = {}
    for sid in sorted(index.scenes):
        header = index.scenes[sid]
        layers = _scene_layers(sid, header, pinned, loaded, index_pin)
        if layers:
            scenes[sid] = SceneMaps(sid, header, layers, lonlat_bounds(header))
    sha = hashlib.sha256(raw).hexdigest()
    return Catalog(loaded, signature, scenes, index, sha, notes)


class MapOutputs:
    """The current :class:`Catalog`, rebuilt when the served model or ``dvc.lock`` changes."""

    def __init__(self) -> None:
        """An empty holder; the first request builds the catalog."""
        self._current: Catalog | None = None
        self._files: PinnedFiles | None = None
        self._lock = threading.Lock()

    def files(self, service: Service) -> PinnedFiles:
        """The verifier of pinned files (one per service: it remembers what it hashed)."""
        if self._files is None:
            self._files = PinnedFiles(service.settings.repo_root, service.cache)
        return self._files

    @staticmethod
    def _signature(service: Service, loaded: LoadedModel) -> object:
        if loaded.rev is not None:
            return ("rev", loaded.rev)
        try:
            st = os.stat(service.lock_path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def catalog(self, service: Service, loaded: LoadedModel) -> Catalog:
        """The catalog for ``loaded`` and the lock as it is now (one ``stat`` when unchanged).

        Raises:
            NotReadyError, LockfileError: see :func:`build_catalog`.
        """
        signature = self._signature(service, loaded)
        current = self._current
        if current is not None and current.loaded is loaded and current.signature == signature:
            return current
        with self._lock:
            current = self._current
            if current is None or current.loaded is not loaded or current.signature != signature:
                try:
                    current = build_catalog(service, loaded, self.files(service), signature)
                except LockfileError as exc:
                    log.warning("map catalog: %s", exc)
                    raise
                self._current = current
        return current
