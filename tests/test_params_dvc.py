"""``dvc exp run -S`` switches a nested section's keys one at a time (issue 20, bug 3).

DVC applies ``-S`` overrides with Hydra in struct mode: a key that ``params.yaml`` lacks is
refused ("Key 'path' is not in struct"). With ``train.onnx: null`` no ``-S train.onnx.path=...``
could work, and after one ``-S 'train.onnx={path: ..., input: pixels}'`` had written a mapping,
a second one adding ``features`` failed the same way. Each test queues experiments in a small git
and DVC repository holding this ``params.yaml`` and ``dvc.yaml``: ``dvc exp run --queue`` writes
the overrides into ``params.yaml`` and commits them to the queue's stash before any stage runs,
so the test reads what DVC wrote and validates it, without running the pipeline.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from satpipe.core.params import IngestParams, OnnxParams, parse_params
from tests.helpers import REPO, output, run


@pytest.fixture
def dvc_repo(tmp_path: Path) -> Path:
    """A git and DVC repository holding this ``params.yaml`` and ``dvc.yaml``, committed."""
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy2(REPO / name, repo / name)
    run(["git", "init", "--quiet"], repo)
    run(["dvc", "init", "--quiet"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "--quiet", "-m", "params"], repo)
    return repo


def queue(repo: Path, *overrides: str) -> str:
    """Queue an experiment with ``-S`` overrides; the ``params.yaml`` text DVC wrote for it."""
    run(["dvc", "exp", "run", "--queue", *(a for o in overrides for a in ("-S", o))], repo)
    return output(["git", "show", "refs/exps/celery/stash:params.yaml"], repo)


def test_onnx_keys_are_set_one_at_a_time(dvc_repo: Path):
    text = queue(
        dvc_repo,
        "train.model=onnx",
        "train.onnx.path=models/x.onnx",
        "train.onnx.input=pixels",
        "train.onnx.classes=[dark,bright]",
        "train.onnx.bands=4",
    )
    params = parse_params(yaml.safe_load(text))
    assert params.train.model == "onnx"
    assert params.train.onnx == OnnxParams(
        path="models/x.onnx", input="pixels", classes=["dark", "bright"], bands=4
    )
    # The second run: the first run's params in the workspace, then keys it did not set.
    (dvc_repo / "params.yaml").write_text(text)
    text = queue(
        dvc_repo,
        "train.onnx.input=features",
        "train.onnx.features=[mean_intensity]",
        "train.onnx.bands=null",
    )
    assert parse_params(yaml.safe_load(text)).train.onnx == OnnxParams(
        path="models/x.onnx", features=["mean_intensity"], classes=["dark", "bright"]
    )


def test_stac_and_label_keys_are_set_one_at_a_time(dvc_repo: Path):
    text = queue(
        dvc_repo,
        "ingest.source=stac",
        "ingest.stac.item=items/S2A.json",
        "ingest.stac.assets=[red,nir]",
        "ingest.stac.aoi.bbox=[13.3,52.45,13.4,52.52]",
        "ingest.labels.asset=scl",
        "ingest.labels.classes={bright: [8, 9], dark: [4, 5]}",
    )
    compact = IngestParams.model_validate(
        {
            "source": "stac",
            "stac": {
                "item": "items/S2A.json",
                "assets": ["red", "nir"],
                "aoi": {"bbox": [13.3, 52.45, 13.4, 52.52]},
            },
            "labels": {"asset": "scl", "classes": {"bright": [8, 9], "dark": [4, 5]}},
        }
    )
    assert parse_params(yaml.safe_load(text)).ingest == compact
