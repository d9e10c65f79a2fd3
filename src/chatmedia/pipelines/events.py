"""Following the event log: what SSE clients receive, and the signed URLs that let a
browser's EventSource (which cannot send an Authorization header) open a stream."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import anyio

from chatmedia.db.events import Events
from chatmedia.db.keys import Keys
from chatmedia.db.secrets import server_secret
from chatmedia.errors import Unauthorized
from chatmedia.models import ApiKey, Event
from chatmedia.services import Services

KEEPALIVE_SECONDS = 15.0
# Events logged by another process wake nobody here: they are found by polling this often.
POLL_SECONDS = 1.0
PAGE = 200
_SIGNING_KEY_NAME = "events-stream-token"  # the name of a secret kept in the database


async def follow_events(
    services: Services, conversation_id: str | None, after: int | None
) -> AsyncIterator[Event | None]:
    """Every event after `after` (from the log, so nothing missed while disconnected is
    lost), then each new one as it is logged, in id order; with `after` None, only new
    ones. Yields None after each KEEPALIVE_SECONDS of silence."""
    if after is None:
        async with services.db.read() as conn:
            after = await Events(conn).last_seq()
    quiet_since = time.monotonic()
    while True:
        version = services.bus.version
        async with services.db.read() as conn:
            batch = await Events(conn).after(after, conversation_id, PAGE)
        for event in batch:
            yield event
            after = event.seq
        if batch:
            quiet_since = time.monotonic()
            continue
        with anyio.move_on_after(POLL_SECONDS):
            await services.bus.wait(version)
        if time.monotonic() - quiet_since >= KEEPALIVE_SECONDS:
            yield None
            quiet_since = time.monotonic()


async def stream_token(
    services: Services, conversation_id: str, key: ApiKey
) -> tuple[str, datetime]:
    """A token that opens this conversation's event stream without a header, valid for
    CHATMEDIA_EVENTS_TOKEN_TTL and only while `key` is not revoked; and its expiry."""
    expires = int(time.time() + services.settings.events_token_ttl.total_seconds())
    payload = _b64(f"{expires}\n{key.id}\n{conversation_id}".encode())
    signature = hmac.new(
        await server_secret(services.db, _SIGNING_KEY_NAME), payload.encode(), hashlib.sha256
    )
    return f"{payload}.{_b64(signature.digest())}", datetime.fromtimestamp(expires, UTC)


async def check_stream_token(services: Services, token: str, conversation_id: str) -> None:
    """Raise Unauthorized unless `token` is a valid, unexpired token for this conversation
    whose key is still active."""
    payload, _, signature = token.partition(".")
    secret = await server_secret(services.db, _SIGNING_KEY_NAME)
    expected = _b64(hmac.new(secret, payload.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(expected, signature):
        raise Unauthorized("the stream token is not valid")
    try:
        expires, key_id, token_conversation = _unb64(payload).decode().split("\n", 2)
        expired = int(expires) < time.time()
    except ValueError:
        raise Unauthorized("the stream token is not valid") from None
    if expired:
        raise Unauthorized("the stream token has expired; ask for a new one")
    if token_conversation != conversation_id:
        raise Unauthorized("the stream token is for another conversation")
    async with services.db.read() as conn:
        if not await Keys(conn).is_active(key_id):
            raise Unauthorized("the key that made this stream token was revoked")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        raise ValueError("not base64") from None


async def prune_events(services: Services, now: datetime | None = None) -> int:
    """Forget events older than CHATMEDIA_EVENT_RETENTION (those a delivery still waits
    for are kept); returns how many were forgotten."""
    cutoff = (now or datetime.now(UTC)) - services.settings.event_retention
    async with services.db.write() as conn:
        return await Events(conn).delete_before(cutoff)
