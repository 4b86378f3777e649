"""Inference: classifying tiles with a model, one tile or a whole index.

:func:`predict_raster` is the single code path from pixels to a prediction; batch inference and
the REST service both call it (through :func:`predict_file` for tiles on disk). Batch inference
reads every tile whose pixels it needs once (checking its sha256 against the index on the same
bytes), records a tile that cannot be read instead of stopping, and fails only when the failed
fraction exceeds the allowed one.

A model that reads features, not pixels, needs no tile decoded in batch inference: the tile stage
already measured every feature of every tile with :func:`~satpipe.tiles.features.tile_measurements`
and stored them in the index entry. When the model's :class:`~satpipe.tiles.features.FeatureSpec`
equals the index's and the entry holds every feature the model reports, :func:`entry_input` builds
the tile's :class:`ModelInput` from the entry instead of :func:`model_input` from its pixels; both
go through :func:`predict_inputs`, and the records are the same bit for bit, because

- ``tile_measurements`` computes each named feature on its own (the valid mask depends only on the
  spec and the nodata value; a band's statistics only on that band and the mask), so the subset a
  model asks for has the values of the full vector the index holds;
- a tile carries the scene nodata value the tile stage measured it with (``tile_profile``) and
  its pixels losslessly, so decoding it gives the same array and the same nodata;
- JSON keeps every float exactly (shortest round-trip repr), and the non-finite ones as strings
  that ``float`` reads back.

Batch inference then trusts the index for such a model and does not read those tiles, nor check
their sha256: ``data/tiles`` and ``data/tile_index.json`` are outputs of the same ``tile`` stage,
whose hashes DVC records in ``dvc.lock`` (``dvc status`` and ``dvc repro`` see a changed tile),
and the REST service still reads and verifies every tile it serves. A pixel-input model, a
feature spec other than the index's, or an entry without a reported feature: the tile is read,
checked and decoded as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from satpipe.core.errors import SatpipeError, TileError
from satpipe.core.files import sha256_bytes
from satpipe.core.raster import (
    FileSignature,
    Raster,
    decode_tile,
    read_file_signed,
    valid_mask,
)
from satpipe.core.records import TileEntry, TileFailure, TilePrediction, by_scene
from satpipe.engines.engine import Engine
from satpipe.engines.spec import EngineSpec
from satpipe.models.model import Model
from satpipe.tiles.features import FeatureSpec, tile_measurements
from satpipe.tiles.packs import MemberSignature, read_member, vsi_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    """A model's answer for one tile: its class, its score and the features it was given."""

    prediction: str
    score: float
    features: dict[str, float]
    valid_fraction: float
    model_version: str


@dataclass(frozen=True)
class ModelInput:
    """What one tile gives the model: its reported features and the model's input row."""

    features: dict[str, float]
    valid_fraction: float
    x: np.ndarray


def model_input(raster: Raster, model: Model, name: str) -> ModelInput:
    """Compute what ``model`` reads from one decoded tile (features or pixels).

    Raises:
        TileError: the model's bands are not in the tile, or no pixel is valid.
    """
    spec = model.feature_spec
    count = raster.data.shape[0]
    if spec.bands is not None and max(spec.bands) > count:
        raise TileError(f"{name}: tile has {count} bands; the model reads bands {list(spec.bands)}")
    try:
        basic, features = tile_measurements(
            raster.data, raster.nodata, spec, model.reported_features
        )
    except ValueError as exc:
        raise TileError(f"{name}: {exc}") from exc
    if features is None:
        raise TileError(f"{name}: no valid pixel (all nodata or NaN); cannot compute a feature")
    if model.input == "pixels":
        x = raster.data.astype(np.float32)
        if model.kind.output == "pixels":  # a per-pixel kind ignores invalid pixels: NaN marks them
            x[:, ~valid_mask(raster.data, raster.nodata)] = np.nan
    else:
        x = _feature_row(features, model)
    return ModelInput(features, basic.valid_fraction, x)


def _feature_row(features: dict[str, float], model: Model) -> np.ndarray:
    """The model's input row: the features it reads, in its kind's order."""
    return np.array([features[n] for n in model.kind.feature_names], dtype=np.float64)


def reads_index_features(model: Model, index_spec: FeatureSpec | None) -> bool:
    """True when ``model`` reads features defined as the index's (``index_spec``; None: unknown).

    Then the features the tile stage stored in an index entry are those :func:`model_input`
    would compute from the tile's pixels (see the module docstring).
    """
    return model.input == "features" and model.feature_spec == index_spec


def entry_input(entry: TileEntry, model: Model) -> ModelInput | None:
    """What ``model`` reads from a tile, taken from its index entry; None if a feature is missing.

    Only for a model for which :func:`reads_index_features` holds: the entry's features were
    measured with the model's definition, so this equals :func:`model_input` of the tile's pixels.
    """
    stored = entry.features
    if any(n not in stored for n in model.reported_features):
        return None
    # float(): a non-finite feature is stored as a string ("NaN", "Infinity"); float reads it back.
    features = {n: float(stored[n]) for n in model.reported_features}
    return ModelInput(features, float(entry.valid_fraction), _feature_row(features, model))


