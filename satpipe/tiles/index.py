"""The tile index: one JSON file listing every tile of a run.

Each entry holds the tile id (``<scene id>/r<row>_c<col>``), its scene, its file (relative to the
tiles directory), its window in its scene, its bounds in its scene's CRS, the sha256 of the tile
file, the per-tile figures measured when it was cut (valid fraction, mean intensity), and its
labelled fraction and reference class (None without labels, see :mod:`satpipe.scenes.labels`). The
header records every scene (identity, size, CRS, role, labels, tile counts), the tiling params
and the feature definition, so the index alone says how every tile was made. Its content hash
identifies a training set.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from satpipe.core.files import sha256_file
from satpipe.core.records import (
    IndexedScene,
    SceneRecord,
    TileEntry,
    TileIndex,
    TilePrediction,
    by_scene,
)


def build_index(
    scenes: list[SceneRecord],
    tiling: dict[str, Any],
    feature: dict[str, Any],
    entries: list[TileEntry],
    skipped: list[dict[str, int]],
) -> TileIndex:
    """Assemble the tile index.

    Args:
        scenes: each scene's ingest metadata, in order.
        tiling: the tiling params used.
        feature: the feature definition.
        entries: every tile, scene by scene, in grid order; each names its ``scene``.
        skipped: each scene's skip counts by reason.
    """
    tiles_of = by_scene(entries)
    header = {
        meta.id: IndexedScene(
            **vars(meta.info()), tiles=len(tiles_of.get(meta.id, [])), tiles_skipped=skips
        )
        for meta, skips in zip(scenes, skipped, strict=True)
    }
    return TileIndex(
        scenes=header,
        tiling=tiling,
        feature=feature,
        tile_count=len(entries),
        tiles=tuple(entries),
    )


def index_hash(path: Path | str) -> str:
    """sha256 of the tile index file: the identity of a training set."""
    return sha256_file(path)


def in_training_subset(tile: str, seed: int, fraction: float) -> bool:
    """Deterministic train/held-out split by a hash of the tile id.

    A tile is in the training subset when ``sha256(f"{seed}:{tile}")``, read as a number in
    [0, 1), is below ``fraction``. Membership depends only on the tile id, so adding tiles never
    moves an existing tile between subsets.
    """
    digest = hashlib.sha256(f"{seed}:{tile}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def is_training_tile(tile: str, role: str, seed: int, fraction: float) -> bool:
    """Whether a tile trains the model.

    Every tile of a ``train`` scene does, none of an ``infer`` scene, and the hash-chosen
    ``fraction`` of a ``both`` scene (:func:`in_training_subset`).
    """
    if role == "train":
        return True
    return role == "both" and in_training_subset(tile, seed, fraction)


def is_inference_tile(role: str) -> bool:
    """Whether a tile's scene is classified by batch inference (roles ``infer`` and ``both``)."""
    return role in ("infer", "both")


def held_out_filter(
    training: Mapping[str, Any], index_sha256: str
) -> Callable[[TileEntry | TilePrediction], bool]:
    """Whether a tile-index entry was left out of a model's training.

    When inference ran on the index the model was fitted on (same sha256), the tiles the model
    trained on are not held out; on any other index every tile is.

    Args:
        training: the model's ``training`` record (index hash, scene roles, params).
        index_sha256: the sha256 of the tile index the predictions come from.
    """
    if index_sha256 != training["tile_index_sha256"]:
        return lambda tile: True
    roles = {sid: scene["role"] for sid, scene in training["scenes"].items()}
    seed, fraction = training["params"]["seed"], training["params"]["fraction"]
    return lambda tile: not is_training_tile(tile.id, roles[tile.scene], seed, fraction)
