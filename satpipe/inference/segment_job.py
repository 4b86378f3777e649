"""One job of a whole-scene segmentation: a run of whole batches of windows, on any worker.

The scene's windows are numbered in row-major order (window row ``k``, column ``j``: ``g = k nx
+ j``) and cut into batches of ``batch`` consecutive numbers: batch ``b`` is windows ``[b B,
(b+1) B)``, the scene's last batch padded with copies of its last window. A batch is the same
windows whatever the job split, the number of workers or the engine (ONNX Runtime's bits depend on
the batch), and a window in it takes the same slot. A job is a run of whole batches, crossing
window rows: it holds one *piece* per window row it touches. A batch whose windows are all skipped
(no valid pixel inside the scene) is not run; one with some skipped runs them all, and their
scores are dropped.

A piece reads the rows and columns its windows need (the scene reflected at its borders, see
:mod:`satpipe.inference.stitch`), checks its owned pixels are finite outside the nodata mask and
takes the band sample of the pixels it owns. Jobs run as a pipeline of three batches: while the
job's thread runs the model alone on batch i (a staged kind's ``run``, e.g. ``session.run``), one
helper thread finishes batch i-1 (``finish``, e.g. softmax) and blends it, then assembles batch
i+1 from the pieces and prepares the model's input (``prepare``, e.g. normalisation); reads,
decoding, ONNX Runtime and numpy's large array work release the GIL. Jobs run one after the other
in one process (:func:`run_jobs`, the inline engine) share one pipeline. The job
returns, per piece, integer partial sums over the piece's span and the argmax strips it shares
with windows of other jobs, and the seams between neighbouring windows of the same piece; with
overlap 0, each piece's bytes and counts instead (:mod:`satpipe.inference.segment_direct`). It is a
plain function of picklable arguments, so local process pools and Dask run it alike; a model
given by path is loaded once per process, one given as an object once per process and run.
"""

from __future__ import annotations

import functools
import itertools
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from satpipe.core.errors import ModelError
from satpipe.inference.malloc import release_large_buffers
from satpipe.inference.segment_direct import Labels, label_window
from satpipe.inference.segment_read import JobContext, ModelSource, Source, read_piece, release
from satpipe.inference.stitch import NODATA_CLASS, quantise
from satpipe.models.kinds.base import PixelKind, PixelStages
from satpipe.models.model import load

_KINDS: OrderedDict[str, PixelKind] = OrderedDict()  # run token -> the kind it unpickled first
_CLOCK = time.perf_counter
SECONDS = ("read", "prepare", "wait", "model", "behind", "finish", "blend")
"""A job's timings: reads and the model's input (helper thread), the job thread's waits for them,
the model and the job thread's waits for the helper's blending, probabilities and blending."""


@dataclass(frozen=True)
class Job:
    """Windows ``[g0, g1)`` in row-major order (whole batches)."""

    g0: int
    g1: int


@dataclass
class Piece:
    """A job's part of window row ``k`` (columns ``[j0, j1)``): sums over its span and strips.

    ``acc``/``wsum`` cover scene rows ``[row0, row0+rows)``, cols ``[col0, col0+cols)``.
    """

    k: int
    j0: int
    j1: int
    row0: int
    col0: int
    acc: np.ndarray
    wsum: np.ndarray
    top: list[np.ndarray | None]
    bottom: list[np.ndarray | None]
    left: np.ndarray | None
    right: np.ndarray | None
    sample: np.ndarray
    sample_valid: np.ndarray
    labels: Labels | None = None  # the direct path's bytes (then acc and wsum are empty)


@dataclass
class JobResult:
    """A job's pieces (row-major), window counts, seams inside its pieces and timings."""

    job: Job
    pieces: list[Piece]
    run: int
    skipped: int
    compared: int
    disagree: int
    seconds: dict[str, float]


@functools.lru_cache(maxsize=4)
def _load_kind(path: str) -> PixelKind:
    kind = load(path).kind
    if kind.output != "pixels":
        raise ModelError(
            f"{path}: the model labels whole tiles; segmentation needs a per-pixel one"
        )
    return kind  # type: ignore[return-value]


