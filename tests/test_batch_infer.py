"""Batch inference and health through the stage entry points, on a small fixture scene."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from satpipe.core.files import read_json
from tests import onnx_models
from tests.helpers import REPO, indexed_tile, overwrite_indexed_tile, stage


@pytest.fixture
def workdir(make_raster, tmp_path: Path) -> Path:
    """A directory holding params.yaml and a tiled, trained 211x157 4-band scene."""

    def pattern(count: int, height: int, width: int) -> np.ndarray:
        rng = np.random.default_rng(7)
        return rng.integers(100, 5000, size=(count, height, width)).astype(np.uint16)

    scene = make_raster("input.tif", count=4, width=211, height=157, nodata=0, data=pattern)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["ingest"].update(source="file", path=str(scene))
    params["tile"]["size"] = 32
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    for name, args in [
        ("ingest", ["scenes", "scenes.json", "ingest_metrics.json", "ingest_report.json"]),
        ("tile", ["scenes", "scenes.json", "tiles", "index.json", "tile_metrics.json", "t.json"]),
        ("train", ["index.json", "model.json", "train_metrics.json", "train_report.json"]),
    ]:
        result = stage(name, *args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    return tmp_path


def _infer(workdir: Path) -> subprocess.CompletedProcess:
    return stage(
        "batch_infer",
        "model.json",
        "index.json",
        "tiles",
        "predictions.json",
        "predictions.geojson",
        "--run-record",
        "runs/record.json",
        cwd=workdir,
    )


def _use_pixel_model(workdir: Path) -> None:
    """Retrain as an ONNX model of the tiles' pixels, which batch inference reads and checks.

    (A model of the index's features takes them from the index and reads no tile.)
    """
    onnx_models.pixel_mean_graph(workdir / "pixel_mean.onnx", bands=4, size=32, threshold=2500.0)
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["train"]["model"] = "onnx"
    params["train"]["onnx"].update(
        path="pixel_mean.onnx", input="pixels", classes=["dark", "bright"], batch=64
    )
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    args = ["index.json", "model.json", "train_metrics.json", "train_report.json"]
    result = stage("train", *args, cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert read_json(workdir / "model.json")["kind"] == "onnx"


def test_predictions_cover_every_tile(workdir: Path) -> None:
    result = _infer(workdir)
    assert result.returncode == 0, result.stderr
    index = read_json(workdir / "index.json")
    preds = read_json(workdir / "predictions.json")
    model = read_json(workdir / "model.json")
    meta = preds["metadata"]
    assert meta["tiles_inferred"] == index["tile_count"] == len(preds["predictions"]) == 24
    assert meta["tiles_failed"] == 0 and meta["failed"] == []
    assert meta["model"]["version"] == model["version"]
    counts = meta["monitoring"]["prediction_counts"]
    assert sum(counts.values()) == 24
    by_id = {t["id"]: t for t in index["tiles"]}
    for pred in preds["predictions"]:
        tile = by_id[pred["id"]]
        assert pred["features"] == {"mean_intensity": tile["mean_intensity"]}
        threshold = model["model"]["threshold"]
        expected = "bright" if tile["features"]["mean_intensity"] > threshold else "dark"
        assert pred["score"] == tile["mean_intensity"] - threshold
        assert pred["prediction"] == expected
        assert pred["window"] == tile["window"] and pred["bounds"] == tile["bounds"]
    geo = read_json(workdir / "predictions.geojson")
    assert geo["type"] == "FeatureCollection" and len(geo["features"]) == 24
    ring = geo["features"][0]["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1]
    lon, lat = ring[0]
    assert 13.0 < lon < 14.0 and 53.0 < lat < 53.3  # UTM 33N near x=400 km, y=5900 km
    # Timings only in the untracked run record, never in tracked outputs.
    record = read_json(workdir / "runs" / "record.json")
    assert {"tiles_per_second", "latency_ms", "finished_at"} <= set(record)
    assert "latency" not in json.dumps(preds) and "seconds" not in json.dumps(preds)


def _tamper_first_two(workdir: Path) -> None:
    """Overwrite the first tile with garbage and flip the last byte of the second."""
    index = read_json(workdir / "index.json")
    garbage = b"not a tiff at all".ljust(index["tiles"][0]["length"], b"!")
    overwrite_indexed_tile(workdir / "tiles", index["tiles"][0], garbage)
    blob = bytearray(indexed_tile(workdir / "tiles", index["tiles"][1]))
    blob[-1] ^= 0xFF
    overwrite_indexed_tile(workdir / "tiles", index["tiles"][1], bytes(blob))


def test_a_feature_model_trusts_the_index_and_reads_no_tile(workdir: Path) -> None:
    """The threshold model's features come from the index: tampered tiles are not read."""
    assert _infer(workdir).returncode == 0
    before = (workdir / "predictions.json").read_bytes()
    _tamper_first_two(workdir)
    result = _infer(workdir)
    assert result.returncode == 0, result.stderr
    assert (workdir / "predictions.json").read_bytes() == before


def test_unreadable_and_tampered_tiles_are_recorded(workdir: Path) -> None:
    _use_pixel_model(workdir)
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["batch_infer"]["max_failed_fraction"] = 0.1
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    index = read_json(workdir / "index.json")
    first, second = index["tiles"][0]["file"], index["tiles"][1]["file"]
    _tamper_first_two(workdir)
    result = _infer(workdir)
    assert result.returncode == 0, result.stderr
    meta = read_json(workdir / "predictions.json")["metadata"]
    assert meta["tiles_failed"] == 2 and meta["tiles_inferred"] == 22
    errors = {f["path"]: f["error"] for f in meta["failed"]}
    assert "sha256" in errors[first] or "not a TIFF" in errors[first]
    assert "the tile index says" in errors[second]
    assert all(f["path"] in f["error"] for f in meta["failed"])


def test_too_many_failures_fail_the_stage_cleanly(workdir: Path) -> None:
    _use_pixel_model(workdir)
    index = read_json(workdir / "index.json")
    with open(workdir / "tiles" / index["tiles"][-3]["pack"], "r+b") as pack:
        pack.truncate(index["tiles"][-3]["offset"] + 7)  # the last three tiles cut off
    result = _infer(workdir)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: tiles: 3 of 24 tiles failed (12.5%)")
    for tile in index["tiles"][-3:]:  # each named by its GDAL path in its pack
        assert f"/vsizip/tiles/{tile['pack']}/{tile['file']}: tile pack is " in result.stderr
    assert "Traceback" not in result.stderr
    assert not (workdir / "predictions.json").exists()


def test_health_report_on_held_out_tiles(workdir: Path) -> None:
    assert _infer(workdir).returncode == 0
    result = stage("health", "model.json", "predictions.json", "m.json", "health.json", cwd=workdir)
    assert result.returncode == 0, result.stderr
    health = read_json(workdir / "health.json")
    model = read_json(workdir / "model.json")
    assert health["status"] in {"healthy", "insufficient data", "warning", "critical"}
    assert health["compared"] == "tiles not used for training"
    assert health["figures"]["tiles_compared"] == model["training"]["tiles_held_out"]
    assert health["thresholds"]["psi_critical"] == 0.25
    assert health["recommendations"]
    # The metrics file (m.json) is the report's headline: the status, no threshold (a param).
    assert read_json(workdir / "m.json") == {"health": health["status"]}
