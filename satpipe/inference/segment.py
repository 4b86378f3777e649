"""Whole-scene segmentation: a per-pixel model over every pixel of a scene, streamed in blocks.

Windows of the model's size tile the whole scene on a fixed grid with a declared overlap, the
scene reflected at its borders (:mod:`satpipe.inference.stitch` has the grid, the padding, the
integer taper and the rounding rules). Jobs of whole batches of windows in row-major order
(:mod:`satpipe.inference.segment_job`; a batch is the same windows whatever the split, so only
the scene's last call is padded) run on any engine and return integer partial sums per window
row; this module adds them into a rolling buffer of at most one window's rows and yields each
block of rows as soon as no later window touches it, so memory does not grow with the scene's
height. Integer sums do not depend on the order they are added in, so the bytes do not depend on
the job split, the number of workers or the engine. Run inline, the jobs run in a helper thread
one ahead of the stitching, all in one pipeline (reads, model and blending overlap).

Usage (the segment stage)::

    run = SceneSegmentation(model_path, scene, scene_file, settings_for(kind, params), engine)
    for block in run.blocks():
        writer.write(block)
    summary = run.stats

Nodata pixels (invalid input in any of the model's bands) come out as class 255, probability 0
and ``valid`` False. Windows whose in-scene pixels are all nodata are skipped (counted). NaN or
infinite pixels outside the nodata mask stop the run with a :class:`SceneError`.

Seams: for every pair of neighbouring windows (side by side or one above the other), over the
pixels of their overlap that are valid and inside the scene, the run counts the pixels compared
and those whose per-window argmax differs (``SegmentStats.seam_compared``/``seam_disagree``).

Pointwise kinds (``kind.pointwise``: a pixel's scores depend on its own bands only) are run on
the grid with overlap 0 and a flat taper whatever the settings say: every window would give a
pixel the same quantised scores ``q``, so its sums are ``q`` times its summed weights and the
class (argmax) and probability bytes (``(510 q + 2^15) // 2^16`` once the weights cancel) are
those of the overlapping run, each pixel scored once. There are then no seams (0 compared) and
``windows``/``windows_skipped`` count the grid's windows; the provenance keeps the settings.
Any run with overlap 0 skips the sums: jobs write each window's bytes and counts themselves and
this module only cuts window rows into blocks (:mod:`satpipe.inference.segment_direct`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np

from satpipe.core.errors import ModelError
from satpipe.core.params import SegmentParams
from satpipe.core.records import SceneRecord
from satpipe.core.segment_stats import SegmentStats
from satpipe.engines.engine import Engine
from satpipe.engines.spec import EngineSpec
from satpipe.inference.segment_direct import (
    BLOCK_ROWS,
    SegmentBlock,
    Tally,
    direct_blocks,
    one_ahead,
)
from satpipe.inference.segment_job import (
    SECONDS,
    Job,
    JobContext,
    ModelSource,
    Piece,
    compare,
    release,
    resolve_kind,
    run_job,
    run_jobs,
)
from satpipe.inference.stitch import Blend, finalise, origins, taper
from satpipe.models.kinds.base import PixelKind
from satpipe.models.model import Model

DEFAULT_WINDOW = 256
JOB_BYTES = 16 << 20
"""Auto job width: a job's partial sums stay under this many bytes."""


@dataclass(frozen=True)
class SegmentSettings:
    """How a scene is segmented (from ``segment`` in params and the model's window).

    Attributes:
        window, overlap: window side and overlap, pixels (``overlap`` even, at most half).
        blend: the taper (``hann``, ``tukey``, ``flat``).
        batch: windows per model call (the last call padded to it).
        probabilities: ``winner`` (one probability band) or ``all`` (one per class).
        job_windows: windows per job, rounded up to a multiple of ``batch`` (None: the
            largest multiple that keeps a job's sums under 16 MiB, at most an eighth of the
            scene's windows per worker, at least ``batch``). The bytes do not depend on it.
    """

    window: int
    overlap: int
    blend: Blend
    batch: int
    probabilities: Literal["winner", "all"] = "winner"
    job_windows: int | None = None

    @property
    def stride(self) -> int:
        """The step between window origins."""
        return self.window - self.overlap

    def taper(self) -> tuple[int, ...]:
        """The 1-D integer taper (:func:`satpipe.inference.stitch.taper`)."""
        return tuple(int(v) for v in taper(self.blend, self.window, self.overlap))


def settings_for(
    kind: PixelKind, params: SegmentParams, job_windows: int | None = None
) -> SegmentSettings:
    """The settings for running ``kind`` with the ``segment`` params.

    Raises:
        ModelError: the model's fixed window differs from ``segment.window``, or the overlap
            is odd or more than half the window.
    """
    fixed = kind.window
    if fixed is not None and params.window is not None and params.window != fixed:
        raise ModelError(
            f"segment.window is {params.window} but the model's window is fixed at {fixed}; "
            "set segment.window to null or to the model's size"
        )
    window = params.window or fixed or DEFAULT_WINDOW
    if params.overlap % 2 or 2 * params.overlap > window:
        raise ModelError(
            f"segment.overlap {params.overlap} must be even and at most half the window {window}"
        )
    return SegmentSettings(
        window, params.overlap, params.blend, params.batch, params.probabilities, job_windows
    )


