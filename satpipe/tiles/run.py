"""Tiling a run: every scene of the ingest manifest cut into its pack, indexed, and reported.

The ``tile`` stage's library side: the ``tile`` and ``features`` params become a
:class:`~satpipe.tiles.tiling.TilingParams`, each scene is cut by :mod:`satpipe.tiles.tiling`
(on any engine), the tile index is built from every scene's entries, and the report counts the
tiles written, with and without a reference, and skipped by reason, overall and per scene. The
stage's DVC metrics file holds the report's headline (:func:`tile_metrics`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from satpipe.core.params import FeaturesParams, TileParams
from satpipe.core.records import SceneRecord, TileEntry, TileIndex
from satpipe.core.reuse import Reuse, fingerprint
from satpipe.engines.engine import Engine
from satpipe.tiles.features import FeatureSpec
from satpipe.tiles.index import build_index
from satpipe.tiles.packs import pack_name
from satpipe.tiles.tiling import TilingParams, cut_scenes

log = logging.getLogger(__name__)


def tiling_params(tp: TileParams, fp: FeaturesParams) -> TilingParams:
    """The tiling to do, from the ``tile`` and ``features`` params."""
    spec = FeatureSpec(None if fp.bands is None else tuple(fp.bands))
    return TilingParams(
        tp.size,
        tp.step,
        tp.keep_partial,
        tp.max_nodata_fraction,
        tp.compress,
        spec,
        tp.min_labelled_fraction,
    )


def tile_scenes(
    scenes: list[SceneRecord],
    scenes_dir: Path,
    out_dir: Path,
    tp: TileParams,
    fp: FeaturesParams,
    engine: Engine | None = None,
    progress: bool = False,
    reuse: Reuse | None = None,
) -> tuple[TileIndex, dict[str, Any]]:
    """Tile every scene of an ingest manifest into its pack ``out_dir/<id>.zip``.

    With ``reuse``, a scene whose files and metadata are unchanged since the previous run (with
    the same params and code) keeps its pack and index entries from it (:mod:`satpipe.core.reuse`).

    Args:
        scenes: the ingest manifest's scenes (their metadata), in order.
        scenes_dir: where their GeoTIFFs (``<id>.tif``) and label rasters are.
        out_dir: an existing, empty directory for the tiles.
        tp: the ``tile`` params.
        fp: the ``features`` params.
        engine: where the work runs (default: inline).
        progress: show a progress bar on stderr.
        reuse: the reuse record of ``out_dir``'s previous run, if any.

    Returns:
        The tile index and the tiling report (tiles written, with and without a reference,
        skipped by reason; overall and per scene); :func:`tile_metrics` reads its headline.

    Raises:
        TilingError: a scene (named) is smaller than a tile, or none of its tiles survive.
    """
    tiling = tiling_params(tp, fp)
    inputs = [(scenes_dir / f"{m.id}.tif", m, m.id) for m in scenes]
    done: dict[int, tuple[list[TileEntry], dict[str, int]]] = {}
    prints: dict[int, str] = {}
    if reuse is not None:
        settings = {"tile": tp.model_dump(mode="json"), "features": fp.model_dump(mode="json")}
        for i, (path, meta, sid) in enumerate(inputs):
            files = [path] + ([scenes_dir / meta.labels["file"]] if meta.labels else [])
            prints[i] = fingerprint("tile", {**settings, "scene": meta.to_json()}, files)
            kept = reuse.take(sid, prints[i], out_dir)
            if kept is not None:
                entries = [TileEntry.from_json(e, f"{sid} (reused)") for e in kept["entries"]]
                done[i] = (entries, kept["skipped"])
    todo = [i for i in range(len(inputs)) if i not in done]
    computed = dict(
        zip(
            todo,
            cut_scenes([inputs[i] for i in todo], out_dir, tiling, engine, progress),
            strict=True,
        )
    )
    if reuse is not None:
        for i, (scene_entries, skips) in computed.items():
            result = {"entries": [e.to_json() for e in scene_entries], "skipped": dict(skips)}
            reuse.put(inputs[i][2], prints[i], out_dir, [pack_name(inputs[i][2])], result)
    if done:
        log.info(
            "reused the tiles of %d of %d scenes unchanged since the last run",
            len(done),
            len(inputs),
        )
    results = [done.get(i) or computed[i] for i in range(len(inputs))]
    entries = [e for scene_entries, _ in results for e in scene_entries]
    skipped = [skips for _, skips in results]
    record = {
        "size": tp.size,
        "stride": tp.step,
        "keep_partial": tp.keep_partial,
        "max_nodata_fraction": tp.max_nodata_fraction,
        "compress": tp.compress,
        "min_labelled_fraction": tp.min_labelled_fraction,
    }
    index = build_index(scenes, record, tiling.spec.to_dict(), entries, skipped)
    totals = {reason: sum(s[reason] for s in skipped) for reason in ("partial", "nodata", "empty")}
    with_reference = sum(e.reference is not None for e in entries)
    report = {
        "tiles_written": len(entries),
        "tiles_with_reference": with_reference,
        "tiles_without_reference": len(entries) - with_reference,
        "tiles_skipped": totals,
        "tile_size": tp.size,
        "stride": tp.step,
        "scenes": {
            m.id: {"tiles_written": index.scenes[m.id].tiles, "tiles_skipped": s}
            for m, s in zip(scenes, skipped, strict=True)
        },
    }
    return index, report


def tile_metrics(report: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of a tiling report: the tile stage's DVC metrics file.

    ``tiles``: the tiles written, read from the report. Tiles with and without a reference,
    skipped by reason, the per-scene counts and the tile size and stride (params, not metrics)
    stay in the report.

    Args:
        report: the report of :func:`tile_scenes`.
    """
    return {"tiles": report["tiles_written"]}
