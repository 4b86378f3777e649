"""Records: the typed values that cross module and stage boundaries.

A scene's metadata (:class:`SceneRecord`, written by ingest; :class:`IndexedScene`, what the tile
index keeps of it), a tile-index entry (:class:`TileEntry`), the tile index itself
(:class:`TileIndex`), one tile's prediction or failure (:class:`TilePrediction`,
:class:`TileFailure`) and the predictions document (:class:`PredictionSet`) are frozen
dataclasses. Stages and the service pass these objects around; they become JSON only at the file
boundary, through ``to_json`` (a plain dict for :func:`satpipe.core.files.write_json`) and
``from_json`` (which names the file and the missing or malformed key). The model card is
:class:`satpipe.models.model.Model`.

Field order is the JSON document's (the writer sorts keys, so bytes do not depend on it). Free-
form sub-documents whose shape belongs to one producer (a scene's ``source``, ``labels`` and
``preview``, a tile's feature vector, run metadata) stay mappings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

from satpipe.core.errors import ModelError
from satpipe.core.files import read_json

INDEX_SCHEMA = 3  # 3: tiles are members of per-scene packs (satpipe.tiles.packs)


class _Record:
    """JSON conversion shared by the records: one key per field, nested records converted."""

    # Set on every subclass by @dataclass; declared so the checker knows records are dataclasses.
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]
    # field name -> record class, for fields holding a record or a tuple of records
    _nested: ClassVar[dict[str, type[_Record]]] = {}
    # fields left out of the JSON when they are None (absent in older documents)
    _optional: ClassVar[frozenset[str]] = frozenset()

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON-ready dict (tuples become lists)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and f.name in self._optional:
                continue
            out[f.name] = _to_json(value)
        return out

    @classmethod
    def from_json(cls, data: Any, source: str = "record") -> Self:
        """Build the record from its JSON form.

        Raises:
            ModelError: ``data`` is not an object, or a field is missing or malformed; the
                message names ``source`` and the field.
        """
        if not isinstance(data, Mapping):
            raise ModelError(f"{source}: expected a {cls.__name__} object, got {data!r:.80}")
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in data:
                if f.name in cls._optional or f.default is not dataclasses.MISSING:
                    continue
                raise ModelError(f"{source}: {cls.__name__} has no {f.name!r}")
            value = data[f.name]
            nested = cls._nested.get(f.name)
            if nested is not None and value is not None:
                where = f"{source}: {f.name}"
                value = (
                    tuple(nested.from_json(v, where) for v in value)
                    if isinstance(value, list)
                    else nested.from_json(value, where)
                )
            elif isinstance(value, list):
                value = tuple(value)
            kwargs[f.name] = value
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise ModelError(f"{source}: malformed {cls.__name__} ({exc})") from exc


def _to_json(value: Any) -> Any:
    if isinstance(value, _Record):
        return value.to_json()
    if isinstance(value, tuple | list):
        return [_to_json(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _to_json(v) for k, v in value.items()}
    return value


@dataclass(frozen=True, slots=True)
class TileWindow(_Record):
    """A tile's window in its scene, in pixels (rasterio's ``Window`` fields)."""

    row_off: int
    col_off: int
    width: int
    height: int


@dataclass(frozen=True, kw_only=True)
class SceneInfo(_Record):
    """What identifies a scene and its grid: the part of its metadata every stage reads."""

    id: str
    role: str
    sha256: str
    width: int
    height: int
    count: int
    dtypes: tuple[str, ...]
    crs: str
    crs_wkt: str
    epsg: int | None
    transform: tuple[float, ...]
    nodata: float | str | None
    acquisition_time: str | None
    source: Mapping[str, Any]
    labels: Mapping[str, Any] | None
    preview: Mapping[str, Any] | None

    @property
    def nodata_value(self) -> float | None:
        """The nodata value as a number (JSON's ``"NaN"``, ``"Infinity"``, ``"-Infinity"``)."""
        return float(self.nodata) if isinstance(self.nodata, str) else self.nodata

    def info(self) -> SceneInfo:
        """Only the :class:`SceneInfo` fields."""
        return SceneInfo(**{f.name: getattr(self, f.name) for f in dataclasses.fields(SceneInfo)})


@dataclass(frozen=True, kw_only=True)
class SceneRecord(SceneInfo):
    """A validated scene's full metadata, as ingest writes it (``<id>.json``, the manifest)."""

    driver: str
    bounds: tuple[float, float, float, float]
    res: tuple[float, float]
    nodata_source: str | None
    acquisition_time_source: str | None
    band_descriptions: tuple[str | None, ...]
    block_shape: tuple[int, int]
    valid_fraction: float
    size_bytes: int


@dataclass(frozen=True, kw_only=True)
class IndexedScene(SceneInfo):
    """A scene as the tile index header keeps it: its identity, grid and tile counts."""

    tiles: int
    tiles_skipped: Mapping[str, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class TileEntry(_Record):
    """One tile of the index: where it is, its bytes' hash, its features and its reference.

    ``file`` is the tile's path as clients name it (relative to the tiles directory); its bytes
    are ``length`` bytes at ``offset`` of the pack ``pack`` (see :mod:`satpipe.tiles.packs`), where
    they are the ZIP member named ``file``.
    """

    _nested: ClassVar[dict[str, type[_Record]]] = {"window": TileWindow}
    _optional: ClassVar[frozenset[str]] = frozenset({"scene"})

    id: str
    scene: str | None = None
    file: str
    pack: str
    offset: int
    length: int
    window: TileWindow
    bounds: tuple[float, float, float, float]
    sha256: str
    valid_fraction: float
    mean_intensity: float
    features: Mapping[str, float]
    labelled_fraction: float
    reference: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class TilePrediction(_Record):
    """A model's answer for one tile of the index (a record of the predictions document)."""

    _nested: ClassVar[dict[str, type[_Record]]] = {"window": TileWindow}

    id: str
    scene: str | None
    path: str
    window: TileWindow
    bounds: tuple[float, float, float, float]
    prediction: str
    score: float
    features: Mapping[str, float]
    model_version: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TileFailure(_Record):
    """A tile batch inference could not classify, and why."""

    id: str
    scene: str | None
    path: str
    error: str


@dataclass(frozen=True, kw_only=True)
class TileIndex(_Record):
    """The tile index: every scene (header), how tiles were cut, the feature definition, tiles.

    Its file's sha256 identifies a training set (:func:`satpipe.tiles.index.index_hash`).
    """

    _nested: ClassVar[dict[str, type[_Record]]] = {"tiles": TileEntry}

    schema: int = INDEX_SCHEMA
    scenes: Mapping[str, IndexedScene]
    tiling: Mapping[str, Any]
    feature: Mapping[str, Any]
    tile_count: int
    tiles: tuple[TileEntry, ...]

    @property
    def roles(self) -> dict[str, str]:
        """Each scene's role, by scene id."""
        return {sid: scene.role for sid, scene in self.scenes.items()}

    def role_of(self, tile: TileEntry) -> str:
        """The role of ``tile``'s scene.

        Raises:
            ModelError: the tile names no scene of the index header.
        """
        scene = None if tile.scene is None else self.scenes.get(tile.scene)
        if scene is None:
            raise ModelError(
                f"tile index: tile {tile.id!r} names scene {tile.scene!r}, which the header does "
                f"not list; expected one of {', '.join(sorted(self.scenes))}"
            )
        return scene.role

    @classmethod
    def from_json(cls, data: Any, source: str = "tile index") -> Self:
        """Build the index from its JSON form (see :meth:`_Record.from_json`).

        Raises:
            ModelError: not a tile index of schema :data:`INDEX_SCHEMA`, or a malformed entry.
        """
        if not isinstance(data, Mapping) or data.get("schema") != INDEX_SCHEMA:
            raise ModelError(f"{source}: not a tile index (schema {INDEX_SCHEMA} expected)")
        scenes = data.get("scenes")
        if not isinstance(scenes, Mapping):
            raise ModelError(f"{source}: tile index has no 'scenes' object")
        header = {
            sid: IndexedScene.from_json(scene, f"{source}: scenes.{sid}")
            for sid, scene in scenes.items()
        }
        index = super().from_json({**data, "scenes": {}}, source)
        return dataclasses.replace(index, scenes=header)


@dataclass(frozen=True, kw_only=True)
class PredictionSet(_Record):
    """The batch-inference document: run metadata, one record per classified tile, failures.

    ``metadata`` holds the run key, the model, the counts and monitoring statistics; in the
    file, the failures are its ``failed`` list.
    """

    metadata: Mapping[str, Any]
    predictions: tuple[TilePrediction, ...]
    failures: tuple[TileFailure, ...] = ()

    @property
    def index_sha256(self) -> str:
        """The sha256 of the tile index the predictions were made on."""
        return str(self.metadata["tile_index_sha256"])

    def to_json(self) -> dict[str, Any]:
        """The predictions document (``metadata`` with ``failed``, and ``predictions``)."""
        return {
            "metadata": {**_to_json(self.metadata), "failed": _to_json(self.failures)},
            "predictions": _to_json(self.predictions),
        }

    @classmethod
    def from_json(cls, data: Any, source: str = "predictions") -> Self:
        """Build the set from a predictions document.

        Raises:
            ModelError: not a predictions document, or a malformed record (named).
        """
        if (
            not isinstance(data, Mapping)
            or not isinstance(data.get("metadata"), Mapping)
            or not isinstance(data.get("predictions"), list)
        ):
            raise ModelError(f"{source}: not a predictions document (metadata, predictions)")
        metadata = dict(data["metadata"])
        failed = metadata.pop("failed", [])
        return cls(
            metadata=metadata,
            predictions=tuple(
                TilePrediction.from_json(p, f"{source}: predictions[{i}]")
                for i, p in enumerate(data["predictions"])
            ),
            failures=tuple(
                TileFailure.from_json(f, f"{source}: metadata.failed[{i}]")
                for i, f in enumerate(failed)
            ),
        )


def _read(path: Path | str, what: str) -> Any:
    try:
        return read_json(path)
    except FileNotFoundError:
        raise ModelError(f"{path}: {what} not found") from None
    except ValueError as exc:
        raise ModelError(f"{path}: {what} is not valid JSON ({exc})") from exc


def read_predictions(path: Path | str) -> PredictionSet:
    """Read a predictions document (batch inference's output).

    Raises:
        ModelError: the file is missing, not JSON, or not a predictions document.
    """
    return PredictionSet.from_json(_read(path, "predictions"), str(path))


def read_index(path: Path | str) -> TileIndex:
    """Read a tile index, checking that it is one.

    Raises:
        ModelError: the file is missing, not JSON, or not a tile index.
    """
    return TileIndex.from_json(_read(path, "tile index"), str(path))


def read_manifest(path: Path | str) -> list[SceneRecord]:
    """The scenes of an ingest manifest (``{"scenes": [...]}``), in order.

    Raises:
        ModelError: the file is missing, not JSON, or a scene record is malformed.
    """
    data = _read(path, "scene manifest")
    if not isinstance(data, Mapping) or not isinstance(data.get("scenes"), list):
        raise ModelError(f"{path}: not a scene manifest (expected {{'scenes': [...]}})")
    return [SceneRecord.from_json(s, f"{path}: scenes[{i}]") for i, s in enumerate(data["scenes"])]


def manifest_json(scenes: Iterable[SceneRecord]) -> dict[str, Any]:
    """The ingest manifest document listing ``scenes``."""
    return {"scenes": [scene.to_json() for scene in scenes]}


_T = TypeVar("_T", "TileEntry", "TilePrediction", "TileFailure")


def by_scene(items: Iterable[_T]) -> dict[str | None, list[_T]]:
    """Tiles, predictions or failures grouped by their scene, each group in input order."""
    groups: dict[str | None, list[_T]] = {}
    for item in items:
        groups.setdefault(item.scene, []).append(item)
    return groups


def sorted_scene_ids(ids: Iterable[str | None]) -> list[str | None]:
    """Scene ids in sorted order, None (tiles of no named scene) first."""
    return sorted(ids, key=lambda sid: (sid is not None, sid or ""))
