"""STAC items as scenes: choosing assets, grids, corrections, and reading COGs in place.

Unit tests build small items by hand; the end-to-end ones take the two real Sentinel-2 items of
``../shared/data/stac`` (skipped without it), serve stand-in COGs for their assets from a
range-capable server on 127.0.0.1 and rewrite only the hrefs.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import yaml
from affine import Affine

from satpipe.core.errors import ChecksumError, DownloadError, NotGeoTIFFError, SatpipeError
from satpipe.core.files import read_json
from satpipe.core.params import IngestParams
from satpipe.scenes import stac, stac_values
from satpipe.scenes.ingest import ingest
from tests.helpers import REPO, run_stages, stage
from tests.range_server import RangeServer
from tests.stac_standins import (
    EARTH_SEARCH_ITEM,
    PLANETARY_COMPUTER_ITEM,
    asset_seed,
    load_item,
    stac_item_path,
    standin_item,
    value_at,
    window_bounds,
    write_standin,
)

TIFF_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"


def _item(assets: dict[str, dict[str, Any]], **props: Any) -> dict[str, Any]:
    base = {"datetime": "2024-07-01T10:00:00Z", "proj:epsg": 32633}
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": "item-1",
        "properties": {**base, **props},
        "assets": assets,
    }


def _band(href: str, common: str | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"href": href, "type": TIFF_TYPE, **extra}
    if common:
        out["eo:bands"] = [{"name": href, "common_name": common}]
    return out


# --- choosing assets --------------------------------------------------------------------------


def test_assets_by_key_or_common_name_in_the_order_asked() -> None:
    item = _item(
        {
            "B04": _band("B04.tif", "red"),
            "B08": _band("B08.tif", "nir"),
            "thumbnail": {"href": "t.png", "type": "image/png"},
        }
    )
    chosen = stac.select_assets(item, ["nir", "B04"], "file:///data/item.json", "item")
    assert [(a.key, a.name) for a in chosen] == [("B08", "nir"), ("B04", "B04")]
    assert chosen[0].href == "/data/B08.tif"  # relative hrefs resolve against the item


def test_a_missing_asset_lists_the_keys_and_common_names() -> None:
    item = _item({"B04": _band("B04.tif", "red"), "SCL": _band("SCL.tif")})
    with pytest.raises(stac.StacError) as err:
        stac.select_assets(item, ["swir16"], "file:///x/", "STAC item x.json")
    message = str(err.value)
    assert message == (
        "STAC item x.json: no asset 'swir16'; asset keys: B04, SCL; common names: red"
    )


def test_a_non_raster_asset_is_refused_and_never_read() -> None:
    item = _item({"thumbnail": {"href": "https://x/t.png", "type": "image/png"}})
    with pytest.raises(stac.StacError, match=r"asset 'thumbnail' is image/png; expected a GeoTIFF"):
        stac.select_assets(item, ["thumbnail"], "file:///x/", "item")


def test_real_items_resolve_keys_and_common_names() -> None:
    pc = load_item(stac_item_path(PLANETARY_COMPUTER_ITEM))
    chosen = stac.select_assets(pc, ["red", "green", "blue", "nir"], "https://x/", "pc")
    assert [a.key for a in chosen] == ["B04", "B03", "B02", "B08"]
    assert chosen[0].crs.to_epsg() == 32606 and chosen[0].shape == (10980, 10980)
    es = load_item(stac_item_path(EARTH_SEARCH_ITEM))
    assert [a.key for a in stac.select_assets(es, ["B04", "SCL"], "https://x/", "es")] == [
        "B04",
        "SCL",
    ]
    with pytest.raises(stac.StacError, match="common names: none"):
        stac.select_assets(es, ["red"], "https://x/", "es")  # Earth Search v0 has no eo:bands


# --- corrections ------------------------------------------------------------------------------


def _asset(key: str, **data: Any) -> stac.Asset:
    return stac.Asset(key, f"{key}.tif", key, data, None, None, None)


L2A = {"platform": "sentinel-2b", "s2:product_type": "S2MSI2A"}


@pytest.mark.parametrize(
    ("props", "asset", "expected"),
    [
        ({**L2A, "s2:processing_baseline": "04.00"}, _asset("B04"), (1.0, -1000.0)),
        ({**L2A, "s2:processing_baseline": "05.09"}, _asset("B8A"), (1.0, -1000.0)),
        ({**L2A, "s2:processing_baseline": "02.12"}, _asset("B04"), (1.0, 0.0)),
        ({**L2A, "s2:processing_baseline": "04.00"}, _asset("SCL"), (1.0, 0.0)),
        (
            {**L2A, "s2:processing_baseline": "04.00"},
            _asset("B04", **{"raster:bands": [{"scale": 0.0001, "offset": -0.1}]}),
            (0.0001, -0.1),
        ),
        (
            {**L2A, "s2:processing_baseline": "04.00", "earthsearch:boa_offset_applied": True},
            _asset("B04", **{"raster:bands": [{"scale": 0.0001, "offset": -0.1}]}),
            (0.0001, 0.0),
        ),
        (
            {**L2A, "s2:processing_baseline": "04.00", "earthsearch:boa_offset_applied": True},
            _asset("B04"),
            (1.0, 0.0),
        ),
        ({"platform": "landsat-8", "s2:processing_baseline": "04.00"}, _asset("B04"), (1.0, 0.0)),
    ],
)
def test_the_boa_offset_is_applied_exactly_once(
    props: dict, asset: stac.Asset, expected: tuple[float, float]
) -> None:
    corr = stac_values.correction(_item({}, **props), asset)
    assert (corr["scale"], corr["offset"]) == expected
    assert corr["rule"]


def test_processing_baseline_from_properties_or_product_id() -> None:
    es = load_item(stac_item_path(EARTH_SEARCH_ITEM))
    assert stac_values.processing_baseline(es) == "02.14"  # from sentinel:product_id ..._N0214_...
    pc = load_item(stac_item_path(PLANETARY_COMPUTER_ITEM))
    assert stac_values.processing_baseline(pc) == "02.12"


# --- area of interest -------------------------------------------------------------------------


def test_crop_snaps_outward_to_pixels_and_refuses_outside() -> None:
    grid = stac.Grid(None, Affine(10, 0, 1000, 0, -10, 5000), 100, 80)  # type: ignore[arg-type]
    part = stac.crop(grid, (1015, 4305, 1101, 4391), "item")
    assert (part.width, part.height) == (10, 10)
    assert part.transform == Affine(10, 0, 1010, 0, -10, 4400)
    with pytest.raises(stac.StacError, match=r"outside the item, which covers \(1000, 4200"):
        stac.crop(grid, (0, 0, 10, 10), "item")


# --- end to end through a range server ----------------------------------------------------------

BANDS = ["B04", "B03", "B02", "B08"]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[RangeServer]:
    """A range server over ``tmp_path/www``."""
    www = tmp_path / "www"
    www.mkdir()
    with RangeServer(www) as server:
        yield server


def _es_window(item: dict[str, Any], size: int = 384) -> tuple[float, float, float, float]:
    return window_bounds(item, "B04", 4800, 5100, size)


def _ingest(
    tmp: Path, stac_params: dict[str, Any], labels: dict | None = None, **extra: Any
) -> Any:
    params = IngestParams.model_validate(
        {
            "source": "stac",
            "stac": stac_params,
            "labels": labels,
            "id": "s",
            "retries": 0,
            "timeout": 5,
            **extra,
        }
    )
    out = tmp / "scenes"
    return ingest(params, out / "s.tif", out / "s.json", tmp, retries=0, timeout=5)


def test_earth_search_item_reads_bands_and_scl_onto_the_10m_grid(
    served: RangeServer, tmp_path: Path
) -> None:
    src = stac_item_path(EARTH_SEARCH_ITEM)
    item = load_item(src)
    box = _es_window(item)
    rewritten = standin_item(src, served.root, served.base_url, [*BANDS, "B05", "SCL"], window=box)
    meta = _ingest(
        tmp_path,
        {
            "item": str(rewritten),
            "assets": [*BANDS, "B05"],
            "aoi": {"bbox": list(box), "crs": "EPSG:32628"},
        },
        {"asset": "SCL", "classes": {"dark": [4, 5, 6], "bright": [8, 9, 10]}},
    )
    assert (meta.width, meta.height, meta.count, meta.epsg) == (384, 384, 5, 32628)
    assert meta.transform[:3] == (10.0, 0.0, box[0])
    assert meta.acquisition_time == "2020-07-14T11:55:52Z"
    assert meta.dtypes[0] == "uint16"  # baseline 02.14: no offset, stored values kept
    source = meta.source
    assert source["kind"] == "stac" and source["item_id"] == item["id"]
    assert source["grid_asset"] == "B04"
    assert source["properties"]["eo:cloud_cover"] == 2.36
    assert source["properties"]["processing_baseline"] == "02.14"
    b05 = source["assets"]["B05"]
    assert b05["resampling"] == "nearest" and b05["rule"] == "none" and b05["offset"] == 0.0
    assert source["assets"]["B04"]["resampling"] == "none"
    for key in BANDS:
        rec = source["assets"][key]
        assert rec["etag"] and rec["last_modified"] and rec["size"] > 0
        assert len(rec["pixels_sha256"]) == 64
    # Every band, including the resampled 20 m one, has the stand-in's value at each place.
    with rasterio.open(tmp_path / "scenes/s.tif") as scene:
        data = scene.read()
        assert list(scene.descriptions) == [*BANDS, "B05"]
        for row, col in [(0, 0), (17, 300), (383, 383)]:
            x, y = scene.transform @ (col + 0.5, row + 0.5)
            for band, key in enumerate([*BANDS, "B05"]):
                assert data[band, row, col] == value_at(x, y, seed=asset_seed(key)), key
    with rasterio.open(tmp_path / "scenes/s.labels.tif") as labels:
        assert labels.shape == (384, 384) and labels.transform == scene.transform
        x, y = labels.transform @ (100.5, 200.5)
        assert labels.read(1)[200, 100] == value_at(x, y, kind="scl", seed=asset_seed("SCL"))
    assert meta.labels is not None and meta.labels["labelled_fraction"] == 1.0
    # Nothing but the bands and SCL was requested from the server.
    wanted = [f"{item['id']}/{k}.tif" for k in [*BANDS, "B05", "SCL"]]
    assert all(served.requests(p) > 0 for p in wanted)
    assert served.total_requests() == sum(served.requests(p) for p in wanted)


def test_planetary_computer_item_by_common_names(served: RangeServer, tmp_path: Path) -> None:
    src = stac_item_path(PLANETARY_COMPUTER_ITEM)
    item = load_item(src)
    box = window_bounds(item, "B04", 2000, 3000, 300)
    rewritten = standin_item(src, served.root, served.base_url, BANDS, window=box)
    meta = _ingest(
        tmp_path,
        {
            "item": str(rewritten),
            "assets": ["red", "green", "blue", "nir"],
            "aoi": {"bbox": list(box), "crs": "EPSG:32606"},
        },
    )
    assert (meta.width, meta.height, meta.count, meta.epsg) == (300, 300, 4, 32606)
    assets = meta.source["assets"]
    assert [assets[k]["asked_as"] for k in BANDS] == ["red", "green", "blue", "nir"]
    assert meta.source["properties"]["processing_baseline"] == "02.12"
    assert all(a["offset"] == 0.0 for a in assets.values())  # before 04.00: no offset


def test_aoi_as_geojson_in_lonlat(served: RangeServer, tmp_path: Path) -> None:
    src = stac_item_path(EARTH_SEARCH_ITEM)
    item = load_item(src)
    box = _es_window(item, 256)
    rewritten = standin_item(src, served.root, served.base_url, ["B04"], window=box)
    from rasterio.warp import transform_bounds

    lon0, lat0, lon1, lat1 = transform_bounds("EPSG:32628", "EPSG:4326", *box)
    shrink = 0.2 * (lon1 - lon0)
    ring = [
        [lon0 + shrink, lat0 + shrink],
        [lon1 - shrink, lat0 + shrink],
        [lon1 - shrink, lat1 - shrink],
        [lon0 + shrink, lat0 + shrink],
    ]
    (tmp_path / "aoi.geojson").write_text(
        json.dumps({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]}})
    )
    meta = _ingest(
        tmp_path, {"item": str(rewritten), "assets": ["B04"], "aoi": {"geojson": "aoi.geojson"}}
    )
    assert 100 < meta.width < 256 and 100 < meta.height < 256


def test_offset_from_baseline_04_makes_a_float_scene(tmp_path: Path) -> None:
    t = Affine(10, 0, 500000, 0, -10, 6000000)
    for key, seed in (("B04", 1), ("B08", 2)):
        write_standin(
            tmp_path / f"{key}.tif", t, 200, 150, "EPSG:32633", seed=seed, overviews=False
        )
    item = _item(
        {"B04": _band("B04.tif"), "B08": _band("B08.tif")},
        platform="sentinel-2a",
        **{"s2:processing_baseline": "04.00", "s2:product_type": "S2MSI2A"},
    )
    (tmp_path / "item.json").write_text(json.dumps(item))
    meta = _ingest(tmp_path, {"item": "item.json", "assets": ["B04", "B08"]})
    assert meta.dtypes == ("float32", "float32") and np.isnan(meta.nodata_value)
    assert meta.source["assets"]["B04"]["offset"] == -1000.0
    with rasterio.open(tmp_path / "B04.tif") as raw, rasterio.open(tmp_path / "scenes/s.tif") as s:
        np.testing.assert_array_equal(s.read(1), raw.read(1).astype(np.float32) - 1000.0)


def test_bytes_transferred_follow_the_window_not_the_file(
    served: RangeServer, tmp_path: Path
) -> None:
    """A 512^2 window of a 10980^2 COG costs a small, size-independent number of bytes."""
    sent = {}
    for size in (2745, 10980):
        t = Affine(10, 0, 300000, 0, -10, 2300040)
        name = f"noise{size}.tif"
        write_standin(
            served.root / name,
            t,
            size,
            size,
            "EPSG:32628",
            kind="noise",
            compress=None,
            overviews=False,
        )
        item = _item({"B04": _band(served.base_url + "/" + name)}, **{"proj:epsg": 32628})
        (tmp_path / f"item{size}.json").write_text(json.dumps(item))
        served.reset_counts()
        box = [300000 + 10 * 1000, 2300040 - 10 * 1512, 300000 + 10 * 1512, 2300040 - 10 * 1000]
        meta = _ingest(
            tmp_path / str(size),
            {
                "item": str(tmp_path / f"item{size}.json"),
                "assets": ["B04"],
                "aoi": {"bbox": box, "crs": "EPSG:32628"},
            },
        )
        assert (meta.width, meta.height) == (512, 512)
        sent[size] = served.total_bytes()
        file_size = (served.root / name).stat().st_size
        if size == 10980:
            assert sent[size] < 0.01 * file_size, (sent[size], file_size)
    assert sent[10980] < 1.5 * sent[2745], sent  # does not grow with the file


# --- bad input: one line naming the item and the asset, nothing written -----------------------


def _es_served(served: RangeServer, assets: list[str]) -> tuple[Path, tuple]:
    src = stac_item_path(EARTH_SEARCH_ITEM)
    box = _es_window(load_item(src), 64)
    return standin_item(src, served.root, served.base_url, assets, window=box), box


def _refused(
    tmp_path: Path, rewritten: Path, box: tuple, assets: list[str], error: type = SatpipeError
) -> str:
    with pytest.raises(error) as err:
        _ingest(
            tmp_path,
            {
                "item": str(rewritten),
                "assets": assets,
                "aoi": {"bbox": list(box), "crs": "EPSG:32628"},
            },
        )
    message = str(err.value)
    assert "\n" not in message
    out = tmp_path / "scenes"
    assert not out.exists() or list(out.iterdir()) == [], list(out.iterdir())
    return message


def test_404_on_one_asset(served: RangeServer, tmp_path: Path) -> None:
    rewritten, box = _es_served(served, ["B04", "B03"])
    item_id = load_item(rewritten)["id"]
    served.set(f"{item_id}/B03.tif", "status", code=404)
    message = _refused(tmp_path, rewritten, box, ["B04", "B03"], DownloadError)
    assert f"STAC item {rewritten}: asset B03:" in message and "HTTP 404" in message


def test_server_without_range_support(served: RangeServer, tmp_path: Path) -> None:
    rewritten, box = _es_served(served, ["B04"])
    served.set(f"{load_item(rewritten)['id']}/B04.tif", "no_range")
    message = _refused(tmp_path, rewritten, box, ["B04"], DownloadError)
    assert "asset B04" in message and "does not support HTTP range requests" in message


def test_redirect_loop(served: RangeServer, tmp_path: Path) -> None:
    rewritten, box = _es_served(served, ["B04"])
    served.set(f"{load_item(rewritten)['id']}/B04.tif", "redirect_loop")
    message = _refused(tmp_path, rewritten, box, ["B04"], DownloadError)
    assert "asset B04" in message and "redirect loop" in message


def test_slow_server_times_out(served: RangeServer, tmp_path: Path) -> None:
    rewritten, box = _es_served(served, ["B04"])
    served.set(f"{load_item(rewritten)['id']}/B04.tif", "slow", delay=8)
    message = _refused(tmp_path, rewritten, box, ["B04"], DownloadError)
    assert "asset B04" in message and "timed out after 5 s" in message


def test_unreachable_host(tmp_path: Path) -> None:
    item = _item({"B04": _band("http://127.0.0.1:9/B04.tif")})
    (tmp_path / "item.json").write_text(json.dumps(item))
    with pytest.raises(DownloadError) as err:
        _ingest(tmp_path, {"item": "item.json", "assets": ["B04"]})
    assert "STAC item item.json: asset B04: http://127.0.0.1:9/B04.tif: unreachable" in str(
        err.value
    )


def test_asset_that_is_not_a_geotiff(served: RangeServer, tmp_path: Path) -> None:
    rewritten, box = _es_served(served, ["B04"])
    (served.root / load_item(rewritten)["id"] / "B04.tif").write_bytes(b"<!DOCTYPE html>" * 100)
    message = _refused(tmp_path, rewritten, box, ["B04"], NotGeoTIFFError)
    assert "asset B04" in message and "not a GeoTIFF" in message


def test_truncated_cog(served: RangeServer, tmp_path: Path) -> None:
    rewritten, box = _es_served(served, ["B04"])
    path = served.root / load_item(rewritten)["id"] / "B04.tif"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    message = _refused(tmp_path, rewritten, box, ["B04"])
    assert "asset B04" in message


def test_item_without_the_asset_lists_what_it_has(served: RangeServer, tmp_path: Path) -> None:
    rewritten, box = _es_served(served, ["B04"])
    message = _refused(tmp_path, rewritten, box, ["B04", "nir"], stac.StacError)
    assert "no asset 'nir'; asset keys: thumbnail, overview, info, metadata, visual, B01" in message


def test_assets_in_different_crss(tmp_path: Path) -> None:
    write_standin(
        tmp_path / "a.tif",
        Affine(10, 0, 500000, 0, -10, 6000000),
        64,
        64,
        "EPSG:32633",
        overviews=False,
    )
    write_standin(
        tmp_path / "b.tif",
        Affine(10, 0, 500000, 0, -10, 6000000),
        64,
        64,
        "EPSG:32634",
        overviews=False,
    )
    item = _item({"B04": _band("a.tif"), "B08": _band("b.tif", **{"proj:epsg": 32634})})
    (tmp_path / "item.json").write_text(json.dumps(item))
    with pytest.raises(stac.StacError) as err:
        _ingest(tmp_path, {"item": "item.json", "assets": ["B04", "B08"]})
    assert str(err.value) == (
        "STAC item item.json: assets are in different CRSs (B04 EPSG:32633, B08 EPSG:32634); "
        "expected one"
    )


def test_aoi_outside_the_item(served: RangeServer, tmp_path: Path) -> None:
    rewritten, _ = _es_served(served, ["B04"])
    message = _refused(tmp_path, rewritten, (0.0, 0.0, 100.0, 100.0), ["B04"], stac.StacError)
    assert message.startswith(f"STAC item {rewritten}: the area of interest (0, 0, 100, 100")


def test_a_changed_asset_fails_its_pin(served: RangeServer, tmp_path: Path) -> None:
    rewritten, box = _es_served(served, ["B04"])
    first = _ingest(
        tmp_path / "a",
        {
            "item": str(rewritten),
            "assets": ["B04"],
            "aoi": {"bbox": list(box), "crs": "EPSG:32628"},
        },
    )
    pin = first.source["assets"]["B04"]["pixels_sha256"]
    again = _ingest(
        tmp_path / "b",
        {
            "item": str(rewritten),
            "assets": ["B04"],
            "aoi": {"bbox": list(box), "crs": "EPSG:32628"},
            "pixels_sha256": {"B04": pin},
        },
    )
    assert again.source["assets"]["B04"]["pixels_sha256"] == pin
    src = stac_item_path(EARTH_SEARCH_ITEM)
    standin_item(src, served.root, served.base_url, ["B04"], window=box, noise={"B04": {}})
    with pytest.raises(ChecksumError) as err:
        _ingest(
            tmp_path / "c",
            {
                "item": str(rewritten),
                "assets": ["B04"],
                "aoi": {"bbox": list(box), "crs": "EPSG:32628"},
                "pixels_sha256": {"B04": pin},
            },
        )
    assert "asset B04: pixels sha256 is" in str(err.value) and pin in str(err.value)
    assert not (tmp_path / "c/scenes").exists() or not list((tmp_path / "c/scenes").iterdir())


# --- the stages, ingest through evaluation ------------------------------------------------------


@pytest.mark.slow  # every stage up to evaluate
def test_stac_scene_through_every_stage(served: RangeServer, tmp_path: Path) -> None:
    src = stac_item_path(EARTH_SEARCH_ITEM)
    item = load_item(src)
    box = _es_window(item, 384)
    rewritten = standin_item(src, served.root, served.base_url, [*BANDS, "SCL"], window=box)
    shutil.copy(rewritten, tmp_path / "item.json")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["ingest"].update(
        {
            "source": "stac",
            "stac": {
                "item": "item.json",
                "assets": BANDS,
                "aoi": {"bbox": list(box), "crs": "EPSG:32628"},
            },
            "labels": {"asset": "SCL", "classes": {"dark": [4, 5, 6], "bright": [8, 9, 10]}},
        }
    )
    params["tile"]["size"] = 64
    params["train"]["method"] = "fit"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    run_stages(tmp_path, until="evaluate")
    index = read_json(tmp_path / "index.json")
    assert index["tile_count"] == 36
    assert sum(t["reference"] is not None for t in index["tiles"]) == 36
    evaluation = read_json(tmp_path / "reports/evaluate.json")
    assert evaluation["evaluated"] is True and evaluation["counts"]["tiles_with_reference"] > 0


def test_stage_reports_a_bad_item_in_one_line(tmp_path: Path) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["ingest"].update({"source": "stac", "stac": {"item": "missing.json", "assets": ["B04"]}})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    done = stage(
        "ingest", "scenes", "scenes.json", "ingest.json", "ingest_report.json", cwd=tmp_path
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "STAC item missing.json: file not found" in lines[0], done.stderr
    assert not (tmp_path / "scenes").exists()


# --- source: http reads a single COG in place too ----------------------------------------------


def test_http_source_reads_a_cog_in_place_and_pins_its_pixels(
    served: RangeServer, tmp_path: Path
) -> None:
    t = Affine(10, 0, 500000, 0, -10, 6000000)
    cog = write_standin(served.root / "scene.tif", t, 300, 211, "EPSG:32633", count=3, seed=4)
    url = served.url("scene.tif")
    params = IngestParams(
        source="http", url=url, retries=0, timeout=5, acquisition_time="2024-05-01T10:00:00Z"
    )
    meta = ingest(params, tmp_path / "a/s.tif", tmp_path / "a/s.json", tmp_path)
    with rasterio.open(cog) as src, rasterio.open(tmp_path / "a/s.tif") as got:
        np.testing.assert_array_equal(got.read(), src.read())
        assert got.transform == src.transform and got.crs == src.crs
    source = meta.source
    assert source["kind"] == "http" and source["fetch"] == "range" and source["url"] == url
    assert source["etag"] and source["size"] == cog.stat().st_size
    pin = source["pixels_sha256"]
    bad = IngestParams(
        source="http",
        url=url,
        sha256="0" * 64,
        retries=0,
        timeout=5,
        acquisition_time="2024-05-01T10:00:00Z",
    )
    with pytest.raises(ChecksumError, match=f"^{url}: pixels sha256 is {pin}; ingest.sha256"):
        ingest(bad, tmp_path / "b/s.tif", tmp_path / "b/s.json", tmp_path)
    assert not list((tmp_path / "b").glob("*"))
