"""Shared fixtures: a factory for small GeoTIFFs and the real-file corpus.

``make_raster`` builds any small raster a test needs (in the manner of rio-tiler's
``tests/conftest.py``): odd sizes by default, so edge logic is always exercised, and every
property (dtype, nodata, CRS, transform, GCPs, tags, driver, layout) can be overridden.
``real_dir`` is ``../shared/data/real`` next to the repository; tests that use it are skipped
where it is absent.

Two collection hooks keep the suite fast as it grows (README, "Tests"): a test that uses a
repository built by ``dvc repro`` (:data:`DVC_REPO_FIXTURES`) is marked ``slow`` whatever its
module says, so ``make test-fast`` never runs the pipeline; and the modules that take longest
(:data:`LONGEST_FIRST`) are collected first, so that with ``-n auto --dist loadfile
--no-loadscope-reorder`` the workers start on them and the short modules fill in around them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.rpc import RPC

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_DIR = REPO_ROOT.parent / "shared" / "data" / "real"

DEFAULT_WIDTH = 97
DEFAULT_HEIGHT = 83
DEFAULT_CRS = "EPSG:32633"
DEFAULT_TRANSFORM = Affine(10.0, 0.0, 399960.0, 0.0, -10.0, 5900040.0)  # 10 m, north-up
DEFAULT_TIME = "2024-06-01T10:30:21Z"

# Sentinel: "use the default" (None means "write none" for crs, transform and tags).
_DEFAULT: Any = object()


def default_pixels(count: int, height: int, width: int, dtype: str) -> np.ndarray:
    """A deterministic pattern of valid values (never 0), different in each band."""
    base = np.arange(height * width, dtype=np.int64).reshape(height, width)
    bands = [(base * (b + 1)) % 97 + 1 + b for b in range(count)]
    return np.stack(bands).astype(dtype)


def trivial_rpc() -> RPC:
    """Rational polynomial coefficients of a trivial sensor model (enough for GDAL to store)."""
    return RPC(
        height_off=0,
        height_scale=500,
        lat_off=48,
        lat_scale=0.1,
        line_den_coeff=[1] + [0] * 19,
        line_num_coeff=[0, 0, -1] + [0] * 17,
        line_off=41,
        line_scale=41,
        long_off=16,
        long_scale=0.1,
        samp_den_coeff=[1] + [0] * 19,
        samp_num_coeff=[0, 1] + [0] * 18,
        samp_off=48,
        samp_scale=48,
    )


def _pixels(
    data: np.ndarray | float | Callable[..., np.ndarray] | None,
    count: int,
    height: int,
    width: int,
    dtype: str,
) -> np.ndarray:
    if data is None:
        return default_pixels(count, height, width, dtype)
    if callable(data):
        return np.asarray(data(count, height, width), dtype=dtype)
    array = np.asarray(data, dtype=dtype)
    if array.ndim == 0:
        return np.full((count, height, width), array, dtype=dtype)
    if array.ndim == 2:
        array = np.broadcast_to(array, (count, height, width))
    return np.ascontiguousarray(array)


@pytest.fixture
def make_raster(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_raster(name="scene.tif", **options) -> Path`` of a small raster.

    Options: ``width``, ``height``, ``count``, ``dtype``, ``nodata``, ``crs`` (None: no CRS),
    ``transform`` (None: no geotransform written), ``data`` (an array of shape
    ``(count, height, width)`` or ``(height, width)``, a scalar fill, or a callable
    ``(count, height, width) -> array``), ``tags`` (None: no tags; default: an
    ``ACQUISITION_TIME``), ``descriptions``, ``driver``, ``gcps`` (a list of
    ``(row, col, x, y)`` or ``GroundControlPoint``; their CRS is ``gcps_crs``), ``rpcs`` (an
    ``RPC``, or True for a trivial sensor model), ``tiled``, ``blocksize``, ``compress``, and
    any other creation option as a keyword.
    """

    def make(
        name: str = "scene.tif",
        *,
        width: int = DEFAULT_WIDTH,
        height: int = DEFAULT_HEIGHT,
        count: int = 1,
        dtype: str = "uint16",
        nodata: float | None = None,
        crs: str | CRS | None = _DEFAULT,
        transform: Affine | None = _DEFAULT,
        data: np.ndarray | float | Callable[..., np.ndarray] | None = None,
        tags: dict[str, str] | None = _DEFAULT,
        descriptions: Sequence[str | None] | None = None,
        driver: str = "GTiff",
        gcps: Sequence[GroundControlPoint | tuple[float, float, float, float]] | None = None,
        gcps_crs: str = "EPSG:4326",
        rpcs: RPC | bool | None = None,
        tiled: bool = False,
        blocksize: int | None = None,
        compress: str | None = None,
        **creation_options: Any,
    ) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        profile: dict[str, Any] = {
            "driver": driver,
            "width": width,
            "height": height,
            "count": count,
            "dtype": dtype,
            **creation_options,
        }
        if nodata is not None:
            profile["nodata"] = nodata
        if gcps is not None:
            points = [
                p if isinstance(p, GroundControlPoint) else GroundControlPoint(*p) for p in gcps
            ]
            profile.update(gcps=points, crs=CRS.from_user_input(gcps_crs))
        else:
            crs = DEFAULT_CRS if crs is _DEFAULT else crs
            transform = DEFAULT_TRANSFORM if transform is _DEFAULT else transform
            if crs is not None:
                profile["crs"] = CRS.from_user_input(crs)
            if transform is not None:
                profile["transform"] = transform
        if rpcs:
            profile["rpcs"] = trivial_rpc() if rpcs is True else rpcs
        if tiled or blocksize is not None:
            size = blocksize or 64
            if driver == "COG":
                profile["blocksize"] = size
            else:
                profile.update(tiled=True, blockxsize=size, blockysize=size)
        if compress is not None:
            profile["compress"] = compress
        pixels = _pixels(data, count, height, width, dtype)
        tags = {"ACQUISITION_TIME": DEFAULT_TIME} if tags is _DEFAULT else tags
        # Rasters without georeferencing are written on purpose in some tests.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(pixels)
                if tags:
                    dst.update_tags(**tags)
                if descriptions is not None:
                    dst.descriptions = tuple(descriptions)
        return path

    return make


