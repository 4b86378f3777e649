"""Tiling a run: every scene of the ingest manifest cut into its pack, indexed, and reported.

The ``tile`` stage's library side: the ``tile`` and ``features`` params become a
:class:`~satpipe.tiles.tiling.TilingParams`, each scene is cut by :mod:`satpipe.tiles.tiling`
(on any engine), the tile index is built from every scene's entries, and the report counts the
tiles written, with and without a reference, and skipped by reason, overall and per scene. The
stage's DVC metrics file holds the report's headline (:func:`tile_metrics`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from satpipe.core.params import FeaturesParams, TileParams
from satpipe.core.records import SceneRecord, TileIndex
from satpipe.engines.engine import Engine
from satpipe.tiles.features import FeatureSpec
from satpipe.tiles.index import build_index
from satpipe.tiles.tiling import TilingParams, cut_scenes


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
) -> tuple[TileIndex, dict[str, Any]]:
    """Tile every scene of an ingest manifest into its pack ``out_dir/<id>.zip``.

    Args:
        scenes: the ingest manifest's scenes (their metadata), in order.
        scenes_dir: where their GeoTIFFs (``<id>.tif``) and label rasters are.
        out_dir: an existing, empty directory for the tiles.
        tp: the ``tile`` params.
        fp: the ``features`` params.
        engine: where the work runs (default: inline).
        progress: show a progress bar on stderr.

    Returns:
        The tile index and the tiling report (tiles written, with and without a reference,
        skipped by reason; overall and per scene); :func:`tile_metrics` reads its headline.

    Raises:
        TilingError: a scene (named) is smaller than a tile, or none of its tiles survive.
    """
    tiling = tiling_params(tp, fp)
    inputs = [(scenes_dir / f"{m.id}.tif", m, m.id) for m in scenes]
    results = cut_scenes(inputs, out_dir, tiling, engine, progress)
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
