"""One job of a whole-scene segmentation: a row of windows (or a run of them), on any worker.

A job reads the rows and columns its windows need (the scene reflected at its borders, see
:mod:`satpipe.inference.stitch`), marks invalid pixels NaN, runs the model on batches of exactly
``batch`` windows (the last padded with copies), and returns integer partial sums over its span,
the argmax strips its windows share with windows of other jobs, the seams between its own
windows, and the band sample of the pixels it owns. It is a plain function of picklable
arguments, so local process pools and Dask run it alike; a model given by path is loaded once per
process.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from typing import Union

import numpy as np
from rasterio.windows import Window

from satpipe.core.errors import ModelError, SceneError
from satpipe.core.raster import open_scene, read_window, valid_mask
from satpipe.inference.stitch import NODATA_CLASS, owned, quantise, reflect
from satpipe.models.kinds.base import PixelKind
from satpipe.models.model import load

ModelSource = Union[PixelKind, str]  # noqa: UP007 (a runtime alias of a Protocol)
"""A per-pixel kind, or the path of a model JSON file (loaded once per worker process)."""

SAMPLE_STEP = 16
SAMPLE_FIRST = 8


@dataclass(frozen=True)
class JobContext:
    """What every job of one scene's run shares (picklable)."""

    source: ModelSource
    scene_path: str
    scene_id: str
    width: int
    height: int
    bands: tuple[int, ...]
    nodata: float | None
    band_names: tuple[str, ...]
    window: int
    overlap: int
    batch: int
    classes: int
    taper: tuple[int, ...]
    rows: tuple[int, ...]
    cols: tuple[int, ...]


@dataclass(frozen=True)
class Job:
    """Window row ``k``, window columns ``[j0, j1)``."""

    k: int
    j0: int
    j1: int


@dataclass
class JobResult:
    """A job's partial sums over rows ``[row0, row0+rows)``, cols ``[col0, col0+cols)``."""

    job: Job
    row0: int
    col0: int
    acc: np.ndarray
    wsum: np.ndarray
    run: int
    skipped: int
    compared: int
    disagree: int
    top: list[np.ndarray | None]
    bottom: list[np.ndarray | None]
    left: np.ndarray | None
    right: np.ndarray | None
    sample: np.ndarray
    sample_valid: np.ndarray
    seconds: dict[str, float]


@functools.lru_cache(maxsize=4)
def _load_kind(path: str) -> PixelKind:
    kind = load(path).kind
    if kind.output != "pixels":
        raise ModelError(
            f"{path}: the model labels whole tiles; segmentation needs a per-pixel one"
        )
    return kind  # type: ignore[return-value]


def resolve_kind(source: ModelSource) -> PixelKind:
    """The kind of ``source`` (a kind, or a model file path loaded once per process)."""
    return _load_kind(source) if isinstance(source, str) else source


def _check_finite(ctx: JobContext, data: np.ndarray, rows: slice, cols: slice, r0: int) -> None:
    """Refuse NaN/inf pixels outside the nodata mask in the owned part of ``data``."""
    if data.dtype.kind != "f":
        return
    part = data[:, rows, cols]
    nan_nodata = ctx.nodata is not None and math.isnan(ctx.nodata)
    for b, band in enumerate(part):
        bad = ~np.isfinite(band)
        if nan_nodata:
            bad &= ~np.isnan(band)
        elif ctx.nodata is not None:
            bad &= band != ctx.nodata
        n = int(np.count_nonzero(bad))
        if n:
            y, x = (int(v[0]) for v in np.nonzero(bad))
            raise SceneError(
                f"{ctx.scene_id}: band {ctx.band_names[b]} has {n} NaN or infinite pixels outside "
                f"the nodata mask in rows {r0 + rows.start}-{r0 + rows.stop - 1}, cols "
                f"{cols.start}-{cols.stop - 1} (first at row {r0 + rows.start + y}, col "
                f"{cols.start + x}); mark them nodata or fix the scene"
            )


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


