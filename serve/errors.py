"""Errors of the service, and the one table that turns every known error into an HTTP status.

Routes raise domain errors (:mod:`satpipe.core.errors` classes, or the few service-specific ones
below, which share the same root) and never build HTTP errors themselves. :func:`install` adds
one exception handler for :class:`~satpipe.core.errors.SatpipeError`; it looks the exception's class
(most specific first) up in :data:`STATUS` and answers ``{"detail": str(exc)}``.

Every error body, FastAPI's own included, is that one shape: a request FastAPI refuses (a
missing body or upload field, invalid JSON, a wrong type) answers 422 with one line naming each
offending field, not FastAPI's list of error objects, so the ``ErrorBody`` schema that
``/openapi.json`` documents for every error status is true and generated clients can parse it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY

from satpipe.core.errors import (
    LockfileError,
    ModelError,
    NotGeoTIFFError,
    RasterReadError,
    SatpipeError,
    SceneError,
    TileError,
)
from serve.body_limit import too_large

log = logging.getLogger(__name__)


class SettingsError(SatpipeError, ValueError):
    """A ``SATPIPE_*`` environment variable is unknown or has an invalid value."""


class TilePathError(SatpipeError, ValueError):
    """A requested tile path is refused: absolute, traversal, encoded, or outside the tiles."""


class TileNotFoundError(SatpipeError, FileNotFoundError):
    """A requested tile path is acceptable but no such tile file exists."""


class NotReadyError(SatpipeError):
    """The service has no verified pinned model to serve (the reason is the message)."""


class AuthError(SatpipeError, PermissionError):
    """The API key is missing or wrong."""


class LimitError(SatpipeError, ValueError):
    """A request exceeds a declared limit (upload samples, window pixels); names limit and value."""


class NotAcceptableError(SatpipeError, ValueError):
    """No answer format the service has matches the request's ``Accept`` header."""


class SceneNotFoundError(SatpipeError, FileNotFoundError):
    """A scene id is well formed but the pinned segmentation has no such scene."""


class PixelModelError(SatpipeError):
    """The served model labels whole tiles: there is nothing to segment per pixel."""


class BoundsError(SatpipeError, ValueError):
    """A bounding box is malformed, or does not overlap the scene."""


# The one table. Lookup walks the exception's MRO, so the most specific class listed wins.
STATUS: dict[type[SatpipeError], int] = {
    AuthError: 401,
    TilePathError: 400,
    TileNotFoundError: 404,
    SceneNotFoundError: 404,
    NotAcceptableError: 406,
    PixelModelError: 409,
    LimitError: 413,
    BoundsError: 422,
    NotGeoTIFFError: 415,
    RasterReadError: 422,
    TileError: 422,
    SceneError: 422,
    NotReadyError: 503,
    LockfileError: 503,
    ModelError: 503,
    SatpipeError: 500,
}


def status_for(exc: Exception) -> int:
    """The HTTP status :data:`STATUS` gives to ``exc`` (500 for a class it does not list)."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


async def _satpipe_error(request: Request, exc: Exception) -> Response:
    status = status_for(exc)
    if status == 500:  # a known error class the table does not map: worth a log line
        log.error("%s %s: %s", request.method, request.url.path, exc)
    headers = {"WWW-Authenticate": "APIKey"} if status == 401 else None
    return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, StarletteHTTPException):  # installed for HTTPException only
        raise exc
    if exc.status_code == 413:
        limit = request.scope.get(MAX_BODY_SIZE_SCOPE_KEY)
        return JSONResponse({"detail": too_large(limit)}, status_code=413)
    if exc.status_code == 400:
        # FastAPI's own 400s: a body it cannot parse at all (bytes that are not UTF-8 where
        # JSON is expected, broken multipart framing).
        reason = str(exc.detail).rstrip(".")
        return JSONResponse({"detail": f"invalid request: {reason}"}, status_code=400)
    return await http_exception_handler(request, exc)


# At most this many field errors are named in one 422 detail.
MAX_FIELD_ERRORS = 5


def describe_invalid(errors: Sequence[Any]) -> str:
    """One line for FastAPI's request-validation errors: ``body.tile_path: Field required``."""
    parts = []
    for err in errors[:MAX_FIELD_ERRORS]:
        loc = ".".join(str(part) for part in err.get("loc", ()))
        msg = str(err.get("msg", "invalid"))
        reason = (err.get("ctx") or {}).get("error")
        if reason and str(reason) not in msg:
            msg = f"{msg} ({reason})"
        parts.append(f"{loc}: {msg}" if loc else msg)
    more = len(errors) - MAX_FIELD_ERRORS
    text = "; ".join(parts) + (f"; and {more} more" if more > 0 else "")
    return "invalid request: " + " ".join(text.split())


async def _invalid_request(request: Request, exc: Exception) -> Response:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    return JSONResponse({"detail": describe_invalid(list(errors))}, status_code=422)


def install(app: FastAPI) -> None:
    """Install the handlers: :class:`SatpipeError` through :data:`STATUS`, and FastAPI's own.

    FastAPI's HTTP and request-validation errors get the same ``{"detail": str}`` body.
    """
    app.add_exception_handler(SatpipeError, _satpipe_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
