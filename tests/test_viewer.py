"""The map viewer in headless Chromium: its pixels are the classes the raster holds there.

Real uvicorn serves the committed per-pixel run (:func:`tests.serve_fixtures.segmentation_repo`);
Chromium (:mod:`tests.browser`) opens ``/viewer`` with every host but 127.0.0.1 unresolvable, so
the page must work offline (vendored Leaflet). Screen points are turned into scene pixels with
Leaflet's own ``containerPointToLatLng``, and only points whose 5x5 scene neighbourhood holds
one class are judged, so the check does not hang on which side of a class edge a pixel falls.
"""

# Fixtures are imported from tests.serve_fixtures; pytest injects them as same-named arguments.
# ruff: noqa: F811

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.warp import transform

from serve.viewer import STATIC
from tests.browser import browser, chromium_available
from tests.serve_fixtures import segmentation_repo, uvicorn_server  # noqa: F401

SCENE = "synthetic-42"
WIDTH, HEIGHT = 1024, 640
LEAFLET = STATIC / "vendor" / "leaflet"


@pytest.fixture(scope="module")
def viewer_server(
    segmentation_repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    reason = chromium_available()
    if reason:
        pytest.skip(reason)
    log = tmp_path_factory.mktemp("viewer") / "server.log"
    with uvicorn_server(segmentation_repo, log) as base:
        yield base


def _uniform(codes: np.ndarray, row: int, col: int, radius: int = 2) -> bool:
    rows, cols = codes.shape
    if not (radius <= row < rows - radius and radius <= col < cols - radius):
        return False
    block = codes[row - radius : row + radius + 1, col - radius : col + radius + 1]
    return bool((block == block[0, 0]).all())


@pytest.mark.slow
def test_the_viewer_draws_each_class_in_its_palette_colour_offline(
    viewer_server: str, segmentation_repo: Path
) -> None:
    with rasterio.open(segmentation_repo / f"data/segments/{SCENE}.class.tif") as src:
        codes, palette, crs, t = src.read(1), src.colormap(1), src.crs, src.transform
    with browser(WIDTH, HEIGHT, offline=True) as page:
        page.open(f"{viewer_server}/viewer?scene={SCENE}&layers=scene,classes&opacity=1")
        page.wait_for("window.satpipeViewer && window.satpipeViewer.ready()", timeout=30)
        shot = page.screenshot()
        # Container points on a grid, their screen position and their lon/lat, from Leaflet.
        points = page.run(
            """
            const map = window.satpipeViewer.panes[0].map;
            const box = map.getContainer().getBoundingClientRect();
            const out = [];
            for (let y = 5; y < box.height - 5; y += 11) {
              for (let x = 5; x < box.width - 5; x += 11) {
                const at = map.containerPointToLatLng([x + 0.5, y + 0.5]);
                out.push([box.left + x, box.top + y, at.lng, at.lat]);
              }
            }
            return out;
            """
        )
        legend = page.run(
            "return Array.from(document.querySelectorAll('#legend .swatch'))"
            ".map((s) => [s.parentNode.textContent, getComputedStyle(s).backgroundColor]);"
        )
        model = page.run("return document.getElementById('model').textContent;")
        errors = page.console_errors()
    xs, ys = transform("EPSG:4326", crs, [p[2] for p in points], [p[3] for p in points])
    judged: dict[int, int] = {}
    for (sx, sy, _, _), x, y in zip(points, xs, ys, strict=True):
        col, row = int((x - t.c) // t.a), int((y - t.f) // t.e)
        if not _uniform(codes, row, col) or codes[row, col] == 255:
            continue
        code = int(codes[row, col])
        assert shot[int(sy), int(sx), :3].tolist() == list(palette[code][:3]), (sx, sy, code)
        judged[code] = judged.get(code, 0) + 1
    assert judged.get(0, 0) >= 20 and judged.get(1, 0) >= 500  # water and vegetation
    assert errors == []
    names = ["water", "vegetation", "soil", "cloud"]
    assert legend == [[n, "rgb({}, {}, {})".format(*palette[i][:3])] for i, n in enumerate(names)]
    assert model.startswith("Model ") and "md5" in model


@pytest.mark.slow
def test_a_click_shows_the_pixel_class_probability_and_tile(viewer_server: str) -> None:
    with browser(WIDTH, HEIGHT, offline=True) as page:
        page.open(f"{viewer_server}/viewer?scene={SCENE}&layers=scene,tiles")
        page.wait_for("window.satpipeViewer && window.satpipeViewer.ready()", timeout=30)
        page.run(
            "const map = window.satpipeViewer.panes[0].map;"
            "map.fire('click', {latlng: map.getBounds().getCenter()});"
        )
        page.wait_for("document.querySelector('.point-info') !== null", timeout=10)
        text = page.run("return document.querySelector('.point-info').textContent;")
        assert page.console_errors() == []
    assert "vegetation (code 1)" in text and "probability100.0%" in text
    assert re.search(r"tilesynthetic-42/r\d{6}_c\d{6}", text) and "mean_intensity" in text


def test_the_vendored_leaflet_is_the_recorded_release() -> None:
    readme = (LEAFLET / "README.md").read_text()
    rows = re.findall(r"^\| `([^`]+)` \| `([0-9a-f]{64})` \|$", readme, re.MULTILINE)
    assert len(rows) == 8
    for name, digest in rows:
        assert hashlib.sha256((LEAFLET / name).read_bytes()).hexdigest() == digest, name
    assert 't.version="1.9.4"' in (LEAFLET / "leaflet.js").read_text()
    assert "BSD 2-Clause" in (LEAFLET / "LICENSE").read_text()


def test_the_viewer_loads_nothing_from_another_host() -> None:
    for path in (STATIC / "viewer").iterdir():
        text = path.read_text()
        assert not re.search(r"(?:src|href|url)\s*[=(]\s*[\"']?(?:https?:)?//", text), path
    assert not re.search(r"url\(\s*[\"']?(?:https?:)?//", (LEAFLET / "leaflet.css").read_text())