def predict_inputs(inputs: list[ModelInput], model: Model) -> list[Prediction]:
    """Classify prepared tiles in as few model calls as their input shapes allow."""
    out: list[Prediction | None] = [None] * len(inputs)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, item in enumerate(inputs):
        groups.setdefault(item.x.shape, []).append(i)
    for members in groups.values():
        classes, scores = model.predict(np.stack([inputs[i].x for i in members]))
        for i, cls, score in zip(members, classes, scores, strict=True):
            item = inputs[i]
            out[i] = Prediction(
                cls, float(score), item.features, item.valid_fraction, model.version
            )
    return [p for p in out if p is not None]


def predict_raster(raster: Raster, model: Model, name: str) -> Prediction:
    """Compute the tile's features with the model's definition and classify it.

    Raises:
        TileError: the model's bands are not in the tile, or no pixel is valid.
    """
    return predict_inputs([model_input(raster, model, name)], model)[0]


class VerifiedFiles:
    """Tiles whose bytes matched an expected sha256, remembered by their signature.

    A long-running reader (the REST service) sees the same tiles again and again; once a tile's
    bytes have matched the index, an unchanged signature (device, inode, size, mtime and ctime
    in ns, see :func:`~satpipe.core.raster.read_file_signed`; for a pack member, the pack's and the
    member's offset and length) stands for the same bytes, as in DVC's
    state database, and the hash is skipped. Any write, rename over or replacement changes the
    signature and the file is hashed again. Safe to share between threads; bounded in size.
    """

    def __init__(self, max_entries: int = 1 << 16) -> None:
        self.max_entries = max_entries
        self._seen: dict[tuple[FileSignature | MemberSignature, str], None] = {}

    def __contains__(self, key: tuple[FileSignature | MemberSignature, str]) -> bool:
        return key in self._seen

    def add(self, key: tuple[FileSignature | MemberSignature, str]) -> None:
        """Remember a (signature, sha256) pair that was checked."""
        if len(self._seen) >= self.max_entries:
            self._seen.clear()
        self._seen[key] = None


@dataclass(frozen=True)
class TileSource:
    """Where a tile's bytes are: a whole file, or ``length`` bytes at ``offset`` of a pack.

    ``name`` is how messages name it: the file's path, or the member's GDAL path
    (``/vsizip/<pack>/<member>``), which opens it in place.
    """

    path: Path
    name: str
    offset: int | None = None
    length: int = 0

    @classmethod
    def of(cls, path: Path | str | TileSource) -> TileSource:
        """``path`` itself if it is a source, else the whole file at ``path``."""
        return path if isinstance(path, TileSource) else cls(Path(path), str(path))

    @classmethod
    def of_entry(cls, tiles_dir: Path, entry: TileEntry) -> TileSource:
        """The packed bytes of a tile-index entry, in the tiles directory ``tiles_dir``."""
        pack = tiles_dir / entry.pack
        return cls(pack, vsi_path(pack, entry.file), entry.offset, entry.length)

    def read(self) -> tuple[bytes, FileSignature | MemberSignature]:
        """The tile's bytes and their signature (see :class:`VerifiedFiles`).

        Raises:
            RasterReadError: the file or pack cannot be read, or the pack is cut short.
        """
        if self.offset is None:
            return read_file_signed(self.path)
        return read_member(self.path, self.offset, self.length, self.name)


def predict_file(
    path: Path | str | TileSource,
    model: Model,
    expected_sha256: str | None = None,
    verified: VerifiedFiles | None = None,
) -> Prediction:
    """Read a tile once (a file, or a pack member) and classify it, checking its sha256 first.

    With ``verified``, a tile already checked against ``expected_sha256`` and unchanged since
    is not hashed again.

    Raises:
        TileError: the content does not match ``expected_sha256``, or the tile is unusable.
        RasterReadError, NotGeoTIFFError: the tile cannot be read as a GeoTIFF.
    """
    source = TileSource.of(path)
    return predict_raster(read_tile(source, expected_sha256, verified), model, source.name)


def read_tile(
    path: Path | str | TileSource,
    expected_sha256: str | None = None,
    verified: VerifiedFiles | None = None,
) -> Raster:
    """Read and decode a tile once, checking its sha256 first when one is expected.

    Raises:
        TileError: the content does not match ``expected_sha256``.
        RasterReadError, NotGeoTIFFError: the tile cannot be read as a GeoTIFF.
    """
    source = TileSource.of(path)
    blob, signature = source.read()
    if expected_sha256 is not None:
        key = (signature, expected_sha256)
        if verified is None or key not in verified:
            if (got := sha256_bytes(blob)) != expected_sha256:
                raise TileError(
                    f"{source.name}: sha256 is {got}; the tile index says {expected_sha256}"
                )
            if verified is not None:
                verified.add(key)
    return decode_tile(blob, source.name)


