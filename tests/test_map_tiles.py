"""Map tiles of the pinned outputs: pixels, caching, versions, refusals, legends, TileJSON, points.

The library part (:mod:`satpipe.outputs.map_tiles`) runs on small synthetic rasters; the routes
(:mod:`serve.maps`) on the committed pipeline runs of :mod:`tests.serve_fixtures` (a per-pixel
``pixel_logistic`` run and a tile-label run), read-only unless copied.
"""

# Fixtures are imported from tests.serve_fixtures; pytest injects them as same-named arguments.
# ruff: noqa: F811

from __future__ import annotations

import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import morecantile
import numpy as np
import pytest
import rasterio
from affine import Affine
from fastapi.testclient import TestClient
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile
from rasterio.warp import transform, transform_bounds
from rio_tiler.io import Reader

from satpipe.core.classes import parse_colour
from satpipe.core.files import md5_file, read_json
from satpipe.outputs import map_info, map_tiles
from satpipe.outputs.mask_quicklook import ERROR_COLOURS
from satpipe.outputs.quicklook import quicklook, stretch_band
from serve.app import create_app
from serve.settings import Settings
from tests.helpers import output as run
from tests.serve_fixtures import pipeline_repo, segmentation_repo  # noqa: F401

# The small synthetic rasters have no overviews; rio-tiler warns about it once per process.
pytestmark = pytest.mark.filterwarnings("ignore::rio_tiler.errors.NoOverviewWarning")

TMS = morecantile.tms.get("WebMercatorQuad")
SCENE = "synthetic-42"
CLASS_TIF = f"data/segments/{SCENE}.class.tif"


