"""Fixtures for the REST service tests: a real pipeline run, app clients, a live server.

``pipeline_repo`` (session) copies the pipeline code into a temporary git repository, makes the
scene small and the tiles small (700x600, ``tile.size`` 64: odd sizes, partial edge tiles
skipped), runs ``dvc repro``, commits and tags ``v1``, then changes ``train.fraction``, runs it
again and commits ``v2``: the workspace is ``v2``, and ``v1`` is a revision whose model differs.
Tests that change files get their own copy (``repo_copy``). Nothing here reads or writes the
project's own ``data/``.

Each repository is built once per test run, not once per xdist worker (:func:`shared_build`):
the first worker to need it builds it under a file lock in the run's temporary directory, which
all workers share, and every worker then works on a copy of its own, as if it had built it.

Import what a module needs explicitly: ``from tests.serve_fixtures import pipeline_repo  # noqa``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import rasterio
import yaml
from affine import Affine
from fastapi.testclient import TestClient
from filelock import FileLock
from rasterio.crs import CRS
from rasterio.io import MemoryFile

from serve.app import create_app
from serve.settings import Settings
from tests.helpers import REPO, tool_env
from tests.helpers import output as run

PIPELINE_FILES = ("dvc.yaml", "params.yaml", ".gitignore", ".dvcignore")
PIPELINE_DIRS = ("stages", "satpipe", "models")
# DVC's settings and plot templates (custom vega-lite templates, the offline page of `dvc plots`).
DVC_FILES = (".dvc/config", ".dvc/plots")
SMALL = {"ingest": {"width": 700, "height": 600}, "tile": {"size": 64}}
SEGMENTATION = {**SMALL, "train": {"model": "pixel_logistic"}}  # segmentation_repo's params
TILE = 64


def set_params(repo: Path, changes: dict[str, dict[str, Any]]) -> None:
    """Change ``params.yaml`` keys of ``repo`` (section -> key -> value)."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, values in changes.items():
        params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def copy_dvc_files(repo: Path) -> None:
    """Copy the project's ``.dvc/config`` and ``.dvc/plots`` into ``repo`` (after ``dvc init``)."""
    for name in DVC_FILES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, repo / name, dirs_exist_ok=True)
        elif (REPO / name).is_file():
            shutil.copy2(REPO / name, repo / name)


def shared_build(
    tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], object]
) -> Path:
    """``build(repo)`` once per test run, and a private copy of its ``repo`` for this process.

    Under xdist, session fixtures run once per worker; the workers of one run share the parent of
    their base temporary directories (``pytest-N``, new for each run), so the first worker to ask
    builds there under a :class:`FileLock` and the others wait for it and copy it (seconds, not the
    minutes of ``dvc repro``). The shared build itself is never handed out: each worker gets its
    own copy, so what a test does to it (git's index, DVC's lock and temporary files) stays in
    its worker, as before. A build that fails leaves no done marker: the next worker tries again.
    Without xdist the base temporary directory is the run's own.
    """
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    shared, done = root / f"shared-{name}", root / f"shared-{name}.done"
    with FileLock(str(root / f"shared-{name}.lock")):
        if not done.exists():
            shutil.rmtree(shared, ignore_errors=True)  # a failed attempt's leftovers
            build(shared / "repo")
            done.touch()
    own = tmp_path_factory.mktemp(name) / "repo"
    shutil.copytree(shared / "repo", own, symlinks=True)
    return own


# Each test module imports the fixture, which makes pytest register it once per module; this
# cache makes the session-scoped build (a copy of the shared one) happen once per session all the
# same.
_BUILT: dict[Path, Path] = {}


@pytest.fixture(scope="session")
def pipeline_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small pipeline run through DVC: tag ``v1``, then ``v2`` with another model."""
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    base = tmp_path_factory.getbasetemp()
    if base not in _BUILT:
        _BUILT[base] = shared_build(tmp_path_factory, "serve", _build_pipeline)
    return _BUILT[base]


def init_pipeline(
    repo: Path, changes: dict[str, dict[str, Any]], targets: Sequence[str] = ()
) -> Path:
    """A new git+DVC repository ``repo`` with the pipeline's code, after ``dvc repro``.

    ``changes`` are made to its ``params.yaml`` first (section -> key -> value); ``targets``
    limits ``dvc repro`` to those stages and their upstream (default: all); nothing is committed.
    """
    repo.mkdir(parents=True)
    for name in PIPELINE_FILES:
        shutil.copy2(REPO / name, repo / name)
    for name in PIPELINE_DIRS:
        shutil.copytree(REPO / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    run(["git", "init", "--quiet"], repo)
    run(["dvc", "init", "--quiet"], repo)
    copy_dvc_files(repo)
    run(["dvc", "config", "core.analytics", "false"], repo)
    set_params(repo, changes)
    run(["dvc", "repro", "--quiet", *targets], repo)
    return repo


def _build_pipeline(repo: Path) -> Path:
    init_pipeline(repo, SMALL)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "--quiet", "-m", "v1"], repo)
    run(["git", "tag", "v1"], repo)
    set_params(repo, {"train": {"fraction": 0.7}})
    run(["dvc", "repro", "--quiet"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "--quiet", "-m", "v2"], repo)
    return repo


_SEGMENTED: dict[Path, Path] = {}


@pytest.fixture(scope="session")
def segmentation_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small pipeline run through DVC with the per-pixel model (``pixel_logistic``), committed.

    The same small scene as :func:`pipeline_repo`; every stage ran, so ``data/segments`` holds
    the class and probability COGs of ``synthetic-42`` and the downstream outputs exist. Built
    once per run (:func:`shared_build`), copied once per session (per xdist worker); read-only:
    copy it to change it.
    """
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    base = tmp_path_factory.getbasetemp()
    if base not in _SEGMENTED:
        _SEGMENTED[base] = shared_build(tmp_path_factory, "segmented", _build_segmentation)
    return _SEGMENTED[base]


