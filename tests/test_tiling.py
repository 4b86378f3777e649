"""Tiling: grid invariants over many sizes and strides, and tiles written from real rasters."""

from __future__ import annotations

import hashlib
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio import windows

from satpipe.core.errors import TilingError
from satpipe.core.records import SceneRecord
from satpipe.engines.engine import Engine
from satpipe.engines.spec import EngineSpec
from satpipe.scenes.validation import inspect_scene
from satpipe.tiles.features import FeatureSpec
from satpipe.tiles.packs import vsi_path
from satpipe.tiles.tiling import axis_offsets, cut_tiles, plan_jobs, tile_id
from tests.helpers import indexed_tile
from tests.records import from_inspected


@pytest.mark.parametrize("length", [1, 7, 63, 64, 65, 127, 128, 129, 255, 1000])
@pytest.mark.parametrize("size", [8, 64, 100])
@pytest.mark.parametrize("stride", [8, 32, 64, 100, 128])
def test_axis_offsets_invariants(length: int, size: int, stride: int) -> None:
    axis = axis_offsets(length, size, stride)
    if length < size:
        assert axis.full == ()
        return
    expected_full = (length - size) // stride + 1
    assert len(axis.full) == expected_full
    assert all(off + size <= length for off in axis.full), "a full tile leaves the scene"
    assert list(axis.full) == [k * stride for k in range(expected_full)]
    if axis.partial is None:
        assert axis.full[-1] + size == length or axis.full[-1] + stride >= length
    else:
        assert axis.partial == axis.full[-1] + stride
        assert axis.partial < length < axis.partial + size
    # With the partial tile, the grid covers every pixel when stride <= size.
    if stride <= size:
        last = axis.partial if axis.partial is not None else axis.full[-1]
        assert last + size >= length
    if stride <= size:
        total = math.ceil((length - size) / stride) + 1
        assert len(axis.full) + (axis.partial is not None) == total


@pytest.mark.parametrize(("width", "height"), [(97, 83), (256, 256), (300, 129)])
@pytest.mark.parametrize(
    ("size", "stride", "keep"), [(32, 32, False), (32, 20, True), (64, 64, True)]
)
@pytest.mark.parametrize("block_height", [1, 16, 512])
def test_plan_jobs_covers_grid_once(
    width: int, height: int, size: int, stride: int, keep: bool, block_height: int
) -> None:
    jobs, skipped = plan_jobs(width, height, size, stride, keep, block_height)
    wins = [w for job in jobs for w in job.windows]
    offsets = {(w.row_off, w.col_off) for w in wins}
    assert len(offsets) == len(wins), "a tile is planned twice"
    for job in jobs:
        for w in job.windows:
            assert job.row_off <= w.row_off and w.row_off + w.height <= job.row_off + job.rows
            assert w.col_off + w.width <= width and w.row_off + w.height <= height
    cols, rows = axis_offsets(width, size, stride), axis_offsets(height, size, stride)
    n_cols = len(cols.full) + (cols.partial is not None)
    n_rows = len(rows.full) + (rows.partial is not None)
    assert len(wins) + skipped == n_cols * n_rows
    if not keep:
        assert all(w.width == size and w.height == size for w in wins)
    row_offs = [job.row_off for job in jobs]
    assert row_offs == sorted(row_offs), "jobs are not in row order"


def _scene(make_raster, **kw) -> tuple[Path, SceneRecord]:
    path = make_raster(**kw)
    return path, from_inspected(inspect_scene(path))


def _cut(scene: Path, meta: SceneRecord, out: Path, **kw) -> tuple[list[dict], dict]:
    """Cut ``scene``; the entries as the tile index file holds them."""
    out.mkdir(exist_ok=True)
    opts = {
        "size": 32,
        "stride": 32,
        "keep_partial": False,
        "max_nodata_fraction": 0.5,
        "compress": "zstd",
        "spec": FeatureSpec(),
    }
    opts.update(kw)
    entries, skipped = cut_tiles(scene, meta, out, **opts)
    return [e.to_json() for e in entries], skipped


def test_tiles_carry_crs_window_transform_and_hash(make_raster, tmp_path: Path) -> None:
    scene, meta = _scene(make_raster, count=3, tiled=True, blocksize=16)
    entries, skipped = _cut(scene, meta, tmp_path / "tiles")
    # 97x83 with 32-pixel tiles: 3 x 2 full tiles, and the partial row/column skipped.
    assert len(entries) == 6
    assert skipped["partial"] == 4 * 3 - 6
    with rasterio.open(scene) as src:
        for entry in entries:
            win = windows.Window(**entry["window"])
            pack = tmp_path / "tiles" / entry["pack"]
            assert entry["id"] == tile_id(win.row_off, win.col_off)
            blob = indexed_tile(tmp_path / "tiles", entry)
            assert entry["sha256"] == hashlib.sha256(blob).hexdigest()
            with zipfile.ZipFile(pack) as zf:  # an ordinary ZIP: the member is the same bytes
                assert zf.read(entry["file"]) == blob
            # GDAL (and QGIS) open the tile in place, inside its pack.
            with rasterio.open(vsi_path(pack, entry["file"])) as tile:
                assert tile.crs == src.crs
                assert tile.transform == windows.transform(win, src.transform)
                assert tile.shape == (32, 32)
                assert np.array_equal(tile.read(), src.read(window=win))
                assert list(tile.bounds) == pytest.approx(entry["bounds"])