def _summary(values: np.ndarray) -> dict[str, Any]:
    if values.size == 0:
        return {"count": 0}
    q = np.quantile(values, [0.05, 0.5, 0.95])
    return {
        "count": int(values.size),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
        "p05": float(q[0]),
        "p50": float(q[1]),
        "p95": float(q[2]),
    }


def predict_tiles(
    tiles_dir: Path,
    model: Model,
    tiles: Sequence[TileEntry],
    index_spec: FeatureSpec | None = None,
) -> list[tuple[TilePrediction | TileFailure, float]]:
    """Classify a chunk of tile-index entries; one ``(record, latency)`` per tile, in order.

    Every tile's input is prepared first: from its index entry when the model reads the index's
    features (``index_spec``, the index's feature definition; see :func:`reads_index_features`
    and :func:`entry_input`), else by reading, checking and measuring the tile. Then the model
    classifies the whole chunk in one call (per input shape), so batched kinds (an ONNX graph)
    see many tiles per run. A tile that cannot be classified gives ``(TileFailure, 0.0)``
    instead of raising. Each tile's latency is its own preparation time plus its share of the
    model call. Module-level so that it can run in a worker process or on a Dask worker.
    """
    from_index = reads_index_features(model, index_spec)
    out: list[tuple[TilePrediction | TileFailure, float] | None] = []
    ready: list[tuple[int, TileEntry, ModelInput, float]] = []
    for tile in tiles:
        start = time.perf_counter()
        source = TileSource.of_entry(tiles_dir, tile)
        try:
            item = entry_input(tile, model) if from_index else None
            if item is None:
                item = model_input(read_tile(source, tile.sha256), model, source.name)
        except (SatpipeError, OSError) as exc:
            failure = TileFailure(id=tile.id, scene=tile.scene, path=tile.file, error=str(exc))
            out.append((failure, 0.0))
            continue
        ready.append((len(out), tile, item, time.perf_counter() - start))
        out.append(None)  # filled in after the batched model call
    start = time.perf_counter()
    predictions = predict_inputs([item for _, _, item, _ in ready], model)
    share = (time.perf_counter() - start) / len(ready) if ready else 0.0
    for (slot, tile, _, took), pred in zip(ready, predictions, strict=True):
        record = TilePrediction(
            id=tile.id,
            scene=tile.scene,
            path=tile.file,
            window=tile.window,
            bounds=tile.bounds,
            prediction=pred.prediction,
            score=pred.score,
            features=pred.features,
            model_version=pred.model_version,
        )
        out[slot] = (record, took + share)
    return [item for item in out if item is not None]


def batch_predict(
    tiles: Sequence[TileEntry],
    tiles_dir: Path,
    model: Model,
    engine: Engine | None = None,
    progress: bool = False,
    chunk: int = 64,
    index_spec: FeatureSpec | None = None,
) -> tuple[list[TilePrediction], list[TileFailure], list[float]]:
    """Classify every tile of ``tiles``, ``chunk`` tiles per engine task.

    Args:
        tiles: tile-index entries.
        tiles_dir: the directory their ``file`` paths are relative to.
        model: the model.
        engine: where chunks run (default: inline, in this process).
        progress: show a progress bar on stderr.
        chunk: tiles per task.
        index_spec: the index's feature definition (its header's ``feature``); when it is the
            model's and the model reads features, the tiles' features come from their entries
            instead of their pixels (see :func:`predict_tiles`). None: every tile is read.

    Returns:
        Per-tile predictions (input order), failures, and per-tile latencies (s).
    """
    chunks = [tiles[i : i + chunk] for i in range(0, len(tiles), chunk)]
    records: list[TilePrediction] = []
    failures: list[TileFailure] = []
    latencies: list[float] = []
    with ExitStack() as stack:
        engine = engine or stack.enter_context(Engine(EngineSpec(workers=1)))
        bar = stack.enter_context(
            tqdm(total=len(tiles), unit="tile", desc="infer", disable=not progress)
        )
        for results in engine.map(
            partial(predict_tiles, tiles_dir, model, index_spec=index_spec), chunks
        ):
            bar.update(len(results))
            for record, latency in results:
                if isinstance(record, TileFailure):
                    log.warning(
                        "tile %s failed: %s", record.id, record.error, extra={"tile": record.id}
                    )
                    failures.append(record)
                else:
                    records.append(record)
                    latencies.append(latency)
    return records, failures, latencies


def monitoring(
    records: Sequence[TilePrediction], classes: tuple[str, ...], monitored: str
) -> dict[str, Any]:
    """Prediction counts by class and monitored-feature statistics, overall and per scene."""

    def summary(recs: Sequence[TilePrediction]) -> dict[str, Any]:
        counts = dict.fromkeys(classes, 0)
        for rec in recs:
            counts[rec.prediction] += 1
        values = np.array([rec.features[monitored] for rec in recs], dtype=np.float64)
        return {"prediction_counts": counts, "feature": {"name": monitored, **_summary(values)}}

    groups = by_scene(records)
    per_scene = {sid: summary(groups[sid]) for sid in sorted(s for s in groups if s is not None)}
    return {**summary(records), "per_scene": per_scene}
