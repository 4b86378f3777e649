"""Engines: task order, bounded work in flight, errors, and byte-identical stage outputs.

The unit tests run the same tasks inline, on a two-process pool and on a two-worker Dask
``LocalCluster`` (one per test module). The stage tests run the stages as DVC does, from
``dvc.yaml``'s commands with the repository as working directory and no ``PYTHONPATH``, so the
Dask workers must find ``satpipe`` the way a ``dvc repro`` run would.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from rasterio._err import CPLE_AppDefinedError
from rasterio.windows import Window

from satpipe.core.errors import EngineError, ParamsError, RasterReadError, TilingError
from satpipe.core.raster import open_scene, read_window
from satpipe.engines.engine import Engine
from satpipe.engines.spec import EngineSpec

REPO = Path(__file__).resolve().parents[1]
HAS_DASK = importlib.util.find_spec("distributed") is not None
NO_DASK = "the 'distributed' package is not installed (pip install -r requirements.txt)"
needs_dask = pytest.mark.skipif(not HAS_DASK, reason=NO_DASK)


# Tasks: module-level, so that worker processes and Dask workers import them by name.


def _square_slowly(x: int) -> int:
    """Early tasks sleep longest, so parallel engines finish them after later ones."""
    time.sleep((4 - x % 5) * 0.02)
    return x * x


def _fail_at_three(x: int) -> int:
    if x == 3:
        raise TilingError(f"task {x}: expected anything but 3")
    return x


def _fail_with_gdal_cause(x: int) -> int:
    """Raise as raster.read_window does: our error, caused by a GDAL error (not picklable)."""
    if x == 2:
        try:
            raise CPLE_AppDefinedError(3, 1, "TIFFReadEncodedStrip() failed.")
        except CPLE_AppDefinedError as exc:
            raise RasterReadError(f"scene.tif: unreadable pixel data in task {x}: {exc}") from exc
    return x


def _read_rows(task: tuple[str, int]) -> float:
    path, row_off = task
    with open_scene(path) as src:
        return float(read_window(src, Window(0, row_off, src.width, 8)).mean())


# Engines


@pytest.fixture(scope="module")
def dask_engine() -> Iterator[Engine]:
    """A two-worker LocalCluster, started once for the module."""
    if not HAS_DASK:
        pytest.skip(NO_DASK)
    with Engine(EngineSpec("dask", 2)) as engine:
        yield engine


@pytest.fixture(params=["inline", "local", "dask"])
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """Each engine in turn: inline, a two-process pool, a two-worker Dask LocalCluster."""
    if request.param == "dask":
        yield request.getfixturevalue("dask_engine")
        return
    with Engine(EngineSpec("local", 1 if request.param == "inline" else 2)) as local:
        yield local


def test_results_come_in_task_order(engine: Engine) -> None:
    tasks = list(range(12))
    assert list(engine.map(_square_slowly, tasks)) == [x * x for x in tasks]
    assert engine.workers == (1 if engine.spec.workers == 1 else 2)


def test_work_in_flight_is_bounded(engine: Engine) -> None:
    pulled = 0

    def tasks() -> Iterator[int]:
        nonlocal pulled
        for x in range(20):
            pulled += 1
            yield x

    ahead, results, most_ahead, pulled_at_first = 2, [], 0, None
    for result in engine.map(_square_slowly, tasks(), ahead=ahead):
        pulled_at_first = pulled if pulled_at_first is None else pulled_at_first
        results.append(result)
        most_ahead = max(most_ahead, pulled - len(results))
    limit = ahead * engine.workers
    assert results == [x * x for x in range(20)]
    assert pulled_at_first is not None and pulled_at_first <= limit
    assert most_ahead <= limit
    if engine.workers == 1:
        assert pulled_at_first == 1  # inline: one task at a time


@pytest.mark.parametrize(
    ("task", "error", "message"),
    [
        (_fail_at_three, TilingError, "task 3: expected anything but 3"),
        (
            _fail_with_gdal_cause,
            RasterReadError,
            "scene.tif: unreadable pixel data in task 2: TIFFReadEncodedStrip() failed.",
        ),
    ],
)
def test_task_error_keeps_its_class_and_message(
    engine: Engine, task: Callable[[int], int], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as caught:
        list(engine.map(task, range(8)))
    assert type(caught.value) is error
    assert str(caught.value) == message
    # The engine is still usable after a failed run.
    assert list(engine.map(_square_slowly, [5, 6])) == [25, 36]


def test_unreadable_raster_fails_alike_on_every_engine(
    engine: Engine, make_raster: Callable[..., Path]
) -> None:
    path = make_raster("corrupt.tif", width=97, height=83, compress="deflate")
    blob = bytearray(path.read_bytes())
    middle = len(blob) // 2
    blob[middle : middle + 2000] = b"\x00\x13" * 1000
    path.write_bytes(bytes(blob))
    tasks = [(str(path), row) for row in range(0, 80, 8)]
    with pytest.raises(RasterReadError) as inline:
        list(map(_read_rows, tasks))
    with pytest.raises(RasterReadError) as caught:
        list(engine.map(_read_rows, tasks))
    assert str(caught.value) == str(inline.value)
    assert str(path) in str(caught.value)


def test_unknown_engine_name_is_a_params_error() -> None:
    with pytest.raises(ParamsError, match=r"engine.name='spark': expected 'local' or 'dask'"):
        Engine(EngineSpec("spark")).__enter__()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@needs_dask
def test_unreachable_scheduler_fails_fast_with_the_address() -> None:
    import dask

    address = f"tcp://127.0.0.1:{_closed_port()}"
    start = time.perf_counter()
    with (
        dask.config.set({"distributed.comm.timeouts.connect": "1s"}),
        pytest.raises(EngineError, match=f"engine.address='{address}': cannot reach"),
        Engine(EngineSpec("dask", address=address)),
    ):
        pass
    assert time.perf_counter() - start < 6


@needs_dask
@pytest.mark.parametrize("address", ["foo://scheduler:8786", "tcp://scheduler"])
def test_malformed_scheduler_address_fails_at_once(address: str) -> None:
    start = time.perf_counter()
    with (
        pytest.raises(EngineError, match=f"engine.address='{address}': not a Dask scheduler"),
        Engine(EngineSpec("dask", address=address)),
    ):
        pass
    assert time.perf_counter() - start < 2


# Stages, run as DVC runs them


def _dvc_stages() -> dict[str, Any]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _paths(stage: dict[str, Any]) -> list[str]:
    """The outputs and metrics a stage declares."""
    entries = stage.get("outs", []) + stage.get("metrics", [])
    return [entry if isinstance(entry, str) else next(iter(entry)) for entry in entries]


def _run_stage(name: str, workdir: Path, **env: str) -> subprocess.CompletedProcess:
    """Run ``dvc.yaml``'s command for a stage with its paths moved under ``workdir``.

    The working directory is the repository and ``PYTHONPATH`` is unset, as under ``dvc repro``;
    every path argument is made absolute inside ``workdir``, so nothing is written to the
    repository.
    """
    argv = shlex.split(_dvc_stages()[name]["cmd"])
    assert argv[:3] == ["python", "-m", f"stages.{name}"], argv
    args = [arg if arg.startswith("-") else str(workdir / arg) for arg in argv[3:]]
    cmd = [sys.executable, "-m", f"stages.{name}", *args, "--params", str(workdir / "params.yaml")]
    run_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | env
    return subprocess.run(
        cmd, cwd=REPO, env=run_env, capture_output=True, text=True, timeout=180, check=False
    )


def _stages_ok(workdir: Path, *names: str) -> dict[str, str]:
    """Run the stages in order; each must succeed quietly. Returns their stderr by stage."""
    logs = {}
    for name in names:
        result = _run_stage(name, workdir)
        assert result.returncode == 0, f"stage {name} in {workdir.name}:\n{result.stderr}"
        # Nothing from Dask itself: no tracebacks or warnings while the cluster shuts down.
        assert "Traceback" not in result.stderr and "distributed." not in result.stderr, (
            result.stderr
        )
        logs[name] = result.stderr
    return logs


def _outputs(workdir: Path, *names: str) -> dict[str, bytes]:
    """Every file the named stages declare as output or metric, by path relative to workdir."""
    found: dict[str, bytes] = {}
    stages = _dvc_stages()
    for name in names:
        for rel in _paths(stages[name]):
            path = workdir / rel
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for file in files:
                found[file.relative_to(workdir).as_posix()] = file.read_bytes()
    return found


def _workdir(parent: Path, name: str, scenes: list[Path], engine: dict[str, Any]) -> Path:
    """A directory holding a params.yaml for ``scenes`` (tile.size 32) and the given engine."""
    workdir = parent / name
    workdir.mkdir()
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["ingest"]["scenes"] = [{"source": "file", "path": str(path)} for path in scenes]
    params["tile"]["size"] = 32
    params["engine"] = {"name": "local", "workers": None, "address": None, **engine}
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return workdir


def _copy_outputs(src: Path, dst: Path, stage: str) -> None:
    for rel in _paths(_dvc_stages()[stage]):
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        if (src / rel).is_dir():
            shutil.copytree(src / rel, dst / rel)
        else:
            shutil.copy2(src / rel, dst / rel)


@pytest.fixture
def scenes(make_raster: Callable[..., Path]) -> list[Path]:
    """Two 4-band uint16 scenes of odd sizes for 32-pixel tiles, in two CRSs, with nodata.

    331x257 (the one the issue names) and 150x97, so the tasks of both scenes interleave on
    parallel engines.
    """

    def pixels(count: int, height: int, width: int) -> np.ndarray:
        data = np.random.default_rng(width).integers(100, 5000, size=(count, height, width))
        data[:, :50, :70] = 0  # nodata: some tiles are skipped for it
        return data.astype(np.uint16)

    return [
        make_raster("a.tif", count=4, width=331, height=257, nodata=0, data=pixels),
        make_raster(
            "b.tif", count=4, width=150, height=97, nodata=0, data=pixels, crs="EPSG:32632"
        ),
    ]


def _difference(expected: dict[str, bytes], got: dict[str, bytes]) -> list[str]:
    names = sorted(set(expected) | set(got))
    return [name for name in names if expected.get(name) != got.get(name)]


COMPARED = ("ingest", "tile", "train", "batch_infer")


@pytest.mark.slow  # four stages on each engine, dask clusters
def test_outputs_are_byte_identical_on_every_engine(scenes: list[Path], tmp_path: Path) -> None:
    base = _workdir(tmp_path, "local-1", scenes, {"workers": 1})
    _stages_ok(base, *COMPARED)
    expected = _outputs(base, *COMPARED)
    tiles = [name for name in expected if name.startswith("data/tiles/")]
    assert tiles == ["data/tiles/a.zip", "data/tiles/b.zip"], sorted(expected)  # one pack each
    assert json.loads(expected["data/tile_index.json"])["tile_count"] > 50
    assert {"data/tile_index.json", "data/predictions.json", "data/predictions.geojson"} <= set(
        expected
    )
    engines = [("local-2", {"workers": 2})]
    if HAS_DASK:
        engines.append(("dask-local", {"name": "dask", "workers": 2}))
    for name, spec in engines:
        workdir = _workdir(tmp_path, name, scenes, spec)
        logs = _stages_ok(workdir, *COMPARED)
        if spec.get("name") == "dask":
            assert "dask: started a LocalCluster with 2 workers" in logs["tile"]
            # A feature model reads the tile index: batch_infer starts no cluster for it.
            assert "features from the tile index, in this process" in logs["batch_infer"]
            assert "LocalCluster" not in logs["batch_infer"]
        differ = _difference(expected, _outputs(workdir, *COMPARED))
        assert not differ, f"{name} differs from local-1 in {len(differ)} files: {differ[:5]}"
    if not HAS_DASK:
        pytest.skip(f"dask engine not compared: {NO_DASK}")


@needs_dask
@pytest.mark.slow  # two stages, then tiles on a dask cluster of two processes
def test_existing_scheduler_gives_identical_tiles(
    scenes: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distributed import LocalCluster

    base = _workdir(tmp_path, "local-1", scenes, {"workers": 1})
    _stages_ok(base, "ingest", "tile")
    # Workers must run in the stage's working directory (dvc.yaml's paths are relative to it).
    monkeypatch.chdir(REPO)
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        silence_logs=logging.WARNING,
    ) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tcp://127.0.0.1:")
        engine = {"name": "dask", "address": address}
        workdir = _workdir(tmp_path, "dask-address", scenes, engine)
        _copy_outputs(base, workdir, "ingest")
        logs = _stages_ok(workdir, "tile")
        assert f"dask: connected to {address}, 2 workers" in logs["tile"]
        assert not _difference(_outputs(base, "tile"), _outputs(workdir, "tile"))
        # From another directory the stage is refused: workers would resolve its paths elsewhere.
        monkeypatch.chdir(tmp_path)
        expected = f"has working directory '{REPO}', this process '{tmp_path}'"
        with pytest.raises(EngineError, match=re.escape(expected)):
            Engine(EngineSpec("dask", address=address)).__enter__()
    # The scheduler is gone: one line naming its address, no traceback, no long wait.
    start = time.perf_counter()
    result = _run_stage("tile", workdir, DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT="1s")
    assert time.perf_counter() - start < 20
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"error: engine.address='{address}': cannot reach a Dask scheduler")
    assert "Traceback" not in result.stderr
