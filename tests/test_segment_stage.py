"""The segment stage with an ONNX segmentation network, and its bad inputs, through the stages.

A stand-in UNet-like graph (3x3 convolutions, ``(N, 4, H, W)`` float32 in, ``(N, 4, H, W)``
logits out; :func:`tests.onnx_models.segment_graph`) takes the synthetic scene's bands by common
name, scaled to reflectance and normalised per band, exactly as a segmentation_models_pytorch
export is declared. Each failure is one line on stderr, exit code 1, and no output directory.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml

from satpipe.core.files import read_json
from tests.helpers import REPO, run_stages, stage
from tests.onnx_models import segment_graph

pytestmark = pytest.mark.slow

SEGMENT = ["model.json", "scenes.json", "scenes", "segments", "reports/segment.json"]


def _params(tmp: Path, onnx: dict, segment: dict | None = None) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["ingest"].update(width=301, height=259, seed=7)
    params["tile"]["size"] = 64
    params["engine"]["workers"] = 1
    params["train"]["model"] = "onnx"
    declared = {
        "path": "seg.onnx",
        "input": "pixels",
        "output": "pixels",
        "bands": ["blue", "green", "red", "nir"],
        "scores": "logits",
        "scale": [0.0001] * 4,
        "offset": [0.0] * 4,
        "mean": [0.1, 0.1, 0.1, 0.3],
        "std": [0.2, 0.2, 0.2, 0.2],
    }
    params["train"]["onnx"].update({**declared, **onnx})
    params["segment"].update(segment or {})
    (tmp / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def onnx_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("onnxseg")
    segment_graph(tmp / "seg.onnx", 4, 4, layers=3)
    _params(tmp, {}, {"window": 128, "overlap": 32, "batch": 4})
    run_stages(tmp)
    return tmp


def test_onnx_network_segments_every_scene_pixel(onnx_run: Path) -> None:
    index = read_json(onnx_run / "segments/index.json")
    assert index["output"] == "pixels" and [s["id"] for s in index["scenes"]] == ["synthetic-7"]
    with rasterio.open(onnx_run / "segments/synthetic-7.class.tif") as src:
        assert (src.width, src.height) == (301, 259)
        classes = src.read(1)
        tags = src.tags()
    assert set(np.unique(classes).tolist()) <= {0, 1, 2, 3, 255}
    assert tags["WINDOW"] == "128" and tags["BATCH"] == "4"
    assert "ONNXRUNTIME" in "".join(tags).upper()
    with rasterio.open(onnx_run / "scenes/synthetic-7.tif") as scene:
        nodata = ~scene.read_masks(1).astype(bool)
    assert np.array_equal(classes == 255, nodata)  # nodata in, nodata out; nothing else
    metrics = read_json(onnx_run / "evaluate.json")
    assert "miou" in metrics and metrics["eval_pixels"] > 0  # judged, however badly


def test_same_bytes_with_two_workers_and_another_split(onnx_run: Path, tmp_path: Path) -> None:
    """Two workers give the class raster one worker gave, byte for byte."""
    params = yaml.safe_load((onnx_run / "params.yaml").read_text())
    params["engine"]["workers"] = 2
    (onnx_run / "params2.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = ["model.json", "scenes.json", "scenes", str(tmp_path / "seg2"), str(tmp_path / "r.json")]
    result = stage("segment", *out, "--params", "params2.yaml", cwd=onnx_run)
    assert result.returncode == 0, result.stderr
    for name in ("synthetic-7.class.tif", "synthetic-7.probability.tif", "synthetic-7.json"):
        a = hashlib.sha256((onnx_run / "segments" / name).read_bytes()).hexdigest()
        b = hashlib.sha256((tmp_path / "seg2" / name).read_bytes()).hexdigest()
        assert a == b, name


def _fails(tmp: Path, name: str, *args: str) -> str:
    result = stage(name, *args, cwd=tmp)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_a_changed_onnx_file_is_refused(onnx_run: Path, tmp_path: Path) -> None:
    for name in ("model.json", "scenes.json", "params.yaml"):
        (tmp_path / name).write_bytes((onnx_run / name).read_bytes())
    (tmp_path / "scenes").symlink_to(onnx_run / "scenes")
    data = (onnx_run / "seg.onnx").read_bytes()
    (tmp_path / "seg.onnx").write_bytes(data[: len(data) // 2])  # truncated
    line = _fails(tmp_path, "segment", *SEGMENT)
    assert "seg.onnx" in line and "sha256" in line
    assert not (tmp_path / "segments").exists()


@pytest.mark.parametrize(
    ("onnx", "expected"),
    [
        ({"bands": ["blue", "green", "red", "swir16"]}, "'swir16'"),
        ({"mean": [0.1, 0.1]}, "mean"),
    ],
)
def test_bad_declarations_fail_in_one_line(
    onnx_run: Path, tmp_path: Path, onnx: dict, expected: str
) -> None:
    for name in ("scenes.json", "index.json", "seg.onnx"):
        (tmp_path / name).write_bytes((onnx_run / name).read_bytes())
    (tmp_path / "scenes").symlink_to(onnx_run / "scenes")
    _params(tmp_path, onnx)
    line = _fails(
        tmp_path, "train", "index.json", "model.json", "t.json", "r.json", "--scenes", "scenes"
    )
    assert expected in line
    assert not (tmp_path / "model.json").exists()


def test_a_window_larger_than_the_scene_is_padded(onnx_run: Path, tmp_path: Path) -> None:
    params = yaml.safe_load((onnx_run / "params.yaml").read_text())
    params["segment"].update(window=512, overlap=0)
    (onnx_run / "params3.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = ["model.json", "scenes.json", "scenes", str(tmp_path / "s"), str(tmp_path / "r.json")]
    result = stage("segment", *out, "--params", "params3.yaml", cwd=onnx_run)
    assert result.returncode == 0, result.stderr
    with rasterio.open(tmp_path / "s/synthetic-7.class.tif") as src:
        assert (src.width, src.height) == (301, 259)
