"""Maps: a scene's predictions as Cloud-Optimized GeoTIFFs and as a quick-look PNG.

A *prediction map* has one pixel per position of the scene's tile grid (see
:mod:`satpipe.tiles.tiling`): map pixel ``(i, j)`` stands for the tile whose window starts at
``row_off = i * stride``, ``col_off = j * stride``. Its pixels are ``stride x stride`` scene
pixels, and the grid is shifted by ``(size - stride) / 2`` scene pixels along each axis so that
the centre of every map pixel is the centre of its tile's full (unclipped) window; with
``stride == size`` the map starts at the scene's origin. The map has as many pixels along an
axis as the tiler has tile positions there (full tiles plus the partial edge one, counted by
:func:`satpipe.tiles.tiling.axis_offsets`, whether or not partial tiles were kept).

Where each map pixel falls:

- for a full tile the map pixel's centre is the tile's centre, so it lies inside the tile's
  bounds whatever the stride (in particular for every ``stride < 2 * size``). The map pixel's
  square lies inside the tile when ``stride <= size``; with ``stride > size`` it also covers
  the gap between tiles, which belongs to no tile;
- for a partial edge tile (clipped to the scene) the map pixel's centre is still that of the
  unclipped window: it lies inside the clipped tile only when the tile keeps more than half its
  size along that axis (``length - offset > size / 2``), and otherwise beyond the scene's edge.
  The last map row and column may therefore reach past the scene.

Two maps share that grid: the *class map* (uint8, a class's position in ``classes`` plus one,
0 = no tile, declared nodata, with a colour table and category names) and the *score map*
(float32, the record's score, NaN = no tile). Both are written through GDAL's COG driver with
NEAREST overviews, so that zooming out never invents a class code. GDAL's GTiff and COG drivers
do not store category names in the TIFF but in a PAM sidecar ``<file>.aux.xml``, which
:mod:`satpipe.outputs.cog` writes beside it (the class names are also dataset tags
``CLASS_<code>``, shown by ``rio info``).

The *quick-look* is a PNG of the scene's preview raster (written by ingest: the scene decimated
by an integer factor, long side at most 1024 pixels), in true colour when the bands allow it,
stretched between each band's 2nd and 98th percentiles, with every tile tinted by its predicted
class and tiles whose reference class differs from the prediction outlined in magenta.

Every file is byte-identical from run to run: no timestamps, no paths, integer blending, and all
compression done by the libraries bundled in the pinned rasterio wheel.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from affine import Affine
from rasterio.crs import CRS

from satpipe.core.classes import class_codes, code_of
from satpipe.core.errors import SceneError, TilingError
from satpipe.core.files import write_bytes_atomic
from satpipe.core.records import (
    PredictionSet,
    SceneInfo,
    TileIndex,
    TilePrediction,
    TileWindow,
    by_scene,
)
from satpipe.core.reuse import Reuse, fingerprint
from satpipe.models.model import Model
from satpipe.outputs.cog import write_class_cog, write_score_cog
from satpipe.outputs.quicklook import encode_png, quicklook
from satpipe.tiles.grid import axis_offsets, tile_id

log = logging.getLogger(__name__)


class Tiling(Protocol):
    """How the scene was cut: tile side and step between tile origins, in scene pixels.

    :class:`satpipe.tiles.tiling.TilingParams` is one.
    """

    @property
    def size(self) -> int:
        """Tile side."""
        ...

    @property
    def stride(self) -> int:
        """Step between tile origins."""
        ...


@dataclass(frozen=True)
class MapGrid:
    """The grid of a prediction map: one pixel per tile position (see the module docstring)."""

    transform: Affine
    width: int
    height: int
    size: int
    stride: int

    def pixel_of(self, window: TileWindow) -> tuple[int, int]:
        """The ``(row, col)`` of the map pixel that stands for the tile with this window.

        Args:
            window: the tile's window in scene pixels.

        Raises:
            TilingError: an offset is not a multiple of the stride, or is outside the grid.
        """
        row_off, col_off = window.row_off, window.col_off
        name = tile_id(row_off, col_off)
        if row_off % self.stride or col_off % self.stride:
            raise TilingError(
                f"tile {name}: window offsets (row {row_off}, col {col_off}) are not on the tile "
                f"grid; expected multiples of the stride {self.stride}"
            )
        row, col = row_off // self.stride, col_off // self.stride
        if not (0 <= row < self.height and 0 <= col < self.width):
            raise TilingError(
                f"tile {name}: window is outside the scene's tile grid of {self.height} rows x "
                f"{self.width} columns (stride {self.stride})"
            )
        return row, col


def map_grid(transform: Affine, width: int, height: int, size: int, stride: int) -> MapGrid:
    """The prediction map grid of a scene of ``width x height`` pixels cut by ``size``/``stride``.

    Args:
        transform: the scene's transform.
        width: scene width, pixels.
        height: scene height, pixels.
        size: tile side, scene pixels.
        stride: step between tile origins, scene pixels.

    Raises:
        TilingError: ``size`` or ``stride`` is not positive.
    """
    if size < 1 or stride < 1:
        raise TilingError(f"tile size {size} and stride {stride}: expected positive integers")
    cols, rows = axis_offsets(width, size, stride), axis_offsets(height, size, stride)
    shift = (size - stride) / 2
    map_transform = transform @ Affine.translation(shift, shift) @ Affine.scale(stride)
    return MapGrid(
        transform=map_transform,
        width=len(cols.full) + (cols.partial is not None),
        height=len(rows.full) + (rows.partial is not None),
        size=size,
        stride=stride,
    )


def _positions(
    grid: MapGrid, records: Sequence[TilePrediction]
) -> list[tuple[int, int, TilePrediction]]:
    """Each record's map pixel, refusing two records at the same tile position."""
    seen: dict[tuple[int, int], str] = {}
    out = []
    for rec in records:
        row, col = grid.pixel_of(rec.window)
        if (row, col) in seen:
            raise TilingError(
                f"tile {rec.id}: same tile position as tile {seen[row, col]}; "
                "expected one record per tile"
            )
        seen[row, col] = rec.id
        out.append((row, col, rec))
    return out


