"""Answers given before the request body was read (a 401, a 403, a 413) start only once
the rest of the body has come, up to a limit: a client still sending it stops sending when
it sees the answer complete and closes its connection, and reports a broken pipe instead
of the answer (Node's fetch does). nginx's lingering close serves the same end."""

from __future__ import annotations

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# What is read and thrown away at most, and how long the client may stay silent meanwhile.
DRAIN_LIMIT = 1024 * 1024
DRAIN_SILENCE = 5.0


class DrainUnreadBody:
    """Holds an answer until the request body is read to its end (or to the limit)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):  # downloads pass untouched
            await self.app(scope, receive, send)
            return
        state = {"done": False, "gone": False}

        async def watching_receive() -> Message:
            message = await receive()
            _note(message, state)
            return message

        async def draining_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not state["done"]:
                await _drain(receive, state)
            await send(message)

        await self.app(scope, watching_receive, draining_send)


def _has_body(scope: Scope) -> bool:
    if scope["method"] in ("GET", "HEAD"):
        return False
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            return True
    return False


def _note(message: Message, state: dict[str, bool]) -> None:
    if message["type"] == "http.request":
        state["done"] = state["done"] or not message.get("more_body", False)
    elif message["type"] == "http.disconnect":
        state["gone"] = True


async def _drain(receive: Receive, state: dict[str, bool]) -> None:
    read = 0
    while not state["done"] and not state["gone"] and read <= DRAIN_LIMIT:
        with anyio.move_on_after(DRAIN_SILENCE) as timer:
            message = await receive()
        if timer.cancelled_caught:
            return
        _note(message, state)
        read += len(message.get("body", b""))
