"""params.yaml validation: unknown keys, out-of-range values and wrong types name the dotted key."""

from __future__ import annotations

from pathlib import Path

import pytest

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
