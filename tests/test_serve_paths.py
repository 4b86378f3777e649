"""Tile paths on /infer: traversal refused, DVC cache links allowed, bad tiles named (4xx)."""

# Fixtures are imported from tests.serve_fixtures; pytest injects them as same-named arguments.
# ruff: noqa: F811

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from satpipe.core import lockfile
from serve.errors import TilePathError
from serve.paths import check_tile_path
from tests.helpers import indexed_tile, overwrite_indexed_tile
from tests.serve_fixtures import (  # noqa: F401
    client,
    first_entry,
    first_tile,
    make_client,
    pipeline_repo,
    repo_copy,
    run,
)

pytestmark = pytest.mark.slow

TRAVERSAL = [
    "../dvc.lock",
    "../../../../../../etc/passwd",
    "/etc/passwd",
    "//etc/passwd",
    "%2e%2e/%2e%2e/dvc.lock",
    "..%2f..%2fdvc.lock",
    "%252e%252e%252fdvc.lock",  # double-encoded
    "..%c0%af..%c0%afdvc.lock",  # overlong UTF-8
    "..\\..\\dvc.lock",
    "\\\\server\\share\\tile.tif",
    "C:\\Windows\\win.ini",
    "C:/Windows/win.ini",
    "r000000_c000000.tif\x00.png",
    "%00.tif",
    "....//....//etc/passwd",
    "..././..././etc/passwd",
    "./../data/model.json",
    "tiles/../../dvc.lock",
    "r000000_c000000.tif/../../model.json",
    "~/.ssh/id_rsa.tif",
    "\uff0e\uff0e/\uff0e\uff0e/etc/passwd.tif",  # fullwidth dots
    "file:///etc/passwd",
    " ../dvc.lock",
    "\t../dvc.lock",
    "..;/dvc.lock",
    "a/./b.tif",
    "a//b.tif",
    "../tile_index.json",
    "model.json",
]


@pytest.mark.parametrize("vector", TRAVERSAL)
def test_traversal_vectors_are_refused_with_a_clear_400(client: TestClient, vector: str) -> None:
    got = client.post("/infer", json={"tile_path": vector})
    assert got.status_code == 400, got.text
    assert got.json()["detail"].startswith("tile_path ")
    with pytest.raises(TilePathError):
        check_tile_path(vector)


def test_traversal_inside_a_batch_is_refused_per_item(client: TestClient) -> None:
    got = client.post("/infer/batch", json={"tile_paths": TRAVERSAL}).json()
    assert got["failed"] == len(TRAVERSAL)
    assert {item["status"] for item in got["results"]} == {400}


@pytest.mark.parametrize("good", ["r000000_c000000.tif", "sub/dir/x-1.TIFF", "a.b_c.tif"])
def test_plain_relative_tile_paths_pass_the_text_checks(good: str) -> None:
    assert check_tile_path(good) == good


