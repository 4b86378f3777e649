"""Prediction maps (COGs) and quick-looks: grid geometry, values, COG layout, determinism."""

from __future__ import annotations

import dataclasses
import random
import struct
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.windows import Window, bounds

from satpipe.core import classes as class_lib
from satpipe.core.errors import ModelError, SceneError, TilingError
from satpipe.core.files import atomic_dir
from satpipe.core.raster import open_scene
from satpipe.core.records import SceneRecord, TilePrediction
from satpipe.core.reuse import Reuse
from satpipe.outputs import cog, maps, quicklook
from satpipe.tiles.grid import axis_offsets, tile_id
from tests.records import scene_record, window_prediction

CLASSES = ("dark", "bright")
SCENE_TRANSFORM = Affine(10.0, 0.0, 399960.0, 0.0, -10.0, 5900040.0)
CRS_UTM = CRS.from_epsg(32633)
MAGENTA = np.array(quicklook.OUTLINE_COLOUR, dtype=np.uint8)


@dataclass(frozen=True)
class Grid:
    size: int
    stride: int


def tile_windows(width: int, height: int, size: int, stride: int, partial: bool) -> list[Window]:
    """The tiler's windows: full tiles, plus the clipped partial edge tiles if ``partial``."""
    cols, rows = axis_offsets(width, size, stride), axis_offsets(height, size, stride)
    col_offs = list(cols.full) + ([cols.partial] if partial and cols.partial is not None else [])
    row_offs = list(rows.full) + ([rows.partial] if partial and rows.partial is not None else [])
    return [
        Window(c, r, min(size, width - c), min(size, height - r))
        for r in row_offs
        for c in col_offs
    ]


def record(win: Window, prediction: str, score: float = 0.0) -> TilePrediction:
    """The prediction of the tile at ``win`` (its id from the offsets)."""
    return window_prediction(
        int(win.row_off), int(win.col_off), int(win.width), int(win.height), prediction, score
    )


def pattern_records(wins: list[Window], stride: int) -> list[TilePrediction]:
    """A known pattern: an irregular mix of classes by position, score from the offsets."""
    out = []
    for win in wins:
        i, j = win.row_off // stride, win.col_off // stride
        score = win.row_off * 1000.0 + win.col_off + 0.25
        out.append(record(win, CLASSES[(i * 7 + j * 13) % 5 % 2], score))
    return out


def category_names_from_gdal(path: Path) -> list[str]:
    """Category names as GDAL reads them: rasterio has no API for them, so copy to a VRT."""
    vrt = path.with_name(path.name + ".check.vrt")
    rasterio.shutil.copy(path, vrt, driver="VRT")
    root = ET.parse(vrt).getroot()
    return [c.text or "" for c in root.iter("Category")]