def decode(png: bytes) -> np.ndarray:
    """A PNG as ``(rows, cols, bands)`` uint8."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with MemoryFile(png) as mem, mem.open() as src:
            return np.moveaxis(src.read(), 0, -1)


def colour_set(rgba: np.ndarray) -> set[tuple[int, ...]]:
    return {tuple(int(v) for v in c) for c in np.unique(rgba.reshape(-1, 4), axis=0)}


# --- the library, on synthetic rasters ------------------------------------------------------

TILE = morecantile.Tile(x=550, y=335, z=10)


def _aligned(make_raster: Any, codes: np.ndarray, factor: int, **options: Any) -> Path:
    """A raster in EPSG:3857 whose pixels are ``factor`` x ``factor`` pixels of :data:`TILE`."""
    b = TMS.xy_bounds(TILE)
    res = (b.right - b.left) / 256 * factor
    rows, cols = codes.shape[-2:]
    return make_raster(
        width=cols,
        height=rows,
        crs="EPSG:3857",
        transform=Affine(res, 0, b.left, 0, -res, b.top),
        data=codes,
        tags=None,
        **options,
    )


def test_categorical_tile_is_nearest_with_the_palette_and_nodata_transparent(
    make_raster: Any,
) -> None:
    codes = (np.arange(23 * 37).reshape(23, 37) % 5).astype(np.uint8)  # 4 = nodata
    codes[0, 0] = 7  # a code of no class
    path = _aligned(make_raster, codes, 4, dtype="uint8", nodata=4)
    colours = [(10, 20, 30), (40, 50, 60), (70, 80, 90), (100, 110, 120)]
    png = map_tiles.render_categorical(
        path, TILE.z, TILE.x, TILE.y, map_tiles.colour_table(colours)
    )
    rgba = decode(png)
    assert rgba.shape == (256, 256, 4)
    expected = np.zeros((256, 256, 4), np.uint8)
    lut = np.zeros((256, 4), np.uint8)
    lut[:4] = [(*c, 255) for c in colours]
    lut[4] = 0  # nodata
    expected[: 23 * 4, : 37 * 4] = lut[np.repeat(np.repeat(codes, 4, 0), 4, 1)]
    assert np.array_equal(rgba, expected)  # each raster pixel is 4x4 tile pixels, exactly


def test_a_tile_that_misses_the_raster_is_transparent_and_the_matrix_is_bounded(
    make_raster: Any,
) -> None:
    path = _aligned(make_raster, np.ones((5, 7), np.uint8), 4, dtype="uint8")
    png = map_tiles.render_categorical(path, 10, 0, 0, map_tiles.colour_table([(1, 2, 3)]))
    assert png == map_tiles.empty_tile() and not decode(png)[..., 3].any()
    assert map_tiles.in_matrix(0, 0, 0) and map_tiles.in_matrix(3, 7, 7)
    assert not map_tiles.in_matrix(3, 8, 0) and not map_tiles.in_matrix(25, 0, 0)


def test_true_colour_stretch_is_the_quicklook_one(make_raster: Any) -> None:
    rng = np.random.default_rng(3)
    data = rng.integers(100, 3000, (4, 29, 41), dtype=np.uint16)
    data[:, :3, :5] = 0
    path = _aligned(
        make_raster,
        data,
        2,
        count=4,
        dtype="uint16",
        nodata=0,
        descriptions=["B02", "B03", "B04", "B08"],
    )
    style = map_tiles.true_colour(path)
    look = quicklook(path, [], Affine(*rasterio.open(path).transform[:6]), ["a"])
    assert style.bands == look.bands == (3, 2, 1)
    assert list(style.limits) == look.stretch
    for band, (low, high) in zip(data[[2, 1, 0]], style.limits, strict=True):
        out, _ = stretch_band(band, 0)
        valid = band != 0
        assert np.array_equal(map_tiles.stretch(band, low, high)[valid], out[valid])
    rgba = decode(map_tiles.render_true_colour(path, TILE.z, TILE.x, TILE.y, style))
    assert (rgba[:6, :10, 3] == 0).all() and (rgba[6:58, 10:82, 3] == 255).all()
    assert np.array_equal(rgba[20, 30, :3], look.rgb[10, 15])  # tile pixel -> raster pixel / 2


def test_error_kinds_and_the_held_out_mask(make_raster: Any) -> None:
    pred = np.array([[0, 0, 1, 2, 1]], np.int16)
    ref = np.array([[0, 1, 0, 1, -1]], np.int16)
    judged = np.array([[True, True, True, True, False]])
    assert map_tiles.error_kinds(pred, ref, judged, 0).tolist() == [[0, 1, 2, 3, 255]]
    b = TMS.xy_bounds(TILE)
    res = (b.right - b.left) / 256 * 16
    mask = np.zeros((3, 5), bool)
    mask[1, 2] = True
    grid = map_tiles.MaskGrid(mask, Affine(res, 0, b.left, 0, -res, b.top), "EPSG:3857")
    tile = grid.tile(TILE.z, TILE.x, TILE.y)
    assert tile[16:32, 32:48].all() and tile.sum() == 16 * 16
    assert not grid.tile(10, 0, 0).any()


def test_legends_use_the_declared_colours() -> None:
    legend = map_info.categorical_legend(["water", "land"], [(31, 120, 180), (1, 2, 3)], 1)
    assert legend == [
        {"value": 1, "name": "water", "colour": "#1f78b4"},
        {"value": 2, "name": "land", "colour": "#010203"},
    ]
    errors = map_info.error_legend("water")
    assert [e["colour"] for e in errors] == [map_info.hex_colour(c) for c in ERROR_COLOURS.values()]
    ramp = map_info.ramp_legend()
    assert ramp[0]["value"] == 0 and ramp[-1]["value"] == 1
    assert ramp[-1]["colour"] == map_info.hex_colour(map_tiles.ramp_table()[255])


# --- the routes, on pipeline runs -----------------------------------------------------------


@pytest.fixture(scope="module")
def seg(segmentation_repo: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(repo=segmentation_repo))) as client:
        yield client


@pytest.fixture(scope="module")
def index(seg: TestClient) -> dict[str, Any]:
    got = seg.get("/maps")
    assert got.status_code == 200, got.text
    return got.json()


def layer_of(index: dict[str, Any], name: str, scene: str = SCENE) -> dict[str, Any]:
    found = next(s for s in index["scenes"] if s["id"] == scene)
    return next(layer for layer in found["layers"] if layer["name"] == name)


def tile_url(layer: dict[str, Any], tile: morecantile.Tile) -> str:
    return layer["tiles"].format(z=tile.z, x=tile.x, y=tile.y)


def centre_tile(repo: Path, z: int) -> morecantile.Tile:
    """The tile at zoom ``z`` that holds the scene's centre."""
    with rasterio.open(repo / f"data/scenes/{SCENE}.tif") as src:
        west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    return TMS.tile((west + east) / 2, (south + north) / 2, z)


