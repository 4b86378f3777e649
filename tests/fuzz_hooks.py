"""Schemathesis hooks: realistic tile paths and tile uploads, so the fuzzer reaches classification.

Loaded by ``schemathesis run`` through ``SCHEMATHESIS_HOOKS=tests.fuzz_hooks``. The tiles come
from the JSON file named by ``SATPIPE_FUZZ_TILES``: ``{"paths": [...], "uploads": [...]}``,
tile paths relative to the tiles directory and tile files to upload. Each request body is
either what schemathesis draws from the schema or one built here: a real tile path, alone or
bent the ways clients get paths wrong (traversal, absolute, encoded, trailing parts), or a real
tile's bytes, whole, cut short or with one byte flipped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import strategies as st

_TILES = json.loads(Path(os.environ["SATPIPE_FUZZ_TILES"]).read_text())
_PATHS: list[str] = _TILES["paths"]
_BLOBS: list[bytes] = [Path(p).read_bytes() for p in _TILES["uploads"]]

_PREFIXES = ["", "", "", "./", "../", "/", "data/tiles/", "%2e%2e/", "..\\", "//", " "]
_SUFFIXES = ["", "", "", "/", ".aux.xml", ".ovr", "%00", "\x00", " ", "/..", "?x=1", ".TIF"]


def _bend(path: str, prefix: str, suffix: str, upper: bool) -> str:
    bent = prefix + path + suffix
    return bent.upper() if upper else bent


def _paths() -> st.SearchStrategy[str]:
    real = st.sampled_from(_PATHS)
    bent = st.builds(
        _bend, real, st.sampled_from(_PREFIXES), st.sampled_from(_SUFFIXES), st.booleans()
    )
    return st.one_of(real, bent)


def _damage(blob: bytes, how: str, at: int) -> bytes:
    at = at % max(1, len(blob))
    if how == "cut":
        return blob[:at]
    if how == "flip":
        return blob[:at] + bytes([blob[at] ^ 0xFF]) + blob[at + 1 :]
    return blob


def _uploads() -> st.SearchStrategy[bytes]:
    return st.builds(
        _damage,
        st.sampled_from(_BLOBS),
        st.sampled_from(["whole", "whole", "cut", "flip"]),
        st.integers(min_value=0, max_value=1 << 20),
    )


@schemathesis.hook
def before_generate_body(ctx: Any, strategy: st.SearchStrategy) -> st.SearchStrategy:
    """Mix realistic bodies into the schema's own for the three classifying routes."""
    path = ctx.operation.path
    if path == "/infer":
        return st.one_of(strategy, st.fixed_dictionaries({"tile_path": _paths()}))
    if path == "/infer/batch":
        paths = st.lists(_paths(), min_size=1, max_size=8)
        return st.one_of(strategy, st.fixed_dictionaries({"tile_paths": paths}))
    if path == "/infer/upload":
        return st.one_of(strategy, st.fixed_dictionaries({"file": _uploads()}))
    return strategy
