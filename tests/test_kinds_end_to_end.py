"""Every model kind end to end: trained by DVC, served by the API, batch and API in agreement.

One copy of the small pipeline repository (``tests.serve_fixtures``) is switched from kind to
kind with ``train.*`` params and ``dvc repro`` (only ``train`` onwards reruns). For each kind,
every tile's ``/infer`` answer equals its batch prediction (class and score, bit for bit). The
ONNX threshold graph must give exactly the threshold kind's classes on every tile; a toy kind
registered from this file alone goes through training, batch inference and the API.
"""

# Fixtures are imported from tests.serve_fixtures; pytest injects them as same-named arguments.
# ruff: noqa: F811

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient

from satpipe.core.files import write_json
from satpipe.core.params import TrainParams
from satpipe.core.records import read_index
from satpipe.inference.predict import batch_predict
from satpipe.models import kinds
from satpipe.models.kinds.base import TrainingSet
from satpipe.models.training import train
from satpipe.tiles.index import index_hash, is_inference_tile
from serve.app import create_app
from serve.settings import Settings
from tests.helpers import output as run
from tests.onnx_models import pixel_mean_graph, threshold_graph
from tests.serve_fixtures import TILE, pipeline_repo, set_params  # noqa: F401

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(pipeline_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the pipeline repository, switched between kinds by the tests.

    Its scene is seed 4 (about 30% cloud at this size, so both classes have labelled training
    tiles, which the logistic kind needs); the threshold kind's run is kept aside as
    ``threshold/`` for the parity checks.
    """
    dest = tmp_path_factory.mktemp("kinds") / "repo"
    shutil.copytree(pipeline_repo, dest, symlinks=True)
    set_params(dest, {"ingest": {"seed": 4}, "train": {"fraction": 0.5}})
    run(["dvc", "repro", "--quiet"], dest)
    (dest / "threshold").mkdir()
    for name in ("model.json", "predictions.json"):
        shutil.copy2(dest / "data" / name, dest / "threshold" / name)
    return dest


def _predictions(repo: Path) -> dict[str, Any]:
    return json.loads((repo / "data/predictions.json").read_text())


def _use(repo: Path, train_params: dict[str, Any], target: str = "batch_infer") -> dict[str, Any]:
    """Switch ``repo`` to these train params, reproduce up to ``target``, return the predictions."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"].update({"model": "threshold", "method": "mean", "onnx": None, **train_params})
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["dvc", "repro", "--quiet", target], repo)
    return _predictions(repo)


@pytest.fixture
def client_of() -> Iterator[Any]:
    clients: list[TestClient] = []

    def make(repo: Path) -> TestClient:
        client = TestClient(create_app(Settings(repo=repo)))
        clients.append(client.__enter__())
        return clients[-1]

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def _api_equals_batch(client: TestClient, batch: dict[str, Any], kind: str) -> None:
    md5 = batch["metadata"]["model"]["md5"]
    assert client.get("/health/ready").json()["model_md5"] == md5
    info = client.get("/model").json()
    assert info["kind"] == kind == batch["metadata"]["model"]["kind"]
    records = batch["predictions"]
    assert len(records) > 50 and batch["metadata"]["tiles_failed"] == 0
    for record in records:
        body = client.post("/infer", json={"tile_path": record["path"]}).json()
        assert (body["prediction"], body["score"], body["features"]) == (
            record["prediction"],
            record["score"],
            record["features"],
        ), record["id"]
        assert body["model_md5"] == md5


def test_threshold_is_the_default_kind(repo: Path, client_of: Any) -> None:
    batch = _predictions(repo)
    assert batch["metadata"]["model"]["kind"] == "threshold"
    model = json.loads((repo / "data/model.json").read_text())
    assert model["kind"] == "threshold" and set(model["model"]) == {
        "feature",
        "method",
        "threshold",
    }
    assert all(set(r["features"]) == {"mean_intensity"} for r in batch["predictions"])
    _api_equals_batch(client_of(repo), batch, "threshold")


def test_logistic_trains_serves_and_is_ranked(repo: Path, client_of: Any) -> None:
    batch = _use(repo, {"model": "logistic"}, "evaluate")
    _api_equals_batch(client_of(repo), batch, "logistic")
    record = batch["predictions"][0]
    assert "band_1_std" in record["features"] and 0.0 < record["score"] <= 1.0
    evaluation = json.loads((repo / "data/reports/evaluate.json").read_text())
    assert evaluation["evaluated"] and evaluation["overall"]["balanced_accuracy"] is not None
    assert (
        json.loads((repo / "data/metrics/evaluate.json").read_text())["bal_acc"]
        == (evaluation["overall"]["balanced_accuracy"])
    )
    assert json.loads((repo / "data/plots/threshold_curve.json").read_text()) == []


