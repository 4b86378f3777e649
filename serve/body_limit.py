"""The body limit's refusal in the documented shape: ``{"detail": ...}`` naming the limit.

Starlette answers a request whose declared ``Content-Length`` is over a route's
``max_body_size`` itself, before any route or exception handler runs, with a plain-text
``Content Too Large``. :class:`JsonBodyLimit` wraps the app and rewrites exactly that answer (a
413 with a ``text/plain`` body) into the JSON error body every other status uses, naming the
declared size and the limit Starlette set for the route (``starlette.max_body_size`` in the
scope). Bodies counted while streaming are refused through the exception handlers instead
(:mod:`serve.errors`), with the same words.
"""

from __future__ import annotations

import json

from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def too_large(limit: object, declared: str | None = None) -> str:
    """The one-line detail of a 413 for a body over ``limit`` bytes."""
    size = f" of {declared} bytes" if declared else ""
    return (
        f"request body{size} too large: the limit is {limit} bytes"
        if limit
        else (f"request body{size} too large")
    )


class JsonBodyLimit:
    """ASGI middleware: Starlette's plain-text 413 becomes ``{"detail": ...}`` (JSON)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request through, rewriting a plain-text 413 on its way out."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rewriting = False

        async def send_json(message: Message) -> None:
            nonlocal rewriting
            if message["type"] == "http.response.start" and message["status"] == 413:
                headers = dict(message.get("headers", []))
                rewriting = headers.get(b"content-type", b"").startswith(b"text/plain")
                if rewriting:
                    declared = dict(scope["headers"]).get(b"content-length", b"").decode()
                    body = json.dumps(
                        {"detail": too_large(scope.get(MAX_BODY_SIZE_SCOPE_KEY), declared)}
                    ).encode()
                    message = {
                        "type": "http.response.start",
                        "status": 413,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                    await send(message)
                    await send({"type": "http.response.body", "body": body})
                    return
            if rewriting:
                return  # the plain-text body, already replaced
            await send(message)

        await self.app(scope, receive, send_json)
