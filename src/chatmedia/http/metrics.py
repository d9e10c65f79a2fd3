"""Prometheus metrics: requests, bytes in and out, upload and download durations."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Metrics:
    """The server's metrics, in a registry of its own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "chatmedia_http_requests",
            "HTTP requests answered, by method, route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.bytes_in = Counter(
            "chatmedia_http_received_bytes", "Request body bytes received.", registry=self.registry
        )
        self.bytes_out = Counter(
            "chatmedia_http_sent_bytes", "Response body bytes sent.", registry=self.registry
        )
        self.uploads = Histogram(
            "chatmedia_upload_duration_seconds",
            "Time to receive and store an upload, by status.",
            ["status"],
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.downloads = Histogram(
            "chatmedia_download_duration_seconds",
            "Time to send a file's content, by status.",
            ["status"],
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        # Exchanges answered so far, as a plain number (chatmedia.memory watches it).
        self.answered = 0


class MetricsMiddleware:
    """Counts every HTTP exchange; routes are labelled by their template, not the path."""

    def __init__(
        self, app: ASGIApp, metrics: Metrics, uploads: frozenset[str], downloads: frozenset[str]
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.uploads = uploads
        self.downloads = downloads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        content_length = 0
        # Summed here and added to the counters once: a counter takes a lock, and a large
        # upload arrives in thousands of messages.
        received = sent = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            nonlocal status, content_length, sent
            kind = message["type"]
            if kind == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name.lower() == b"content-length":
                        content_length = int(value)
            elif kind == "http.response.body":
                sent += len(message.get("body", b""))
            elif kind == "http.response.pathsend":
                sent += content_length
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            self.metrics.answered += 1
            self.metrics.bytes_in.inc(received)
            self.metrics.bytes_out.inc(sent)
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(scope["method"], template, str(status)).inc()
            elapsed = time.perf_counter() - started
            if template in self.uploads:
                self.metrics.uploads.labels(str(status)).observe(elapsed)
            elif template in self.downloads:
                self.metrics.downloads.labels(str(status)).observe(elapsed)
