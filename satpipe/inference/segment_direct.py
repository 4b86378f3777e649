"""The direct path of a run with overlap 0: bytes per window on the worker, no integer sums.

With overlap 0 every scene pixel is covered by exactly one window, with some taper weight
``w >= 1``; its sums are ``w q`` and ``w`` (``q``: the window's quantised probabilities, see
:mod:`satpipe.inference.stitch`), so its class is the first argmax of ``q`` and its probability
byte ``(510 w q + w 2^15) // (2 w 2^15) = (510 q + 2^15) // 2^16``: the bytes
:func:`satpipe.inference.stitch.finalise` gives, whatever the taper. A job computes them per
window as it blends (:func:`label_window`) into uint8 *labels* over its pieces, with the pieces'
class, winner-byte and valid counts; the driver only cuts each window row into blocks
(:func:`direct_blocks`). Pieces of one window row cover disjoint columns and counts are integer
sums, so the bytes and the stats are those of the summing path, for any split or engine.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np

from satpipe.inference.stitch import NODATA_CLASS, PROB_SCALE

T = TypeVar("T")
BLOCK_ROWS = 128
"""Finished rows are finalised and yielded at most this many at a time."""


@dataclass(frozen=True)
class SegmentBlock:
    """Finished rows ``[row_off, row_off + rows)`` of a scene's outputs.

    Attributes:
        row_off: the block's first scene row.
        classes: uint8 ``(rows, width)``, class positions; 255 at nodata.
        probabilities: uint8 ``(P, rows, width)``: the winner's (``P = 1``) or every class's
            probability, ``round_half_up(255 p)``; 0 at nodata.
        valid: bool ``(rows, width)``.
    """

    row_off: int
    classes: np.ndarray
    probabilities: np.ndarray
    valid: np.ndarray


@dataclass
class Tally:
    """What the run counts as blocks finish."""

    classes: np.ndarray
    probs: np.ndarray = field(default_factory=lambda: np.zeros(256, dtype=np.int64))
    valid: int = 0
    compared: int = 0
    disagree: int = 0
    run: int = 0
    skipped: int = 0
    samples: list[np.ndarray] = field(default_factory=list)


@dataclass
class Labels:
    """A piece's bytes (nodata where no window wrote) and its counts over valid pixels."""

    classes: np.ndarray  # uint8 (rows, cols)
    probs: np.ndarray  # uint8 (P, rows, cols)
    valid: np.ndarray  # bool (rows, cols)
    class_counts: np.ndarray  # int64 (K,)
    prob_counts: np.ndarray  # int64 (256,): the winner's byte
    valid_count: int = 0

    @classmethod
    def empty(cls, classes: int, every: bool, rows: int, cols: int) -> Labels:
        """Nodata everywhere, nothing counted."""
        return cls(
            np.full((rows, cols), NODATA_CLASS, dtype=np.uint8),
            np.zeros((classes if every else 1, rows, cols), dtype=np.uint8),
            np.zeros((rows, cols), dtype=bool),
            np.zeros(classes, dtype=np.int64),
            np.zeros(256, dtype=np.int64),
        )


def _byte(q: np.ndarray) -> np.ndarray:
    """``(510 q + 2^15) // 2^16`` of quantised probabilities (int32: below 2^24), uint8."""
    top = q * 510
    top += PROB_SCALE
    top >>= 16
    return top.astype(np.uint8)


def label_window(
    q: np.ndarray, keep: np.ndarray, full: bool, out: Labels, rows: slice, cols: slice
) -> None:
    """Write one window's bytes (``q``: int32 ``(K, h, w)``, ``keep``: its valid pixels)."""
    best = q[0].copy()
    classes = np.zeros(best.shape, dtype=np.uint8)  # the first argmax, as finalise's
    for k in range(1, q.shape[0]):
        np.putmask(classes, q[k] > best, k)
        np.maximum(best, q[k], out=best)
    winner = _byte(best)
    every = out.probs.shape[0] > 1
    probs = _byte(q) if every else winner[None]
    if not full:
        invalid = ~keep
        classes[invalid] = NODATA_CLASS
        winner[invalid] = 0
        if every:
            probs[:, invalid] = 0
    out.classes[rows, cols] = classes
    out.probs[:, rows, cols] = probs
    out.valid[rows, cols] = keep
    k = out.class_counts.size
    valid = keep.size if full else int(np.count_nonzero(keep))
    out.class_counts += np.bincount(classes.ravel(), minlength=256)[:k]
    out.prob_counts += np.bincount(winner.ravel(), minlength=256)
    out.prob_counts[0] -= keep.size - valid  # nodata pixels' byte 0 is not counted
    out.valid_count += valid


class _Piece(Protocol):
    k: int
    j0: int
    j1: int
    row0: int
    labels: Labels | None
    sample: np.ndarray
    sample_valid: np.ndarray


class _Result(Protocol):
    pieces: Any
    run: int
    skipped: int
    compared: int
    disagree: int
    seconds: dict[str, float]


def direct_blocks(
    results: Iterable[_Result], columns: int, tally: Tally, seconds: dict[str, float]
) -> Iterator[SegmentBlock]:
    """The blocks of the jobs' labels, each window row once its last piece is in (in order)."""
    row: list[Labels] = []
    samples: list[tuple[np.ndarray, np.ndarray]] = []
    for res in results:
        t = time.perf_counter()
        for key, value in res.seconds.items():
            seconds[key] += value
        tally.run, tally.skipped = tally.run + res.run, tally.skipped + res.skipped
        piece: _Piece
        for piece in res.pieces:
            labels = piece.labels
            assert labels is not None
            if piece.j0 == 0:
                row, samples = [], []
            row.append(labels)
            samples.append((piece.sample, piece.sample_valid))
            tally.valid += labels.valid_count
            tally.classes += labels.class_counts
            tally.probs += labels.prob_counts
            if piece.j1 < columns:
                continue
            values = np.concatenate([v for v, _ in samples], axis=1)
            mask = np.concatenate([m for _, m in samples], axis=1)
            tally.samples.append(values[mask])
            if len(row) == 1:
                classes, probs, valid = row[0].classes, row[0].probs, row[0].valid
            else:
                classes = np.concatenate([r.classes for r in row], axis=1)
                probs = np.concatenate([r.probs for r in row], axis=2)
                valid = np.concatenate([r.valid for r in row], axis=1)
            for a in range(0, classes.shape[0], BLOCK_ROWS):
                b = a + BLOCK_ROWS
                block = SegmentBlock(piece.row0 + a, classes[a:b], probs[:, a:b], valid[a:b])
                seconds["stitch"] += time.perf_counter() - t
                yield block
                t = time.perf_counter()
        seconds["stitch"] += time.perf_counter() - t


def one_ahead(results: Iterator[T], pool: ThreadPoolExecutor) -> Iterator[T]:
    """``results``, each computed in ``pool``'s thread while the previous one is consumed."""
    done = object()
    ahead = pool.submit(next, results, done)
    while (item := ahead.result()) is not done:
        ahead = pool.submit(next, results, done)
        yield item  # type: ignore[misc]


__all__ = ["BLOCK_ROWS", "Labels", "SegmentBlock", "Tally", "direct_blocks", "label_window"]