def scene_pixels(src: Any, tile: morecantile.Tile) -> tuple[np.ndarray, np.ndarray]:
    """The scene row and column under each tile pixel's centre, ``(256, 256)`` each."""
    b = TMS.xy_bounds(tile)
    res = (b.right - b.left) / 256
    xs, ys = np.meshgrid(
        b.left + (np.arange(256) + 0.5) * res, b.top - (np.arange(256) + 0.5) * res
    )
    sx, sy = transform("EPSG:3857", src.crs, xs.ravel().tolist(), ys.ravel().tolist())
    t = src.transform
    cols = np.floor((np.array(sx) - t.c) / t.a).astype(int).reshape(256, 256)
    rows = np.floor((np.array(sy) - t.f) / t.e).astype(int).reshape(256, 256)
    return rows, cols


def uniform(raster: np.ndarray) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood holds one value (edges: False)."""
    out = np.zeros(raster.shape, bool)
    core = raster[1:-1, 1:-1]
    same = np.ones(core.shape, bool)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            same &= (
                raster[1 + dr : raster.shape[0] - 1 + dr, 1 + dc : raster.shape[1] - 1 + dc] == core
            )
    out[1:-1, 1:-1] = same
    return out


def lut_of(colours: dict[int, tuple[int, ...]]) -> np.ndarray:
    """A 256-entry RGBA lookup table: the given codes opaque, every other one transparent."""
    lut = np.zeros((256, 4), np.uint8)
    for code, rgb in colours.items():
        lut[code] = (*rgb[:3], 255)
    return lut


def check_scene_tiles(
    client: TestClient,
    layer: dict[str, Any],
    grid: Path,
    values: np.ndarray,
    lut: np.ndarray,
    z: int,
) -> set[int]:
    """Check every tile of the layer at zoom ``z`` against the raster ``values`` on ``grid``.

    A tile pixel whose raster pixel's 3x3 neighbourhood holds one value has that value's colour,
    and only the table's colours appear (nearest resampling).

    Returns:
        The values checked.
    """
    allowed = {tuple(int(v) for v in c) for c in lut}
    seen: set[int] = set()
    with rasterio.open(grid) as src:
        west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
        sure_values = uniform(values)
        for tile in TMS.tiles(west, south, east, north, [z]):
            got = client.get(tile_url(layer, tile))
            assert got.status_code == 200, got.text
            rgba = decode(got.content)
            assert colour_set(rgba) <= allowed
            rows, cols = scene_pixels(src, tile)
            sure = (rows >= 0) & (rows < values.shape[0]) & (cols >= 0) & (cols < values.shape[1])
            sure[sure] = sure_values[rows[sure], cols[sure]]
            under = values[rows[sure], cols[sure]]
            assert np.array_equal(rgba[sure], lut[under])
            seen |= set(np.unique(under).tolist())
    return seen


@pytest.mark.slow
def test_class_tiles_hold_the_palette_colour_of_the_class_under_each_pixel(
    seg: TestClient, index: dict[str, Any], segmentation_repo: Path
) -> None:
    model = read_json(segmentation_repo / "data" / "model.json")
    declared = [parse_colour(c["colour"]) for c in model["model"]["classes"]]
    with rasterio.open(segmentation_repo / CLASS_TIF) as src:
        codes, palette = src.read(1), src.colormap(1)
    assert [palette[i][:3] for i in range(len(declared))] == declared
    assert palette[255][3] == 0  # nodata: transparent in the file's palette too
    lut = lut_of(dict(enumerate(declared)))
    layer, grid = layer_of(index, "classes"), segmentation_repo / CLASS_TIF
    z = Reader(str(grid)).maxzoom
    seen = check_scene_tiles(seg, layer, grid, codes, lut, z)
    assert {0, 1, 255} <= seen  # water, vegetation and nodata pixels were all checked
    # Zoomed out (read from the overview): still only palette colours, no blend of classes.
    rgba = decode(seg.get(tile_url(layer, centre_tile(segmentation_repo, z - 2))).content)
    assert colour_set(rgba) <= {tuple(int(v) for v in c) for c in lut} and rgba[..., 3].any()


@pytest.mark.slow
def test_error_tiles_are_the_error_quicklook_and_probability_tiles_the_ramp(
    seg: TestClient, index: dict[str, Any], segmentation_repo: Path
) -> None:
    # The 700x600 scene's error quick-look has one picture pixel per scene pixel.
    look = decode((segmentation_repo / "data" / "quicklook" / f"{SCENE}.errors.png").read_bytes())
    kinds = np.full(look.shape[:2], 255, np.uint8)
    for i, rgb in enumerate(ERROR_COLOURS.values()):
        kinds[(look[..., :3] == rgb).all(axis=-1) & (look[..., 3] == 255)] = i
    grid = segmentation_repo / CLASS_TIF
    z = Reader(str(grid)).maxzoom
    lut = lut_of(dict(enumerate(ERROR_COLOURS.values())))
    seen = check_scene_tiles(seg, layer_of(index, "errors"), grid, kinds, lut, z)
    assert {0, 3, 255} <= seen  # correct, another error, and pixels not judged
    with rasterio.open(segmentation_repo / f"data/segments/{SCENE}.probability.tif") as src:
        winner = src.read(1)
    ramp = lut_of({k: v for k, v in map_tiles.ramp_table().items() if k > 0})
    seen = check_scene_tiles(seg, layer_of(index, "probability"), grid, winner, ramp, z)
    assert 255 in seen and 0 in seen


@pytest.mark.slow
def test_scene_tiles_look_like_the_quicklook(
    seg: TestClient, index: dict[str, Any], segmentation_repo: Path
) -> None:
    scenes = segmentation_repo / "data" / "scenes"
    with rasterio.open(scenes / f"{SCENE}.tif") as src:
        valid = (src.read([1, 2, 3]) != src.nodata).any(axis=0)
        look = quicklook(scenes / f"{SCENE}.preview.tif", [], src.transform, ["a"])
        tile = centre_tile(segmentation_repo, Reader(str(scenes / f"{SCENE}.tif")).maxzoom + 1)
        rows, cols = scene_pixels(src, tile)
    assert look.factor == 1
    rgba = decode(seg.get(tile_url(layer_of(index, "scene"), tile)).content)
    assert (rgba[..., 3] == np.where(valid[rows, cols], 255, 0)).all()
    exact = (rgba[..., :3] == look.rgb[rows, cols]).all(axis=-1)
    near = np.zeros(exact.shape, bool)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            r, c = np.clip(rows + dr, 0, 599), np.clip(cols + dc, 0, 699)
            near |= (rgba[..., :3] == look.rgb[r, c]).all(axis=-1)
    assert exact.mean() > 0.9 and near.all()  # a neighbour at worst (warping resamples twice)


@pytest.mark.slow
def test_tile_prediction_tiles_and_points_of_a_tile_label_run(pipeline_repo: Path) -> None:
    with TestClient(create_app(Settings(repo=pipeline_repo))) as client:
        index = client.get("/maps").json()
        layers = next(s for s in index["scenes"] if s["id"] == SCENE)["layers"]
        assert [layer["name"] for layer in layers] == ["scene", "tiles"]
        grid = pipeline_repo / f"data/maps/{SCENE}.classes.tif"
        with rasterio.open(grid) as src:
            codes, palette = src.read(1), src.colormap(1)
        model = read_json(pipeline_repo / "data" / "model.json")
        lut = lut_of({i: palette[i] for i in range(1, len(model["classes"]) + 1)})
        z = Reader(str(grid)).maxzoom + 4
        seen = check_scene_tiles(client, layer_of(index, "tiles"), grid, codes, lut, z)
        assert {1, 2} <= seen
        predictions = read_json(pipeline_repo / "data" / "predictions.json")["predictions"]
        rec = next(p for p in predictions if p["window"]["row_off"] == 128)
        left, bottom, right, top = rec["bounds"]
        with rasterio.open(grid) as src:
            (lon,), (lat,) = transform(
                src.crs, "EPSG:4326", [(left + right) / 2], [(bottom + top) / 2]
            )
        got = client.get(f"/maps/{SCENE}/point", params={"lon": lon, "lat": lat}).json()
        assert (
            got["inside"] and got["class_code"] is None and got["model_md5"] == index["model_md5"]
        )
        tile = got["tile"]
        assert tile["id"] == rec["id"] and tile["prediction"] == rec["prediction"]
        assert tile["score"] == rec["score"] and tile["features"] == rec["features"]
        legend = client.get(f"/maps/{SCENE}/legend").json()
        assert [e["colour"] for e in legend["layers"][0]["entries"]] == [
            map_info.hex_colour(palette[i]) for i in range(1, len(model["classes"]) + 1)
        ]
        missing = client.get(f"/maps/{SCENE}/classes/tilejson.json")
        assert missing.status_code == 404 and "no layer 'classes'" in missing.json()["detail"]


@pytest.mark.slow
def test_maps_lists_the_pinned_layers_and_their_sources(
    index: dict[str, Any], segmentation_repo: Path
) -> None:
    model = read_json(segmentation_repo / "data" / "model.json")
    assert index["model_version"] == model["version"] and index["notes"] == []
    scene = next(s for s in index["scenes"] if s["id"] == SCENE)
    names = [layer["name"] for layer in scene["layers"]]
    assert names == ["scene", "probability", "classes", "errors", "tiles"]
    classes = layer_of(index, "classes")
    assert classes["sources"] == {CLASS_TIF: md5_file(segmentation_repo / CLASS_TIF)}
    assert set(layer_of(index, "errors")["sources"]) == {
        CLASS_TIF,
        f"data/scenes/{SCENE}.labels.tif",
        "data/tile_index.json",
    }
    assert len({layer["md5"] for layer in scene["layers"]}) == 5
    assert classes["tiles"] == f"/maps/{SCENE}/classes/{classes['md5']}/{{z}}/{{x}}/{{y}}.png"


@pytest.mark.slow
def test_tiles_are_immutable_with_an_etag_and_answer_304(
    seg: TestClient, index: dict[str, Any], segmentation_repo: Path
) -> None:
    layer = layer_of(index, "classes")
    tile = centre_tile(segmentation_repo, 13)
    url = tile_url(layer, tile)
    first, again = seg.get(url), seg.get(url)
    assert first.status_code == 200 and first.content == again.content
    etag = first.headers["etag"]
    assert etag == f'"{layer["md5"]}-{tile.z}-{tile.x}-{tile.y}"'
    assert first.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert first.headers["x-model-md5"] == index["model_md5"]
    for held in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        cached = seg.get(url, headers={"If-None-Match": held})
        assert cached.status_code == 304 and cached.content == b"", held
        assert cached.headers["etag"] == etag and "immutable" in cached.headers["cache-control"]
    assert seg.get(url, headers={"If-None-Match": '"other"'}).status_code == 200
    outside = seg.get(layer["tiles"].format(z=13, x=0, y=0))
    assert outside.status_code == 200 and outside.content == map_tiles.empty_tile()
    beyond = seg.get(layer["tiles"].format(z=3, x=8, y=0))
    assert beyond.status_code == 404 and "below 8" in beyond.json()["detail"]


@pytest.mark.slow
def test_a_changed_output_gets_new_urls_and_old_ones_are_404(
    segmentation_repo: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(segmentation_repo, repo, symlinks=True)
    tile = centre_tile(repo, 13)
    with TestClient(create_app(Settings(repo=repo))) as client:
        before = client.get("/maps").json()
        old = layer_of(before, "classes")
        old_png = client.get(tile_url(old, tile)).content
        with rasterio.open(repo / CLASS_TIF, "r+", IGNORE_COG_LAYOUT_BREAK="YES") as dst:
            dst.write(np.zeros((1, 600, 700), np.uint8))  # every pixel water now
        # Not pinned yet: the pinned bytes still come from the DVC cache.
        assert client.get(tile_url(old, tile)).content == old_png
        run(["dvc", "commit", "--force", "--quiet", "segment"], repo)
        after = client.get("/maps").json()  # the same service: the lock's change is seen
        new = layer_of(after, "classes")
        assert new["md5"] != old["md5"] and new["sources"][CLASS_TIF] == md5_file(repo / CLASS_TIF)
        for name, changed in [("scene", False), ("errors", True), ("tiles", False)]:
            assert (layer_of(after, name)["md5"] != layer_of(before, name)["md5"]) is changed
        stale = client.get(tile_url(old, tile))
        assert stale.status_code == 404 and new["md5"] in stale.json()["detail"]
        rgba = decode(client.get(tile_url(new, tile)).content)
        assert colour_set(rgba) == {(31, 120, 180, 255)}


@pytest.mark.slow
def test_an_output_that_differs_from_its_pin_is_not_served(
    segmentation_repo: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(segmentation_repo, repo, symlinks=True)
    with TestClient(create_app(Settings(repo=repo))) as client:
        layer = layer_of(client.get("/maps").json(), "classes")
        pinned = layer["sources"][CLASS_TIF]
        (repo / CLASS_TIF).write_bytes(b"not the pinned raster")
        (repo / ".dvc" / "cache" / "files" / "md5" / pinned[:2] / pinned[2:]).unlink()
        got = client.get(tile_url(layer, centre_tile(segmentation_repo, 13)))
        assert got.status_code == 503
        detail = got.json()["detail"]
        assert CLASS_TIF in detail and pinned in detail and "dvc checkout" in detail


@pytest.mark.slow
@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/maps/nope/legend", 404),
        ("/maps/..%2F..%2Fetc/legend", 404),
        ("/maps/.hidden/legend", 422),
        ("/maps/a%00b/legend", 422),
        ("/maps/a b/legend", 422),
        (f"/maps/{'a' * 101}/legend", 422),
        (f"/maps/{SCENE}/bogus/tilejson.json", 422),
        (f"/maps/{SCENE}/classes/{'0' * 32}/13/0/0.png", 404),
        (f"/maps/{SCENE}/classes/NOT-AN-MD5/13/0/0.png", 422),
        (f"/maps/{SCENE}/classes/{'0' * 32}/25/0/0.png", 422),
        (f"/maps/{SCENE}/classes/{'0' * 32}/3/-1/0.png", 422),
        (f"/maps/{SCENE}/point?lon=200&lat=0", 422),
        (f"/maps/{SCENE}/point?lon=0", 422),
    ],
)
def test_bad_scene_ids_and_parameters_are_refused(seg: TestClient, path: str, status: int) -> None:
    got = seg.get(path)
    assert got.status_code == status, got.text
    assert set(got.json()) == {"detail"} and isinstance(got.json()["detail"], str)


@pytest.mark.slow
def test_the_api_key_is_taken_from_the_header_or_the_query(segmentation_repo: Path) -> None:
    with TestClient(create_app(Settings(repo=segmentation_repo, api_key="s3cret"))) as client:
        refused = client.get("/maps")
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "APIKey"
        assert client.get("/maps", params={"api_key": "wrong"}).status_code == 401
        assert client.get("/maps", headers={"X-API-Key": "s3cret"}).status_code == 200
        index = client.get("/maps", params={"api_key": "s3cret"}).json()
        layer = layer_of(index, "classes")
        url = tile_url(layer, centre_tile(segmentation_repo, 13))
        assert client.get(url).status_code == 401
        assert client.get(url, params={"api_key": "s3cret"}).status_code == 200
        tj = client.get(layer["tilejson"], params={"api_key": "s3cret"}).json()
        assert tj["tiles"][0].endswith(".png?api_key=s3cret")
        assert client.get("/viewer").status_code == 401
        assert client.get("/viewer", params={"api_key": "s3cret"}).status_code == 200
        assert client.get("/static/viewer/viewer.js").status_code == 200  # code, no data


@pytest.mark.slow
def test_legends_are_the_class_declaration_and_the_palettes(
    seg: TestClient, segmentation_repo: Path
) -> None:
    legend = seg.get(f"/maps/{SCENE}/legend").json()
    by_layer = {entry["layer"]: entry for entry in legend["layers"]}
    assert list(by_layer) == ["probability", "classes", "errors", "tiles"]
    model = read_json(segmentation_repo / "data" / "model.json")
    declared = [(c["name"], c["colour"]) for c in model["model"]["classes"]]
    with rasterio.open(segmentation_repo / CLASS_TIF) as src:
        palette = src.colormap(1)
    with rasterio.open(segmentation_repo / f"data/maps/{SCENE}.classes.tif") as src:
        map_palette = src.colormap(1)
    classes = by_layer["classes"]["entries"]
    assert [(e["name"], e["colour"]) for e in classes] == declared
    assert [e["colour"] for e in classes] == [
        map_info.hex_colour(palette[e["value"]]) for e in classes
    ]
    tiles = by_layer["tiles"]["entries"]
    assert [(e["name"], e["colour"]) for e in tiles] == declared
    assert [e["colour"] for e in tiles] == [
        map_info.hex_colour(map_palette[e["value"]]) for e in tiles
    ]
    assert by_layer["probability"]["kind"] == "ramp"


@pytest.mark.slow
def test_tilejson_bounds_zooms_and_url(
    seg: TestClient, index: dict[str, Any], segmentation_repo: Path
) -> None:
    layer = layer_of(index, "classes")
    tj = seg.get(layer["tilejson"]).json()
    with rasterio.open(segmentation_repo / CLASS_TIF) as src:
        expected = transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)
    assert tj["tilejson"] == "3.0.0" and tj["scheme"] == "xyz" and tj["version"] == layer["md5"]
    assert tj["bounds"] == pytest.approx(list(expected), abs=1e-9)
    scene = next(s for s in index["scenes"] if s["id"] == SCENE)
    assert scene["bounds"] == pytest.approx(
        tj["bounds"], abs=1e-9
    )  # the class raster: the scene grid
    assert tj["tiles"] == ["http://testserver" + layer["tiles"]]
    assert tj["minzoom"] <= tj["center"][2] <= tj["maxzoom"] == 13  # 10 m pixels at 53 degrees N
    west, south, east, north = tj["bounds"]
    assert west < tj["center"][0] < east and south < tj["center"][1] < north


@pytest.mark.slow
def test_point_gives_the_pixel_class_probability_and_tile(
    seg: TestClient, segmentation_repo: Path
) -> None:
    with rasterio.open(segmentation_repo / CLASS_TIF) as src:
        codes, t, crs = src.read(1), src.transform, src.crs
    with rasterio.open(segmentation_repo / f"data/segments/{SCENE}.probability.tif") as src:
        winner = src.read(1)
    predictions = read_json(segmentation_repo / "data" / "predictions.json")["predictions"]
    for row, col in [(300, 349), (550, 680), (5, 5)]:
        (lon,), (lat,) = transform(
            crs, "EPSG:4326", [t.c + (col + 0.5) * t.a], [t.f + (row + 0.5) * t.e]
        )
        got = seg.get(f"/maps/{SCENE}/point", params={"lon": lon, "lat": lat}).json()
        assert got["inside"] and (got["row"], got["col"]) == (row, col)
        code = int(codes[row, col])
        if code == 255:
            assert got["class_code"] is None and got["probability"] is None
            continue
        assert got["class_code"] == code
        assert got["class_name"] == ["water", "vegetation", "soil", "cloud"][code]
        assert got["probability"] == round(winner[row, col] / 255, 4)
        windows = {(p["window"]["row_off"], p["window"]["col_off"]): p["id"] for p in predictions}
        expected = windows.get((row // 64 * 64, col // 64 * 64))  # stride 64, no partial tiles
        assert (got["tile"] or {}).get("id") == expected
    outside = seg.get(f"/maps/{SCENE}/point", params={"lon": 0, "lat": 0}).json()
    assert outside["inside"] is False and outside["row"] is None and outside["tile"] is None


@pytest.mark.slow
def test_a_service_pinned_at_another_revision_serves_that_revisions_outputs(
    pipeline_repo: Path,
) -> None:
    with TestClient(create_app(Settings(repo=pipeline_repo))) as now:
        current = now.get("/maps").json()
    with TestClient(create_app(Settings(repo=pipeline_repo, rev="v1"))) as then:
        old = then.get("/maps").json()
        assert old["model_md5"] != current["model_md5"]
        assert layer_of(old, "scene")["md5"] == layer_of(current, "scene")["md5"]
        tiles = layer_of(old, "tiles")
        assert tiles["md5"] != layer_of(current, "tiles")["md5"]
        got = then.get(tile_url(tiles, centre_tile(pipeline_repo, 12)))  # from the DVC cache
        assert got.status_code == 200 and decode(got.content)[..., 3].any()