def test_keep_partial_writes_clipped_edge_tiles(make_raster, tmp_path: Path) -> None:
    scene, meta = _scene(make_raster)
    entries, skipped = _cut(scene, meta, tmp_path / "tiles", keep_partial=True)
    assert skipped["partial"] == 0
    assert len(entries) == 4 * 3
    edge = next(e for e in entries if e["window"]["col_off"] == 96)
    assert edge["window"]["width"] == 1
    covered = sum(e["window"]["width"] * e["window"]["height"] for e in entries)
    assert covered == 97 * 83


def test_nodata_tiles_skipped_by_threshold(make_raster, tmp_path: Path) -> None:
    def half_nodata(count: int, height: int, width: int) -> np.ndarray:
        data = np.full((count, height, width), 500, dtype=np.uint16)
        data[:, :, :40] = 0  # tiles in the first column are ~100% nodata, second ~25%
        return data

    scene, meta = _scene(make_raster, nodata=0, data=half_nodata)
    entries, skipped = _cut(scene, meta, tmp_path / "a", max_nodata_fraction=0.5)
    assert skipped["empty"] == 2 and skipped["nodata"] == 0
    assert {e["window"]["col_off"] for e in entries} == {32, 64}
    entries, skipped = _cut(scene, meta, tmp_path / "b", max_nodata_fraction=0.1)
    assert {e["window"]["col_off"] for e in entries} == {64}
    assert skipped["nodata"] == 2


def test_output_independent_of_engine(make_raster, tmp_path: Path) -> None:
    scene, meta = _scene(make_raster, count=2, width=211, height=157, tiled=True, blocksize=16)
    one, _ = _cut(scene, meta, tmp_path / "one", stride=24)
    with Engine(EngineSpec(workers=3)) as engine:
        three, _ = _cut(scene, meta, tmp_path / "three", stride=24, engine=engine)
    assert one == three
    assert (tmp_path / "one" / "tiles.zip").read_bytes() == (
        tmp_path / "three" / "tiles.zip"
    ).read_bytes()


def test_scene_smaller_than_tile_is_a_clear_error(make_raster, tmp_path: Path) -> None:
    scene, meta = _scene(make_raster)
    with pytest.raises(TilingError, match=r"97x83 pixels, smaller than tile.size 128"):
        _cut(scene, meta, tmp_path / "tiles", size=128, stride=128)


def test_no_surviving_tile_is_a_clear_error(make_raster, tmp_path: Path) -> None:
    def mostly_nodata(count: int, height: int, width: int) -> np.ndarray:
        data = np.zeros((count, height, width), dtype=np.uint16)
        data[:, 80:, 90:] = 7  # a few valid pixels in the partial corner only
        return data

    scene, meta = _scene(make_raster, nodata=0, data=mostly_nodata)
    with pytest.raises(TilingError, match=r"no tile survives: scene 97x83, tile.size 32"):
        _cut(scene, meta, tmp_path / "tiles")


def test_feature_band_out_of_range(make_raster, tmp_path: Path) -> None:
    scene, meta = _scene(make_raster, count=2)
    with pytest.raises(TilingError, match=r"features.bands \[3\] out of range; scene has 2"):
        _cut(scene, meta, tmp_path / "tiles", spec=FeatureSpec((1, 3)))


def test_index_features_match_tile_files(make_raster, tmp_path: Path) -> None:
    """The feature recorded at tiling time is bit-identical to one computed from the file."""
    from satpipe.core.raster import decode_tile
    from satpipe.tiles.features import tile_features

    scene, meta = _scene(
        make_raster,
        count=3,
        dtype="float32",
        nodata=-9999.0,
        data=lambda c, h, w: np.random.default_rng(3).normal(100, 30, (c, h, w)),
    )
    entries, _ = _cut(scene, meta, tmp_path / "tiles", stride=20)
    for entry in entries:
        raster = decode_tile(indexed_tile(tmp_path / "tiles", entry), entry["file"])
        feats = tile_features(raster.data, raster.nodata, FeatureSpec())
        assert feats.mean_intensity == entry["mean_intensity"]
        assert feats.valid_fraction == entry["valid_fraction"]
