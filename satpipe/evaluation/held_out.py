"""The pixels a per-pixel model is judged on: its held-out tiles' windows, minus training ones.

The held-out tiles are those :mod:`satpipe.evaluation.evaluate` judges (not training tiles,
:func:`satpipe.tiles.index.held_out_filter`); their windows' union is judged, so a pixel of two
overlapping tiles counts once, minus every pixel inside any training tile's window (tiles overlap
when the stride is below the size), so no pixel that trained the model is judged. Masks are built
block by block (:meth:`HeldOutPixels.masks`) or at sampled pixels (:meth:`HeldOutPixels.at`, for
the error quick-look), never for the whole scene at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from rasterio.windows import Window

from satpipe.core.errors import ModelError
from satpipe.core.records import TileIndex, TileWindow
from satpipe.models.model import Model
from satpipe.tiles.index import held_out_filter

BLOCK_ROWS = 512


def _spans(windows: Sequence[TileWindow], width: int, height: int) -> np.ndarray:
    spans = [(w.row_off, w.row_off + w.height, w.col_off, w.col_off + w.width) for w in windows]
    out = np.clip(np.array(spans, dtype=np.int64).reshape(-1, 4), 0, [height, height, width, width])
    return out[(out[:, 0] < out[:, 1]) & (out[:, 2] < out[:, 3])]


@dataclass(frozen=True)
class HeldOutPixels:
    """Which pixels of a scene are judged: held-out windows' union minus training windows.

    ``held_out`` and ``training`` are ``(n, 4)`` int64 spans ``row0, row1, col0, col1`` (end
    exclusive), clipped to the scene. Masks are built block by block (:meth:`mask`), so the error
    quick-look can reuse exactly the pixels the evaluation judged.
    """

    width: int
    height: int
    held_out: np.ndarray
    training: np.ndarray

    @classmethod
    def from_windows(
        cls, held: Sequence[TileWindow], training: Sequence[TileWindow], width: int, height: int
    ) -> HeldOutPixels:
        """From the held-out and training tiles' windows on a ``width`` x ``height`` scene."""
        return cls(width, height, _spans(held, width, height), _spans(training, width, height))

    def _paint(self, spans: np.ndarray, row_off: int, rows: int, col_off: int, cols: int) -> Any:
        out = np.zeros((rows, cols), dtype=np.bool_)
        for r0, r1, c0, c1 in spans:
            a, b = max(r0 - row_off, 0), min(r1 - row_off, rows)
            c, d = max(c0 - col_off, 0), min(c1 - col_off, cols)
            if a < b and c < d:
                out[a:b, c:d] = True
        return out

    def masks(
        self, row_off: int, rows: int, col_off: int = 0, cols: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(judged, in_training)`` bool masks of a block.

        ``judged``: in a held-out window and in no training window; ``in_training``: in a
        held-out window but also in a training window (excluded, counted).
        """
        cols = self.width - col_off if cols is None else cols
        held = self._paint(self.held_out, row_off, rows, col_off, cols)
        train = self._paint(self.training, row_off, rows, col_off, cols)
        return held & ~train, held & train

    def at(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The ``judged`` mask at the scene pixels ``rows x cols`` (both ascending)."""

        def paint(spans: np.ndarray) -> np.ndarray:
            out = np.zeros((rows.size, cols.size), dtype=np.bool_)
            for r0, r1, c0, c1 in spans:
                a, b = np.searchsorted(rows, [r0, r1])
                c, d = np.searchsorted(cols, [c0, c1])
                out[a:b, c:d] = True
            return out

        return paint(self.held_out) & ~paint(self.training)

    def blocks(self, block_rows: int = BLOCK_ROWS) -> Iterator[Window]:
        """Blocks of ``block_rows`` scene-aligned rows a held-out window touches (its columns)."""
        for row_off in range(0, self.height, block_rows):
            rows = min(block_rows, self.height - row_off)
            s = self.held_out
            hit = s[(s[:, 0] < row_off + rows) & (s[:, 1] > row_off)]
            if hit.size:
                c0, c1 = int(hit[:, 2].min()), int(hit[:, 3].max())
                yield Window(c0, row_off, c1 - c0, rows)


def held_out_pixels(model: Model, index: TileIndex, index_sha256: str, scene: str) -> HeldOutPixels:
    """The judged pixels of ``scene``: its held-out tiles' windows minus its training tiles'.

    Args:
        model: the model judged (its ``training`` record says which tiles trained it).
        index: the tile index the class rasters' scenes were tiled in.
        index_sha256: that index file's sha256.
        scene: the scene id.

    Raises:
        ModelError: the scene is not in the index header.
    """
    header = index.scenes.get(scene)
    if header is None:
        raise ModelError(f"scene {scene!r} is not in the tile index; expected one of its scenes")
    held_out = held_out_filter(model.training, index_sha256)
    tiles = [t for t in index.tiles if t.scene == scene]
    return HeldOutPixels.from_windows(
        [t.window for t in tiles if held_out(t)],
        [t.window for t in tiles if not held_out(t)],
        header.width,
        header.height,
    )