def test_onnx_threshold_graph_gives_exactly_the_threshold_predictions(
    repo: Path, client_of: Any
) -> None:
    reference = json.loads((repo / "threshold/predictions.json").read_text())
    threshold = json.loads((repo / "threshold/model.json").read_text())["model"]["threshold"]
    (repo / "models").mkdir(exist_ok=True)
    threshold_graph(repo / "models/threshold.onnx", threshold, dtype=np.float64)
    onnx = {
        "path": "models/threshold.onnx",
        "input": "features",
        "features": ["mean_intensity"],
        "classes": ["dark", "bright"],
    }
    batch = _use(repo, {"model": "onnx", "onnx": onnx})
    got = {r["id"]: r["prediction"] for r in batch["predictions"]}
    assert got == {r["id"]: r["prediction"] for r in reference["predictions"]}
    assert set(got.values()) == {"dark", "bright"}
    client = client_of(repo)
    _api_equals_batch(client, batch, "onnx")
    details = client.get("/model").json()["details"]
    assert details["path"] == "models/threshold.onnx" and len(details["sha256"]) == 64


def test_onnx_on_pixels_runs_batched_and_serves(repo: Path, client_of: Any) -> None:
    (repo / "models").mkdir(exist_ok=True)
    pixel_mean_graph(repo / "models/pixels.onnx", 4, TILE, 2048.0)
    onnx = {
        "path": "models/pixels.onnx",
        "input": "pixels",
        "classes": ["dark", "bright"],
        "bands": 4,
        "size": TILE,
        "batch": 64,
    }
    batch = _use(repo, {"model": "onnx", "onnx": onnx})
    assert {r["prediction"] for r in batch["predictions"]} == {"dark", "bright"}
    _api_equals_batch(client_of(repo), batch, "onnx")


def test_a_changed_onnx_file_is_refused_at_service_start(repo: Path, client_of: Any) -> None:
    (repo / "models").mkdir(exist_ok=True)
    threshold_graph(repo / "models/t.onnx", 2048.0)
    onnx = {
        "path": "models/t.onnx",
        "input": "features",
        "features": ["mean_intensity"],
        "classes": ["dark", "bright"],
    }
    _use(repo, {"model": "onnx", "onnx": onnx})
    threshold_graph(repo / "models/t.onnx", 4096.0)  # same path, other graph
    client = client_of(repo)
    ready = client.get("/health/ready")
    assert ready.status_code == 503
    assert "t.onnx: sha256 is" in ready.json()["detail"]
    assert client.post("/infer", json={"tile_path": "x.tif"}).status_code == 503


@dataclass(frozen=True)
class ToyKind:
    """A toy kind: bright when the first band's mean is above the second's."""

    name: ClassVar[str] = "toy"
    schema: ClassVar[int] = 1
    input: ClassVar[Literal["features", "pixels"]] = "features"
    output: ClassVar[Literal["tile", "pixels"]] = "tile"

    @classmethod
    def output_for(cls, params: dict[str, Any]) -> Literal["tile", "pixels"]:
        return "tile"

    @property
    def feature_names(self) -> tuple[str, ...]:
        return ("band_1_mean", "band_2_mean")

    @property
    def monitored(self) -> str:
        return "band_1_mean"

    @classmethod
    def fit(cls, train: TrainingSet, params: dict[str, Any], root: Path) -> ToyKind:
        return cls()

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        margin = x[:, 0] - x[:, 1]
        return (margin > 0).astype(np.int64), margin

    def to_dict(self) -> dict[str, Any]:
        return {"rule": "band_1_mean > band_2_mean"}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str, root: Path | None) -> ToyKind:
        return cls()

    def details(self) -> dict[str, Any]:
        return self.to_dict()


def test_a_kind_added_through_the_registry_alone_trains_infers_and_serves(
    repo: Path, client_of: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use(repo, {})  # back to the threshold, so the lock and the outputs are consistent
    monkeypatch.setitem(kinds.KINDS, "toy", ToyKind)
    index_path = repo / "data/tile_index.json"
    index = read_index(index_path)
    result = train(index, index_hash(index_path), TrainParams(model="toy"), str(index_path), repo)
    write_json(repo / "data/model.json", result.model.to_dict())
    tiles = [t for t in index.tiles if is_inference_tile(index.roles[t.scene])]
    records, failures, _ = batch_predict(tiles, repo / "data/tiles", result.model)
    assert not failures and {r.prediction for r in records} <= {"dark", "bright"}
    # Pin the toy model in dvc.lock as a run of the train stage would (the service serves pins).
    run(["dvc", "commit", "--force", "--quiet", "train"], repo)
    client = client_of(repo)
    assert client.get("/model").json()["kind"] == "toy"
    for record in records[:40]:
        body = client.post("/infer", json={"tile_path": record.path}).json()
        assert (body["prediction"], body["score"]) == (record.prediction, record.score)
        assert set(body["features"]) == {"band_1_mean", "band_2_mean"}
