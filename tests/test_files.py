"""Canonical JSON: deterministic text, non-finite floats carried as strings."""

from __future__ import annotations

import fcntl
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from satpipe.core.files import (
    TEMP_MARK,
    atomic_dir,
    atomic_path,
    canonical_json,
    json_digest,
    remove_stale_temps,
)
from tests.helpers import REPO


def test_keys_are_sorted_and_text_ends_with_a_newline() -> None:
    text = canonical_json({"b": 1, "a": {"d": (1, 2), "c": 0.1}})
    assert text.endswith("\n")
    assert json.loads(text) == {"a": {"c": 0.1, "d": [1, 2]}, "b": 1}
    assert text.index('"a"') < text.index('"b"') and text.index('"c"') < text.index('"d"')
    assert canonical_json({"a": 1, "b": 2}) == canonical_json({"b": 2, "a": 1})


@pytest.mark.parametrize(
    ("value", "shown"),
    [(math.nan, "NaN"), (math.inf, "Infinity"), (-math.inf, "-Infinity")],
)
def test_non_finite_floats_become_strings_anywhere(value: float, shown: str) -> None:
    doc = {"z": [1.5, {"deep": (value, 2)}], "a": value}
    got = json.loads(canonical_json(doc, indent=None))
    assert got == {"a": shown, "z": [1.5, {"deep": [shown, 2]}]}


def test_digest_depends_on_content_not_key_order() -> None:
    assert json_digest({"x": [1, 2], "y": None}) == json_digest({"y": None, "x": [1, 2]})
    assert json_digest({"x": [1, 2]}) != json_digest({"x": [2, 1]})
    assert json_digest({"x": math.nan}) == json_digest({"x": "NaN"})


# --- temporaries of a killed run ---------------------------------------------------------------


def test_a_failed_write_leaves_no_temporary(tmp_path: Path) -> None:
    dest = tmp_path / "out.json"
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_text("half")
        raise RuntimeError("stop")
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "tiles") as tmp:
        (tmp / "a.tif").write_bytes(b"x")
        raise RuntimeError("stop")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_stale_temporaries_of_the_output_are_removed_live_and_others_kept(
    tmp_path: Path,
) -> None:
    """A temporary nobody holds is a killed run's: removed. A held one, or another's: kept."""
    stale_dir = tmp_path / f".tiles.{TEMP_MARK}dead1"
    (stale_dir / "scene").mkdir(parents=True)
    (stale_dir / "scene/r000000_c000000.tif").write_bytes(b"x" * 100)
    stale_file = tmp_path / f".tiles.{TEMP_MARK}dead2.tmp"
    stale_file.write_bytes(b"half")
    live = tmp_path / f".tiles.{TEMP_MARK}live"
    live.mkdir()
    other = tmp_path / f".tiles.json.{TEMP_MARK}dead3.tmp"  # another output's temporary
    other.write_bytes(b"x")
    unrelated = tmp_path / ".tiles.cache"  # not a temporary of ours at all
    unrelated.write_bytes(b"x")
    fd = os.open(live, os.O_RDONLY)  # a second open file: the lock conflicts like another process's
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        removed = remove_stale_temps(tmp_path / "tiles")
    finally:
        os.close(fd)
    assert sorted(removed) == sorted([stale_dir, stale_file])
    assert live.exists() and other.exists() and unrelated.exists()
    assert not stale_dir.exists() and not stale_file.exists()


def test_the_next_write_removes_a_killed_writers_temporary(tmp_path: Path) -> None:
    """A writer killed mid-write (SIGKILL) leaves its temporary; the next write removes it."""
    dest = tmp_path / "tiles"
    code = (
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "from satpipe.core.files import atomic_dir\n"
        "with atomic_dir(Path(sys.argv[1])) as tmp:\n"
        "    (tmp / 'part.tif').write_bytes(b'x' * 1000)\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(60)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(dest)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "writing\n"
        litter = list(tmp_path.glob(f".tiles.{TEMP_MARK}*"))
        assert len(litter) == 1
        assert remove_stale_temps(dest) == []  # its writer is alive: left alone
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.kill()
    assert litter[0].exists()  # what a killed stage leaves today
    with atomic_dir(dest) as tmp:
        (tmp / "whole.tif").write_bytes(b"y")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiles"]
    assert [p.name for p in dest.iterdir()] == ["whole.tif"]
