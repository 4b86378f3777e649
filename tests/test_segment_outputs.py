"""Segmentation outputs: the streamed class and probability COGs, and the mask quick-looks."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from satpipe.outputs.mask_quicklook import (
    ERROR_COLOURS,
    class_quicklook,
    error_quicklook,
    sample_grid,
)
from satpipe.outputs.segmentation import SegmentWriter, write_segmentation

W, H = 700, 515  # odd sizes: a partial 512-block in both directions
CLASSES = ("water", "vegetation", "soil", "cloud")
COLOURS = ("#1f78b4", "#33a02c", "#b15928", "#f0f0f0")
TAGS = {"MODEL_VERSION": "m-1", "MODEL_MD5": "abc", "WINDOW": "256", "ONNXRUNTIME": "none"}
GRID = SimpleNamespace(
    width=W,
    height=H,
    crs_wkt=CRS.from_epsg(32633).to_wkt(),
    transform=(10.0, 0.0, 500000.0, 0.0, -10.0, 6000000.0),
)


def _scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Classes in small checkers (every overview would mix them), probabilities, a nodata hole."""
    y, x = np.mgrid[0:H, 0:W]
    classes = (((y // 3) + (x // 5)) % 4).astype(np.uint8)
    classes[y < 40] = 3
    probs = np.full((4, H, W), 20, np.uint8)
    winner = (64 + (x + 2 * y) % 190).astype(np.uint8)
    np.put_along_axis(probs, classes[None].astype(np.intp), winner[None], axis=0)
    valid = (x - 300) ** 2 + (y - 260) ** 2 > 90**2
    valid[:, :7] = False
    classes[~valid] = 77  # garbage under nodata must not matter
    return classes, probs, valid


SCENE = _scene()


def _blocks(heights: list[int], bands: str = "all") -> list[SimpleNamespace]:
    classes, probs, valid = SCENE
    if bands == "winner":
        idx = np.minimum(classes, 3)[None].astype(np.intp)
        probs = np.take_along_axis(probs, idx, axis=0)
    out, row = [], 0
    for h in heights:
        h = min(h, H - row)
        sl = slice(row, row + h)
        out.append(
            SimpleNamespace(
                row_off=row, classes=classes[sl], probabilities=probs[:, sl], valid=valid[sl]
            )
        )
        row += h
    assert row == H
    return out


def _write(tmp: Path, heights: list[int], mode: str = "winner", bands: str = "all") -> list[Path]:
    writer = SegmentWriter(
        tmp / "class.tif",
        GRID,
        CLASSES,
        COLOURS,
        tags=TAGS,
        probability_path=tmp / "prob.tif",
        probabilities=mode,
    )
    return write_segmentation(_blocks(heights, bands), writer)


def _overviews(path: Path) -> list[np.ndarray]:
    with rasterio.open(path) as src:
        levels = len(src.overviews(1))
    out = []
    for i in range(levels):
        with rasterio.open(path, overview_level=i) as ov:
            out.append(ov.read())
    return out


def test_class_cog_is_a_styled_cog_with_class_safe_overviews(tmp_path: Path) -> None:
    written = _write(tmp_path, [H])
    assert [p.name for p in written] == ["class.tif", "class.tif.aux.xml", "prob.tif"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in written]  # no temps
    path = tmp_path / "class.tif"
    with rasterio.open(path) as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] == "DEFLATE"
        assert (src.dtypes[0], src.nodata, src.block_shapes[0]) == ("uint8", 255, (512, 512))
        assert src.crs == CRS.from_epsg(32633)
        assert src.transform == Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 6000000.0)
        assert src.overviews(1) == [2]
        cmap = src.colormap(1)
        assert [cmap[i] for i in range(4)] == [
            (31, 120, 180, 255),
            (51, 160, 44, 255),
            (177, 89, 40, 255),
            (240, 240, 240, 255),
        ]
        assert cmap[255][3] == 0
        tags = src.tags()
        assert {f"CLASS_{i}": n for i, n in enumerate(CLASSES)}.items() <= tags.items()
        assert TAGS.items() <= tags.items()
        assert src.descriptions == ("class",)
        full = src.read(1)
    classes, _, valid = SCENE
    np.testing.assert_array_equal(full, np.where(valid, classes, 255))
    aux = (tmp_path / "class.tif.aux.xml").read_text()
    assert all(f"<Category>{name}</Category>" in aux for name in CLASSES)
    levels = _overviews(path)
    assert levels
    for level in levels:  # NEAREST: every value a class or nodata, and every class still there
        assert set(np.unique(level)) == {0, 1, 2, 3, 255}


def test_same_bytes_whatever_the_block_heights(tmp_path: Path) -> None:
    first, second, third = (tmp_path / d for d in ("a", "b", "c"))
    for mode in ("winner", "all"):
        _write(first, [H], mode)
        _write(second, [1, 37, 512, 3, 100, 1000], mode)
        _write(third, [511, 2, 600], mode, bands="winner" if mode == "winner" else "all")
        for name in ("class.tif", "class.tif.aux.xml", "prob.tif"):
            data = (first / name).read_bytes()
            assert data == (second / name).read_bytes() == (third / name).read_bytes(), name


def test_winner_probability_values_nodata_and_paired_overviews(tmp_path: Path) -> None:
    _write(tmp_path, [200, 315])
    classes, probs, valid = SCENE
    winner = np.take_along_axis(probs, np.minimum(classes, 3)[None].astype(np.intp), axis=0)[0]
    with rasterio.open(tmp_path / "prob.tif") as src:
        assert (src.count, src.nodata, src.dtypes[0]) == (1, 0, "uint8")
        assert src.tags()["PROBABILITY_RULE"] == "round_half_up(255*p)"
        assert TAGS.items() <= src.tags().items()
        np.testing.assert_array_equal(src.read(1), np.where(valid, winner, 0))
    # NEAREST in both: an overview pixel of each is the same scene pixel
    for cls, prob in zip(
        _overviews(tmp_path / "class.tif"), _overviews(tmp_path / "prob.tif"), strict=True
    ):
        np.testing.assert_array_equal(cls == 255, prob == 0)
        assert prob[cls != 255].min() >= 64


def test_all_probabilities_masked_and_averaged(tmp_path: Path) -> None:
    _write(tmp_path, [300, 215], mode="all")
    _, probs, valid = SCENE
    with rasterio.open(tmp_path / "prob.tif") as src:
        assert src.count == 4 and src.nodata is None
        assert src.descriptions == CLASSES
        np.testing.assert_array_equal(src.dataset_mask() > 0, valid)
        np.testing.assert_array_equal(src.read(), np.where(valid, probs, 0))
    with rasterio.open(tmp_path / "prob.tif", overview_level=0) as ov:
        data, ok = ov.read(), ov.dataset_mask() > 0
    # AVERAGE honours the mask: no valid overview pixel is pulled down by masked zeros
    assert ok.any() and not ok.all()
    assert data[:, ok].min() >= 20
    assert len(np.unique(data[:, ok])) > 100  # averaged, not picked


def test_failure_mid_write_leaves_nothing(tmp_path: Path) -> None:
    blocks = _blocks([100, 415])
    with (
        pytest.raises(RuntimeError),
        SegmentWriter(
            tmp_path / "class.tif",
            GRID,
            CLASSES,
            COLOURS,
            probability_path=tmp_path / "p.tif",
            probabilities="all",
        ) as writer,
    ):
        writer.write(blocks[0])
        raise RuntimeError("model failed")
    assert list(tmp_path.iterdir()) == []
    writer = SegmentWriter(tmp_path / "class.tif", GRID, CLASSES, COLOURS)
    writer.write(blocks[0])
    with pytest.raises(ValueError, match="expected row 100"):
        writer.write(0, blocks[0].classes, blocks[0].probabilities, blocks[0].valid)
    assert list(tmp_path.iterdir()) == []
    writer = SegmentWriter(tmp_path / "class.tif", GRID, CLASSES, COLOURS)
    writer.write(blocks[0])
    with pytest.raises(ValueError, match="never written"):
        writer.close()
    assert list(tmp_path.iterdir()) == []


def test_bad_input_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="writer's own"):
        SegmentWriter(tmp_path / "c.tif", GRID, CLASSES, COLOURS, tags={"CLASS_0": "x"})
    with pytest.raises(ValueError, match="#rrggbb"):
        SegmentWriter(tmp_path / "c.tif", GRID, CLASSES, ("red", *COLOURS[1:]))
    block = _blocks([H])[0]
    bad = block.classes.copy()
    bad[0, 100] = 4
    writer = SegmentWriter(tmp_path / "c.tif", GRID, CLASSES, COLOURS)
    with pytest.raises(ValueError, match="class code >= 4"):
        writer.write(0, bad, block.probabilities, block.valid)
    assert list(tmp_path.iterdir()) == []


