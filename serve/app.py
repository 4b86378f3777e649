"""The app factory: ``create_app(settings)`` builds the FastAPI app; nothing is built at import.

Run it with ``uvicorn serve.app:create_app --factory --host 127.0.0.1 --port 8000``; uvicorn
calls :func:`create_app` without arguments, so settings come from ``SATPIPE_*`` variables. The
lifespan loads and verifies the pinned model once; routes share it read-only.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio import CapacityLimiter
from anyio.to_thread import run_sync
from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

import satpipe
from satpipe.core import logs
from satpipe.inference import malloc
from serve import errors, maps, routes, segment_routes, viewer
from serve.body_limit import JsonBodyLimit
from serve.metrics import Metrics, MetricsMiddleware
from serve.service import PinWatcher, Service, Serving
from serve.settings import Settings

log = logging.getLogger(__name__)

DESCRIPTION = """Classifies satellite tiles and segments scenes per pixel (`/segment`) with
exactly the model `dvc.lock` pins.

Every answer names the model (`model_version`, `model_md5`; `X-Model-Version`, `X-Model-MD5`
on binary answers). Errors are `{"detail": "..."}` with 400 (refused tile path), 401 (API key),
404 (no such tile or scene), 406 (no acceptable answer format), 409 (the model labels tiles: no
per-pixel answer), 413 (body, pixels or window over a declared limit), 415 (not a TIFF), 422
(tile unlike the training tiles, unreadable, a bbox outside the scene, or invalid request) and
503 (no verified pinned model; the detail says what is missing and how to get it)."""


def _configure_logging(settings: Settings) -> None:
    # Configure only when nobody has (uvicorn configures its own loggers, not the root; a test
    # runner's capture handlers must not be replaced).
    if not logging.getLogger().handlers:
        logs.configure("serve", getattr(logging, settings.log_level))


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service for ``settings`` (default: :meth:`Settings.from_env`)."""
    settings = settings if settings is not None else Settings.from_env()
    _configure_logging(settings)
    malloc.tune_for_threads()  # tiles are classified in worker threads (satpipe.inference.malloc)
    metrics = Metrics()

    def on_change(previous: Serving, serving: Serving) -> None:
        metrics.model.clear()
        if serving.ready and serving.loaded is not None:
            loaded = serving.loaded
            metrics.model.labels(loaded.model.version, loaded.md5, loaded.origin).set(1)
            metrics.ready.set(1)
            logs.set_model(loaded.model.version)
            if previous.loaded is not None and previous.loaded is not loaded:
                metrics.swaps.inc()
        else:
            metrics.ready.set(0)
            if previous.ready or previous.reason != serving.reason:
                metrics.pin_failures.inc()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = await run_sync(Service.load, settings, on_change)
        app.state.service = service
        app.state.limiter = CapacityLimiter(settings.classify_threads or os.cpu_count() or 1)
        watcher = None
        if settings.rev is None and settings.reload_interval > 0:
            watcher = PinWatcher(service, settings.reload_interval)
            watcher.start()
        # A thread that released the GIL (to decode or hash) waits up to this long for it back
        # while another holds it; Python's 5 ms default shows up directly in the tail latency.
        previous = sys.getswitchinterval()
        sys.setswitchinterval(settings.switch_interval_ms / 1000)
        try:
            yield
        finally:
            sys.setswitchinterval(previous)
            if watcher is not None:
                await run_sync(watcher.stop)

    app = FastAPI(
        title="satpipe inference",
        version=satpipe.__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.versions = routes.versions()
    errors.install(app)
    # The API key check is installed only when a key is set: no per-request cost otherwise.
    auth = [Depends(routes.require_api_key)] if settings.api_key is not None else []
    app.include_router(routes.health)
    # Body limits per router (JSON, tile uploads, scene uploads); JsonBodyLimit answers a
    # declared Content-Length over one with the JSON error body, as every other refusal.
    app.include_router(routes.inference, dependencies=auth, max_body_size=settings.max_json_bytes)
    app.include_router(routes.uploads, dependencies=auth, max_body_size=settings.max_upload_bytes)
    app.include_router(
        segment_routes.segment_uploads, dependencies=auth, max_body_size=settings.max_segment_bytes
    )
    app.include_router(segment_routes.segment_scenes, dependencies=auth)
    # Maps and the viewer take the key in the header or, for map images, the api_key query.
    map_auth = [Depends(maps.require_map_key)] if settings.api_key is not None else []
    maps.install(app, map_auth)
    viewer.install(app, map_auth)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", routes.API_KEY_HEADER],
        )
    app.add_middleware(JsonBodyLimit)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
