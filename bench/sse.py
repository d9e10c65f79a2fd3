"""A client of a conversation's event stream that runs in a thread of its own and notes
when the events a benchmark waits for arrive (time.perf_counter)."""

from __future__ import annotations

import socket
import sys
import threading
import time
from contextlib import suppress
from typing import Any, Generic, Self, TypeVar

import httpx

from common import REPO

T = TypeVar("T")


class EventFollower(Generic[T]):
    """Follows `/v1/conversations/{conversation}/events`; `note` says, for each event,
    what to keep of it for its file (None: nothing), and `arrived` holds the first thing
    kept per file id."""

    def __init__(self, address: tuple[str, int], headers: dict[str, str], conversation: str):
        host, port = address
        self._url = f"http://{host}:{port}/v1/conversations/{conversation}/events"
        self._headers = headers
        self._client = httpx.Client(timeout=httpx.Timeout(10.0, read=None))
        self._changed = threading.Condition()
        self._open = threading.Event()
        self._stopping = False
        self._socket: socket.socket | None = None
        self.arrived: dict[str, T] = {}
        self.error: str | None = None
        self._thread = threading.Thread(target=self._read, name="sse", daemon=True)

    def note(self, event: str, file: dict[str, Any], at: float) -> T | None:
        """What to keep of event `event` about `file` that arrived `at`."""
        raise NotImplementedError

    def wait_all(self, file_ids: set[str], timeout: float) -> bool:
        """Wait until every file of `file_ids` has arrived; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: file_ids <= self.arrived.keys(), timeout)

    def _read(self) -> None:
        if str(REPO) not in sys.path:
            sys.path.insert(0, str(REPO))
        from tests.receivers import sse_events  # the tests' reader of event streams

        try:
            with self._client.stream("GET", self._url, headers=self._headers) as response:
                response.raise_for_status()
                self._socket = response.extensions["network_stream"].get_extra_info("socket")
                self._open.set()
                for event in sse_events(response):
                    at = time.perf_counter()
                    file = event.data.get("data") or {}  # the event's File
                    kept = self.note(event.event, file, at) if "id" in file else None
                    if kept is not None:
                        with self._changed:
                            self.arrived.setdefault(file["id"], kept)
                            self._changed.notify_all()
        except (httpx.HTTPError, httpx.StreamError) as e:
            if not self._stopping:
                self.error = f"{type(e).__name__}: {e}"
        finally:
            self._open.set()

    def __enter__(self) -> Self:
        self._thread.start()
        self._open.wait(30)
        if self.error:
            raise RuntimeError(f"the event stream did not open: {self.error}")
        return self

    def __exit__(self, *_exc: object) -> None:
        # A shutdown, unlike a close, wakes the thread blocked reading; an open stream
        # would hold up the server's stop.
        self._stopping = True
        if self._socket is not None:
            with suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)
        self._client.close()
