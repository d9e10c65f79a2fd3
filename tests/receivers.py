"""Test peers for live delivery: a Server-Sent Events reader and a webhook receiver."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx


@dataclass
class SseEvent:
    id: str | None
    event: str | None
    data: dict[str, Any] = field(default_factory=dict)


def sse_events(response: httpx.Response) -> Iterator[SseEvent]:
    """The events of an event stream (comments are skipped), as the HTML standard reads
    them: fields until a blank line."""
    current: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if "data" in current:
                yield SseEvent(current.get("id"), current.get("event"), json.loads(current["data"]))
            current = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        current[name] = value.removeprefix(" ")


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]
    answered: int


class WebhookReceiver:
    """Records every POST; `mode` decides the answer: "ok" (200), "fail" (500), or "hang"
    (no answer for 5 s)."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.received: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                mode = receiver.mode
                if mode == "hang":
                    time.sleep(5)
                status = 200 if mode == "ok" else 500
                with receiver._lock:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    receiver.received.append(Received(body, headers, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def acknowledged(self) -> list[Received]:
        """The deliveries answered with 200, in arrival order."""
        with self._lock:
            return [r for r in self.received if r.answered == 200]