def class_map(
    grid: MapGrid, records: Sequence[TilePrediction], classes: Sequence[str]
) -> np.ndarray:
    """The ``(height, width)`` uint8 class map: class position + 1, 0 where there is no tile.

    Raises:
        ModelError: a record's prediction is not one of ``classes``.
        TilingError: a record's window is not on the grid, or two records share a position.
    """
    codes = class_codes(classes)
    out = np.zeros((grid.height, grid.width), dtype=np.uint8)
    for row, col, rec in _positions(grid, records):
        out[row, col] = code_of(rec.prediction, codes, rec.id)
    return out


def score_map(grid: MapGrid, records: Sequence[TilePrediction]) -> np.ndarray:
    """The ``(height, width)`` float32 score map: each record's ``score``, NaN where no tile.

    Raises:
        TilingError: a record's window is not on the grid, or two records share a position.
    """
    out = np.full((grid.height, grid.width), np.nan, dtype=np.float32)
    for row, col, rec in _positions(grid, records):
        out[row, col] = rec.score
    return out


def write_scene_maps(
    out_maps_dir: Path | str,
    out_quicklook_dir: Path | str,
    scene_id: str,
    scene_meta: SceneInfo,
    preview_path: Path | str,
    records: Sequence[TilePrediction],
    references: Mapping[str, str | None],
    tiling: Tiling,
    classes: Sequence[str],
    colours: Sequence[tuple[int, int, int]] | None = None,
    reuse: Reuse | None = None,
) -> dict[str, Any]:
    """Write a scene's class map, score map and quick-look.

    With ``reuse``, a quick-look whose inputs (the preview file, the scene, each tile's window,
    prediction and reference, the classes and colours) are unchanged since the last run is kept
    from it (:mod:`satpipe.core.reuse`): drawing and compressing it is most of a scene's cost
    here, and adding a scene to an archive changes few other scenes' predictions.

    Files: ``<maps>/<id>.classes.tif`` and its ``.aux.xml`` (category names),
    ``<maps>/<id>.scores.tif`` and ``<quicklook>/<id>.png``.

    Args:
        out_maps_dir: directory of the map COGs.
        out_quicklook_dir: directory of the quick-look PNGs.
        scene_id: the scene's id (names the files).
        scene_meta: the scene (its transform, CRS, size and nodata are read).
        preview_path: the scene's preview raster.
        records: the scene's predictions.
        references: each tile's reference class (None or absent: no reference), by tile id.
        tiling: the tile ``size`` and ``stride`` the scene was cut with.
        classes: the model's classes, in order.
        colours: their display colours (None: :func:`satpipe.core.classes.class_colour`).
        reuse: the reuse record of the quick-look directory's previous run, if any.

    Returns:
        A summary for the log: file names, map shape, quick-look shape, bands and stretch.

    Raises:
        ModelError: a record's prediction is not one of ``classes``.
        TilingError: a record's window is not on the tile grid.
        SceneError: the preview does not match the scene.
    """
    maps_dir, ql_dir = Path(out_maps_dir), Path(out_quicklook_dir)
    transform = Affine(*[float(v) for v in scene_meta.transform[:6]])
    crs = CRS.from_wkt(scene_meta.crs_wkt) if scene_meta.crs_wkt else None
    grid = map_grid(transform, scene_meta.width, scene_meta.height, tiling.size, tiling.stride)
    classes_tif = maps_dir / f"{scene_id}.classes.tif"
    scores_tif = maps_dir / f"{scene_id}.scores.tif"
    png = ql_dir / f"{scene_id}.png"
    written = write_class_cog(
        classes_tif, class_map(grid, records, classes), grid, crs, classes, colours
    )
    write_score_cog(scores_tif, score_map(grid, records), grid, crs)
    drawn = None
    if reuse is not None:
        drawing = {
            "scene": scene_meta.to_json(),
            "tiles": [
                [r.id, *astuple(r.window), r.prediction, references.get(r.id)] for r in records
            ],
            "classes": list(classes),
            "colours": None if colours is None else [list(c) for c in colours],
        }
        fp = fingerprint("quicklook", drawing, [Path(preview_path)])
        drawn = reuse.take(scene_id, fp, ql_dir)
    if drawn is None:
        look = quicklook(
            preview_path,
            records,
            transform,
            classes,
            references,
            nodata=scene_meta.nodata_value,
            colours=colours,
        )
        write_bytes_atomic(png, encode_png(look.rgb))
        drawn = {
            "quicklook_shape": list(look.rgb.shape[:2]),
            "quicklook_factor": look.factor,
            "bands": list(look.bands),
            "stretch": [list(limits) for limits in look.stretch],
        }
        if reuse is not None:
            reuse.put(scene_id, fp, ql_dir, [png.name], drawn)
    summary = {
        "classes": classes_tif.name,
        "category_names": written[1].name,
        "scores": scores_tif.name,
        "quicklook": png.name,
        "map_shape": [grid.height, grid.width],
        "tiles": len(records),
        **drawn,
    }
    log.info(
        "scene %s: %dx%d map of %d tiles, quick-look %dx%d (bands %s)",
        scene_id,
        grid.width,
        grid.height,
        len(records),
        drawn["quicklook_shape"][1],
        drawn["quicklook_shape"][0],
        tuple(drawn["bands"]),
    )
    return summary


