"""The map viewer: ``GET /viewer``, a page that shows the pinned outputs on a Leaflet map.

The page (``serve/static/viewer/``) and Leaflet (``serve/static/vendor/leaflet/``, vendored from
the npm registry: version, integrity and licence in its README) are files of this package,
served under ``/static``, so the viewer works with no internet access. Its JavaScript reads
everything from the ``/maps`` routes: a scene picker, layer toggles, an opacity slider, the
legends, the served model's version, and a click that shows the pixel's class and probability
and the tile prediction there. ``?compare=<URL of another service>`` shows that service's
outputs side by side (two experiments, e.g. one served at ``SATPIPE_REV=v1``), the two maps
moving together; the other service must allow this one's origin (``SATPIPE_CORS_ORIGINS``).

``/viewer`` takes the API key like the map routes (``?api_key=`` in a browser); the static files
are the page's code and Leaflet's, public.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

from fastapi import APIRouter, FastAPI, params
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

from serve.schemas import ErrorBody

STATIC = Path(__file__).parent / "static"
PAGE = STATIC / "viewer" / "index.html"

router = APIRouter(tags=["maps"])


@functools.cache
def _page() -> bytes:
    return PAGE.read_bytes()


@router.get(
    "/viewer",
    response_class=Response,  # errors stay JSON (ErrorBody); the page itself is text/html
    responses={
        200: {"content": {"text/html": {"schema": {"type": "string"}}}},
        401: {"model": ErrorBody},
    },
)
async def viewer() -> HTMLResponse:
    """The map viewer page (query: scene, layers, opacity, api_key, compare)."""
    return HTMLResponse(_page())


def install(app: FastAPI, dependencies: Sequence[params.Depends]) -> None:
    """Add ``/viewer`` (with ``dependencies``: the API key check) and the static files."""
    app.include_router(router, dependencies=list(dependencies))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