# --- grid geometry ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stride", "shape"), [(128, (7, 8)), (96, (8, 11)), (160, (5, 7))], ids=str
)
def test_map_pixel_centres_fall_inside_their_tiles(stride: int, shape: tuple[int, int]) -> None:
    width, height, size = 1000, 777, 128
    grid = maps.map_grid(SCENE_TRANSFORM, width, height, size, stride)
    assert (grid.height, grid.width) == shape
    assert grid.transform.a == 10.0 * stride and grid.transform.e == -10.0 * stride
    wins = tile_windows(width, height, size, stride, partial=True)
    assert len(wins) == shape[0] * shape[1]
    full_seen = 0
    for win in wins:
        row, col = grid.pixel_of(record(win, "dark").window)
        assert (row, col) == (win.row_off // stride, win.col_off // stride)
        x, y = grid.transform @ (col + 0.5, row + 0.5)
        left, bottom, right, top = bounds(win, SCENE_TRANSFORM)
        # The centre is the centre of the full, unclipped window.
        full = Window(win.col_off, win.row_off, size, size)
        fl, fb, fr, ft = bounds(full, SCENE_TRANSFORM)
        assert (x, y) == pytest.approx(((fl + fr) / 2, (fb + ft) / 2))
        inside = left < x < right and bottom < y < top
        if win.width == size and win.height == size:
            full_seen += 1
            assert inside, f"{tile_id(win.row_off, win.col_off)}: centre outside its tile"
        else:  # a clipped edge tile holds the centre only if it keeps more than half its size
            keeps_centre = win.width > size / 2 and win.height > size / 2
            assert inside == keeps_centre
    assert full_seen > 0


def test_stride_equal_to_size_starts_at_the_scene_origin() -> None:
    grid = maps.map_grid(SCENE_TRANSFORM, 2048, 2048, 256, 256)
    assert grid.transform == Affine(2560.0, 0.0, 399960.0, 0.0, -2560.0, 5900040.0)
    assert (grid.width, grid.height) == (8, 8)


def test_map_counts_tile_positions_as_the_tiler_does() -> None:
    # 980 px, size 128, stride 96: 9 full tiles and one partial at 864; 960 is not a position.
    grid = maps.map_grid(SCENE_TRANSFORM, 980, 980, 128, 96)
    assert grid.width == grid.height == 10
    # A scene smaller than a tile still has one (partial) position.
    assert maps.map_grid(SCENE_TRANSFORM, 100, 90, 128, 128).width == 1


@pytest.mark.parametrize("stride", [128, 96, 160])
def test_values_land_at_their_pixels_and_the_rest_is_nodata(stride: int) -> None:
    width, height, size = 1000, 777, 128
    grid = maps.map_grid(SCENE_TRANSFORM, width, height, size, stride)
    wins = tile_windows(width, height, size, stride, partial=False)  # partial ones skipped
    records = pattern_records(wins, stride)
    shuffled = records[:]
    random.Random(0).shuffle(shuffled)
    classes = maps.class_map(grid, shuffled, CLASSES)
    scores = maps.score_map(grid, shuffled)
    assert classes.dtype == np.uint8 and scores.dtype == np.float32
    assert classes.shape == scores.shape == (grid.height, grid.width)
    expected_classes = np.zeros_like(classes)
    expected_scores = np.full(scores.shape, np.nan, dtype=np.float32)
    for rec in records:
        i, j = rec.window.row_off // stride, rec.window.col_off // stride
        expected_classes[i, j] = CLASSES.index(rec.prediction) + 1
        expected_scores[i, j] = rec.score
    np.testing.assert_array_equal(classes, expected_classes)
    np.testing.assert_array_equal(scores, expected_scores)
    assert set(np.unique(classes)) == {0, 1, 2}  # both classes and nodata present
    assert (classes == 0).sum() == np.isnan(scores).sum() == grid.width * grid.height - len(wins)
    # The partial edge position of the 1000-pixel axis (last column) holds no tile: nodata.
    assert (classes[:, -1] == 0).all() and np.isnan(scores[:, -1]).all()


def test_unknown_class_is_a_model_error_naming_it() -> None:
    grid = maps.map_grid(SCENE_TRANSFORM, 512, 512, 256, 256)
    records = [record(Window(256, 0, 256, 256), "cloudy")]
    with pytest.raises(ModelError, match=r"r000000_c000256.*'cloudy'"):
        maps.class_map(grid, records, CLASSES)


def test_window_off_the_stride_grid_is_a_tiling_error_naming_the_tile() -> None:
    grid = maps.map_grid(SCENE_TRANSFORM, 512, 512, 256, 128)
    with pytest.raises(TilingError, match=r"r000064_c000128.*stride 128"):
        maps.class_map(grid, [record(Window(128, 64, 256, 256), "dark")], CLASSES)
    with pytest.raises(TilingError, match="r000000_c000768"):
        maps.score_map(grid, [record(Window(768, 0, 256, 256), "dark")])
    twice = [record(Window(0, 0, 256, 256), "dark"), record(Window(0, 0, 256, 256), "bright")]
    with pytest.raises(TilingError, match="same tile position"):
        maps.class_map(grid, twice, CLASSES)


# --- COGs ------------------------------------------------------------------------------------


def write_maps(out: Path, stride: int = 96) -> tuple[maps.MapGrid, np.ndarray, np.ndarray]:
    width, height, size = 1000, 777, 128
    grid = maps.map_grid(SCENE_TRANSFORM, width, height, size, stride)
    records = pattern_records(tile_windows(width, height, size, stride, True), stride)
    records = records[:-3]  # a few positions without a tile
    classes, scores = maps.class_map(grid, records, CLASSES), maps.score_map(grid, records)
    cog.write_class_cog(out / "s.classes.tif", classes, grid, CRS_UTM, CLASSES)
    cog.write_score_cog(out / "s.scores.tif", scores, grid, CRS_UTM)
    return grid, classes, scores


def test_maps_are_valid_cogs_with_nearest_overviews(tmp_path: Path) -> None:
    grid, classes, scores = write_maps(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "s.classes.tif",
        "s.classes.tif.aux.xml",
        "s.scores.tif",
    ]  # no temporary file left behind
    for name, expected in [("s.classes.tif", classes), ("s.scores.tif", scores)]:
        with rasterio.open(tmp_path / name) as src:
            assert src.driver == "GTiff"
            assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
            assert src.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] == "DEFLATE"
            assert src.profile["tiled"] and src.block_shapes == [(128, 128)]
            assert src.overviews(1) == [2]
            assert src.crs == CRS_UTM and src.transform == grid.transform
            np.testing.assert_array_equal(src.read(1), expected)
        with rasterio.open(tmp_path / name, overview_level=0) as ovr:
            level = ovr.read(1)
        # Nearest: every overview value is one of the map's (no averaged class codes or scores).
        values = set(np.unique(expected[~np.isnan(expected)]).tolist())
        level_values = set(np.unique(level[~np.isnan(level)]).tolist())
        assert level_values <= values and len(level_values) >= 2