def _decode_png(path: Path) -> np.ndarray:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", (0, 0)
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            cols, rows, depth, colour = struct.unpack(">IIBB", body[:10])
            assert (depth, colour) == (8, 6)
            size = (rows, cols)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(size[0], 1 + 4 * size[1])
    assert not raw[:, 0].any()  # filter 0 everywhere
    return raw[:, 1:].reshape(size[0], size[1], 4)


def test_class_quicklook_colours(tmp_path: Path) -> None:
    _write(tmp_path, [H])
    pic = class_quicklook(
        tmp_path / "class.tif", tmp_path / "q.png", COLOURS, CLASSES, max_side=100
    )
    again = class_quicklook(tmp_path / "class.tif", tmp_path / "q2.png", COLOURS, max_side=100)
    assert (tmp_path / "q.png").read_bytes() == (tmp_path / "q2.png").read_bytes()
    image = _decode_png(tmp_path / "q.png")
    np.testing.assert_array_equal(image, pic.rgba)
    step, rows, cols = sample_grid(H, W, 100)
    assert pic.step == again.step == step == 7 and image.shape == (len(rows), len(cols), 4)
    classes, _, valid = SCENE
    lut = {i: (*(int(c[j : j + 2], 16) for j in (1, 3, 5)), 255) for i, c in enumerate(COLOURS)}
    for i, j in [(0, 5), (10, 20), (37, 42), (50, 99), (73, 0), (36, 43)]:
        r, c = rows[i], cols[j]
        expected = lut[int(classes[r, c])] if valid[r, c] else (0, 0, 0, 0)
        assert tuple(image[i, j]) == expected, (i, j)
    assert pic.counts["nodata"] == int((~valid[np.ix_(rows, cols)]).sum()) > 0
    full = class_quicklook(tmp_path / "class.tif", tmp_path / "f.png", COLOURS)
    assert full.step == 1 and full.rgba.shape == (H, W, 4)