@pytest.fixture
def real_dir() -> Path:
    """The shared real GeoTIFF corpus (``../shared/data/real``); skips the test if absent."""
    if not REAL_DIR.is_dir():
        pytest.skip("../shared/data/real not present")
    return REAL_DIR


@pytest.fixture
def real_file(real_dir: Path) -> Callable[[str], Path]:
    """``real_file(name)``: a file of the real corpus; skips the test if it is missing."""

    def get(name: str) -> Path:
        path = real_dir / name
        if not path.is_file():
            pytest.skip(f"../shared/data/real/{name} not present")
        return path

    return get


@pytest.fixture
def repo_root() -> Path:
    """The repository root (where ``satpipe`` and ``stages`` live)."""
    return REPO_ROOT


# Fixtures whose repository is built by `dvc repro` (tests/serve_fixtures.py): a test using one,
# directly or through another fixture, runs the pipeline, so it is `slow` (not in test-fast).
DVC_REPO_FIXTURES = frozenset({"pipeline_repo", "segmentation_repo"})

# The modules that take longest under `make test` (setup included), longest first; every other
# module follows, in file order. xdist (loadfile, --no-loadscope-reorder) hands a worker the next
# module when the one it runs is nearly done, so the long ones must come first or one may start
# last and leave the other worker idle (longest-processing-time-first). Refresh from
# `--durations` when a module's time changes much; a name no longer here is ignored.
LONGEST_FIRST = (  # seconds of one worker's time, measured under `make test` (setup included)
    "test_pipeline.py",  # 170: a full-size clone: dvc repro twice, experiments and a queue
    "test_serve_contract.py",  # 120: builds both shared repositories; the schemathesis fuzz
    "test_kinds_end_to_end.py",  # 73
    "test_airflow_dag.py",  # 61 (where `make airflow` installed Airflow)
    "test_segment_stage.py",  # 42
    "test_remote.py",  # 42
    "test_segmentation_pipeline.py",  # 40
    "test_engine.py",  # 40
    "test_batch_infer.py",  # 35
    "test_multiscene.py",  # 30
    "test_reuse.py",  # 24
    "test_stac.py",  # 24
    "test_map_tiles.py",  # 21
    "test_segment.py",  # 16
    "test_serve_paths.py",  # 14
    "test_stage_cli.py",  # 14
    "test_labels.py",  # 12
)


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests on DVC-built repositories ``slow``; put the longest modules first."""
    for item in items:
        if DVC_REPO_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept
