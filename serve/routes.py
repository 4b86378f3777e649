"""The routes: each reads its body, asks the service, and returns a schema.

Failures are domain errors raised by the service and turned into statuses by :mod:`serve.errors`.

Speed: routes and dependencies are ``async``; classification runs in worker threads, at most
``classify_threads`` at once (one per core by default, :meth:`Ready.offload`). Decoding a tile
(GDAL) and hashing it release the GIL, so a second core decodes while the event loop parses the
next request: measured with ``benchmarks/load_serve.py`` on 2 cores, /infer by path went from
441-448 req/s classified on the event loop to 554-565 req/s offloaded. The app also shortens
the GIL switch interval and tunes glibc for threads (see :mod:`serve.app`,
:mod:`satpipe.inference.malloc`).
"""

from __future__ import annotations

import hmac
import importlib.metadata
import platform
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, TypeVar

import numpy as np
import rasterio
from anyio import CapacityLimiter
from anyio.to_thread import run_sync
from fastapi import APIRouter, Depends, File, Request, Security, UploadFile
from fastapi.responses import Response
from fastapi.security import APIKeyHeader
from prometheus_client import CONTENT_TYPE_LATEST

import satpipe
from satpipe.core.errors import SatpipeError
from satpipe.core.params import TrainParams
from satpipe.core.params_base import unset_nested
from serve.errors import AuthError, status_for
from serve.metrics import Metrics
from serve.schemas import (
    TIFF_PART_SCHEMA,
    TIFF_UPLOAD_ENCODING,
    BatchItem,
    BatchRequest,
    BatchResponse,
    ErrorBody,
    InferRequest,
    InferResult,
    Liveness,
    ModelInfo,
    Readiness,
    RegistryInfo,
)
from serve.service import LoadedModel, Service

API_KEY_HEADER = "X-API-Key"
T = TypeVar("T")
_api_key = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="required on /infer, /infer/upload, /infer/batch, /segment and /model when "
    "SATPIPE_API_KEY is set",
)


@dataclass(frozen=True)
class Ready:
    """What a route that classifies needs: the service, its verified model, the metrics."""

    service: Service
    loaded: LoadedModel
    metrics: Metrics
    limiter: CapacityLimiter

    async def offload(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` in a worker thread, at most ``classify_threads`` at a time."""
        return await run_sync(fn, *args, limiter=self.limiter)


async def get_ready(request: Request) -> Ready:
    """The service and its verified pinned model (503 through :class:`NotReadyError`)."""
    state = request.app.state
    service: Service = state.service
    return Ready(service, service.require_ready(), state.metrics, state.limiter)


# One dependency per route keeps FastAPI's per-request dependency solving short.
ReadyDep = Annotated[Ready, Depends(get_ready)]


async def require_api_key(request: Request, key: Annotated[str | None, Security(_api_key)]) -> None:
    """Check the API key header against ``SATPIPE_API_KEY`` (installed only when it is set)."""
    expected = request.app.state.settings.api_key
    if expected is None:
        return
    if key is None or not hmac.compare_digest(key.encode(), expected.get_secret_value().encode()):
        raise AuthError(f"missing or wrong API key in the {API_KEY_HEADER} header")


def error_responses(*codes: int) -> dict[int | str, dict]:
    """The ``responses`` of a route that answers these error statuses, each an ErrorBody."""
    return {code: {"model": ErrorBody} for code in codes}


health = APIRouter(tags=["health"])
inference = APIRouter(tags=["inference"])
uploads = APIRouter(tags=["inference"])


@health.get("/health/live")
async def live() -> Liveness:
    """The process is up (no check of the model)."""
    return Liveness()


@health.get("/health/ready", responses=error_responses(503))
async def ready(ctx: ReadyDep) -> Readiness:
    """Ready when the pinned model is loaded and its md5 equals the lock's; 503 with why."""
    m = ctx.loaded
    return Readiness(model_version=m.model.version, model_md5=m.md5, origin=m.origin)


@health.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}
    },
)
async def metrics(request: Request) -> Response:
    """Prometheus text format: requests, latencies, predictions, the loaded model.

    The model gauges are kept current by the service as its state changes (``serve.app``).
    """
    metrics: Metrics = request.app.state.metrics
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)


@inference.post("/infer", responses=error_responses(400, 401, 404, 413, 415, 422, 503))
async def infer(body: InferRequest, ctx: ReadyDep) -> InferResult:
    """Classify a tile of the tiles directory, given its path relative to that directory."""
    tile = ctx.service.resolve(body.tile_path, ctx.loaded)
    result = await ctx.offload(ctx.service.classify, tile, ctx.loaded)
    ctx.metrics.predictions.labels(result.prediction, result.model_version).inc()
    return result


def _batch(service: Service, paths: list[str], loaded: LoadedModel) -> list[BatchItem]:
    items = []
    for raw in paths:
        try:
            result = service.infer_path(raw, loaded)
        except SatpipeError as exc:
            items.append(BatchItem(tile_path=raw, status=status_for(exc), detail=str(exc)))
        else:
            items.append(BatchItem(tile_path=raw, status=200, result=result))
    return items


@inference.post("/infer/batch", responses=error_responses(400, 401, 413, 422, 503))
async def infer_batch(body: BatchRequest, ctx: ReadyDep) -> BatchResponse:
    """Classify a list of tile paths; one result or one error (status, detail) per item."""
    loaded = ctx.loaded
    items = await ctx.offload(_batch, ctx.service, body.tile_paths, loaded)
    for item in items:
        if item.result is not None:
            ctx.metrics.predictions.labels(item.result.prediction, loaded.model.version).inc()
    ok = sum(item.result is not None for item in items)
    return BatchResponse(
        model_version=loaded.model.version,
        model_md5=loaded.md5,
        succeeded=ok,
        failed=len(items) - ok,
        results=items,
    )


@uploads.post(
    "/infer/upload",
    responses=error_responses(400, 401, 413, 415, 422, 503),
    openapi_extra=TIFF_UPLOAD_ENCODING,
)
async def infer_upload(
    file: Annotated[
        UploadFile,
        File(
            description="a GeoTIFF tile like the training tiles",
            json_schema_extra=TIFF_PART_SCHEMA,
        ),
    ],
    ctx: ReadyDep,
) -> InferResult:
    """Classify an uploaded GeoTIFF tile (multipart field ``file``)."""
    data = await file.read()
    name = file.filename or "tile"
    result = await ctx.offload(ctx.service.infer_upload, data, name, ctx.loaded)
    ctx.metrics.predictions.labels(result.prediction, result.model_version).inc()
    return result


def versions() -> dict[str, str]:
    """Versions of the service and of the libraries that decide its answers."""
    return {
        "service": satpipe.__version__,
        "python": platform.python_version(),
        "rasterio": rasterio.__version__,
        "gdal": rasterio.__gdal_version__,
        "proj": rasterio.__proj_version__,
        "numpy": np.__version__,
        "fastapi": importlib.metadata.version("fastapi"),
        "dvc": importlib.metadata.version("dvc"),
    }


@inference.get("/model", responses=error_responses(401, 503))
async def model_info(request: Request, ctx: ReadyDep) -> ModelInfo:
    """The served model, its entry in dvc.lock, its params and reference statistics."""
    loaded = ctx.loaded
    m, pin = loaded.model, loaded.pin
    return ModelInfo(
        model_version=m.version,
        model_md5=loaded.md5,
        origin=loaded.origin,
        rev=loaded.rev,
        registry=None if (a := loaded.assignment) is None else RegistryInfo(**vars(a)),
        lock_file=pin.source,
        lock_entry=pin.train.entry,
        training_params=unset_nested(TrainParams, pin.train_params),
        tile_params=pin.tile_params,
        kind=m.kind.name,
        details=m.kind.details(),
        classes=list(m.classes),
        monitored=m.monitored,
        feature=m.feature,
        reference=m.reference,
        training=m.training,
        upload_expectations=loaded.expectations.to_dict(),
        versions=request.app.state.versions,
    )