def stages(kind: PixelKind) -> PixelStages:
    """The kind's scoring in stages (:class:`StagedPixelKind`), else ``scores`` as its middle."""
    staged = getattr(kind, "stages", None)
    return staged() if callable(staged) else (_same, kind.scores, _same)


def _same(value: Any) -> Any:
    return value


def resolve_kind(source: ModelSource, token: str = "") -> PixelKind:
    """The kind of ``source`` (a path loads once per process; an object once per run token)."""
    if isinstance(source, str):
        return _load_kind(source)
    if not token:
        return source
    kind = _KINDS.setdefault(token, source)  # later jobs reuse the first copy (and its session)
    while len(_KINDS) > 4:
        _KINDS.popitem(last=False)
    return kind


def _strips(
    q: np.ndarray, keep: np.ndarray, overlap: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The per-window argmax (255 where not kept) in its top, bottom, left and right strips."""

    def arg(part: np.ndarray, mask: np.ndarray) -> np.ndarray:
        a = np.argmax(part, axis=0).astype(np.uint8)
        a[~mask] = NODATA_CLASS
        return a

    o = overlap
    return (
        arg(q[:, :o], keep[:o]),
        arg(q[:, -o:], keep[-o:]),
        arg(q[:, :, :o], keep[:, :o]),
        arg(q[:, :, -o:], keep[:, -o:]),
    )


def compare(a: np.ndarray | None, b: np.ndarray | None) -> tuple[int, int]:
    """Pixels both strips classify, and how many of them differ."""
    if a is None or b is None:
        return 0, 0
    both = (a != NODATA_CLASS) & (b != NODATA_CLASS)
    return int(np.count_nonzero(both)), int(np.count_nonzero(both & (a != b)))


def _batch(ctx: JobContext, b: int, sources: dict[int, Source]) -> tuple[list[int], np.ndarray]:
    """Batch ``b``'s windows and, if any of them is kept, its input (else an empty array)."""
    nx, w, stride = len(ctx.cols), ctx.window, ctx.window - ctx.overlap
    last = len(ctx.rows) * nx
    members = list(range(b * ctx.batch, min(last, (b + 1) * ctx.batch)))
    if not any(sources[g // nx].kept[g % nx - sources[g // nx].j0] for g in members):
        return members, np.zeros((0,), dtype=np.float32)
    x = np.empty((ctx.batch, len(ctx.bands), w, w), dtype=np.float32)
    for m, g in enumerate(members):
        src = sources[g // nx]
        off = (g % nx - src.j0) * stride
        x[m] = src.ext[:, :, off : off + w]
        if not src.all_valid:
            invalid = ~src.ext_valid[:, off : off + w]
            if invalid.any():
                x[m][:, invalid] = np.nan
    x[len(members) :] = x[len(members) - 1]  # the scene's last batch: copies of its last window
    return members, x


class _JobRun:
    """One job's state: the pieces read and their sums, the strips, counts and timings."""

    def __init__(self, ctx: JobContext, job: Job, stage_in: Any, stage_out: Any) -> None:
        self.ctx, self.job, self.stage_in, self.stage_out = ctx, job, stage_in, stage_out
        nx, w, bsz = len(ctx.cols), ctx.window, ctx.batch
        self.seconds = dict.fromkeys(SECONDS, 0.0)
        self.spans = [
            (k, max(0, job.g0 - k * nx), min(nx, job.g1 - k * nx))
            for k in range(job.g0 // nx, (job.g1 - 1) // nx + 1)
        ]
        self.batches = range(job.g0 // bsz, -(-job.g1 // bsz))
        self.sources: dict[int, Source] = {}
        self.pieces: dict[int, Piece] = {}
        self.direct = ctx.direct and ctx.overlap == 0  # one window per pixel: bytes per window
        for k, j0, j1 in self.spans:
            y, xs = ctx.rows[k], ctx.cols[j0:j1]
            row0, col0 = max(0, y), max(0, xs[0])
            rows = min(ctx.height, y + w) - row0
            cols = min(ctx.width, xs[-1] + w) - col0
            shape = (0, 0) if self.direct else (rows, cols)
            self.pieces[k] = Piece(
                k, j0, j1, row0, col0,
                np.zeros((ctx.classes, *shape), dtype=np.int32),
                np.zeros(shape, dtype=np.int32),
                [None] * (j1 - j0), [None] * (j1 - j0), None, None,
                np.zeros((0, 0, len(ctx.bands))), np.zeros((0, 0), dtype=bool),
                Labels.empty(ctx.classes, ctx.every, rows, cols) if self.direct else None,
            )  # fmt: skip
        t1 = np.asarray(ctx.taper, dtype=np.int32)
        self.weight = t1[:, None] * t1[None, :]
        self.flat = bool(np.all(t1 == 1))  # weights 1: the scores are added as they are
        self.strips: dict[int, tuple[np.ndarray, ...]] = {}
        self.run = self.skipped = 0

    def prepare(self, b: int) -> tuple[list[int], list[int], Any]:
        """Batch ``b`` (helper thread): its windows, those kept and the model's input, if any."""
        ctx, job, sources, nx, clock = self.ctx, self.job, self.sources, len(self.ctx.cols), _CLOCK
        t = clock()
        for k, j0, j1 in self.spans:  # read the pieces the batch needs, in order
            if k not in sources and k * nx + j0 < min((b + 1) * ctx.batch, job.g1):
                sources[k] = read_piece(ctx, k, j0, j1)
        members, x = _batch(ctx, b, sources)
        kept = [g for g in members if sources[g // nx].kept[g % nx - sources[g // nx].j0]]
        t2 = clock()
        self.seconds["read"] += t2 - t
        fed = self.stage_in(x) if kept else None
        self.seconds["prepare"] += clock() - t2
        return members, kept, fed

    def post(self, members: list[int], ran: Any) -> None:
        """A batch's scores (helper thread): probabilities, then blended into the pieces."""
        ctx, t = self.ctx, _CLOCK()
        nx, w, o = len(ctx.cols), ctx.window, ctx.overlap
        p = self.stage_out(ran)
        expected = (ctx.batch, ctx.classes, w, w)
        if tuple(p.shape) != expected:
            raise ModelError(
                f"{ctx.scene_id}: the model's scores have shape {tuple(p.shape)}; expected "
                f"(N, K, H, W) = {expected}"
            )
        t2 = _CLOCK()
        self.seconds["finish"] += t2 - t
        q_all = None if self.direct else quantise(p[: len(members)])
        for m, g in enumerate(members):
            k, j = divmod(g, nx)
            src, piece = self.sources[k], self.pieces[k]
            if not src.kept[j - src.j0]:
                continue
            y, x0, off = ctx.rows[k], ctx.cols[j], (j - src.j0) * (w - o)
            kw = src.keep[:, off : off + w]
            full = src.all_valid and kw.all()
            # The window's part inside the scene, in window and in piece coordinates.
            a0, a1 = max(0, -y), min(w, ctx.height - y)
            b0, b1 = max(0, -x0), min(w, ctx.width - x0)
            ys, xs_ = y + a0 - piece.row0, x0 + b0 - piece.col0
            if piece.labels is not None:  # the direct path: this window's bytes
                q, kw = quantise(p[m, :, a0:a1, b0:b1]), kw[a0:a1, b0:b1]
                inside = bool(full or kw.all())  # its part inside the scene all valid
                rows, cols = slice(ys, ys + a1 - a0), slice(xs_, xs_ + b1 - b0)
                label_window(q, kw, inside, piece.labels, rows, cols)
                continue
            assert q_all is not None
            q = q_all[m]
            wv = self.weight if full else np.where(kw, self.weight, 0)
            if (a0, a1, b0, b1) != (0, w, 0, w):
                q, wv = q[:, a0:a1, b0:b1], wv[a0:a1, b0:b1]
            piece.acc[:, ys : ys + a1 - a0, xs_ : xs_ + b1 - b0] += (
                q if self.flat and full else q * wv
            )
            piece.wsum[ys : ys + a1 - a0, xs_ : xs_ + b1 - b0] += wv
            if o:
                self.strips[g] = _strips(q_all[m], kw, o)
        self.seconds["blend"] += _CLOCK() - t2

    def result(self) -> JobResult:
        """The job's pieces with their samples and strips, once every batch is blended."""
        nx, o, strips = len(self.ctx.cols), self.ctx.overlap, self.strips
        compared = disagree = 0
        for k, j0, j1 in self.spans:
            piece, src = self.pieces[k], self.sources[k]
            piece.sample, piece.sample_valid = src.sample, src.sample_valid
            if not o:
                continue
            row = [strips.get(k * nx + j) for j in range(j0, j1)]
            piece.top = [s[0] if s else None for s in row]
            piece.bottom = [s[1] if s else None for s in row]
            piece.left = row[0][2] if row[0] else None
            piece.right = row[-1][3] if row[-1] else None
            for a, c in itertools.pairwise(row):
                n, d = compare(a[3] if a else None, c[2] if c else None)
                compared, disagree = compared + n, disagree + d
        pieces = [self.pieces[k] for k, _, _ in self.spans]
        return JobResult(self.job, pieces, self.run, self.skipped, compared, disagree, self.seconds)


def run_jobs(ctx: JobContext, jobs: Iterable[Job]) -> Iterator[JobResult]:
    """Run jobs one after the other in one pipeline (see the module docstring), in order.

    Raises:
        SceneError: NaN or infinite pixels outside the nodata mask, naming band and count.
        ModelError: the model's output is not ``(batch, K, W, W)``.
    """
    release_large_buffers()  # this worker's large arrays go back to the kernel when freed
    stage_in, stage_run, stage_out = stages(resolve_kind(ctx.source, ctx.token))
    steps = (
        (run, b)
        for run in (_JobRun(ctx, job, stage_in, stage_out) for job in jobs)
        for b in run.batches
    )
    # Three batches in flight: while this thread runs the model alone on one (ONNX Runtime
    # releases the GIL), one helper thread finishes the one before, then prepares the next
    # (the next job's first when this one's are done); one helper, not two, so that the
    # model's thread keeps a core of its own. Integer sums: the order they are added in
    # changes no byte.
    done: deque[_JobRun] = deque()  # jobs whose batches are all run, oldest first
    with ThreadPoolExecutor(1) as helper:
        step = next(steps, None)
        ahead = helper.submit(step[0].prepare, step[1]) if step else None
        behind: Future[None] | None = None
        while step is not None and ahead is not None:
            (job, b), t = step, _CLOCK()
            members, kept, fed = ahead.result()
            job.seconds["wait"] += _CLOCK() - t
            step = next(steps, None)
            if step is not None:
                ahead = helper.submit(step[0].prepare, step[1])
            job.run, job.skipped = job.run + len(kept), job.skipped + len(members) - len(kept)
            if kept:
                t = _CLOCK()
                ran = stage_run(fed)
                t2 = _CLOCK()
                job.seconds["model"] += t2 - t
                if behind is not None:
                    behind.result()
                job.seconds["behind"] += _CLOCK() - t2
                while done:  # their last batches were blended before this one's run
                    yield done.popleft().result()
                behind = helper.submit(job.post, members, ran)
            if b == job.batches[-1]:
                done.append(job)
        if behind is not None:
            behind.result()
        while done:
            yield done.popleft().result()


def run_job(ctx: JobContext, job: Job) -> JobResult:
    """Run one job (see the module docstring), on any worker.

    Raises:
        SceneError: NaN or infinite pixels outside the nodata mask, naming band and count.
        ModelError: the model's output is not ``(batch, K, W, W)``.
    """
    (result,) = run_jobs(ctx, [job])
    return result


__all__ = [
    "Job",
    "JobContext",
    "JobResult",
    "ModelSource",
    "Piece",
    "compare",
    "release",
    "resolve_kind",
    "run_job",
    "run_jobs",
]
