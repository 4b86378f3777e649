"""Many scenes through the stages: roles, ids, per-scene outputs, skipping, drift per scene."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from rasterio.transform import from_origin

from satpipe.core.files import read_json
from satpipe.tiles.index import in_training_subset
from tests.headlines import check_headlines
from tests.helpers import REPO, STAGES, indexed_tile, run_stages, stage


def _stage(name: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return stage(name, *args, cwd=cwd)


def _params(tmp: Path, ingest: dict, **sections: dict) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["ingest"].update(ingest)
    params["tile"]["size"] = 64
    params["engine"]["workers"] = 2
    for name, values in sections.items():
        params[name].update(values)
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))


def _run_all(tmp: Path) -> None:
    run_stages(tmp)


def _write_bright(path: Path) -> Path:
    """A 4-band uint16 scene in EPSG:4326 (not the synthetic scenes' UTM), far brighter."""
    rng = np.random.default_rng(5)
    data = rng.integers(8000, 9000, size=(4, 161, 197)).astype(np.uint16)
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff",
        "width": 197,
        "height": 161,
        "count": 4,
        "dtype": "uint16",
        "nodata": 0,
        "crs": "EPSG:4326",
        "transform": from_origin(13.0, 53.2, 0.0001, 0.0001),
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        dst.update_tags(ACQUISITION_TIME="2024-06-01T10:30:21Z")
    return path


@pytest.fixture
def bright_scene(tmp_path: Path) -> Path:
    """The bright scene in this test's directory."""
    return _write_bright(tmp_path / "inputs/bright.tif")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three scenes (two synthetic, one bright file) through every stage, once per module."""
    root = tmp_path_factory.mktemp("multiscene")
    _write_bright(root / "inputs/bright.tif")
    scenes = [
        {"source": "synthetic", "seed": 1, "width": 331, "height": 263, "role": "train"},
        {"source": "synthetic", "seed": 2, "width": 300, "height": 300, "role": "both"},
        {"source": "file", "path": "inputs/bright.tif", "role": "infer", "id": "bright"},
    ]
    _params(root, {"scenes": scenes})
    _run_all(root)
    return root


@pytest.mark.slow  # the module's pipeline: every stage, three scenes
def test_each_scene_is_written_under_its_id(pipeline: Path) -> None:
    manifest = read_json(pipeline / "scenes.json")["scenes"]
    assert [(s["id"], s["role"]) for s in manifest] == [
        ("synthetic-1", "train"),
        ("synthetic-2", "both"),
        ("bright", "infer"),
    ]
    assert sorted(p.name for p in (pipeline / "scenes").iterdir()) == sorted(
        f"{sid}.{ext}"
        for sid in ("synthetic-1", "synthetic-2", "bright")
        for ext in ("tif", "json", "preview.tif", "labels.tif")
        if (sid, ext) != ("bright", "labels.tif")  # a file scene without labels
    )
    assert read_json(pipeline / "reports/ingest.json") == {
        "scenes_ingested": 3,
        "scenes_skipped": 0,
        "skipped": [],
    }
    index = read_json(pipeline / "index.json")
    assert index["scenes"]["bright"]["crs"] == "EPSG:4326"
    assert index["scenes"]["synthetic-1"]["crs"] == "EPSG:32633"
    for tile in index["tiles"]:
        assert tile["id"].startswith(f"{tile['scene']}/r")
        assert tile["file"] == f"{tile['id']}.tif"
        assert tile["pack"] == f"{tile['scene']}.zip"
        assert indexed_tile(pipeline / "tiles", tile)[:4] in (b"II*\x00", b"MM\x00*")  # a TIFF
    counts = {sid: sum(t["scene"] == sid for t in index["tiles"]) for sid in index["scenes"]}
    assert counts == {sid: s["tiles"] for sid, s in index["scenes"].items()}
    # Full 64-pixel grids: 331x263 -> 5x4, 300x300 -> 4x4, 197x161 -> 3x2 (the synthetic nodata
    # corner covers under half of the corner tile at these sizes, so nothing is skipped).
    assert counts == {"synthetic-1": 5 * 4, "synthetic-2": 4 * 4, "bright": 3 * 2}


@pytest.mark.slow  # the module's pipeline: every stage, three scenes
def test_roles_decide_training_and_inference(pipeline: Path) -> None:
    index = read_json(pipeline / "index.json")
    model = read_json(pipeline / "model.json")
    preds = read_json(pipeline / "predictions.json")["predictions"]
    tp = model["training"]["params"]
    expected_train = [
        t
        for t in index["tiles"]
        if t["scene"] == "synthetic-1"
        or (t["scene"] == "synthetic-2" and in_training_subset(t["id"], tp["seed"], tp["fraction"]))
    ]
    assert model["training"]["tiles"] == len(expected_train)
    assert model["model"]["threshold"] == pytest.approx(
        np.mean([t["mean_intensity"] for t in expected_train])
    )
    assert model["training"]["scenes"]["bright"]["tiles"] == 0
    assert {p["scene"] for p in preds} == {"synthetic-2", "bright"}
    assert len(preds) == sum(t["scene"] != "synthetic-1" for t in index["tiles"])


@pytest.mark.slow  # the module's pipeline: every stage, three scenes
def test_footprints_use_each_scenes_crs(pipeline: Path) -> None:
    features = read_json(pipeline / "predictions.geojson")["features"]
    for feature in features:
        lon, lat = feature["geometry"]["coordinates"][0][0]
        scene = feature["properties"]["scene"]
        if scene == "bright":
            assert 13.0 <= lon <= 13.02 and 53.18 <= lat <= 53.2
        else:  # UTM 33N near x=400 km, y=5900 km
            assert 13.4 < lon < 13.6 and 53.2 < lat < 53.3


@pytest.mark.slow  # the module's pipeline: every stage, three scenes
def test_health_flags_the_drifting_scene(pipeline: Path) -> None:
    health = read_json(pipeline / "reports/health.json")
    assert set(health["scenes"]) == {"synthetic-2", "bright"}
    assert health["scenes"]["bright"]["status"] == "critical"
    assert health["scenes"]["bright"]["figures"]["mean_shift_std"] > 2.0
    assert health["scenes_by_status"]["critical"] >= 1
    assert health["status"] in {"warning", "critical"}
    assert health["compared"] == "tiles not used for training"
    assert health["figures"]["tiles_compared"] == sum(
        s["figures"]["tiles_compared"] for s in health["scenes"].values()
    )


@pytest.mark.slow  # the module's pipeline: every stage, three scenes
def test_metrics_files_are_the_reports_headlines(pipeline: Path) -> None:
    """Per-scene detail lives in the reports; the metrics files stay a few flat figures."""
    figures = check_headlines(
        lambda name: pipeline / f"{name}.json", lambda name: pipeline / f"reports/{name}.json"
    )
    assert figures == 10


def test_invalid_scene_fails_naming_it_or_is_skipped(tmp_path: Path, bright_scene: Path) -> None:
    (tmp_path / "inputs" / "junk.tif").write_bytes(b"not a tiff")
    scenes = [
        {"source": "synthetic", "seed": 3, "width": 200, "height": 150},
        {"source": "file", "path": "inputs/junk.tif"},
    ]
    _params(tmp_path, {"scenes": scenes})
    result = _stage("ingest", STAGES[0][1], tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: scene 'junk': inputs/junk.tif")
    assert not (tmp_path / "scenes").exists()

    _params(tmp_path, {"scenes": scenes, "skip_invalid": True})
    result = _stage("ingest", STAGES[0][1], tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = read_json(tmp_path / "reports/ingest.json")
    assert metrics["scenes_ingested"] == 1 and metrics["scenes_skipped"] == 1
    assert metrics["skipped"][0]["id"] == "junk"
    assert "NotGeoTIFFError" in metrics["skipped"][0]["reason"]
    # the metrics file counts them; the reasons (a list) are the report's alone
    assert read_json(tmp_path / "ingest.json") == {"scenes_ingested": 1, "scenes_skipped": 1}
    assert [s["id"] for s in read_json(tmp_path / "scenes.json")["scenes"]] == ["synthetic-3"]


def test_duplicate_ids_and_no_inference_scene_are_clear_errors(tmp_path: Path) -> None:
    _params(tmp_path, {"scenes": [{"seed": 4}, {"seed": 4, "width": 99}]})
    result = _stage("ingest", STAGES[0][1], tmp_path)
    assert result.returncode == 1
    assert "share the id 'synthetic-4'" in result.stderr
    _params(tmp_path, {"scenes": [{"seed": 4, "width": 200, "height": 150, "role": "train"}]})
    for name, args in STAGES[:3]:
        assert _stage(name, args, tmp_path).returncode == 0
    result = _stage(*next(s for s in STAGES if s[0] == "batch_infer"), tmp_path)
    assert result.returncode == 1
    assert "no scene has the role 'infer' or 'both'" in result.stderr


@pytest.mark.slow  # the module's pipeline: every stage, three scenes
def test_evaluation_and_maps_per_scene(pipeline: Path) -> None:
    ev = read_json(pipeline / "reports/evaluate.json")
    scenes = ev["scenes"]
    # synthetic-1 trains (no inference), synthetic-2 is split, bright is unlabelled inference.
    assert set(scenes) == {"synthetic-2", "bright"}
    bright = scenes["bright"]["counts"]
    assert (
        bright["tiles_without_reference"] == bright["tiles_held_out"] == bright["tiles_predicted"]
    )
    assert scenes["bright"]["accuracy"] is None and scenes["bright"]["tiles"] == 0
    s2 = scenes["synthetic-2"]["counts"]
    assert s2["tiles_used_for_training"] > 0 and s2["tiles_with_reference"] > 0
    assert ev["evaluated"] is True
    assert ev["overall"]["tiles"] == s2["tiles_with_reference"]
    rows = read_json(pipeline / "plots/confusion.json")
    assert len(rows) == ev["overall"]["tiles"]
    assert {r["scene"] for r in rows} == {"synthetic-2"}
    maps = sorted(p.name for p in (pipeline / "maps").iterdir())
    assert maps == sorted(
        f"{sid}.{ext}"
        for sid in ("synthetic-2", "bright")
        for ext in ("classes.tif", "classes.tif.aux.xml", "scores.tif")
    )
    assert sorted(p.name for p in (pipeline / "quicklook").iterdir()) == [
        "bright.png",
        "synthetic-2.png",
    ]
