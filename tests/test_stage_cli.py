"""Stage entry points at the CLI edge: a known failure is one ``error:`` line and exit code 1.

Each test runs ``python -m stages.<name>`` in a subprocess, in a temporary directory holding the
``params.yaml`` it writes, with the repository on ``PYTHONPATH``.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import indexed_tile
from tests.helpers import stage as run_stage

INGEST_OUTPUTS = ["data/scenes", "data/scenes.json", "data/ingest.json", "data/r.json"]
TILE_OUTPUTS = [
    "data/scenes",
    "data/scenes.json",
    "data/tiles",
    "data/index.json",
    "m.json",
    "r.json",
]


def stage(repo_root: Path, cwd: Path, name: str, *args: str) -> subprocess.CompletedProcess:
    return run_stage(name, *args, cwd=cwd, timeout=60)


def files_under(directory: Path) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


def write_params(cwd: Path, text: str) -> None:
    (cwd / "params.yaml").write_text(text)


def assert_one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected exactly one line on stderr, got:\n{result.stderr}"
    line = lines[0]
    assert line.startswith("error: ")
    for fragment in fragments:
        assert fragment in line
    return line


# --- ingest on bad input ------------------------------------------------------------------------


BAD_INPUTS = {
    "no-crs": ({"crs": None}, "no CRS"),
    "gcp-only": ({"gcps": [(0, 0, 16, 48), (0, 96, 17, 48), (82, 0, 16, 47)]}, "GCPs"),
    "all-nodata": ({"nodata": 0, "data": 0}, "no valid pixel"),
    "no-time": ({"tags": None}, "ingest.acquisition_time"),
    "complex": ({"dtype": "complex64"}, "complex64"),
}


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
def test_ingest_bad_input(repo_root: Path, tmp_path: Path, make_raster, kind: str):
    options, fragment = BAD_INPUTS[kind]
    make_raster("inputs/bad.tif", **options)
    write_params(tmp_path, "ingest:\n  source: file\n  path: inputs/bad.tif\n")
    result = stage(repo_root, tmp_path, "ingest", *INGEST_OUTPUTS)
    assert_one_error_line(result, "scene 'bad': inputs/bad.tif: ", fragment)
    assert files_under(tmp_path) == ["inputs/bad.tif", "params.yaml"]


def test_ingest_missing_input(repo_root: Path, tmp_path: Path):
    write_params(tmp_path, "ingest:\n  source: file\n  path: nowhere.tif\n")
    result = stage(repo_root, tmp_path, "ingest", *INGEST_OUTPUTS)
    assert_one_error_line(result, "scene 'nowhere': nowhere.tif: file not found")
    assert files_under(tmp_path) == ["params.yaml"]


def _junk(tmp_path: Path, make_raster) -> None:
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "bad.tif").write_bytes(b"<html>not a GeoTIFF</html>\n")


def _truncated(tmp_path: Path, make_raster) -> None:
    path = make_raster(
        "inputs/bad.tif",
        driver="COG",
        width=301,
        height=257,
        data=lambda c, h, w: np.random.default_rng(2).integers(1, 60000, (c, h, w)),
        blocksize=128,
        compress="deflate",
    )
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])


GDAL_FAILURES = {"junk": (_junk, "not a GeoTIFF"), "truncated": (_truncated, "unreadable pixel")}


def run_gdal_failure(repo_root: Path, tmp_path: Path, make_raster, kind: str):
    build, fragment = GDAL_FAILURES[kind]
    build(tmp_path, make_raster)
    write_params(tmp_path, "ingest:\n  source: file\n  path: inputs/bad.tif\n")
    result = stage(repo_root, tmp_path, "ingest", *INGEST_OUTPUTS)
    return result, fragment


@pytest.mark.parametrize("kind", sorted(GDAL_FAILURES))
def test_ingest_gdal_failure_ends_with_one_error(repo_root, tmp_path, make_raster, kind):
    result, fragment = run_gdal_failure(repo_root, tmp_path, make_raster, kind)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1
    assert errors[0].startswith("error: scene 'bad': inputs/bad.tif: ")
    assert fragment in errors[0]
    assert result.stderr.splitlines()[-1] == errors[0]
    assert files_under(tmp_path) == ["inputs/bad.tif", "params.yaml"]


@pytest.mark.parametrize("kind", sorted(GDAL_FAILURES))
def test_ingest_gdal_failure_is_exactly_one_line(repo_root, tmp_path, make_raster, kind):
    result, fragment = run_gdal_failure(repo_root, tmp_path, make_raster, kind)
    assert_one_error_line(result, "scene 'bad': inputs/bad.tif: ", fragment)


# --- params typos -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("tile", TILE_OUTPUTS),
        ("check_params", []),
        ("ingest", INGEST_OUTPUTS),
    ],
)
def test_params_typo(repo_root: Path, tmp_path: Path, name: str, args: list[str]):
    write_params(tmp_path, "tile:\n  sise: 512\n")
    result = stage(repo_root, tmp_path, name, *args)
    assert_one_error_line(result, "params.yaml", "'tile.sise'")
    assert files_under(tmp_path) == ["params.yaml"]


def test_params_out_of_range(repo_root: Path, tmp_path: Path):
    write_params(tmp_path, "tile:\n  size: 0\n")
    result = stage(repo_root, tmp_path, "check_params")
    assert_one_error_line(result, "tile.size=0")


def test_check_params_accepts_the_committed_file(repo_root: Path, tmp_path: Path):
    result = stage(repo_root, tmp_path, "check_params", "--params", str(repo_root / "params.yaml"))
    assert result.returncode == 0, result.stderr
    assert "error" not in result.stderr


# --- a real scene through both stages -----------------------------------------------------------


def test_ingest_and_tile_stages_on_a_nan_nodata_scene(repo_root: Path, tmp_path: Path, real_file):
    source = real_file("cog_with_nan.tif")
    write_params(
        tmp_path,
        f"ingest:\n  source: file\n  path: {source}\n  acquisition_time: '2020-01-01'\n"
        "tile:\n  size: 128\n",
    )
    result = stage(repo_root, tmp_path, "ingest", *INGEST_OUTPUTS)
    assert result.returncode == 0, result.stderr
    meta = json.loads((tmp_path / "data/scenes.json").read_text())["scenes"][0]
    assert meta["nodata"] == "NaN"
    assert meta["id"] == "cog_with_nan"

    result = stage(repo_root, tmp_path, "tile", *TILE_OUTPUTS)
    assert result.returncode == 0, result.stderr
    index = json.loads((tmp_path / "data/index.json").read_text())
    metrics = json.loads((tmp_path / "r.json").read_text())  # the report
    assert index["tile_count"] == len(index["tiles"]) == metrics["tiles_written"] > 0
    scene = index["scenes"]["cog_with_nan"]
    assert scene["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    tiles_dir = tmp_path / "data/tiles"
    for entry in index["tiles"]:
        assert hashlib.sha256(indexed_tile(tiles_dir, entry)).hexdigest() == entry["sha256"]
        assert entry["valid_fraction"] >= 0.5  # NaN pixels counted as nodata
    assert sorted(p.name for p in tiles_dir.iterdir()) == ["cog_with_nan.zip"]
    with zipfile.ZipFile(tiles_dir / "cog_with_nan.zip") as pack:
        assert pack.namelist() == [e["file"] for e in index["tiles"]]