def test_class_map_is_styled_and_names_its_categories(tmp_path: Path) -> None:
    write_maps(tmp_path)
    path = tmp_path / "s.classes.tif"
    with rasterio.open(path) as src:
        assert src.nodata == 0
        assert src.descriptions == ("class",)
        assert src.tags()["CLASS_0"] == "no tile"
        assert (src.tags()["CLASS_1"], src.tags()["CLASS_2"]) == CLASSES
        assert src.colorinterp == (ColorInterp.palette,)
        cmap = src.colormap(1)
        assert cmap[0] == (0, 0, 0, 0)
        assert cmap[1] == (*class_lib.PALETTE["dark"], 255)
        assert cmap[2] == (*class_lib.PALETTE["bright"], 255)
    with rasterio.open(tmp_path / "s.scores.tif") as src:
        assert np.isnan(src.nodata) and src.dtypes == ("float32",)
    # The category names are in the PAM sidecar, and GDAL reads them from there...
    sidecar = ET.parse(cog.aux_path(path)).getroot()
    band = sidecar.find("PAMRasterBand")
    assert band is not None and band.get("band") == "1"
    assert [c.text for c in band.iter("Category")] == ["no tile", "dark", "bright"]
    assert category_names_from_gdal(path) == ["no tile", "dark", "bright"]
    # ...and only from there: the COG alone has none.
    alone = tmp_path / "alone" / path.name
    alone.parent.mkdir()
    alone.write_bytes(path.read_bytes())
    assert category_names_from_gdal(alone) == []


def test_gdal_keeps_category_names_out_of_the_tiff(tmp_path: Path) -> None:
    # Why the sidecar: given a source with category names, GDAL's GTiff and COG drivers put
    # them in <file>.aux.xml, not in the TIFF (GDAL 3.10). If this changes, the sidecar could go.
    profile = {"driver": "GTiff", "width": 8, "height": 8, "count": 1, "dtype": "uint8"}
    with rasterio.open(tmp_path / "src.tif", "w", **profile, transform=SCENE_TRANSFORM) as dst:
        dst.write(np.ones((1, 8, 8), np.uint8))
    vrt = tmp_path / "cat.vrt"
    vrt.write_text(
        '<VRTDataset rasterXSize="8" rasterYSize="8"><VRTRasterBand dataType="Byte" band="1">'
        "<CategoryNames><Category>none</Category><Category>zebra</Category></CategoryNames>"
        '<SimpleSource><SourceFilename relativeToVRT="1">src.tif</SourceFilename>'
        "<SourceBand>1</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>"
    )
    for driver in ("GTiff", "COG"):
        out = tmp_path / driver / "out.tif"
        out.parent.mkdir()
        rasterio.shutil.copy(vrt, out, driver=driver)
        assert b"zebra" not in out.read_bytes()
        assert b"<Category>zebra</Category>" in cog.aux_path(out).read_bytes()


