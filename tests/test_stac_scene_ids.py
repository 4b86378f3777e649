"""A STAC scene is named after its item's ``id`` (made safe for file names), not the item's file.

The items are the real Landsat item of ``tests/data`` (see ``tests/data/README.md``), copied as
``item.json`` beside stand-in COGs on its grid, its hrefs rewritten to those local files, and
copies of it under other ids. Nothing reaches the network.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from satpipe.core.errors import ParamsError
from satpipe.core.params import IngestParams
from satpipe.scenes.ingest import ingest_scenes, stac_scene_id
from satpipe.scenes.stac import StacError
from tests.stac_standins import load_item, standin_item

LANDSAT_ITEM = Path(__file__).parent / "data" / "LC08_L2SR_081119_20200101_20200823_02_T2.json"
ITEM_ID = "LC08_L2SR_081119_20200101_20200823_02_T2"
SCENE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")  # ingest.id's rule


def _local_item(folder: Path, item_id: str = ITEM_ID) -> Path:
    """``folder/item.json``: the Landsat item (id ``item_id``), its blue band a local stand-in."""
    rewritten = standin_item(LANDSAT_ITEM, folder, ".", ["SR_B2.TIF"])  # href ./<id>/SR_B2.TIF.tif
    item = load_item(rewritten)
    item["id"] = item_id
    rewritten.unlink()
    path = folder / "item.json"
    path.write_text(json.dumps(item))
    return path


def _params(**ingest: Any) -> IngestParams:
    return IngestParams.model_validate({"retries": 0, "timeout": 5, **ingest})


def _stac(item: str) -> dict[str, Any]:
    return {"source": "stac", "stac": {"item": item, "assets": ["SR_B2.TIF"]}}


def test_a_local_item_json_names_the_scene_after_the_item(tmp_path: Path) -> None:
    _local_item(tmp_path)
    scenes, _ = ingest_scenes(_params(**_stac("item.json")), tmp_path / "scenes", tmp_path)
    assert [s.id for s in scenes] == [ITEM_ID]
    written = sorted(p.name for p in (tmp_path / "scenes").iterdir())
    assert written == [f"{ITEM_ID}.json", f"{ITEM_ID}.preview.tif", f"{ITEM_ID}.tif"]


def test_ingest_id_still_wins(tmp_path: Path) -> None:
    _local_item(tmp_path)
    params = _params(**_stac("item.json"), id="mine")
    scenes, _ = ingest_scenes(params, tmp_path / "scenes", tmp_path)
    assert [s.id for s in scenes] == ["mine"]
    assert (tmp_path / "scenes/mine.tif").is_file()


def test_an_item_id_with_odd_characters_is_made_safe(tmp_path: Path) -> None:
    _local_item(tmp_path, "LC08 L2SR/081119 (T2)")
    scenes, _ = ingest_scenes(_params(**_stac("item.json")), tmp_path / "scenes", tmp_path)
    assert [s.id for s in scenes] == ["LC08-L2SR-081119-T2"]
    assert (tmp_path / "scenes/LC08-L2SR-081119-T2.tif").is_file()


def test_two_item_json_files_make_two_scenes(tmp_path: Path) -> None:
    _local_item(tmp_path / "a", "scene-a")
    _local_item(tmp_path / "b", "scene-b")
    params = _params(scenes=[_stac("a/item.json"), _stac("b/item.json")])
    scenes, _ = ingest_scenes(params, tmp_path / "scenes", tmp_path)
    assert [s.id for s in scenes] == ["scene-a", "scene-b"]
    assert (tmp_path / "scenes/scene-a.tif").is_file() and (
        tmp_path / "scenes/scene-b.tif"
    ).is_file()


def test_two_items_with_one_id_share_the_id(tmp_path: Path) -> None:
    _local_item(tmp_path / "a")
    _local_item(tmp_path / "b")
    params = _params(scenes=[_stac("a/item.json"), _stac("b/item.json")])
    with pytest.raises(ParamsError) as err:
        ingest_scenes(params, tmp_path / "scenes", tmp_path)
    assert str(err.value) == (
        f"ingest.scenes: scenes 0 and 1 share the id {ITEM_ID!r}; set a distinct 'id' on one of "
        "them"
    )
    assert not (tmp_path / "scenes").exists()


def test_an_item_id_can_clash_with_a_given_id(tmp_path: Path) -> None:
    _local_item(tmp_path)
    params = _params(scenes=[{"seed": 3, "id": ITEM_ID}, _stac("item.json")])
    with pytest.raises(ParamsError, match=f"scenes 0 and 1 share the id '{ITEM_ID}'"):
        ingest_scenes(params, tmp_path / "scenes", tmp_path)


def test_a_missing_item_keeps_failing_as_before(tmp_path: Path) -> None:
    with pytest.raises(StacError) as err:
        ingest_scenes(_params(**_stac("missing.json")), tmp_path / "scenes", tmp_path)
    # Named by its reference (there is no item to take an id from), in one line.
    assert str(err.value) == (
        "scene 'missing.json': STAC item missing.json: file not found (ingest.stac.item)"
    )


@pytest.mark.parametrize(
    ("item_id", "expected"),
    [
        (ITEM_ID, ITEM_ID),
        ("S2A_33UUP_20240715_0_L2A", "S2A_33UUP_20240715_0_L2A"),
        ("LC08 L2SR/081119", "LC08-L2SR-081119"),
        ("a//b??c", "a-b-c"),
        ("_hidden.item", "hidden.item"),
        ("..x", "x"),
        ("ü-scene", "scene"),
        ("x" * 150, "x" * 100),
        ("a" * 99 + " b", "a" * 99),
        ("///", None),
        ("", None),
        (None, None),
        (42, None),
    ],
)
def test_stac_scene_id_is_deterministic_and_a_valid_id(item_id: Any, expected: str | None) -> None:
    got = stac_scene_id(item_id)
    assert got == expected
    assert got == stac_scene_id(item_id)
    assert got is None or SCENE_ID.match(got)