def run_job(ctx: JobContext, job: Job) -> JobResult:
    """Run one job (see the module docstring).

    Raises:
        SceneError: NaN or infinite pixels outside the nodata mask, naming band and count.
        ModelError: the model's output is not ``(batch, K, W, W)``.
    """
    clock = time.perf_counter
    seconds = {"read": 0.0, "model": 0.0, "blend": 0.0}
    t0 = clock()
    kind = resolve_kind(ctx.source)
    w, o, stride, h_img, w_img = (
        ctx.window,
        ctx.overlap,
        ctx.window - ctx.overlap,
        ctx.height,
        ctx.width,
    )
    y = ctx.rows[job.k]
    xs = ctx.cols[job.j0 : job.j1]
    ridx = reflect(np.arange(y, y + w), h_img)
    cidx = reflect(np.arange(xs[0], xs[-1] + w), w_img)
    r0, r1 = int(ridx.min()), int(ridx.max()) + 1
    c0, c1 = int(cidx.min()), int(cidx.max()) + 1
    with open_scene(ctx.scene_path, name=ctx.scene_id) as src:
        box = read_window(
            src, Window(c0, r0, c1 - c0, r1 - r0), [b + 1 for b in ctx.bands], name=ctx.scene_id
        )
    # Owned rows and columns: the band sample and the finiteness check.
    orow = owned(job.k, len(ctx.rows), h_img, stride)
    ocol = (
        owned(job.j0, len(ctx.cols), w_img, stride)[0],
        owned(job.j1 - 1, len(ctx.cols), w_img, stride)[1],
    )
    rows_own, cols_own = slice(orow[0] - r0, orow[1] - r0), slice(ocol[0] - c0, ocol[1] - c0)
    _check_finite(ctx, box, rows_own, cols_own, r0)
    box_valid = valid_mask(box, ctx.nodata)
    sr = np.arange(orow[0], orow[1])
    sr = sr[sr % SAMPLE_STEP == SAMPLE_FIRST] - r0
    sc = np.arange(ocol[0], ocol[1])
    sc = sc[sc % SAMPLE_STEP == SAMPLE_FIRST] - c0
    sample = np.moveaxis(box[:, sr][:, :, sc], 0, -1).astype(np.float64)
    sample_valid = box_valid[np.ix_(sr, sc)]

    ext = box[:, ridx - r0][:, :, cidx - c0].astype(np.float32)
    ext_valid = box_valid[np.ix_(ridx - r0, cidx - c0)]
    ext[:, ~ext_valid] = np.nan
    inside = np.zeros(ext_valid.shape, dtype=bool)
    rin = slice(max(0, -y), min(w, h_img - y))
    cin = slice(max(0, -xs[0]), min(cidx.size, w_img - xs[0]))
    inside[rin, cin] = True
    keep = ext_valid & inside
    seconds["read"] += clock() - t0

    # Partial sums over the job's span in the scene.
    row0, col0 = max(0, y), max(0, xs[0])
    rows, cols = min(h_img, y + w) - row0, min(w_img, xs[-1] + w) - col0
    acc = np.zeros((ctx.classes, rows, cols), dtype=np.int32)
    wsum = np.zeros((rows, cols), dtype=np.int32)
    t1 = np.asarray(ctx.taper, dtype=np.int32)
    weight = t1[:, None] * t1[None, :]
    n = len(xs)
    offs = [(j - job.j0) * stride for j in range(job.j0, job.j1)]
    run = [i for i in range(n) if keep[:, offs[i] : offs[i] + w].any()]
    top: list[np.ndarray | None] = [None] * n
    bottom: list[np.ndarray | None] = [None] * n
    left_strip: list[np.ndarray | None] = [None] * n
    right_strip: list[np.ndarray | None] = [None] * n
    for start in range(0, len(run), ctx.batch):
        members = run[start : start + ctx.batch]
        t = clock()
        chosen = members + [members[-1]] * (ctx.batch - len(members))
        x = np.stack([ext[:, :, offs[i] : offs[i] + w] for i in chosen])
        p = kind.scores(x)
        expected = (ctx.batch, ctx.classes, w, w)
        if tuple(p.shape) != expected:
            raise ModelError(
                f"{ctx.scene_id}: the model's scores have shape {tuple(p.shape)}; expected "
                f"(N, K, H, W) = {expected}"
            )
        seconds["model"] += clock() - t
        t = clock()
        for m, i in enumerate(members):
            q = quantise(p[m])
            kw = keep[:, offs[i] : offs[i] + w]
            wv = np.where(kw, weight, 0)
            # The window's part inside the scene, in window and in span coordinates.
            a0, a1 = max(0, -y), min(w, h_img - y)
            x0 = xs[i]
            b0, b1 = max(0, -x0), min(w, w_img - x0)
            ys, xs_ = y + a0 - row0, x0 + b0 - col0
            acc[:, ys : ys + a1 - a0, xs_ : xs_ + b1 - b0] += (q * wv)[:, a0:a1, b0:b1]
            wsum[ys : ys + a1 - a0, xs_ : xs_ + b1 - b0] += wv[a0:a1, b0:b1]
            if o:
                top[i], bottom[i], left_strip[i], right_strip[i] = _strips(q, kw, o)
        seconds["blend"] += clock() - t
    compared = disagree = 0
    for i in range(n - 1):
        c, d = compare(right_strip[i], left_strip[i + 1])
        compared, disagree = compared + c, disagree + d
    return JobResult(
        job=job,
        row0=row0,
        col0=col0,
        acc=acc,
        wsum=wsum,
        run=len(run),
        skipped=n - len(run),
        compared=compared,
        disagree=disagree,
        top=top,
        bottom=bottom,
        left=left_strip[0],
        right=right_strip[-1],
        sample=sample,
        sample_valid=sample_valid,
        seconds=seconds,
    )


__all__ = ["Job", "JobContext", "JobResult", "ModelSource", "compare", "resolve_kind", "run_job"]
