"""Per-scene reuse (satpipe.core.reuse): ingest and tile keep unchanged scenes, bytes unchanged."""

from __future__ import annotations

import filecmp
import os
import shutil
from pathlib import Path

import pytest
import yaml

from satpipe.core.files import atomic_dir, canonical_json
from satpipe.core.params import IngestParams, parse_params
from satpipe.core.records import SceneRecord
from satpipe.core.reuse import Reuse, fingerprint
from satpipe.scenes.ingest import ingest_scenes
from satpipe.tiles.run import tile_scenes
from tests.helpers import run
from tests.serve_fixtures import init_pipeline, set_params

# Odd sizes: partial edge tiles at 64-pixel tiles.
SCENES = [{"source": "synthetic", "seed": s, "width": 201, "height": 167} for s in (1, 2, 3)]


def _params(scenes: list[dict]) -> IngestParams:
    return parse_params({"ingest": {"scenes": scenes}, "tile": {"size": 64}}).ingest


def _ingest(out: Path, scenes: list[dict], record: Path | None) -> tuple[list[SceneRecord], Reuse]:
    """Ingest ``scenes`` into ``out``; ``record`` None: no record, as outside a DVC repository."""
    reuse = Reuse.open("ingest", out, record) if record else Reuse(None, out)
    with atomic_dir(out) as tmp:
        records, _ = ingest_scenes(_params(scenes), tmp, out.parent, None, reuse)
    reuse.save()
    return records, reuse


def _tile(scenes_dir: Path, out: Path, records: list[SceneRecord], record: Path | None) -> str:
    params = parse_params({"tile": {"size": 64}})
    reuse = Reuse.open("tile", out, record) if record else None
    with atomic_dir(out) as tmp:
        index, _ = tile_scenes(
            records, scenes_dir, tmp, params.tile, params.features, None, False, reuse
        )
    if reuse:
        reuse.save()
    return canonical_json(index.to_json())


def _same_dirs(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    _, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    assert not mismatch and not errors, mismatch


def test_adding_a_scene_reuses_the_others_and_matches_a_cold_run(tmp_path: Path) -> None:
    record = tmp_path / "record.json"
    inc, cold = tmp_path / "inc", tmp_path / "cold"
    first, _ = _ingest(inc / "scenes", SCENES[:2], record)
    _tile(inc / "scenes", inc / "tiles", first, record.with_name("tiles.json"))
    inode = (inc / "scenes" / "synthetic-1.tif").stat().st_ino

    records, reuse = _ingest(inc / "scenes", SCENES, record)
    assert reuse.reused == ["synthetic-1", "synthetic-2"]
    assert (inc / "scenes" / "synthetic-1.tif").stat().st_ino == inode  # linked, not rewritten
    index = _tile(inc / "scenes", inc / "tiles", records, record.with_name("tiles.json"))

    cold_records, _ = _ingest(cold / "scenes", SCENES, None)
    assert [r.to_json() for r in records] == [r.to_json() for r in cold_records]
    assert index == _tile(cold / "scenes", cold / "tiles", cold_records, None)
    _same_dirs(inc / "scenes", cold / "scenes")
    _same_dirs(inc / "tiles", cold / "tiles")


def test_removing_a_scene_removes_its_files(tmp_path: Path) -> None:
    record = tmp_path / "record.json"
    _ingest(tmp_path / "scenes", SCENES, record)
    _, reuse = _ingest(tmp_path / "scenes", SCENES[1:], record)
    assert reuse.reused == ["synthetic-2", "synthetic-3"]
    assert not list((tmp_path / "scenes").glob("synthetic-1*"))


def test_changed_params_touched_files_or_code_compute_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = tmp_path / "record.json"
    out = tmp_path / "scenes"
    _ingest(out, SCENES[:2], record)
    changed = [{**SCENES[0], "width": 203}, SCENES[1]]
    _, reuse = _ingest(out, changed, record)
    assert reuse.reused == ["synthetic-2"]

    path = out / "synthetic-2.preview.tif"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1))
    _, reuse = _ingest(out, changed, record)
    assert reuse.reused == ["synthetic-1"]  # synthetic-2's file was touched: made again

    monkeypatch.setattr("satpipe.core.reuse.code_digest", lambda: "another version")
    _, reuse = _ingest(out, changed, record)
    assert reuse.reused == []


def test_a_local_input_file_is_part_of_the_fingerprint(tmp_path: Path) -> None:
    scene = tmp_path / "in.tif"
    scene.write_bytes(b"one")
    before = fingerprint("ingest", {"path": "in.tif"}, [scene])
    assert before == fingerprint("ingest", {"path": "in.tif"}, [scene])
    scene.write_bytes(b"two")
    assert before != fingerprint("ingest", {"path": "in.tif"}, [scene])
    assert before != fingerprint("tile", {"path": "in.tif"}, [scene])


def test_an_unreadable_or_foreign_record_reuses_nothing(tmp_path: Path) -> None:
    record = tmp_path / "record.json"
    _ingest(tmp_path / "scenes", SCENES[:1], record)
    shutil.copytree(tmp_path / "scenes", tmp_path / "other")
    _, reuse = _ingest(tmp_path / "other", SCENES[:1], record)  # the record is of "scenes"
    assert reuse.reused == []
    record.write_text("{not json")
    _, reuse = _ingest(tmp_path / "scenes", SCENES[:1], record)
    assert reuse.reused == []


def test_outside_a_dvc_repository_there_is_no_record(tmp_path: Path) -> None:
    reuse = Reuse.open("ingest", tmp_path / "scenes")
    assert reuse.record is None
    reuse.save()
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_dvc_repro_after_adding_a_scene_keeps_the_others(tmp_path: Path) -> None:
    """Through DVC (persistent outputs): the lock equals a cold run's with the three scenes."""
    settings = {"ingest": {"scenes": SCENES[:2]}, "tile": {"size": 64}}
    inc = init_pipeline(tmp_path / "inc", settings, targets=["tile"])
    set_params(inc, {"ingest": {"scenes": SCENES}})
    out = run(["dvc", "repro", "tile"], inc)
    log = out.stdout + out.stderr
    assert "reused 2 of 3 scenes" in log
    assert "reused the tiles of 2 of 3 scenes" in log
    settings["ingest"]["scenes"] = SCENES
    cold = init_pipeline(tmp_path / "cold", settings, targets=["tile"])
    locks = [yaml.safe_load((repo / "dvc.lock").read_text()) for repo in (inc, cold)]
    for stage in ("ingest", "tile"):
        assert locks[0]["stages"][stage]["outs"] == locks[1]["stages"][stage]["outs"], stage