def test_error_quicklook_colours(tmp_path: Path) -> None:
    _write(tmp_path, [H])
    classes, _, valid = SCENE
    # labels: raw codes 10/11 (water), 20, 30, 40; 0 unlabelled (nodata), 99 no class
    raw = np.array([10, 20, 30, 40], np.uint8)[np.minimum(classes, 3)]
    y, x = np.mgrid[0:H, 0:W]
    raw[(y >= 100) & (y < 200)] = 11  # labelled water: right where predicted water, else FN
    raw[(y >= 200) & (y < 260) & (classes == 0)] = 20  # predicted water, labelled veg: FP
    raw[(y >= 260) & (y < 300) & (classes == 1)] = 30  # veg labelled soil: other error
    raw[(y >= 300) & (y < 320)] = 0
    raw[(y >= 320) & (y < 330)] = 99
    profile = {
        "driver": "GTiff",
        "width": W,
        "height": H,
        "count": 1,
        "dtype": "uint8",
        "nodata": 0,
        "crs": GRID.crs_wkt,
        "transform": Affine(*GRID.transform),
    }
    with rasterio.open(tmp_path / "labels.tif", "w", **profile) as dst:
        dst.write(raw, 1)
    codes = ((10, 11), (20,), (30,), (40,))
    held = x < 600
    pic = error_quicklook(
        tmp_path / "class.tif",
        tmp_path / "labels.tif",
        codes,
        tmp_path / "e.png",
        positive=0,
        mask=held,
    )
    image = _decode_png(tmp_path / "e.png")
    np.testing.assert_array_equal(image, pic.rgba)
    colour = {k: (*v, 255) for k, v in ERROR_COLOURS.items()}
    pred = np.where(valid, classes, 255)

    def at(r: int, c: int) -> tuple[int, ...]:
        assert pic.step == 1
        return tuple(image[r, c])

    r, c = next((r, c) for r, c in zip(*np.nonzero(valid & (y < 100) & held), strict=True))
    assert at(r, c) == colour["correct"]
    for kind, rows_, want in [
        ("false_negative", (100, 200), lambda p: p != 0),
        ("correct", (100, 200), lambda p: p == 0),
        ("false_positive", (200, 260), lambda p: p == 0),
        ("other_error", (260, 300), lambda p: p == 1),
    ]:
        sel = valid & held & (y >= rows_[0]) & (y < rows_[1]) & want(pred)
        assert sel.any(), kind
        assert (image[sel] == colour[kind]).all(), kind
    transparent = (~valid) | (~held) | ((y >= 300) & (y < 330))
    assert (image[transparent][:, 3] == 0).all() and (image[~transparent][:, 3] == 255).all()
    assert pic.counts["not_judged"] == int(transparent.sum())
    callable_mask = error_quicklook(
        tmp_path / "class.tif",
        tmp_path / "labels.tif",
        codes,
        tmp_path / "e2.png",
        mask=lambda r, c: np.broadcast_to(c[None] < 600, (len(r), len(c))),
    )
    assert (tmp_path / "e2.png").read_bytes() == (tmp_path / "e.png").read_bytes()
    assert callable_mask.counts == pic.counts


def test_overview_resampling_is_set_explicitly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GDAL's COG driver picks NEAREST by itself only for a paletted band (CUBIC otherwise):
    # the writer must not depend on that default.
    seen: dict[str, str] = {}
    copy = rasterio.shutil.copy

    def spy(src: object, dst: Path, **options: object) -> None:
        seen[Path(str(src)).parent.name.split(".")[1]] = str(options["overview_resampling"])
        copy(src, dst, **options)

    monkeypatch.setattr(rasterio.shutil, "copy", spy)
    _write(tmp_path / "w", [H], "winner")
    _write(tmp_path / "a", [H], "all")
    assert seen == {"class": "NEAREST", "prob": "AVERAGE"}
    seen.clear()
    _write(tmp_path / "w2", [H], "winner")
    assert seen == {"class": "NEAREST", "prob": "NEAREST"}
