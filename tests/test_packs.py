"""Tile packs: ordinary, deterministic ZIP files whose members are read in place by offset."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from satpipe.core.errors import RasterReadError
from satpipe.tiles.packs import PackWriter, pack_name, read_member


def _write(path: Path, members: list[tuple[str, bytes]]) -> list[tuple[int, int]]:
    with PackWriter(path) as writer:
        return [writer.add(name, data) for name, data in members]


def test_offsets_point_at_each_members_bytes_and_zip_reads_the_same(tmp_path: Path) -> None:
    members = [(f"s/r{i:06d}_c000000.tif", bytes([i % 251]) * (37 + i)) for i in range(9)]
    spans = _write(tmp_path / "s.zip", members)
    with zipfile.ZipFile(tmp_path / "s.zip") as zf:
        assert zf.namelist() == [name for name, _ in members]  # in the order written
        assert zf.testzip() is None  # CRCs check out
        for (name, data), (offset, length) in zip(members, spans, strict=True):
            assert length == len(data)
            assert read_member(tmp_path / "s.zip", offset, length)[0] == data
            assert zf.read(name) == data
            info = zf.getinfo(name)
            assert info.compress_type == zipfile.ZIP_STORED
            assert info.date_time == (1980, 1, 1, 0, 0, 0)


def test_same_tiles_give_the_same_bytes(tmp_path: Path) -> None:
    members = [("a/x.tif", b"one"), ("a/y.tif", b"two")]
    _write(tmp_path / "1.zip", members)
    _write(tmp_path / "2.zip", members)
    assert (tmp_path / "1.zip").read_bytes() == (tmp_path / "2.zip").read_bytes()


def test_more_members_than_zip32_allows_is_a_zip64_pack(tmp_path: Path) -> None:
    n = 65_536 + 3  # past the 16-bit member count of the classic ZIP directory
    spans = _write(tmp_path / "big.zip", [(f"t{i}.tif", i.to_bytes(4, "big")) for i in range(n)])
    with zipfile.ZipFile(tmp_path / "big.zip") as zf:
        assert len(zf.infolist()) == n
        assert zf.read(f"t{n - 1}.tif") == (n - 1).to_bytes(4, "big")
    assert read_member(tmp_path / "big.zip", *spans[-1])[0] == (n - 1).to_bytes(4, "big")


def test_signature_names_the_member_and_changes_with_the_pack(tmp_path: Path) -> None:
    (a, b) = _write(tmp_path / "s.zip", [("x.tif", b"xx"), ("y.tif", b"yy")])
    _, sig_a = read_member(tmp_path / "s.zip", *a)
    _, sig_b = read_member(tmp_path / "s.zip", *b)
    assert sig_a != sig_b  # same pack, different members
    assert read_member(tmp_path / "s.zip", *a)[1] == sig_a
    _write(tmp_path / "s.zip", [("x.tif", b"xx"), ("y.tif", b"yy")])  # rewritten
    assert read_member(tmp_path / "s.zip", *a)[1] != sig_a


def test_a_pack_cut_short_or_missing_is_one_clear_error(tmp_path: Path) -> None:
    ((offset, length),) = _write(tmp_path / "s.zip", [("x.tif", b"x" * 100)])
    with open(tmp_path / "s.zip", "r+b") as fh:
        fh.truncate(offset + 10)
    with pytest.raises(RasterReadError, match=r"s\.zip: tile pack is \d+ bytes; expected a tile"):
        read_member(tmp_path / "s.zip", offset, length)
    with pytest.raises(RasterReadError, match=r"gone\.zip: cannot read tile pack"):
        read_member(tmp_path / "gone.zip", 0, 1)


def test_pack_names() -> None:
    assert pack_name("scene-1") == "scene-1.zip"
    assert pack_name(None) == "tiles.zip"
