"""Tiling: cutting a scene into fixed-size, georeferenced tiles.

Along one axis of length ``n``, tiles of ``size`` pixels start every ``stride`` pixels:
``floor((n - size) / stride) + 1`` *full* tiles at offsets ``k * stride`` (``offset + size <= n``),
and one *partial* edge tile at the next offset ``p`` when the full tiles leave pixels uncovered
at the edge and ``p`` still starts inside the scene (``p < n < p + size``). With
``stride <= size`` the full and partial tiles together cover every pixel. Partial edge tiles are
skipped unless ``tile.keep_partial`` is set (then they are written clipped to the scene). A tile
whose nodata fraction exceeds ``tile.max_nodata_fraction``, or that has no valid pixel, is
skipped.

Each tile is a GeoTIFF carrying the scene's CRS and the transform of its window, named from its
offsets (``r{row_off:06d}_c{col_off:06d}.tif``). The scene is read with windowed reads only, in
row order, in bands of whole internal blocks so that each block is decoded about once; each band
is a task for a :mod:`satpipe.engines.engine` (inline, a process pool, or Dask). A task writes its
encoded tiles to a spool file beside the packs and returns their index entries; this process copies
them, one tile at a time, in grid order into the scene's pack (:mod:`satpipe.tiles.packs`) and
removes the spool. So the output does not depend on the engine or the number of workers, and no
process holds more than a band of tiles: sending the tiles' bytes back through the engine instead
cost two or three copies of each band, which grew with the scene's width (358 MiB at 10980^2).

When the scene has a label raster (see :mod:`satpipe.scenes.labels`), the same rows of it are read
with each band of tiles, and every tile's entry records its labelled fraction and reference class.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from rasterio import windows
from rasterio.windows import Window
from tqdm import tqdm

from satpipe.core.errors import TilingError
from satpipe.core.files import sha256_bytes
from satpipe.core.raster import encode_tile, open_scene, read_window, tile_profile
from satpipe.core.records import SceneInfo, TileEntry, TileWindow
from satpipe.engines.engine import Engine
from satpipe.engines.spec import EngineSpec
from satpipe.scenes.labels import LabelLookup, tile_reference
from satpipe.tiles.features import FeatureSpec, tile_measurements
from satpipe.tiles.grid import axis_offsets, tile_id
from satpipe.tiles.packs import PackWriter, pack_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TileJob:
    """One band of tile rows processed together: the rows read and the tile windows in it."""

    row_off: int
    rows: int
    windows: tuple[Window, ...]


def plan_jobs(
    width: int, height: int, size: int, stride: int, keep_partial: bool, block_height: int
) -> tuple[list[TileJob], int]:
    """Group the grid's tile windows into block-aligned row bands.

    Returns:
        The jobs in row order, and how many partial edge tiles were skipped.
    """
    cols, rows = axis_offsets(width, size, stride), axis_offsets(height, size, stride)
    col_offs = list(cols.full) + ([cols.partial] if keep_partial and cols.partial else [])
    row_offs = list(rows.full) + ([rows.partial] if keep_partial and rows.partial else [])
    n_all = (len(cols.full) + (cols.partial is not None)) * (
        len(rows.full) + (rows.partial is not None)
    )
    skipped_partial = n_all - len(col_offs) * len(row_offs)
    band = max(block_height, math.ceil(size / block_height) * block_height)
    groups: dict[int, list[int]] = {}
    for r in row_offs:
        groups.setdefault(r // band, []).append(r)
    jobs = []
    for offs in groups.values():
        first, last = offs[0], offs[-1]
        span = min(last + size, height) - first
        wins = tuple(
            Window(c, r, min(size, width - c), min(size, height - r))
            for r in offs
            for c in col_offs
        )
        jobs.append(TileJob(first, span, wins))
    return jobs, skipped_partial


@dataclass(frozen=True)
class TileContext:
    """What every tiling task needs besides its job (picklable, sent to each worker)."""

    scene: Path
    spool: Path  # the directory tasks write their tiles to (the tiles directory being written)
    profile: dict[str, Any]
    nodata: float | None
    spec: FeatureSpec
    max_nodata: float
    scene_id: str | None = None
    labels: Path | None = None
    lookup: LabelLookup | None = None
    min_labelled: float = 0.5


def spool_path(ctx: TileContext, job: TileJob) -> Path:
    """Where the task of ``job`` writes its tiles (unique per scene and row band)."""
    return ctx.spool / f".{ctx.scene_id or 'tiles'}.{job.row_off}.spool"


def run_job(ctx: TileContext, job: TileJob) -> tuple[list[TileEntry], Counter]:
    """Read one band of rows, write its tiles to the band's spool file; return entries and skips.

    The entries' ``offset`` is where each tile's bytes are in the spool file
    (:func:`spool_path`) until :func:`cut_scenes` moves them into the pack. Each call opens its
    own dataset handle, so it can run in any thread or process.
    """
    with open_scene(ctx.scene) as src:
        data = read_window(src, Window(0, job.row_off, src.width, job.rows))
        scene_transform = src.transform
    codes = None
    if ctx.labels is not None:
        with open_scene(ctx.labels) as lab:
            codes = read_window(lab, Window(0, job.row_off, lab.width, job.rows), [1])[0]
    entries: list[TileEntry] = []
    skipped: Counter[str] = Counter()
    with open(spool_path(ctx, job), "wb") as spool:
        for win in job.windows:
            entry = _cut_one(ctx, job, win, data, codes, scene_transform, skipped, spool)
            if entry is not None:
                entries.append(entry)
    return entries, skipped


def _cut_one(
    ctx: TileContext,
    job: TileJob,
    win: Window,
    data: np.ndarray,
    codes: np.ndarray | None,
    scene_transform: Any,
    skipped: Counter,
    spool: BinaryIO,
) -> TileEntry | None:
    """Measure one tile of the band; if it passes the filters, spool it and return its entry."""
    r0 = win.row_off - job.row_off
    tile = data[:, r0 : r0 + win.height, win.col_off : win.col_off + win.width]
    feats, vector = tile_measurements(tile, ctx.nodata, ctx.spec)
    if feats.mean_intensity is None or vector is None:  # no valid pixel: neither is measured
        skipped["empty"] += 1
        return None
    if 1.0 - feats.valid_fraction > ctx.max_nodata:
        skipped["nodata"] += 1
        return None
    transform = windows.transform(win, scene_transform)
    blob = encode_tile(np.ascontiguousarray(tile), transform, ctx.profile)
    offset = spool.tell()
    spool.write(blob)
    tid = tile_id(win.row_off, win.col_off)
    if ctx.scene_id is not None:
        tid = f"{ctx.scene_id}/{tid}"
    ref = None
    if codes is not None and ctx.lookup is not None:
        ref = tile_reference(
            codes[r0 : r0 + win.height, win.col_off : win.col_off + win.width],
            ctx.lookup,
            ctx.min_labelled,
        )
    return TileEntry(
        id=tid,
        scene=ctx.scene_id,
        file=f"{tid}.tif",
        pack=pack_name(ctx.scene_id),
        offset=offset,
        length=len(blob),
        window=TileWindow(win.row_off, win.col_off, win.width, win.height),
        bounds=windows.bounds(win, scene_transform),
        sha256=sha256_bytes(blob),
        valid_fraction=feats.valid_fraction,
        mean_intensity=feats.mean_intensity,
        features=vector,
        labelled_fraction=ref.labelled_fraction if ref else 0.0,
        reference=ref.reference if ref else None,
    )


def cut_tiles(
    scene: Path,
    meta: SceneInfo,
    out_dir: Path,
    *,
    size: int,
    stride: int,
    keep_partial: bool,
    max_nodata_fraction: float,
    compress: str,
    spec: FeatureSpec,
    engine: Engine | None = None,
    progress: bool = False,
    min_labelled_fraction: float = 0.5,
) -> tuple[list[TileEntry], dict[str, int]]:
    """Cut ``scene`` into tiles, packed in ``out_dir/tiles.zip``.

    Args:
        scene: the validated scene GeoTIFF.
        meta: its ingest metadata (nodata, size).
        out_dir: an existing, empty directory for the tile pack.
        size: tile size in pixels.
        stride: step between tile origins.
        keep_partial: write partial edge tiles (clipped) instead of skipping them.
        max_nodata_fraction: skip tiles whose nodata fraction is above this.
        compress: tile compression (zstd, deflate, lzw, none).
        spec: the feature definition used for the per-tile feature.
        engine: where the row bands are processed (default: inline, in this process).
        progress: show a progress bar (tile rows) on stderr.
        min_labelled_fraction: the labelled share a tile needs to get a reference class.

    Returns:
        The tile index entries in grid order, and skipped counts by reason.

    Raises:
        TilingError: the scene is smaller than a tile, or no tile survives the filters.
    """
    tiling = TilingParams(
        size, stride, keep_partial, max_nodata_fraction, compress, spec, min_labelled_fraction
    )
    per_scene = cut_scenes([(scene, meta, None)], out_dir, tiling, engine, progress)
    return per_scene[0]


@dataclass(frozen=True)
class TilingParams:
    """How tiles are cut (the ``tile`` params, resolved, and the feature definition)."""

    size: int
    stride: int
    keep_partial: bool
    max_nodata_fraction: float
    compress: str
    spec: FeatureSpec
    min_labelled_fraction: float = 0.5


def _plan_scene(
    scene: Path, meta: SceneInfo, out_dir: Path, tp: TilingParams, scene_id: str | None
) -> tuple[TileContext, list[TileJob], int]:
    name = scene_id or str(scene)
    width, height, count = meta.width, meta.height, meta.count
    if width < tp.size or height < tp.size:
        raise TilingError(
            f"{name}: scene is {width}x{height} pixels, smaller than tile.size {tp.size}; "
            f"expected both sides >= {tp.size} (lower tile.size)"
        )
    bad = [b for b in (tp.spec.bands or ()) if b > count]
    if bad:
        raise TilingError(f"{name}: features.bands {bad} out of range; scene has {count} bands")
    nodata = meta.nodata_value
    with open_scene(scene) as src:
        block_height = src.block_shapes[0][0]
        crs = src.crs
    jobs, skipped_partial = plan_jobs(
        width, height, tp.size, tp.stride, tp.keep_partial, block_height
    )
    profile = tile_profile(count, meta.dtypes[0], tp.size, crs, nodata, tp.compress)
    labels = meta.labels
    ctx = TileContext(
        scene,
        out_dir,
        profile,
        nodata,
        tp.spec,
        tp.max_nodata_fraction,
        scene_id,
        scene.parent / labels["file"] if labels else None,
        LabelLookup.from_mapping(labels["classes"], labels["nodata"]) if labels else None,
        tp.min_labelled_fraction,
    )
    return ctx, jobs, skipped_partial


def _run_task(task: tuple[TileContext, TileJob]) -> tuple[list[TileEntry], Counter]:
    return run_job(*task)


def cut_scenes(
    scenes: Sequence[tuple[Path, SceneInfo, str | None]],
    out_dir: Path,
    tp: TilingParams,
    engine: Engine | None = None,
    progress: bool = False,
) -> list[tuple[list[TileEntry], dict[str, int]]]:
    """Cut several scenes in one engine run; a scene's tiles go to its pack in ``out_dir``.

    Results come back in task order, so each pack is written front to back in grid order, one
    tile in memory at a time.

    Args:
        scenes: ``(path, metadata, scene id or None)`` for each scene.
        out_dir: the tiles directory.
        tp: how to cut.
        engine: where the row bands of all scenes run (default: inline).
        progress: show a progress bar (row bands) on stderr.

    Returns:
        For each scene, in order: its index entries in grid order and its skip counts.

    Raises:
        TilingError: a scene (named) is smaller than a tile, or none of its tiles survive.
    """
    plans = [_plan_scene(path, meta, out_dir, tp, sid) for path, meta, sid in scenes]
    tasks = [(ctx, job) for ctx, jobs, _ in plans for job in jobs]
    owner = [i for i, (_, jobs, _) in enumerate(plans) for _ in jobs]
    results: list[tuple[list[TileEntry], Counter]] = [
        ([], Counter({"partial": skipped, "nodata": 0, "empty": 0})) for _, _, skipped in plans
    ]
    with ExitStack() as stack:
        engine = engine or stack.enter_context(Engine(EngineSpec(workers=1)))
        done = engine.map(_run_task, tasks)
        bar = tqdm(done, total=len(tasks), unit="row", desc="tile", disable=not progress)
        writer, writing = None, -1
        for i, (ctx, job), (job_entries, job_skipped) in zip(owner, tasks, bar, strict=True):
            if writer is None or i != writing:  # tasks come by scene: its pack starts here
                if writer is not None:
                    writer.close()
                writer = stack.enter_context(PackWriter(out_dir / pack_name(scenes[i][2])))
                writing = i
            spool = spool_path(ctx, job)
            with open(spool, "rb") as fh:  # the band's tiles, in grid order, back to back
                for entry in job_entries:
                    offset, _ = writer.add(entry.file, fh.read(entry.length))
                    results[i][0].append(dataclasses.replace(entry, offset=offset))
            spool.unlink()
            results[i][1].update(job_skipped)
    for (path, meta, sid), (entries, skipped) in zip(scenes, results, strict=True):
        if not entries:
            raise TilingError(
                f"{sid or path}: no tile survives: scene {meta.width}x{meta.height}, "
                f"tile.size {tp.size}, stride {tp.stride}; skipped {dict(skipped)} "
                "(raise tile.max_nodata_fraction or lower tile.size)"
            )
    return [(entries, dict(skipped)) for entries, skipped in results]
