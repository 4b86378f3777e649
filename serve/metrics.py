"""Prometheus metrics: request counts and latencies by route, predictions by class, the model.

Each app owns a :class:`~prometheus_client.CollectorRegistry` (so several apps in one process,
as in tests, never collide). :class:`MetricsMiddleware` is plain ASGI (no per-request task or
body copy) and labels requests by route template (``/infer``), never by raw URL, so label
cardinality stays bounded; unmatched URLs share the label ``unmatched``.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class Metrics:
    """The service's metrics, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "satpipe_http_requests",
            "HTTP requests by method, route template and status code",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "satpipe_http_request_duration_seconds",
            "Time from request start to the end of the response, by method and route",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.predictions = Counter(
            "satpipe_predictions",
            "Tiles classified, by predicted class and model version",
            ["prediction", "model_version"],
            registry=self.registry,
        )
        self.model = Gauge(
            "satpipe_model_info",
            "1 for the model this service loaded (version, md5 and where its bytes came from)",
            ["model_version", "model_md5", "origin"],
            registry=self.registry,
        )
        self.ready = Gauge(
            "satpipe_model_ready",
            "1 when the pinned model is loaded and verified, else 0",
            registry=self.registry,
        )
        self.swaps = Counter(
            "satpipe_model_swaps",
            "Times a new pin's model was loaded, verified and swapped in while serving",
            registry=self.registry,
        )
        self.pin_failures = Counter(
            "satpipe_pin_load_failures",
            "Times the service became not ready: a pin it could not read or whose model it "
            "could not load and verify",
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Count and time every HTTP request (pure ASGI)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; record its status and duration when it ends."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"]
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - start)
