"""Factories for the typed records tests build by hand (tile entries, predictions, indexes).

Each takes the fields a test cares about and fills the rest with plausible values, so a test
states only what it checks.
"""

from __future__ import annotations

from typing import Any

from satpipe.core.records import (
    SceneRecord,
    TileEntry,
    TileIndex,
    TilePrediction,
    TileWindow,
)
from satpipe.tiles.features import FeatureSpec
from satpipe.tiles.grid import tile_id
from satpipe.tiles.index import build_index


def window_of(tid: str, size: int = 1) -> TileWindow:
    """The window a tile id such as ``s/r000002_c000001`` or ``r0_c3`` names."""
    row, col = tid.rsplit("/", 1)[-1].split("_")
    return TileWindow(int(row[1:]), int(col[1:]), size, size)


def tile_entry(tid: str, scene: str | None = "s", **fields: Any) -> TileEntry:
    """A tile-index entry; ``mean_intensity`` also sets the feature vector unless given."""
    value = float(fields.pop("mean_intensity", 1.0))
    window = fields.pop("window", None) or window_of(tid)
    defaults: dict[str, Any] = {
        "file": f"{tid}.tif",
        "pack": f"{scene or 'tiles'}.zip",
        "offset": 0,
        "length": 0,
        "bounds": (0.0, 0.0, 1.0, 1.0),
        "sha256": "0" * 64,
        "valid_fraction": 1.0,
        "features": {"mean_intensity": value, "valid_fraction": 1.0},
        "labelled_fraction": 1.0 if fields.get("reference") else 0.0,
        "reference": None,
    }
    return TileEntry(
        id=tid, scene=scene, window=window, mean_intensity=value, **{**defaults, **fields}
    )


def prediction(
    tid: str, label: str, score: float = 0.0, scene: str | None = "s", **fields: Any
) -> TilePrediction:
    """A batch-inference record for tile ``tid``."""
    window = fields.pop("window", None) or window_of(tid)
    defaults: dict[str, Any] = {
        "path": f"{tid}.tif",
        "bounds": (0.0, 0.0, 1.0, 1.0),
        "features": {"mean_intensity": score},
        "model_version": "v",
    }
    return TilePrediction(
        id=tid, scene=scene, window=window, prediction=label, score=score, **{**defaults, **fields}
    )


def window_prediction(
    row_off: int, col_off: int, width: int, height: int, label: str, score: float = 0.0
) -> TilePrediction:
    """A prediction for the tile at this window (its id from the offsets)."""
    return prediction(
        tile_id(row_off, col_off), label, score, window=TileWindow(row_off, col_off, width, height)
    )


def scene_record(scene_id: str = "s", role: str = "both", **fields: Any) -> SceneRecord:
    """A scene's ingest metadata (a 1x1 single-band uint8 scene unless told otherwise)."""
    defaults: dict[str, Any] = {
        "sha256": "0" * 64,
        "width": 1,
        "height": 1,
        "count": 1,
        "dtypes": ("uint8",),
        "crs": "EPSG:32633",
        "crs_wkt": "",
        "epsg": 32633,
        "transform": (1.0, 0.0, 0.0, 0.0, -1.0, 0.0),
        "nodata": None,
        "acquisition_time": None,
        "source": {"kind": "synthetic"},
        "labels": None,
        "preview": None,
        "driver": "GTiff",
        "bounds": (0.0, 0.0, 1.0, 1.0),
        "res": (1.0, 1.0),
        "nodata_source": None,
        "acquisition_time_source": None,
        "band_descriptions": (None,),
        "block_shape": (1, 1),
        "valid_fraction": 1.0,
        "size_bytes": 0,
    }
    return SceneRecord(id=scene_id, role=role, **{**defaults, **fields})


def from_inspected(meta: dict[str, Any], scene_id: str = "s", **fields: Any) -> SceneRecord:
    """A :class:`SceneRecord` from :func:`satpipe.scenes.validation.inspect_scene`'s metadata."""
    base = {"role": "both", "source": {"kind": "file"}, "labels": None, "preview": None}
    return SceneRecord.from_json({**base, **meta, "id": scene_id, **fields}, "test scene")


def tile_index(entries: list[TileEntry], scenes: dict[str, str] | None = None) -> TileIndex:
    """A tile index of ``entries``; ``scenes`` gives each scene's role (default: ``both``)."""
    roles = scenes or {e.scene: "both" for e in entries if e.scene is not None}
    records = [scene_record(sid, role) for sid, role in roles.items()]
    skipped = [{"partial": 0, "nodata": 0, "empty": 0} for _ in records]
    return build_index(records, {"size": 1, "stride": 1}, FeatureSpec().to_dict(), entries, skipped)