def test_small_maps_still_get_an_overview(tmp_path: Path) -> None:
    grid = maps.map_grid(SCENE_TRANSFORM, 2048, 2048, 256, 256)  # 8 x 8 pixels
    records = pattern_records(tile_windows(2048, 2048, 256, 256, False), 256)
    cog.write_class_cog(
        tmp_path / "a.tif", maps.class_map(grid, records, CLASSES), grid, CRS_UTM, CLASSES
    )
    with rasterio.open(tmp_path / "a.tif") as src:
        assert (src.width, src.height) == (8, 8)
        assert src.overviews(1) == [2]
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
    one = maps.map_grid(SCENE_TRANSFORM, 100, 100, 128, 128)  # 1 x 1: nothing smaller
    cog.write_score_cog(tmp_path / "b.tif", np.zeros((1, 1), np.float32), one, CRS_UTM)
    with rasterio.open(tmp_path / "b.tif") as src:
        assert src.overviews(1) == []
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"


def test_large_maps_get_overviews_down_to_one_block(tmp_path: Path) -> None:
    grid = maps.map_grid(SCENE_TRANSFORM, 300 * 16, 200 * 16, 16, 16)  # 300 x 200 pixels
    scores = np.arange(300 * 200, dtype=np.float32).reshape(200, 300)
    cog.write_score_cog(tmp_path / "big.tif", scores, grid, CRS_UTM)
    with rasterio.open(tmp_path / "big.tif") as src:
        assert src.overviews(1) == [2, 4]  # 150 x 100, then 75 x 50: within one 128 block


def test_class_names_are_escaped_in_the_sidecar(tmp_path: Path) -> None:
    classes = ("a<b", "c & d", "dark")
    grid = maps.map_grid(SCENE_TRANSFORM, 512, 256, 256, 256)
    records = [record(Window(0, 0, 256, 256), "a<b"), record(Window(256, 0, 256, 256), "c & d")]
    path = tmp_path / "odd.tif"
    cog.write_class_cog(path, maps.class_map(grid, records, classes), grid, CRS_UTM, classes)
    assert category_names_from_gdal(path) == ["no tile", *classes]
    with rasterio.open(path) as src:  # unknown names take the fallback palette
        assert src.colormap(1)[1] == (*class_lib.FALLBACK_PALETTE[0], 255)
        assert src.colormap(1)[3] == (*class_lib.PALETTE["dark"], 255)


# --- quick-looks -----------------------------------------------------------------------------


