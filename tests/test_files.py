"""Canonical JSON: deterministic text, non-finite floats carried as strings."""

from __future__ import annotations

import json
import math

import pytest

from satpipe.files import canonical_json, json_digest


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
