"""Take the viewer screenshots of this folder: the viewer in headless Chromium, offline.

Usage: ``python docs/viewer/screenshots.py SEGMENTED_REPO TILE_LABEL_REPO [OUT_DIR]``: two DVC
repos with a pipeline run each (a per-pixel ``pixel_logistic`` run and a tile-label run with a
``v1`` tag, as ``tests/serve_fixtures`` builds them). Writes, 1024 x 640:

- ``classes.png``: the class layer over the true-colour scene, with the legend;
- ``errors.png``: the held-out pixels' errors over the scene, a pixel clicked;
- ``tiles.png``: the tile predictions of the tile-label run, a tile clicked;
- ``compare.png``: that run's tile predictions now (left) and at ``v1`` (right), side by side.
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import rasterio  # noqa: E402
from rasterio.errors import NotGeoreferencedWarning  # noqa: E402

from tests.browser import Browser, browser  # noqa: E402
from tests.serve_fixtures import uvicorn_server  # noqa: E402

READY = "window.satpipeViewer && window.satpipeViewer.ready()"
CLICK = (
    "const map = window.satpipeViewer.panes[0].map;"
    "map.fire('click', {latlng: map.containerPointToLatLng([{x}, {y}])});"
)


def save(page: Browser, path: Path) -> None:
    """Write the page's viewport as an RGB PNG."""
    shot = page.screenshot()[..., :3]
    profile = {"driver": "PNG", "width": shot.shape[1], "height": shot.shape[0], "count": 3}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # a PNG has no geotransform
        with rasterio.open(path, "w", dtype="uint8", **profile) as dst:
            dst.write(np.moveaxis(shot, -1, 0))
    errors = page.console_errors()
    if errors:
        raise SystemExit(f"{path}: the page logged errors: {errors}")


def take(base: str, query: str, path: Path, click: tuple[int, int] | None = None) -> None:
    """Open the viewer with ``query``, wait for its tiles, optionally click, and save."""
    with browser(1024, 640, offline=True) as page:
        page.open(f"{base}/viewer?{query}")
        page.wait_for(READY, timeout=60)
        if click is not None:
            page.run(CLICK.replace("{x}", str(click[0])).replace("{y}", str(click[1])))
            page.wait_for("document.querySelector('.point-info') !== null", timeout=10)
        save(page, path)


def main() -> None:
    """Serve both runs and take the four screenshots."""
    segmented, tile_label = Path(sys.argv[1]), Path(sys.argv[2])
    out = Path(sys.argv[3]) if len(sys.argv) > 3 else Path(__file__).parent
    logs = Path(tempfile.mkdtemp(prefix="viewer-screenshots-"))
    with uvicorn_server(segmented, logs / "segmented.log") as base:
        take(base, "scene=synthetic-42&layers=scene,classes&opacity=0.7", out / "classes.png")
        take(base, "layers=scene,errors&opacity=1", out / "errors.png", click=(260, 250))
    with uvicorn_server(tile_label, logs / "now.log") as now:
        take(now, "layers=scene,tiles&opacity=0.6", out / "tiles.png", click=(560, 420))
        with uvicorn_server(tile_label, logs / "v1.log", rev="v1", cors_origins=now) as v1:
            query = f"layers=scene,tiles&opacity=0.6&compare={v1}"
            take(now, query, out / "compare.png")


if __name__ == "__main__":
    main()