def make_preview(
    make_raster: Callable[..., Path],
    scene_shape: tuple[int, int],
    factor: int,
    name: str = "preview.tif",
    **options: Any,
) -> Path:
    """A preview of a ``(height, width)`` scene, decimated by ``factor``."""
    height, width = -(-scene_shape[0] // factor), -(-scene_shape[1] // factor)
    transform = SCENE_TRANSFORM @ Affine.scale(factor)
    return make_raster(name, width=width, height=height, transform=transform, **options)


def test_true_colour_by_sentinel2_band_name(make_raster: Callable[..., Path]) -> None:
    preview = make_preview(
        make_raster, (777, 1000), 2, count=4, descriptions=["B02", "B03", "B04", "B08"]
    )
    look = quicklook.quicklook(preview, [], SCENE_TRANSFORM, CLASSES)
    assert look.bands == (3, 2, 1)
    assert look.rgb.shape == (389, 500, 3) and look.rgb.dtype == np.uint8
    assert look.factor == 2
    with rasterio.open(preview) as src:
        data = src.read()
    for channel, band in enumerate(look.bands):
        values = data[band - 1].astype(np.float64)
        low, high = np.percentile(values, [2, 98])
        assert look.stretch[channel] == (low, high)
        expected = np.clip(np.rint((values - low) * (255.0 / (high - low))), 0, 255)
        np.testing.assert_array_equal(look.rgb[..., channel], expected.astype(np.uint8))


def test_display_band_rules() -> None:
    gray = [ColorInterp.gray] * 5
    assert quicklook.display_bands(["B8", "B4", "B3", "B2", None], gray) == (2, 3, 4)
    words = ["Coastal", "Blue", "Green", "Red edge 1", "Near infrared", "Red"]
    assert quicklook.display_bands(words, [ColorInterp.gray] * 6) == (6, 3, 2)
    interp = [ColorInterp.blue, ColorInterp.green, ColorInterp.red]
    assert quicklook.display_bands([None, None, None], interp) == (3, 2, 1)
    assert quicklook.display_bands(["x", "y", "z", "w"], [ColorInterp.undefined] * 4) == (1, 2, 3)
    assert quicklook.display_bands(["B04", "B03"], gray[:2]) == (1,)


def test_grey_for_one_band_and_stretch_of_valid_pixels(make_raster: Callable[..., Path]) -> None:
    def pixels(count: int, height: int, width: int) -> np.ndarray:
        data = np.arange(height * width, dtype=np.float64).reshape(1, height, width) % 1000 + 5
        data[:, :10, :] = 0  # nodata rows
        return data

    preview = make_preview(make_raster, (256, 400), 1, nodata=0, data=pixels)
    look = quicklook.quicklook(preview, [], SCENE_TRANSFORM, CLASSES)
    assert look.bands == (1,)
    assert (look.rgb == look.rgb[..., :1]).all()  # three equal channels
    values = pixels(1, 256, 400)[0]
    assert look.stretch == [tuple(np.percentile(values[values != 0], [2, 98]))]
    assert (look.rgb[:10] == 0).all()  # nodata is black


def test_float_preview_with_nan_nodata(make_raster: Callable[..., Path]) -> None:
    data = np.linspace(0.0, 1.0, 3 * 80 * 90, dtype=np.float32).reshape(3, 80, 90)
    data[:, :, :5] = np.nan
    preview = make_preview(
        make_raster, (80, 90), 1, count=3, dtype="float32", data=data, nodata=float("nan")
    )
    look = quicklook.quicklook(preview, [], SCENE_TRANSFORM, CLASSES)
    assert look.bands == (1, 2, 3)
    assert (look.rgb[:, :5] == 0).all()
    band = data[0].astype(np.float64)
    assert look.stretch[0] == tuple(np.percentile(band[np.isfinite(band)], [2, 98]))


def test_long_side_is_at_most_1024(make_raster: Callable[..., Path]) -> None:
    preview = make_preview(make_raster, (700, 2100), 1, count=3)
    look = quicklook.quicklook(preview, [], SCENE_TRANSFORM, CLASSES)
    assert max(look.rgb.shape[:2]) <= 1024
    assert look.rgb.shape[:2] == (234, 700) and look.factor == 3


def test_preview_must_be_the_scene_decimated(make_raster: Callable[..., Path]) -> None:
    shifted = make_raster(transform=SCENE_TRANSFORM @ Affine.translation(1, 0) @ Affine.scale(2))
    with pytest.raises(SceneError, match="integer factor"):
        quicklook.quicklook(shifted, [], SCENE_TRANSFORM, CLASSES)
    odd = make_raster("odd.tif", transform=SCENE_TRANSFORM @ Affine.scale(2.5))
    with pytest.raises(SceneError, match="integer factor"):
        quicklook.quicklook(odd, [], SCENE_TRANSFORM, CLASSES)


def overlay_case(make_raster: Callable[..., Path]) -> tuple[Path, list[dict[str, Any]]]:
    """A 256 x 1024 scene cut in 256-pixel tiles, previewed at factor 2 with nodata on the right.

    Tiles: c0 wrong (reference differs), c256 right, c512 no reference; c768 has no tile.
    """

    def pixels(count: int, height: int, width: int) -> np.ndarray:
        data = (np.arange(height * width).reshape(height, width) % 251 + 1).astype(np.uint16)
        data = np.stack([data + 10 * b for b in range(count)])
        data[:, :, 448:] = 0  # nodata from scene column 896: inside no tile
        data[:, 100:110, 300:320] = 0  # nodata inside tile c512
        return data

    bands = ["B04", "B03", "B02"]
    preview = make_preview(
        make_raster, (256, 1024), 2, count=3, nodata=0, data=pixels, descriptions=bands
    )
    records = [
        record(Window(0, 0, 256, 256), "dark"),
        record(Window(256, 0, 256, 256), "bright"),
        record(Window(512, 0, 256, 256), "bright"),
    ]
    return preview, records


# The first tile is wrong, the second right, the third has no reference.
OVERLAY_REFERENCES = {"r000000_c000000": "bright", "r000000_c000256": "bright"}


def border(rgb: np.ndarray, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    return np.concatenate([rgb[r0, c0:c1], rgb[r1 - 1, c0:c1], rgb[r0:r1, c0], rgb[r0:r1, c1 - 1]])


def test_overlay_tints_tiles_and_outlines_misclassified_ones(
    make_raster: Callable[..., Path],
) -> None:
    preview, records = overlay_case(make_raster)
    look = quicklook.quicklook(preview, records, SCENE_TRANSFORM, CLASSES, OVERLAY_REFERENCES)
    plain = quicklook.quicklook(preview, [], SCENE_TRANSFORM, CLASSES)
    rgb, base = look.rgb, plain.rgb
    assert rgb.shape == (128, 512, 3)
    # The wrong tile (preview columns 0-127) is outlined, 2 pixels wide, inside its footprint.
    assert (border(rgb, 0, 128, 0, 128) == MAGENTA).all()
    assert (border(rgb, 1, 127, 1, 127) == MAGENTA).all()
    assert not (rgb[2:126, 2:126] == MAGENTA).all(axis=-1).any()
    # The right tile and the tile without a reference are not.
    for c0 in (128, 256):
        assert not (border(rgb, 0, 128, c0, c0 + 128) == MAGENTA).all(axis=-1).any()
    # Tinting: integer blend of the stretched pixel with the class colour.
    for (r, c), name in [((60, 60), "dark"), ((60, 200), "bright"), ((60, 300), "bright")]:
        colour = np.array(class_lib.PALETTE[name], dtype=np.int32)
        alpha = quicklook.OVERLAY_ALPHA
        expected = (base[r, c].astype(np.int32) * (256 - alpha) + colour * alpha + 128) >> 8
        np.testing.assert_array_equal(rgb[r, c], expected)
    # Outside every tile the image is untouched, and nodata stays black there.
    np.testing.assert_array_equal(rgb[:, 384:], base[:, 384:])
    assert (rgb[:, 448:] == 0).all()
    # Nodata inside a tile is tinted (the tile is there), not left black.
    assert (rgb[50:55, 150:160] > 0).any(axis=-1).all()


def test_overlay_refuses_unknown_classes(make_raster: Callable[..., Path]) -> None:
    preview, records = overlay_case(make_raster)
    records[1] = dataclasses.replace(records[1], prediction="snow")
    with pytest.raises(ModelError, match="'snow'"):
        quicklook.quicklook(preview, records, SCENE_TRANSFORM, CLASSES)


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body)
        chunks.append((kind, body))
        pos += 12 + length
    return chunks


def test_png_decodes_to_the_array(make_raster: Callable[..., Path], tmp_path: Path) -> None:
    preview, records = overlay_case(make_raster)
    rgb = quicklook.quicklook(preview, records, SCENE_TRANSFORM, CLASSES).rgb
    data = quicklook.encode_png(rgb)
    assert data == quicklook.encode_png(rgb.copy())
    chunks = png_chunks(data)
    assert [kind for kind, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    assert chunks[0][1] == struct.pack(">IIBBBBB", 512, 128, 8, 2, 0, 0, 0)
    raw = np.frombuffer(zlib.decompress(chunks[1][1]), np.uint8).reshape(128, 1 + 3 * 512)
    assert (raw[:, 0] == 0).all()
    np.testing.assert_array_equal(raw[:, 1:].reshape(128, 512, 3), rgb)
    path = tmp_path / "q.png"
    path.write_bytes(data)
    with open_scene(path) as src:  # libpng through GDAL
        assert src.driver == "PNG" and src.count == 3
        np.testing.assert_array_equal(np.moveaxis(src.read(), 0, -1), rgb)


def test_encode_png_refuses_other_shapes() -> None:
    with pytest.raises(ValueError, match="uint8"):
        quicklook.encode_png(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        quicklook.encode_png(np.zeros((4, 4, 3), np.float32))


# --- a whole scene ---------------------------------------------------------------------------


def scene_meta(width: int, height: int, nodata: float | None) -> SceneRecord:
    return scene_record(
        "s1",
        transform=tuple(SCENE_TRANSFORM)[:6],
        crs_wkt=CRS_UTM.to_wkt(),
        width=width,
        height=height,
        nodata=nodata,
    )


def test_write_scene_maps_is_byte_identical(
    make_raster: Callable[..., Path], tmp_path: Path
) -> None:
    width, height, size, stride = 1000, 777, 128, 96
    bands = ["B02", "B03", "B04", "B08"]
    preview = make_preview(make_raster, (height, width), 2, count=4, nodata=0, descriptions=bands)
    records = pattern_records(tile_windows(width, height, size, stride, True), stride)
    references = {rec.id: None if i % 3 == 0 else CLASSES[i % 2] for i, rec in enumerate(records)}
    meta = scene_meta(width, height, 0)
    runs = []
    for run in ("a", "b"):
        summary = maps.write_scene_maps(
            tmp_path / run / "maps",
            tmp_path / run / "quicklook",
            "s1",
            meta,
            preview,
            records,
            references,
            Grid(size, stride),
            CLASSES,
        )
        runs.append(summary)
    assert runs[0] == runs[1]
    summary = runs[0]
    assert summary["classes"] == "s1.classes.tif" and summary["scores"] == "s1.scores.tif"
    assert summary["category_names"] == "s1.classes.tif.aux.xml"
    assert summary["quicklook"] == "s1.png"
    assert summary["map_shape"] == [8, 11] and summary["bands"] == [3, 2, 1]
    assert summary["quicklook_shape"] == [389, 500] and summary["tiles"] == len(records)
    files = {
        "maps": ["s1.classes.tif", "s1.classes.tif.aux.xml", "s1.scores.tif"],
        "quicklook": ["s1.png"],
    }
    for sub, names in files.items():
        assert sorted(p.name for p in (tmp_path / "a" / sub).iterdir()) == names
        for name in names:
            first = (tmp_path / "a" / sub / name).read_bytes()
            assert first == (tmp_path / "b" / sub / name).read_bytes(), name
            assert str(tmp_path).encode() not in first
    # Overwriting in place gives the same bytes again.
    before = (tmp_path / "a" / "maps" / "s1.classes.tif").read_bytes()
    maps.write_scene_maps(
        tmp_path / "a" / "maps",
        tmp_path / "a" / "quicklook",
        "s1",
        meta,
        preview,
        records,
        references,
        Grid(size, stride),
        CLASSES,
    )
    assert (tmp_path / "a" / "maps" / "s1.classes.tif").read_bytes() == before
    with open_scene(tmp_path / "a" / "quicklook" / "s1.png") as src:
        assert (src.height, src.width) == (389, 500)


def test_an_unchanged_quicklook_is_kept_and_a_changed_one_drawn_again(
    make_raster: Callable[..., Path], tmp_path: Path
) -> None:
    """Quick-look reuse (satpipe.core.reuse): kept while its inputs hold, same bytes either way."""
    width, height, size = 301, 263, 64
    preview = make_preview(make_raster, (height, width), 2, count=4, nodata=0)
    records = pattern_records(tile_windows(width, height, size, size, True), size)
    references = {rec.id: None for rec in records}
    record = tmp_path / "record.json"

    def draw(run: str, recs: list, reuse_on: bool = True) -> tuple[dict, Reuse | None]:
        look = tmp_path / "quicklook"
        reuse = Reuse.open("quicklook", look, record) if reuse_on else None
        with atomic_dir(look) as tmp:
            summary = maps.write_scene_maps(
                tmp_path / run, tmp, "s1", scene_meta(width, height, 0), preview, recs,
                references, Grid(size, size), CLASSES, reuse=reuse,
            )  # fmt: skip
        if reuse is not None:
            reuse.save()
        return summary, reuse

    first, _ = draw("a", records)
    png = (tmp_path / "quicklook" / "s1.png").read_bytes()
    again, reuse = draw("b", records)
    assert reuse is not None and reuse.reused == ["s1"] and again == first
    assert (tmp_path / "quicklook" / "s1.png").read_bytes() == png
    flipped = [
        dataclasses.replace(
            records[0], prediction=CLASSES[1 - CLASSES.index(records[0].prediction)]
        )
    ]
    _, reuse = draw("c", flipped + records[1:])
    assert reuse is not None and reuse.reused == []
    changed = (tmp_path / "quicklook" / "s1.png").read_bytes()
    assert changed != png
    draw("d", flipped + records[1:], reuse_on=False)
    assert (tmp_path / "quicklook" / "s1.png").read_bytes() == changed  # as drawn from scratch
