"""The labelled pixel sample a trainable per-pixel kind is fitted on.

Pixels come from the training tiles only, read window by window from each scene's GeoTIFF and its
label raster (``<scenes dir>/<labels.file>``, on the scene's grid, codes unchanged). A label code
listed under one of the model's classes (``train.pixels.classes``) is that class; a code listed
nowhere is unlabelled and skipped, as are the label raster's nodata code and pixels invalid in the
scene (nodata or non-finite in any band). A code the scene's own label mapping
(``labels.classes``) lists but no model class does is refused: the model could never be judged on
it, and silently dropping it would bias the sample.

Every pixel is counted once, and never one a held-out tile holds: with overlapping tiles
(``tile.stride < tile.size``) a pixel inside any held-out tile of its scene, or inside an earlier
training tile, is skipped (evaluation judges the held-out tiles' pixels, and none of them may have
trained the model). With ``stride == size`` tiles do not overlap and nothing is skipped this way.

The sample is the ``samples`` eligible pixels with the smallest key, a 64-bit hash (SplitMix64)
of the pixel's position in its scene salted with ``sha256(f"{seed}:{scene id}")``, ties broken by
scene order, then position: a uniform random sample that depends only on the scenes, the tiles
and the seed, not on the machine, the read order or numpy's sort algorithm. It is drawn tile by
tile, keeping only the best ``samples`` candidates, so memory stays at one tile plus the sample.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window

from satpipe.core.errors import ModelError
from satpipe.core.raster import open_scene, read_window, valid_mask
from satpipe.core.records import TileEntry, TileIndex, TileWindow
from satpipe.models.kinds.base import PixelSample
from satpipe.models.kinds.pixels import PixelClasses

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@dataclass(frozen=True)
class SceneSource:
    """Where one scene's sample pixels come from.

    Attributes:
        id: the scene id (salts the sample's hash).
        image: the scene GeoTIFF.
        labels: its label raster (same grid).
        nodata: the scene's nodata value (None: only non-finite pixels are invalid).
        label_nodata: the label raster's nodata code, or None.
        windows: the training tiles' windows, in index order.
        held_out: the windows of the scene's tiles that do not train the model.
    """

    id: str
    image: Path
    labels: Path
    nodata: float | None
    label_nodata: int | None
    windows: tuple[TileWindow, ...]
    held_out: tuple[TileWindow, ...] = ()


def splitmix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser of ``values`` (uint64, wrapping arithmetic: exact everywhere)."""
    z = values.astype(np.uint64) + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def scene_salt(scene: str, seed: int) -> np.uint64:
    """The hash salt of a scene's pixels."""
    return np.uint64(int.from_bytes(hashlib.sha256(f"{seed}:{scene}".encode()).digest()[:8], "big"))


def check_label_codes(scene: str, labels: Mapping[str, Any], classes: PixelClasses) -> None:
    """Refuse label codes the scene's mapping lists but no model class does.

    Raises:
        ModelError: naming the code, what it means in the scene, and the model's classes.
    """
    known = {code for codes in classes.codes for code in codes}
    names = {str(k): str(v) for k, v in (labels.get("codes") or {}).items()}
    for name, codes in sorted((labels.get("classes") or {}).items()):
        for code in sorted(int(c) for c in codes):
            if code not in known and code != labels.get("nodata"):
                what = (
                    f"{names[str(code)]!r}, class {name!r} of its labels"
                    if str(code) in names
                    else f"{name!r} in ingest.labels.classes"
                )
                model = ", ".join(
                    f"{n} {list(c)}" for n, c in zip(classes.names, classes.codes, strict=True)
                )
                raise ModelError(
                    f"scene {scene}: label code {code} ({what}) maps to no class of the model "
                    f"({model}); list it in train.pixels.classes"
                )


def _covered(window: TileWindow, others: Sequence[TileWindow]) -> np.ndarray:
    """``(height, width)`` bool: the pixels of ``window`` inside any of ``others``."""
    mask = np.zeros((window.height, window.width), dtype=bool)
    for o in others:
        r0, c0 = max(o.row_off, window.row_off), max(o.col_off, window.col_off)
        r1 = min(o.row_off + o.height, window.row_off + window.height)
        c1 = min(o.col_off + o.width, window.col_off + window.width)
        if r0 < r1 and c0 < c1:
            rows = slice(r0 - window.row_off, r1 - window.row_off)
            mask[rows, c0 - window.col_off : c1 - window.col_off] = True
    return mask


def _overlapping(window: TileWindow, others: Sequence[TileWindow]) -> list[TileWindow]:
    return [
        o
        for o in others
        if o.row_off < window.row_off + window.height
        and window.row_off < o.row_off + o.height
        and o.col_off < window.col_off + window.width
        and window.col_off < o.col_off + o.width
    ]


class _Best:
    """The ``k`` candidates with the smallest (hash, scene, position) seen so far."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.keys = np.zeros(0, dtype=np.uint64)
        self.scenes = np.zeros(0, dtype=np.int64)
        self.flat = np.zeros(0, dtype=np.int64)
        self.values: np.ndarray | None = None
        self.classes = np.zeros(0, dtype=np.int64)

    def add(
        self, keys: np.ndarray, scene: int, flat: np.ndarray, values: np.ndarray, y: np.ndarray
    ) -> None:
        """Merge a tile's candidates (``values`` ``(P, C)``, ``y`` class positions)."""
        if self.keys.size == self.k:  # only keys up to the current k-th can make it in
            fits = keys <= self.keys[-1]
            keys, flat, values, y = keys[fits], flat[fits], values[fits], y[fits]
        keys = np.concatenate([self.keys, keys])
        scenes = np.concatenate([self.scenes, np.full(flat.size, scene, dtype=np.int64)])
        flat = np.concatenate([self.flat, flat])
        values = values if self.values is None else np.concatenate([self.values, values])
        y = np.concatenate([self.classes, y])
        order = np.lexsort((flat, scenes, keys))[: self.k]
        self.keys, self.scenes, self.flat = keys[order], scenes[order], flat[order]
        self.values, self.classes = values[order], y[order]


def draw_sample(
    sources: Sequence[SceneSource], classes: PixelClasses, samples: int, seed: int
) -> PixelSample:
    """The pixel sample of ``sources`` (see the module docstring).

    Raises:
        ModelError: a scene's band names differ from the first's, a file cannot be read, or no
            pixel is labelled with a model class.
    """
    codes = np.array(sorted(c for cs in classes.codes for c in cs), dtype=np.int64)
    positions = np.array(
        [next(k for k, cs in enumerate(classes.codes) if c in cs) for c in codes.tolist()],
        dtype=np.int64,
    )
    bands: tuple[str, ...] | None = None
    best = _Best(samples)
    for ordinal, src in enumerate(sources):
        with open_scene(src.image) as img, open_scene(src.labels) as lab:
            names = tuple(d or "" for d in img.descriptions)
            if bands is None:
                bands = names
            elif names != bands:
                raise ModelError(
                    f"scene {src.id} has bands {list(names)}; the first training scene has "
                    f"{list(bands)} (a per-pixel model trains on scenes with the same bands)"
                )
            salt = scene_salt(src.id, seed)
            for i, w in enumerate(src.windows):
                window = Window(w.col_off, w.row_off, w.width, w.height)
                data = read_window(img, window)
                label = read_window(lab, window, [1])[0].astype(np.int64)
                keep = valid_mask(data, src.nodata)
                if src.label_nodata is not None:
                    keep &= label != src.label_nodata
                hit = np.clip(np.searchsorted(codes, label), 0, max(codes.size - 1, 0))
                keep &= codes[hit] == label if codes.size else np.zeros_like(keep)
                blocked = _overlapping(w, [*src.held_out, *src.windows[:i]])
                if blocked:
                    keep &= ~_covered(w, blocked)
                rows, cols = np.nonzero(keep)
                flat = (rows + w.row_off).astype(np.int64) * img.width + (cols + w.col_off)
                keys = splitmix64(flat.astype(np.uint64) ^ salt)
                values = data[:, rows, cols].T.astype(np.float64)
                best.add(keys, ordinal, flat, values, positions[hit[rows, cols]])
    if bands is None or best.values is None or best.classes.size == 0:
        raise ModelError(
            "no training pixel is labelled with a model class (train.pixels.classes codes "
            f"{sorted(codes.tolist())}); check the label rasters and the class codes"
        )
    return PixelSample(best.values, best.classes, bands)


def build_sample(
    index: TileIndex,
    train_tiles: Sequence[TileEntry],
    classes: PixelClasses,
    samples: int,
    seed: int,
    scenes_dir: Path,
) -> PixelSample:
    """The pixel sample of an index's training tiles, from the scenes in ``scenes_dir``.

    A scene's file is ``<scenes_dir>/<scene id>.tif``; training scenes without a label raster
    give no pixel.

    Raises:
        ModelError: an unknown label code, unreadable files, or no labelled pixel.
    """
    training_ids = {t.id for t in train_tiles}
    sources = []
    for sid, scene in index.scenes.items():
        windows = tuple(t.window for t in train_tiles if t.scene == sid)
        labels = scene.labels
        if not windows or not labels:
            continue
        check_label_codes(sid, labels, classes)
        held = tuple(t.window for t in index.tiles if t.scene == sid and t.id not in training_ids)
        nodata = labels.get("nodata")
        sources.append(
            SceneSource(
                id=sid,
                image=scenes_dir / f"{sid}.tif",
                labels=scenes_dir / str(labels["file"]),
                nodata=scene.nodata_value,
                label_nodata=None if nodata is None else int(nodata),
                windows=windows,
                held_out=held,
            )
        )
    return draw_sample(sources, classes, samples, seed)


__all__ = ["SceneSource", "build_sample", "check_label_codes", "draw_sample", "splitmix64"]