def _build_segmentation(repo: Path) -> Path:
    init_pipeline(repo, SEGMENTATION)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "--quiet", "-m", "segmentation"], repo)
    return repo


def first_entry(repo: Path) -> dict:
    """The first tile of ``repo``'s index, as the index file holds it."""
    return json.loads((repo / "data" / "tile_index.json").read_text())["tiles"][0]


def first_tile(repo: Path) -> str:
    """The path (relative to the tiles directory) of the first tile in ``repo``'s index."""
    return first_entry(repo)["file"]


@pytest.fixture
def repo_copy(pipeline_repo: Path, tmp_path: Path) -> Path:
    """A private copy of the pipeline repository (git, DVC cache and outputs) to change."""
    dest = tmp_path / "repo"
    shutil.copytree(pipeline_repo, dest, symlinks=True)
    return dest


@pytest.fixture
def make_client() -> Iterator[Callable[..., TestClient]]:
    """Factory: ``make_client(repo, **settings)`` -> a started ``TestClient`` (lifespan ran)."""
    with contextlib.ExitStack() as stack:

        def make(repo: Path, **settings: Any) -> TestClient:
            app = create_app(Settings(repo=repo, **settings))
            return stack.enter_context(TestClient(app))

        yield make


@pytest.fixture(scope="module")
def client(pipeline_repo: Path) -> Iterator[TestClient]:
    """A client of the service on the pipeline repository (read-only use)."""
    with TestClient(create_app(Settings(repo=pipeline_repo))) as started:
        yield started


def tile_bytes(
    *,
    width: int = TILE,
    height: int = TILE,
    count: int = 4,
    dtype: str = "uint16",
    crs: str | None = "EPSG:32633",
    nodata: float | None = 0,
    fill: float | None = None,
    **creation: Any,
) -> bytes:
    """A GeoTIFF tile in memory: a deterministic valid pattern (or ``fill``) per band.

    ``creation`` holds GDAL creation options (``compress``, ``BIGTIFF``...).
    """
    if fill is None:
        base = np.arange(height * width, dtype=np.int64).reshape(height, width)
        data = np.stack([(base * (b + 1)) % 997 + 1 for b in range(count)]).astype(dtype)
    else:
        data = np.full((count, height, width), fill, dtype=dtype)
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": dtype,
        "transform": Affine(10.0, 0.0, 399960.0, 0.0, -10.0, 5900040.0),
        **creation,
    }
    if crs is not None:
        profile["crs"] = CRS.from_user_input(crs)
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.Env(), MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(data)
        return mem.read()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(base: str, server: subprocess.Popen, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            return False
        try:
            if httpx.get(f"{base}/health/ready", timeout=2).status_code == 200:
                return True
        except httpx.TransportError:
            time.sleep(0.1)
    return False


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=15)


@contextlib.contextmanager
def uvicorn_server(repo: Path, log: Path, **settings: str) -> Iterator[str]:
    """Real uvicorn (one process) on 127.0.0.1 serving ``repo``; yields its base URL.

    ``settings`` are extra ``SATPIPE_*`` variables, by lower-case name (``reload_interval``).
    """
    env = dict(tool_env(), SATPIPE_REPO=str(repo))
    env.update({f"SATPIPE_{name.upper()}": value for name, value in settings.items()})
    for _ in range(3):  # a free port may be taken between picking and binding: retry
        port = _free_port()
        cmd = [sys.executable, "-m", "uvicorn", "serve.app:create_app", "--factory"]
        cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        with log.open("w") as sink:
            server = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=sink, stderr=sink)
        base = f"http://127.0.0.1:{port}"
        try:
            if _wait_ready(base, server):
                yield base
                return
        finally:
            _stop(server)
    pytest.fail(f"uvicorn did not become ready on 127.0.0.1:\n{log.read_text()}")


@pytest.fixture(scope="module")
def live_server(pipeline_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Real uvicorn (one process) on 127.0.0.1 serving the pipeline repository; its base URL."""
    log = tmp_path_factory.mktemp("uvicorn") / "server.log"
    with uvicorn_server(pipeline_repo, log) as base:
        yield base
