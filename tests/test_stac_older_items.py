"""Older STAC items: asset ``eo:bands`` as indices into the item's band list, item-level grids.

The item is a real USGS Landsat Collection 2 Level-2 item in STAC 1.0.0-beta.2 form,
``tests/data/LC08_L2SR_081119_20200101_20200823_02_T2.json`` (trimmed from opendatacube/odc-stac,
Apache-2.0; USGS metadata, public domain; see ``tests/data/README.md``). Each band asset lists
``eo:bands: [i]``, an index into ``properties["eo:bands"]`` (where the common names are);
``proj:epsg`` (3031) is on the item, ``proj:transform`` (9 numbers) and ``proj:shape`` on the
assets; there is no ``raster:bands`` and the platform is ``eo:platform``. Its hrefs point at USGS
storage: stand-in COGs on the assets' own 200 x 200 grid are served from 127.0.0.1 and only the
hrefs are rewritten (:func:`tests.stac_standins.standin_item`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rasterio
import yaml
from affine import Affine

from satpipe.core.params import IngestParams
from satpipe.core.records import SceneRecord
from satpipe.scenes import stac
from satpipe.scenes.ingest import ingest
from tests.helpers import REPO, STAGES, stage
from tests.range_server import RangeServer
from tests.stac_standins import asset_seed, load_item, standin_item, value_at

LANDSAT_ITEM = Path(__file__).parent / "data" / "LC08_L2SR_081119_20200101_20200823_02_T2.json"
ITEM_ID = "LC08_L2SR_081119_20200101_20200823_02_T2"
# Common name -> asset key, as the item's properties.eo:bands and the assets' indices say.
KEYS = {"blue": "SR_B2.TIF", "green": "SR_B3.TIF", "red": "SR_B4.TIF", "nir08": "SR_B5.TIF"}
LANDSAT_TRANSFORM = Affine(1164.15, 0.0, 857085.0, 0.0, -1150.6499999999999, -127485.0)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[RangeServer]:
    """A range server over ``tmp_path/www``."""
    www = tmp_path / "www"
    www.mkdir()
    with RangeServer(www) as server:
        yield server


def _ingest(tmp: Path, item: Path, assets: list[str]) -> SceneRecord:
    params = IngestParams.model_validate(
        {
            "source": "stac",
            "stac": {"item": str(item), "assets": assets},
            "id": "s",
            "retries": 0,
            "timeout": 5,
        }
    )
    out = tmp / "scenes"
    return ingest(params, out / "s.tif", out / "s.json", tmp, retries=0, timeout=5)


def _assert_bands(scene_path: Path, keys: list[str]) -> None:
    """The scene's bands are ``keys``' stand-ins, in that order (checked by value and name)."""
    with rasterio.open(scene_path) as scene:
        assert list(scene.descriptions) == keys
        data = scene.read()
        for row, col in [(0, 0), (57, 123), (199, 199)]:
            x, y = scene.transform @ (col + 0.5, row + 0.5)
            expected = [value_at(x, y, seed=asset_seed(k)) for k in keys]
            assert list(data[:, row, col]) == expected, (row, col)


def test_the_real_item_lists_bands_by_index() -> None:
    """The premise: asset eo:bands are indices, and the common names are on the item."""
    item = load_item(LANDSAT_ITEM)
    assert item["stac_version"] == "1.0.0-beta.2" and item["id"] == ITEM_ID
    assert item["assets"]["SR_B4.TIF"]["eo:bands"] == [3]
    assert item["properties"]["eo:bands"][3]["common_name"] == "red"
    assert "raster:bands" not in item["assets"]["SR_B4.TIF"]


def test_common_names_resolve_through_the_item_band_list() -> None:
    item = load_item(LANDSAT_ITEM)
    names = ["red", "nir08", "blue", "green"]
    chosen = stac.select_assets(item, names, "https://x/", "landsat")
    assert [(a.key, a.name) for a in chosen] == [(KEYS[n], n) for n in names]
    red = chosen[0]
    assert red.crs is not None and red.crs.to_epsg() == 3031  # from the item's properties
    assert red.transform == LANDSAT_TRANSFORM  # the first 6 of proj:transform's 9 numbers
    assert red.shape == (200, 200)
    assert stac.asset_bands(item, "SR_B5.TIF", "landsat") == [item["properties"]["eo:bands"][4]]
    with pytest.raises(stac.StacError) as err:
        stac.select_assets(item, ["nir"], "https://x/", "landsat")  # Landsat says nir08
    assert str(err.value).endswith("common names: blue, coastal, green, nir08, red, swir16, swir22")


def test_landsat_item_by_common_names_builds_the_bands_in_the_order_asked(
    served: RangeServer, tmp_path: Path
) -> None:
    rewritten = standin_item(LANDSAT_ITEM, served.root, served.base_url, list(KEYS.values()))
    names = ["red", "green", "blue", "nir08"]
    meta = _ingest(tmp_path, rewritten, names)
    keys = [KEYS[n] for n in names]
    assert (meta.width, meta.height, meta.count, meta.epsg) == (200, 200, 4, 3031)
    assert meta.transform == tuple(LANDSAT_TRANSFORM)[:6]
    assert meta.acquisition_time == "2020-01-01T00:00:00Z"
    assert meta.dtypes == ("uint16",) * 4  # no raster:bands: stored values kept
    _assert_bands(tmp_path / "scenes/s.tif", keys)
    source = meta.source
    assert source["item_id"] == ITEM_ID and source["collection"] == "landsat-c2l2-sr"
    assert source["properties"]["platform"] == "LANDSAT_8"  # eo:platform, the older name
    assert list(source["assets"]) == keys
    assert [source["assets"][k]["asked_as"] for k in keys] == names
    assert all(source["assets"][k]["rule"] == "none" for k in keys)
    # Only the four bands were fetched; SR_B1, B6, B7 and the thumbnail were never asked for.
    assert served.total_requests() == sum(served.requests(f"{ITEM_ID}/{k}.tif") for k in keys)


def test_landsat_item_by_asset_keys_and_mixed(served: RangeServer, tmp_path: Path) -> None:
    rewritten = standin_item(LANDSAT_ITEM, served.root, served.base_url, list(KEYS.values()))
    by_key = _ingest(tmp_path / "a", rewritten, ["SR_B5.TIF", "SR_B2.TIF"])
    assert by_key.count == 2
    _assert_bands(tmp_path / "a/scenes/s.tif", ["SR_B5.TIF", "SR_B2.TIF"])
    mixed = _ingest(tmp_path / "b", rewritten, ["SR_B4.TIF", "nir08"])
    assert [mixed.source["assets"][k]["asked_as"] for k in ("SR_B4.TIF", "SR_B5.TIF")] == [
        "SR_B4.TIF",
        "nir08",
    ]
    _assert_bands(tmp_path / "b/scenes/s.tif", ["SR_B4.TIF", "SR_B5.TIF"])


# --- malformed older items: one line naming the item and the asset ------------------------------


def _with(change: dict[str, Any], asset: str = "SR_B4.TIF", props: dict | None = None) -> dict:
    item = copy.deepcopy(load_item(LANDSAT_ITEM))
    item["assets"][asset].update(change)
    item["properties"].update(props or {})
    return item


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        (
            _with({"eo:bands": [7]}),
            "asset 'SR_B4.TIF': eo:bands[0] is index 7, but the item's properties.eo:bands has "
            "7 bands (indices 0-6)",
        ),
        (
            _with({"eo:bands": [-1]}),
            "asset 'SR_B4.TIF': eo:bands[0] is index -1, but the item's properties.eo:bands has "
            "7 bands (indices 0-6)",
        ),
        (
            _with({}, props={"eo:bands": None}),
            "asset 'SR_B1.TIF': eo:bands[0] is index 0, but the item's properties.eo:bands has "
            "no eo:bands list",
        ),
        (
            _with({"eo:bands": ["red"]}),
            "asset 'SR_B4.TIF': eo:bands[0] is 'red'; expected a band object or an index into "
            "properties.eo:bands",
        ),
        (
            _with({"eo:bands": [True]}),
            "asset 'SR_B4.TIF': eo:bands[0] is True; expected a band object or an index into "
            "properties.eo:bands",
        ),
        (
            _with({"eo:bands": 3}),
            "asset 'SR_B4.TIF': eo:bands is 3; expected a list of band objects or of indices "
            "into properties.eo:bands",
        ),
        (
            _with({}, props={"eo:bands": ["SR_B1", "SR_B2", "SR_B3", "SR_B4"]}),
            "asset 'SR_B1.TIF': eo:bands[0] is 'SR_B1'; expected a band object or an index into "
            "properties.eo:bands",
        ),
    ],
    ids=["past-the-end", "negative", "no-item-list", "string", "bool", "not-a-list", "odd-list"],
)
def test_a_bad_band_index_is_one_line_naming_the_item_and_asset(item: dict, expected: str) -> None:
    with pytest.raises(stac.StacError) as err:
        stac.select_assets(item, ["blue", "red"], "https://x/", f"STAC item {ITEM_ID}.json")
    assert str(err.value) == f"STAC item {ITEM_ID}.json: {expected}"


def test_a_bad_band_index_does_not_stop_asking_by_key() -> None:
    item = _with({"eo:bands": [7]})
    chosen = stac.select_assets(item, ["SR_B4.TIF"], "https://x/", "landsat")
    assert [a.key for a in chosen] == ["SR_B4.TIF"]


def test_an_out_of_range_index_fails_ingest_leaving_nothing(
    served: RangeServer, tmp_path: Path
) -> None:
    rewritten = standin_item(LANDSAT_ITEM, served.root, served.base_url, list(KEYS.values()))
    item = load_item(rewritten)
    item["assets"]["SR_B5.TIF"]["eo:bands"] = [12]
    rewritten.write_text(json.dumps(item))
    with pytest.raises(stac.StacError) as err:
        _ingest(tmp_path, rewritten, ["blue", "green", "red", "nir08"])
    assert str(err.value) == (
        f"STAC item {rewritten}: asset 'SR_B5.TIF': eo:bands[0] is index 12, but the item's "
        "properties.eo:bands has 7 bands (indices 0-6)"
    )
    assert not (tmp_path / "scenes").exists() or not list((tmp_path / "scenes").iterdir())
    assert served.total_requests() == 0  # refused before any band is read


def test_the_stage_reports_an_out_of_range_index_in_one_line(tmp_path: Path) -> None:
    item = _with({"eo:bands": [9]}, asset="SR_B2.TIF")
    (tmp_path / "item.json").write_text(json.dumps(item))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    stac_params = {"item": "item.json", "assets": ["blue", "green", "red", "nir08"]}
    params["ingest"].update({"source": "stac", "stac": stac_params})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    done = stage(STAGES[0][0], *STAGES[0][1], cwd=tmp_path)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr  # no traceback
    assert lines[0].endswith(
        "STAC item item.json: asset 'SR_B2.TIF': eo:bands[0] is index 9, but the item's "
        "properties.eo:bands has 7 bands (indices 0-6)"
    ), lines[0]


# --- where the projection fields live -----------------------------------------------------------


def test_projection_fields_on_the_item_apply_to_every_asset() -> None:
    item = copy.deepcopy(load_item(LANDSAT_ITEM))
    asset = item["assets"]["SR_B4.TIF"]
    item["properties"]["proj:transform"] = asset.pop("proj:transform")
    item["properties"]["proj:shape"] = asset.pop("proj:shape")
    (red,) = stac.select_assets(item, ["red"], "https://x/", "landsat")
    assert red.transform == LANDSAT_TRANSFORM and red.shape == (200, 200)
    assert red.crs is not None and red.crs.to_epsg() == 3031
    asset["proj:epsg"] = None  # null on the asset: no EPSG code, the file says
    (red,) = stac.select_assets(item, ["red"], "https://x/", "landsat")
    assert red.crs is None


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"proj:transform": [1164.15, 0.0, 857085.0]},
            "proj:transform is [1164.15, 0.0, 857085.0]; expected 6 or 9 numbers",
        ),
        ({"proj:shape": [200]}, "proj:shape is [200]; expected [rows, cols], two positive"),
        ({"proj:shape": [0, 200]}, "proj:shape is [0, 200]; expected [rows, cols], two positive"),
        ({"proj:epsg": "EPSG:3031"}, "proj:epsg is 'EPSG:3031'; expected an EPSG code PROJ knows"),
        ({"proj:epsg": 999999}, "proj:epsg is 999999; expected an EPSG code PROJ knows"),
        ({"href": None}, "has no href; expected the band's location"),
    ],
)
def test_bad_projection_fields_are_one_line(change: dict[str, Any], expected: str) -> None:
    with pytest.raises(stac.StacError) as err:
        stac.select_assets(_with(change), ["red"], "https://x/", "landsat")
    message = str(err.value)
    assert message.startswith("landsat: asset 'SR_B4.TIF'") and expected in message, message
    assert "\n" not in message