class SceneSegmentation:
    """One scene's whole-scene run (see the module docstring).

    Args:
        source: the model (a :class:`Model`, its kind, or its JSON file's path: a path is what
            travels to workers, each loading the model once).
        scene: the scene's record (size, band names, nodata).
        path: the scene's raster file.
        settings: from :func:`settings_for`.
        engine: where jobs run (None: inline, in this process).

    Raises:
        ModelError: the scene lacks a band the model reads (naming both band lists).
    """

    def __init__(
        self,
        source: Model | ModelSource | Path,
        scene: SceneRecord,
        path: Path | str,
        settings: SegmentSettings,
        engine: Engine | None = None,
    ) -> None:
        if isinstance(source, Model):
            source = source.kind  # type: ignore[assignment]
        if isinstance(source, Path):
            source = str(source)
        assert not isinstance(source, Model | Path)
        self.kind = resolve_kind(source)
        self.scene = scene
        self.settings = settings
        self.engine = engine
        self.bands = self.kind.band_indices(scene.band_descriptions, scene.count, scene.id)
        names = tuple(
            scene.band_descriptions[b] if b < len(scene.band_descriptions) else None
            for b in self.bands
        )
        self.band_names = tuple(
            n or f"band {b + 1}" for n, b in zip(names, self.bands, strict=True)
        )
        self.k = len(self.kind.colours)
        # A pointwise kind gives a pixel the same scores in every window: one flat window per
        # pixel gives the same sums' quotients, so the same bytes (see the module docstring).
        pointwise = self.kind.pointwise
        w, o = settings.window, 0 if pointwise else settings.overlap
        self.ctx = JobContext(
            source=source,
            scene_path=str(path),
            scene_id=scene.id,
            width=scene.width,
            height=scene.height,
            bands=self.bands,
            nodata=scene.nodata_value,
            band_names=self.band_names,
            window=w,
            overlap=o,
            batch=settings.batch,
            classes=self.k,
            taper=(1,) * w if pointwise else settings.taper(),
            rows=tuple(int(v) for v in origins(scene.height, w, o)),
            cols=tuple(int(v) for v in origins(scene.width, w, o)),
            token=uuid.uuid4().hex,
            every=settings.probabilities == "all",
        )
        self.seconds: dict[str, float] = dict.fromkeys((*SECONDS, "stitch"), 0.0)
        self._stats: SegmentStats | None = None

    @property
    def provenance(self) -> dict[str, Any]:
        """What the outputs' tags record: window, overlap, blend, batch and the kind's own."""
        s = self.settings
        return {
            "window": s.window,
            "overlap": s.overlap,
            "blend": s.blend,
            "batch": s.batch,
            **self.kind.provenance(),
        }

    @property
    def stats(self) -> SegmentStats:
        """What the run saw (available once :meth:`blocks` is exhausted).

        Raises:
            ModelError: the blocks have not all been read yet.
        """
        if self._stats is None:
            raise ModelError(f"{self.scene.id}: segmentation stats asked for before the run ended")
        return self._stats

    def jobs(self) -> list[Job]:
        """The run's jobs, in order: runs of whole batches of windows, row-major."""
        s, b = self.settings, self.settings.batch
        total = len(self.ctx.rows) * len(self.ctx.cols)
        per = s.job_windows
        if per is None:  # small enough for the sums, enough jobs to keep every worker busy
            o = self.ctx.overlap
            fit = (JOB_BYTES // (4 * self.k * s.window) - o) // max(1, s.window - o)
            workers = self.engine.workers if self.engine is not None else 1
            per = min(fit, -(-total // (8 * workers)))
        per = max(1, -(-per // b)) * b
        return [Job(g, min(total, g + per)) for g in range(0, total, per)]

    def blocks(self) -> Iterator[SegmentBlock]:
        """Run the model over the scene, yielding finished row blocks top to bottom.

        Raises:
            SceneError: NaN or infinite input pixels outside the nodata mask.
            ModelError: the model's output shape is not ``(batch, K, W, W)``.
        """
        ctx, s = self.ctx, self.settings
        height, width, nx, ny = ctx.height, ctx.width, len(ctx.cols), len(ctx.rows)
        tally = Tally(np.zeros(self.k, dtype=np.int64))
        # The rolling buffer: one window's rows, allocated once (a window row's rows start
        # where the last one's overlap is; that overlap moves to the top in place).
        acc_rows = np.zeros((self.k, min(height, s.window), width), dtype=np.int32)
        wsum_rows = np.zeros((min(height, s.window), width), dtype=np.int32)
        acc, wsum = acc_rows[:, :0], wsum_rows[:0]
        buf0 = emitted = 0
        prev_bottom: list[np.ndarray | None] = [None] * nx
        bottom: list[np.ndarray | None] = [None] * nx
        last_right: np.ndarray | None = None
        samples: list[tuple[np.ndarray, np.ndarray]] = []
        with ExitStack() as stack:
            engine = self.engine or stack.enter_context(Engine(EngineSpec(workers=1)))
            jobs, pool = self.jobs(), stack.enter_context(ThreadPoolExecutor(1))
            results = engine.map(partial(run_job, ctx), jobs)
            if engine.spec.name == "local" and engine.workers == 1:  # inline: one pipeline
                results = one_ahead(run_jobs(ctx, jobs), pool)  # in a thread
            if ctx.direct and not ctx.overlap:  # the jobs' bytes, cut into blocks
                yield from direct_blocks(results, nx, tally, self.seconds)
                results = iter(())
            for res in results:
                t = time.perf_counter()
                for key, value in res.seconds.items():
                    self.seconds[key] += value
                tally.run += res.run
                tally.skipped += res.skipped
                tally.compared += res.compared
                tally.disagree += res.disagree
                for piece in res.pieces:
                    y = ctx.rows[piece.k]
                    if piece.j0 == 0:  # a new window row: move the buffer down to its rows
                        start, stop = max(0, y), min(height, y + s.window)
                        keep = max(0, buf0 + wsum.shape[0] - start)
                        if keep:  # overlapping views: numpy copies through a small temporary
                            acc_rows[:, :keep] = acc[:, start - buf0 :]
                            wsum_rows[:keep] = wsum[start - buf0 :]
                        acc_rows[:, keep : stop - start] = 0
                        wsum_rows[keep : stop - start] = 0
                        acc, wsum = acc_rows[:, : stop - start], wsum_rows[: stop - start]
                        buf0 = start
                        bottom, last_right, samples = [None] * nx, None, []
                    _add(piece, acc, wsum, buf0)
                    if piece.j0 > 0:
                        c, d = compare(last_right, piece.left)
                        tally.compared, tally.disagree = tally.compared + c, tally.disagree + d
                    last_right = piece.right
                    for j in range(piece.j0, piece.j1):
                        c, d = compare(prev_bottom[j], piece.top[j - piece.j0])
                        tally.compared, tally.disagree = tally.compared + c, tally.disagree + d
                        bottom[j] = piece.bottom[j - piece.j0]
                    samples.append((piece.sample, piece.sample_valid))
                    if piece.j1 < nx:
                        continue
                    prev_bottom = bottom
                    values = np.concatenate([v for v, _ in samples], axis=1)
                    mask = np.concatenate([m for _, m in samples], axis=1)
                    tally.samples.append(values[mask])
                    end = height if piece.k == ny - 1 else min(height, ctx.rows[piece.k + 1])
                    for a in range(emitted, end, BLOCK_ROWS):
                        b = min(end, a + BLOCK_ROWS)
                        block = self._finish(
                            acc[:, a - buf0 : b - buf0], wsum[a - buf0 : b - buf0], a, tally
                        )
                        self.seconds["stitch"] += time.perf_counter() - t
                        yield block
                        t = time.perf_counter()
                    emitted = end
                self.seconds["stitch"] += time.perf_counter() - t
        release()  # the scene this process kept open for reads
        self._stats = SegmentStats(
            scene=self.scene.id,
            width=width,
            height=height,
            valid_pixels=tally.valid,
            class_counts=tally.classes,
            probability_counts=tally.probs,
            seam_compared=tally.compared,
            seam_disagree=tally.disagree,
            windows=tally.run,
            windows_skipped=tally.skipped,
            band_sample=(
                np.concatenate(tally.samples)
                if tally.samples
                else np.zeros((0, len(self.bands)), dtype=np.float64)
            ),
            band_names=self.band_names,
        )

    def _finish(
        self, acc: np.ndarray, wsum: np.ndarray, row_off: int, tally: Tally
    ) -> SegmentBlock:
        """Finalise finished rows into a block, counting classes and winner bytes."""
        every = self.settings.probabilities == "all"
        classes, probs, valid = finalise(acc, wsum, every)
        winner = probs[0]
        if every:
            winner = np.take_along_axis(probs, np.minimum(classes, self.k - 1)[None], axis=0)[0]
        tally.valid += int(np.count_nonzero(valid))
        tally.classes += np.bincount(classes[valid], minlength=self.k)[: self.k]
        tally.probs += np.bincount(winner[valid], minlength=256)
        return SegmentBlock(row_off, classes, probs, valid)


def _add(piece: Piece, acc: np.ndarray, wsum: np.ndarray, buf0: int) -> None:
    """Add a piece's partial sums into the rolling buffer (whose first row is ``buf0``)."""
    rows, cols = piece.wsum.shape
    r = piece.row0 - buf0
    acc[:, r : r + rows, piece.col0 : piece.col0 + cols] += piece.acc
    wsum[r : r + rows, piece.col0 : piece.col0 + cols] += piece.wsum


__all__ = ["SceneSegmentation", "SegmentBlock", "SegmentSettings", "settings_for"]
