"""predict_file: the sha256 check, and skipping it for files already verified and unchanged."""

from __future__ import annotations

import os
import platform
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from satpipe.core.errors import TileError
from satpipe.core.files import sha256_file
from satpipe.inference import malloc
from satpipe.inference import predict as inference
from satpipe.inference.predict import VerifiedFiles, predict_file
from satpipe.models import model as model_lib
from tests.models import threshold_model


@pytest.fixture
def tile(make_raster: Callable[..., Path]) -> Path:
    """A small odd-sized 4-band tile with a nodata corner."""

    def data(count: int, height: int, width: int) -> np.ndarray:
        values = np.arange(1, count * height * width + 1, dtype=np.uint16)
        values = values.reshape(count, height, width)
        values[:, :3, :4] = 0
        return values

    return make_raster("tile.tif", width=29, height=23, count=4, nodata=0, data=data)


@pytest.fixture
def model() -> model_lib.Model:
    """A threshold model over all bands."""
    return threshold_model([10.0, 2000.0], bins=2)


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the sha256 computations predict_file makes."""
    calls: list[int] = []
    real = inference.sha256_bytes

    def counting(data: bytes) -> str:
        calls.append(len(data))
        return real(data)

    monkeypatch.setattr(inference, "sha256_bytes", counting)
    return calls


def test_a_wrong_sha256_is_refused_naming_the_file(tile: Path, model: model_lib.Model) -> None:
    with pytest.raises(TileError, match=r"tile\.tif: sha256 is [0-9a-f]{64}; the tile index says"):
        predict_file(tile, model, "0" * 64)


def test_a_verified_unchanged_file_is_not_hashed_again(
    tile: Path, model: model_lib.Model, hashes: list[int]
) -> None:
    verified = VerifiedFiles()
    sha = sha256_file(tile)
    first = predict_file(tile, model, sha, verified)
    second = predict_file(tile, model, sha, verified)
    assert first == second
    assert len(hashes) == 1
    # Without the cache, every call hashes; another expected sha256 is checked afresh.
    predict_file(tile, model, sha)
    with pytest.raises(TileError):
        predict_file(tile, model, "f" * 64, verified)
    assert len(hashes) == 3


def test_a_file_changed_in_place_is_hashed_again_and_refused(
    tile: Path, model: model_lib.Model, hashes: list[int], tmp_path: Path
) -> None:
    verified = VerifiedFiles()
    sha = sha256_file(tile)
    predict_file(tile, model, sha, verified)
    # Same size, same mtime put back: the ctime (and so the signature) still changes.
    st = tile.stat()
    blob = bytearray(tile.read_bytes())
    blob[-1] ^= 0xFF
    with open(tile, "r+b") as f:
        f.write(bytes(blob))
    os.utime(tile, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(TileError, match="sha256 is"):
        predict_file(tile, model, sha, verified)
    # Replaced by another file (a new inode) with the right bytes: hashed, then accepted.
    good = tmp_path / "good.tif"
    blob[-1] ^= 0xFF
    good.write_bytes(bytes(blob))
    shutil.move(good, tile)
    predict_file(tile, model, sha, verified)
    assert len(hashes) == 3


def test_the_verified_set_is_bounded() -> None:
    verified = VerifiedFiles(max_entries=3)
    keys = [((1, i, 2, 3, 4), "a" * 64) for i in range(7)]
    for key in keys:
        verified.add(key)
    assert keys[-1] in verified
    assert sum(key in verified for key in keys) <= 3


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="mallopt tuning applies to glibc only",
)
def test_malloc_tuning_applies_once_on_glibc() -> None:
    assert malloc.tune_for_threads() is True
    assert malloc.tune_for_threads() is True
