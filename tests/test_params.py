"""params.yaml validation: unknown keys, out-of-range values and wrong types name the dotted key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from satpipe.core.errors import ParamsError
from satpipe.core.params import IngestParams, Params, TileParams, load_params, parse_params

SHA = "a" * 64


def error_of(data: object) -> str:
    with pytest.raises(ParamsError) as info:
        parse_params(data, "params.yaml")
    message = str(info.value)
    assert "\n" not in message, "a params error is one line"
    assert message.startswith("params.yaml: "), "a params error names the file"
    return message


def test_misspelt_key_names_dotted_key_and_the_valid_ones():
    message = error_of({"tile": {"sise": 512}})
    assert "'tile.sise'" in message
    assert "unknown key" in message
    assert "size" in message and "stride" in message  # what was expected


def test_unknown_section_is_named():
    message = error_of({"tiles": {"size": 512}})
    assert "'tiles'" in message
    assert "ingest" in message and "tile" in message


def test_misspelt_key_in_another_section():
    message = error_of({"ingest": {"acquisition_tme": "2024-01-01"}})
    assert "'ingest.acquisition_tme'" in message


@pytest.mark.parametrize(
    ("data", "key", "value"),
    [
        ({"tile": {"size": 0}}, "tile.size", "0"),
        ({"tile": {"size": 100_000}}, "tile.size", "100000"),
        ({"tile": {"stride": 0}}, "tile.stride", "0"),
        ({"tile": {"max_nodata_fraction": 1.5}}, "tile.max_nodata_fraction", "1.5"),
        ({"ingest": {"width": 0}}, "ingest.width", "0"),
        ({"ingest": {"retries": -1}}, "ingest.retries", "-1"),
        ({"ingest": {"timeout": 0.0}}, "ingest.timeout", "0.0"),
        ({"train": {"fraction": 0.0}}, "train.fraction", "0.0"),
    ],
)
def test_out_of_range_value_names_key_and_value(data, key, value):
    message = error_of(data)
    assert f"{key}={value}" in message


def test_string_is_not_an_int():
    message = error_of({"tile": {"size": "256"}})
    assert "tile.size='256'" in message
    assert "integer" in message


def test_bool_is_not_an_int():
    assert "tile.size=True" in error_of({"tile": {"size": True}})


def test_unknown_source_lists_the_choices():
    message = error_of({"ingest": {"source": "ftp"}})
    assert "ingest.source='ftp'" in message
    assert "'synthetic'" in message and "'file'" in message and "'http'" in message


def test_http_download_needs_sha256():
    url = "http://127.0.0.1/scene.tif"
    message = error_of({"ingest": {"source": "http", "url": url, "fetch": "download"}})
    assert "ingest.fetch 'download' needs ingest.sha256" in message
    assert "{" not in message, "a cross-key check does not dump the whole section"


def test_http_source_needs_an_http_url():
    message = error_of({"ingest": {"source": "http", "url": "ftp://host/a.tif", "sha256": SHA}})
    assert "ftp://host/a.tif" in message


@pytest.mark.parametrize("bad", ["xyz", "a" * 63, "g" * 64])
def test_sha256_must_be_64_hex_characters(bad):
    message = error_of({"ingest": {"sha256": bad}})
    assert f"ingest.sha256={bad!r}" in message
    assert "64 hexadecimal" in message


def test_sha256_is_normalised_to_lower_case():
    assert IngestParams(sha256="AB" * 32).sha256 == "ab" * 32


@pytest.mark.parametrize("bad", ["yesterday", "2024-13-01T00:00:00Z", "15/07/2024"])
def test_bad_acquisition_time(bad):
    message = error_of({"ingest": {"acquisition_time": bad}})
    assert f"ingest.acquisition_time={bad!r}" in message
    assert "ISO 8601" in message


def test_file_source_needs_a_path():
    message = error_of({"ingest": {"source": "file"}})
    assert "ingest.path" in message


def test_list_item_error_shows_the_item():
    assert "features.bands.0='a'" in error_of({"features": {"bands": ["a"]}})


def test_threshold_order_is_checked():
    message = error_of({"health": {"psi_warning": 0.5, "psi_critical": 0.1}})
    assert "health" in message and "psi" in message and "0.5 > 0.1" in message


def test_params_must_be_a_mapping():
    assert "mapping" in error_of([1, 2])


def test_params_are_frozen():
    params = Params()
    with pytest.raises(ValueError):
        params.tile.size = 512  # type: ignore[misc]


def test_defaults():
    params = Params()
    assert params.ingest.source == "synthetic"
    assert params.ingest.path is None and params.ingest.url is None
    assert params.ingest.sha256 is None and params.ingest.acquisition_time is None
    assert params.tile.size == 256
    assert params.tile.stride is None
    assert params.tile.step == 256


def test_stride_defaults_to_size_and_can_differ():
    assert TileParams(size=128).step == 128
    assert TileParams(size=128, stride=64).step == 64


def test_empty_file_means_defaults(tmp_path: Path):
    path = tmp_path / "params.yaml"
    path.write_text("")
    assert load_params(path) == Params()


def test_committed_params_yaml_loads_and_has_the_contract_keys(repo_root: Path):
    path = repo_root / "params.yaml"
    params = load_params(path)
    text = path.read_text()
    for key in ("source:", "path:", "url:", "sha256:", "acquisition_time:", "size:", "stride:"):
        assert key in text, f"params.yaml lacks {key} (dvc exp run -S needs it present)"
    assert params.ingest.source in ("synthetic", "file", "http")
    assert params.tile.size >= 8


def test_load_params_names_the_file_and_key(tmp_path: Path):
    path = tmp_path / "params.yaml"
    path.write_text("tile:\n  sise: 512\n")
    with pytest.raises(ParamsError, match=r"params\.yaml: unknown key 'tile\.sise'") as info:
        load_params(path)
    assert str(path) in str(info.value)


def test_missing_params_file(tmp_path: Path):
    with pytest.raises(ParamsError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")


def test_invalid_yaml(tmp_path: Path):
    path = tmp_path / "params.yaml"
    path.write_text("tile: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(path)


# --- nested sections: every key spelt out, all at default = unset ------------------------------

NESTED_DEFAULTS = {
    ("ingest", "labels"): {
        "path": None,
        "url": None,
        "sha256": None,
        "asset": None,
        "classes": None,
    },
    ("ingest", "stac"): {
        "item": None,
        "assets": None,
        "resampling": "nearest",
        "aoi": {"bbox": None, "crs": "EPSG:4326", "geojson": None},
        "pixels_sha256": None,
    },
    ("train", "onnx"): {
        "path": None,
        "input": "features",
        "features": None,
        "classes": None,
        "batch": 256,
        "bands": None,
        "size": None,
        "output": "tile",
        "scores": "probabilities",
        "scale": None,
        "offset": None,
        "mean": None,
        "std": None,
        "provider": "cpu",
    },
}


def committed(repo_root: Path) -> dict:
    return yaml.safe_load((repo_root / "params.yaml").read_text())


def test_committed_params_yaml_spells_out_every_nested_key(repo_root: Path):
    data = committed(repo_root)
    for (section, key), defaults in NESTED_DEFAULTS.items():
        assert data[section][key] == defaults, f"{section}.{key} (dvc exp run -S needs each key)"


@pytest.mark.parametrize(("section", "key"), sorted(NESTED_DEFAULTS))
def test_nested_section_with_every_key_at_default_is_unset(section: str, key: str):
    spelt_out = parse_params({section: {key: NESTED_DEFAULTS[section, key]}})
    assert getattr(getattr(spelt_out, section), key) is None
    assert spelt_out == parse_params({section: {key: None}}) == Params()


def test_committed_params_yaml_validates_as_the_null_sections_did(repo_root: Path):
    data = committed(repo_root)
    params = parse_params(data)
    assert params.ingest.labels is None and params.ingest.stac is None
    assert params.train.onnx is None
    nulled = {**data, "ingest": {**data["ingest"], "labels": None, "stac": None}}
    nulled["train"] = {**data["train"], "onnx": None}
    assert params == parse_params(nulled)
    assert params.model_dump() == parse_params(nulled).model_dump()


def with_keys(section: str, key: str, **values: object) -> dict:
    """A params mapping whose nested section spells out every key, with ``values`` set."""
    return {section: {key: {**NESTED_DEFAULTS[section, key], **values}}}


def test_one_onnx_key_sets_the_section_and_names_the_missing_one():
    assert error_of(with_keys("train", "onnx", path="m.onnx")).endswith(
        "train.onnx.classes is missing"
    )


def test_onnx_keys_set_one_at_a_time_equal_the_compact_mapping():
    spelt_out = parse_params(with_keys("train", "onnx", path="m.onnx", classes=["dark", "bright"]))
    compact = parse_params({"train": {"onnx": {"path": "m.onnx", "classes": ["dark", "bright"]}}})
    assert spelt_out == compact
    onnx = spelt_out.train.onnx
    assert onnx is not None and onnx.input == "features" and onnx.batch == 256 and onnx.size is None


def test_stac_keys_set_one_at_a_time_leave_the_aoi_unset():
    data = with_keys("ingest", "stac", item="item.json", assets=["red", "nir"])
    data["ingest"]["source"] = "stac"
    stac = parse_params(data).ingest.stac
    assert stac is not None and stac.aoi is None and stac.resampling == "nearest"
    assert (
        stac
        == parse_params(
            {"ingest": {"source": "stac", "stac": {"item": "item.json", "assets": ["red", "nir"]}}}
        ).ingest.stac
    )


def test_one_aoi_key_sets_the_aoi_with_the_default_crs():
    aoi = {"bbox": [13.3, 52.45, 13.4, 52.52], "crs": "EPSG:4326", "geojson": None}
    data = with_keys("ingest", "stac", item="item.json", assets=["red"], aoi=aoi)
    data["ingest"]["source"] = "stac"
    got = parse_params(data).ingest.stac
    assert got is not None and got.aoi is not None
    assert got.aoi.bbox == aoi["bbox"] and got.aoi.crs == "EPSG:4326"


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"item": None, "assets": ["red"]}, "ingest.stac.item is missing"),
        ({"item": "item.json", "assets": None}, "ingest.stac.assets is missing"),
        ({}, "source 'stac' needs ingest.stac.item and ingest.stac.assets"),
    ],
)
def test_stac_source_names_the_missing_key(values: dict, fragment: str):
    data = with_keys("ingest", "stac", **values)
    data["ingest"]["source"] = "stac"
    assert fragment in error_of(data)


def test_labels_with_only_classes_still_need_a_raster_for_a_file_scene():
    data = with_keys("ingest", "labels", classes={"bright": [8], "dark": [4]})
    data["ingest"].update(source="file", path="scene.tif")
    assert "ingest.labels needs a path or a url" in error_of(data)
    data["ingest"]["labels"]["url"] = "https://example.org/scl.tif"
    assert "ingest.labels.url needs ingest.labels.sha256" in error_of(data)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        (with_keys("train", "onnx", pth="m.onnx"), "train.onnx.pth"),
        (with_keys("train", "onnx", pth=None), "train.onnx.pth"),
        (with_keys("train", "onnx", path="m.onnx", clases=["a", "b"]), "train.onnx.clases"),
        (with_keys("ingest", "labels", asset_key="scl"), "ingest.labels.asset_key"),
    ],
)
def test_unknown_nested_key_is_named_even_beside_a_missing_one(data: dict, key: str):
    message = error_of(data)
    assert f"unknown key {key!r}" in message
    assert "path" in message and "classes" in message  # what was expected


def test_unknown_aoi_key_is_named():
    aoi = {"bbox": None, "crs": "EPSG:4326", "geojson": None, "bboxx": [0, 0, 1, 1]}
    data = with_keys("ingest", "stac", item="item.json", assets=["red"], aoi=aoi)
    data["ingest"]["source"] = "stac"
    assert "unknown key 'ingest.stac.aoi.bboxx'" in error_of(data)


def test_scene_items_take_partial_or_spelt_out_nested_sections():
    stac = NESTED_DEFAULTS["ingest", "stac"]
    ingest = parse_params(
        {
            "ingest": {
                "scenes": [
                    {"source": "stac", "stac": {**stac, "item": "a.json", "assets": ["red"]}},
                    {"source": "stac", "stac": {"item": "b.json", "assets": ["red"]}},
                    {"source": "synthetic", "labels": NESTED_DEFAULTS["ingest", "labels"]},
                    {"source": "synthetic", "seed": 7, "stac": stac},
                ]
            }
        }
    ).ingest
    a, b, c, d = ingest.scene_list()
    assert a.stac is not None and b.stac is not None and a.stac.aoi is None
    assert a.stac.model_dump() == {**b.stac.model_dump(), "item": "a.json"}
    assert c.labels is None and d.stac is None