def render_maps(
    scenes_dir: Path,
    index: TileIndex,
    predictions: PredictionSet,
    model: Model,
    maps_dir: Path,
    quicklook_dir: Path,
    reuse: Reuse | None = None,
) -> dict[str, dict[str, Any]]:
    """Write the maps and quick-look of every scene that has predictions.

    A tile's score is the one its prediction carries (what it means is the model kind's: the
    threshold's margin, a class probability); its reference comes from the tile index.

    Args:
        scenes_dir: the ingest directory (each scene's preview raster lives there).
        index: the tile index the predictions were made on.
        predictions: the batch-inference run.
        model: the model that made them.
        maps_dir: directory for the COGs.
        quicklook_dir: directory for the PNGs.
        reuse: the quick-look directory's reuse record (see :func:`write_scene_maps`).

    Returns:
        Each scene's summary (see :func:`write_scene_maps`), by scene id.

    Raises:
        SceneError: a scene with predictions has no preview in the index, or a wrong one.
    """
    references = {tile.id: tile.reference for tile in index.tiles}
    grid = _Tiling(int(index.tiling["size"]), int(index.tiling["stride"]))
    groups = by_scene(predictions.predictions)
    summaries = {}
    for sid, scene in index.scenes.items():
        if sid not in groups:
            continue
        if scene.preview is None:  # ingest always writes one; a hand-made index may not
            raise SceneError(
                f"scene {sid!r}: the tile index records no preview raster; expected the "
                "'preview' entry ingest writes (run ingest again)"
            )
        preview = scenes_dir / scene.preview["file"]
        summaries[sid] = write_scene_maps(
            maps_dir,
            quicklook_dir,
            sid,
            scene,
            preview,
            groups[sid],
            references,
            grid,
            model.classes,
            model.colours,
            reuse,
        )
    if reuse is not None and reuse.reused:
        log.info("kept the quick-looks of %d of %d scenes", len(reuse.reused), len(summaries))
    return summaries


@dataclass(frozen=True)
class _Tiling:
    size: int
    stride: int
