"""A segmentation experiment end to end through DVC, as the README runs it on the default scene.

``dvc exp run -S train.model=pixel_logistic`` on a fresh clone trains the per-pixel kind on the
synthetic scene's own four surfaces, segments the scene whole, judges it per held-out pixel, and
draws it; ``dvc exp show``, ``dvc metrics diff`` and ``dvc plots show`` see the result.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio

from satpipe.core.files import read_json
from tests.helpers import clone_working_tree, run

pytestmark = pytest.mark.slow

CLASSES = ("water", "vegetation", "soil", "cloud")


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh clone after the README's segmentation experiment."""
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    dest = clone_working_tree(tmp_path_factory.mktemp("seg") / "repo")
    run(["dvc", "exp", "run", "-S", "train.model=pixel_logistic", "--name", "seg"], cwd=dest)
    return dest


def test_pixel_metrics_rank_the_experiment(experiment: Path) -> None:
    metrics = read_json(experiment / "data/metrics/evaluate.json")
    assert set(metrics) == {
        "miou",
        "pixel_accuracy",
        "kappa",
        "eval_pixels",
        *(f"iou_{c}" for c in CLASSES),
    }
    assert metrics["miou"] > 0.85 and metrics["kappa"] > 0.9, metrics
    rows = list(
        csv.DictReader(io.StringIO(run(["dvc", "exp", "show", "--csv"], experiment).stdout))
    )
    seg = next(r for r in rows if r["Experiment"] == "seg")
    assert float(seg["miou"]) == metrics["miou"]
    diff = run(["dvc", "metrics", "diff", "HEAD"], cwd=experiment).stdout
    assert "miou" in diff and "bal_acc" in diff  # the new ranking figure, and the tile one gone
    report = read_json(experiment / "data/reports/evaluate.json")
    assert report["overall"]["confusion"]["classes"] == list(CLASSES)


def test_class_cog_is_styled_and_its_overviews_hold_classes(experiment: Path) -> None:
    path = experiment / "data/segments/synthetic-42.class.tif"
    model = read_json(experiment / "data/model.json")
    with rasterio.open(path) as src:
        assert src.dtypes[0] == "uint8" and src.nodata == 255
        assert src.colormap(1)[0][:3] == (0x1F, 0x78, 0xB4)  # water, as params.yaml declares
        assert src.tags()["MODEL_VERSION"] == model["version"]
        assert src.tags()["WINDOW"] == "256" and src.tags()["OVERLAP"] == "64"
        levels = len(src.overviews(1))
    assert levels >= 1
    for level in range(levels):
        with rasterio.open(path, overview_level=level) as ov:
            assert set(np.unique(ov.read(1)).tolist()) <= {0, 1, 2, 3, 255}


def test_plots_and_pictures_render(experiment: Path, tmp_path: Path) -> None:
    run(["dvc", "plots", "show", "-o", str(tmp_path / "out")], cwd=experiment)
    html = (tmp_path / "out/index.html").read_text()
    assert '"pixels"' in html and '"iou"' in html
    static = sorted(p.name for p in (tmp_path / "out/static").iterdir())
    assert static == [
        "workspace_data_quicklook_synthetic-42.classes.png",
        "workspace_data_quicklook_synthetic-42.errors.png",
        "workspace_data_quicklook_synthetic-42.png",
    ]


def test_health_watches_the_masks(experiment: Path) -> None:
    report = read_json(experiment / "data/reports/health.json")
    checks = report["masks"]["checks"]
    assert {"class_shift", "seam", "psi"} <= set(checks)
    # a pointwise model scores each pixel once: no window overlaps, nothing to disagree
    assert checks["seam"]["value"] is None and checks["seam"]["status"] == "healthy"
    assert report["status"] == "healthy"
    summary = json.loads((experiment / "data/segments/synthetic-42.json").read_text())
    assert summary["valid_pixels"] > 0


def test_rerun_is_a_no_op(experiment: Path) -> None:
    assert "Running stage" not in run(["dvc", "repro"], cwd=experiment).stdout