def test_symlinks_escaping_the_tiles_directory_are_refused(
    repo_copy: Path, make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    tiles = repo_copy / "data" / "tiles"
    secret = tmp_path / "secret.tif"
    secret.write_bytes(_first_bytes(repo_copy))  # a real tile, but outside
    (tiles / "loose.tif").write_bytes(_first_bytes(repo_copy))  # a tile file outside the index
    (tiles / "escape.tif").symlink_to(secret)
    (tiles / "dangling.tif").symlink_to(tmp_path / "nowhere" / "x.tif")
    (tiles / "up").symlink_to("..")
    (tiles / "cached.tif").symlink_to(
        lockfile.cache_object_path(repo_copy / ".dvc" / "cache", _model_md5(repo_copy))
    )
    client = make_client(repo_copy)
    for name in ("escape.tif", "dangling.tif", "up/scene.tif"):
        got = client.post("/infer", json={"tile_path": name})
        assert got.status_code == 400, got.text
        assert "outside the tiles directory" in got.json()["detail"]
    inside = client.post("/infer", json={"tile_path": "up/tiles/loose.tif"})
    assert inside.status_code == 200, inside.text
    assert not inside.json()["in_index"]
    # A link into the DVC cache is followed, but a non-TIFF object there is still refused.
    assert client.post("/infer", json={"tile_path": "cached.tif"}).status_code == 415


def _first_bytes(repo: Path) -> bytes:
    return indexed_tile(repo / "data" / "tiles", first_entry(repo))


def _model_md5(repo: Path) -> str:
    return lockfile.pin(lockfile.read_lock(repo / "dvc.lock")).model.md5


@pytest.mark.parametrize("link_type", ["symlink", "hardlink", "copy"])
def test_every_dvc_cache_link_type_serves_the_same_answers(
    repo_copy: Path,
    make_client: Callable[..., TestClient],
    client: TestClient,
    link_type: str,
) -> None:
    run(["dvc", "config", "cache.type", link_type], repo_copy)
    run(["dvc", "checkout", "--relink", "--quiet"], repo_copy)
    tile = repo_copy / "data" / "tiles" / first_entry(repo_copy)["pack"]
    model = repo_copy / "data" / "model.json"
    if link_type == "symlink":
        assert tile.is_symlink() and model.is_symlink()
    elif link_type == "hardlink":
        assert os.stat(tile).st_nlink == 2 and os.stat(model).st_nlink == 2
    linked = make_client(repo_copy)
    assert linked.get("/health/ready").json()["model_md5"] == _model_md5(repo_copy)
    body = {"tile_path": first_tile(repo_copy)}
    got = linked.post("/infer", json=body)
    assert got.status_code == 200
    assert got.json() == client.post("/infer", json=body).json()


def test_unreadable_and_non_tile_files_get_4xx_naming_the_tile(
    repo_copy: Path, make_client: Callable[..., TestClient]
) -> None:
    tiles = repo_copy / "data" / "tiles"
    entry = first_entry(repo_copy)
    first = indexed_tile(tiles, entry)
    (tiles / "broken.tif").write_bytes(first[:600])  # TIFF header, no pixels
    (tiles / "fake.tif").write_text("not a tiff")
    (tiles / "notes.txt").write_text("hello")
    (tiles / "folder.tif").mkdir()
    (tiles / entry["pack"]).chmod(0o644)
    changed = first[:-100] + bytes(b ^ 0xFF for b in first[-100:])
    overwrite_indexed_tile(tiles, entry, changed)  # changed in its pack since the index was built
    indexed_path = entry["file"]
    client = make_client(repo_copy)
    expected = {
        "broken.tif": 422,
        "fake.tif": 415,
        "notes.txt": 400,
        "folder.tif": 400,
        "missing.tif": 404,
        indexed_path: 422,
    }
    for name, status in expected.items():
        got = client.post("/infer", json={"tile_path": name})
        assert got.status_code == status, (name, got.text)
        detail = got.json()["detail"]
        assert name in detail
        assert str(repo_copy) not in detail  # named as the client named it, not by server path
    assert "tile index says" in client.post("/infer", json={"tile_path": indexed_path}).text


def test_a_missing_or_cut_short_pack_names_the_tile_and_what_to_do(
    repo_copy: Path, make_client: Callable[..., TestClient]
) -> None:
    tiles = repo_copy / "data" / "tiles"
    entry = first_entry(repo_copy)
    last = json.loads((repo_copy / "data" / "tile_index.json").read_text())["tiles"][-1]
    pack = tiles / entry["pack"]
    pack.chmod(0o644)
    with open(pack, "r+b") as fh:  # cut inside the last tile of the pack
        fh.truncate(last["offset"] + 10)
    client = make_client(repo_copy)
    assert client.post("/infer", json={"tile_path": entry["file"]}).status_code == 200
    got = client.post("/infer", json={"tile_path": last["file"]})
    assert got.status_code == 422, got.text
    assert got.json()["detail"].startswith(f"{last['file']}: tile pack is ")
    assert str(repo_copy) not in got.json()["detail"]
    pack.unlink()
    got = client.post("/infer", json={"tile_path": entry["file"]})
    assert got.status_code == 404, got.text
    assert got.json()["detail"] == (
        f"tile_path {entry['file']!r}: its pack {entry['pack']!r} is not in the tiles "
        "directory (run `dvc pull` or `dvc repro`)"
    )


def test_an_empty_tile_path_is_a_path_error_not_a_crash() -> None:
    # The schema refuses it first (min_length 1), but the check itself must not raise
    # StopIteration looking for a refused character in an empty string.
    with pytest.raises(TilePathError, match="empty"):
        check_tile_path("")
