"""`Idempotency-Key` on the POSTs that create things: connectors retry on timeouts, and a
retry with the same key and the same request within 24 hours gets the first answer back
instead of creating a second file or message.

Keys live per API key: the scope is the SHA-256 of the request's `Authorization` value. A
request is identified by a hash of its method, path, query, content type and body, taken as
the body streams past (an upload is never held in memory). A multipart body is hashed with
its boundary replaced by a fixed token, since clients pick a new random boundary for each
retry.

For a request on a listed route that carries the header and a valid API key:

1. A stored answer younger than 24 h: the body is read through the hasher; the same hash
   replays the answer (`Idempotent-Replayed: true`), another one answers 422.
2. A claim younger than 1 h (the first request is still running): 409.
3. Otherwise the key is claimed, the app runs with the body hashed as it reads it and its
   answer copied as it is sent, and the answer is stored when it is deterministic (below
   500, not 409, at most 1 MiB); else the claim is deleted so that a retry runs anew.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import anyio
from starlette.datastructures import QueryParams
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatmedia.db import Database
from chatmedia.db.idempotency import IdempotencyKeys, IdempotencyRecord
from chatmedia.errors import (
    ChatMediaError,
    IdempotencyKeyInProgress,
    IdempotencyKeyReused,
    InvalidIdempotencyKey,
    RateLimited,
)
from chatmedia.http.deps import CHECKED_PRINCIPAL, TENANT_PARAMETER
from chatmedia.http.multipart import MAX_FIELD_BYTES, MAX_FIELDS
from chatmedia.http.request_hash import RequestHasher, header_values, valid_key
from chatmedia.http.responses import (
    CLIENT_CLOSED_REQUEST,
    error_response,
    render_error,
    unavailable,
)
from chatmedia.pipelines.tokens import identify
from chatmedia.services import BACKEND_OUTAGES, Services

log = logging.getLogger("chatmedia")

# How long an answer is kept for retries.
RETENTION = timedelta(hours=24)
# A claim this old was left by a request that died without releasing it (a crash).
IN_PROGRESS_TIMEOUT = timedelta(hours=1)
# Larger answers are passed on but not kept (the routes covered answer small JSON).
MAX_STORED_BODY = 1024 * 1024
# After the app has answered without reading the whole body, how long the rest of the body
# may take to come, per message, before it is given up and the answer is not kept.
DRAIN_SILENCE = 30.0
SWEEP_BATCH = 500
# Text parts and part headers that may come beside a file of the largest size allowed.
_BODY_SLACK = MAX_FIELDS * MAX_FIELD_BYTES + 1024 * 1024
_REPLAYED = (b"idempotent-replayed", b"true")
# Not stored: hop-by-hop headers (RFC 9110 §7.6.1), and those the server computes afresh for
# every answer.
_NOT_STORED = frozenset(
    {
        b"connection",
        b"content-length",
        b"date",
        b"keep-alive",
        b"proxy-connection",
        b"server",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)


class IdempotencyMiddleware:
    """Answers retries that carry an `Idempotency-Key` from stored answers, on the
    (method, path regex) pairs in `routes` (the regex must match the whole path)."""

    def __init__(self, app: ASGIApp, services: Services, routes: Iterable[tuple[str, str]]) -> None:
        self.app = app
        self.services = services
        self.routes = tuple((method.upper(), re.compile(path)) for method, path in routes)
        # Nothing beyond this is ever stored, so a retry beyond it cannot match.
        self.body_limit = 2 * services.settings.max_upload_size + _BODY_SLACK
        # Metrics label a request by the route that routing puts in the scope. An answer
        # given here never reaches routing, so it is labelled with the route last seen on
        # the same pattern (FastAPI's nested routing has no public way to look one up).
        self._seen_routes: dict[int, object] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._pattern(scope) is None:
            await self.app(scope, receive, send)
            return
        # Errors raised here are past the app's handlers: render an outage ourselves.
        try:
            await self._check(scope, receive, send)
        except BACKEND_OUTAGES as e:
            await self._refuse(scope, receive, send, unavailable(e))

    async def _check(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = header_values(scope, b"idempotency-key", b"authorization")
        keys, authorization = headers[b"idempotency-key"], headers[b"authorization"]
        if not keys or not authorization:
            await self._call_app(scope, receive, send)
            return
        # A request without a valid API key is the app's to refuse (401); it must not be
        # able to write records, nor learn anything from them.
        tenant = QueryParams(scope["query_string"]).get(TENANT_PARAMETER)
        try:
            principal = await identify(self.services, authorization[0].decode("latin-1"), tenant)
        except ChatMediaError:  # no valid key, or not for that tenant
            await self._call_app(scope, receive, send)
            return
        # The routes need not look it up again, nor count it against the key's rate again.
        try:
            self.services.limiter.admit_key(scope, principal.key_id, principal.rate_limit)
        except RateLimited as e:
            self._label(scope)
            await render_error(e, scope["path"])(scope, receive, send)
            return
        scope.setdefault("state", {})[CHECKED_PRINCIPAL] = principal
        if len(keys) > 1 or not valid_key(keys[0]):
            message = "Idempotency-Key must be one value of 1 to 255 printable ASCII characters"
            await self._refuse(scope, receive, send, InvalidIdempotencyKey(message))
            return
        # Answers are kept per key and tenant: an admin key acting in two tenants keeps
        # their answers apart.
        owner = hashlib.sha256(authorization[0] + b"\0" + principal.tenant.encode()).hexdigest()
        await self._handle(scope, receive, send, owner, keys[0].decode("ascii"))

    def _pattern(self, scope: Scope) -> int | None:
        method, path = scope["method"], scope["path"]
        for index, (wanted, pattern) in enumerate(self.routes):
            if method == wanted and pattern.fullmatch(path):
                return index
        return None

    async def _call_app(self, scope: Scope, receive: Receive, send: Send) -> None:
        pattern = self._pattern(scope)
        try:
            await self.app(scope, receive, send)
        finally:
            if pattern is not None and (route := scope.get("route")) is not None:
                self._seen_routes[pattern] = route

    def _label(self, scope: Scope) -> None:
        pattern = self._pattern(scope)
        if pattern in self._seen_routes:
            scope["route"] = self._seen_routes[pattern]

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, error: ChatMediaError
    ) -> None:
        self._label(scope)
        response = error_response(error.status, error.code, error.message, error.headers)
        await response(scope, receive, send)

    async def _send(
        self, scope: Scope, send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> None:
        self._label(scope)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _handle(
        self, scope: Scope, receive: Receive, send: Send, owner: str, key: str
    ) -> None:
        db = self.services.db
        body = _Body(receive, RequestHasher.for_scope(scope))
        now = datetime.now(UTC)
        # 1. Look the key up (records past their 24 hours count as absent).
        async with db.read() as conn:
            record = await IdempotencyKeys(conn).get(owner, key)
        if record is not None and record.created_at >= now - RETENTION:
            if record.completed_at is not None:
                await self._replay(scope, send, body, record)
                return
            if record.created_at >= now - IN_PROGRESS_TIMEOUT:
                error = IdempotencyKeyInProgress(f"a request with key '{key}' is in progress")
                await self._refuse(scope, receive, send, error)
                return
        # 2. Claim it; a concurrent request may have claimed it since the lookup.
        async with db.write() as conn:
            claimed = await IdempotencyKeys(conn).claim(
                owner,
                key,
                now,
                expired_before=now - RETENTION,
                stale_before=now - IN_PROGRESS_TIMEOUT,
            )
        if not claimed:
            error = IdempotencyKeyInProgress(f"a request with key '{key}' is in progress")
            await self._refuse(scope, receive, send, error)
            return
        # 3. Run the request, keeping its answer when it is one a retry should get.
        await self._run(scope, send, body, owner, key, now)

    async def _replay(
        self, scope: Scope, send: Send, body: _Body, record: IdempotencyRecord
    ) -> None:
        complete = await body.drain(self.body_limit, silence=None)
        if not complete and body.disconnected:
            # As the app answers a client that hung up mid-body: nobody reads it, metrics
            # count it.
            await self._send(scope, send, CLIENT_CLOSED_REQUEST, [], b"")
            return
        if complete and body.hasher.hexdigest() == record.request_hash:
            assert record.status is not None
            content = record.body or b""
            headers = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in record.headers]
            headers += [(b"content-length", str(len(content)).encode()), _REPLAYED]
            await self._send(scope, send, record.status, headers, content)
            return
        # A different request, or a body longer than any whose answer is kept.
        error = IdempotencyKeyReused(f"key '{record.key}' was used for a different request")
        await self._refuse(scope, body.receive, send, error)

    async def _run(
        self, scope: Scope, send: Send, body: _Body, owner: str, key: str, claimed_at: datetime
    ) -> None:
        answer = _Answer()
        stored = False

        async def copying_send(message: Message) -> None:
            nonlocal stored
            answer.observe(message)
            if answer.storable:
                # Kept before the client sees the answer end, so that a retry sent once it
                # has the answer gets it replayed rather than a 409.
                if not body.done:
                    # The app answered without reading the whole body (a 413, say), and the
                    # stored hash must cover all of it. The answer is held open meanwhile:
                    # servers report the client as gone once an answer is complete.
                    await send({**message, "more_body": True})
                    message = {"type": "http.response.body", "body": b""}
                    await body.drain(self.body_limit, silence=DRAIN_SILENCE)
                if body.done and body.hasher.size <= self.body_limit:
                    stored = await self._store(owner, key, claimed_at, body.hasher, answer)
            await send(message)

        try:
            await self._call_app(scope, body.receive, copying_send)
        finally:
            if not stored:
                # Shielded: a cancelled request (the client hung up) must still free its key.
                with anyio.CancelScope(shield=True):
                    await self._release(owner, key, claimed_at)

    async def _store(
        self, owner: str, key: str, claimed_at: datetime, hasher: RequestHasher, answer: _Answer
    ) -> bool:
        # Shielded: once the app has answered, whatever it created exists, so a retry must
        # find the answer even if this request is being cancelled. A failure is logged and
        # the claim released: the client still gets the app's answer.
        completed = False
        try:
            with anyio.CancelScope(shield=True):
                async with self.services.db.write() as conn:
                    completed = await IdempotencyKeys(conn).complete(
                        owner,
                        key,
                        claimed_at,
                        request_hash=hasher.hexdigest(),
                        status=answer.status,
                        headers=answer.stored_headers(),
                        body=bytes(answer.body),
                        now=datetime.now(UTC),
                        resource=answer.resource(),
                    )
        except Exception:
            log.exception("could not store the answer for an idempotency key")
        return completed

    async def _release(self, owner: str, key: str, claimed_at: datetime) -> None:
        try:
            async with self.services.db.write() as conn:
                await IdempotencyKeys(conn).release(owner, key, claimed_at)
        except Exception:
            # The claim then blocks retries until it is IN_PROGRESS_TIMEOUT old.
            log.exception("could not release an idempotency key")


async def sweep_idempotency_keys(db: Database, now: datetime) -> int:
    """Delete every record created more than 24 hours before `now`; returns how many. In
    batches, so that no write transaction holds the database for long."""
    deleted = 0
    while True:
        async with db.write() as conn:
            count = await IdempotencyKeys(conn).delete_created_before(now - RETENTION, SWEEP_BATCH)
        deleted += count
        if count < SWEEP_BATCH:
            return deleted


class _Body:
    """The request body as it passes to the app or is drained: hashed, and watched for its
    end and for the client leaving."""

    def __init__(self, receive: Receive, hasher: RequestHasher) -> None:
        self._receive = receive
        self.hasher = hasher
        self.done = False
        self.disconnected = False

    async def receive(self) -> Message:
        """The `receive` the app gets."""
        message = await self._receive()
        if message["type"] == "http.request" and not self.done:
            self.hasher.update(message.get("body", b""))
            self.done = not message.get("more_body", False)
        elif message["type"] == "http.disconnect":
            self.disconnected = True
        return message

    async def drain(self, limit: int, silence: float | None) -> bool:
        """Read the rest of the body; True when it ended within `limit` bytes. Gives up when
        the client leaves or, with `silence`, sends nothing for that many seconds."""
        while not self.done and not self.disconnected and self.hasher.size <= limit:
            with anyio.move_on_after(silence) as timer:
                await self.receive()
            if timer.cancelled_caught:
                return False
        return self.done and self.hasher.size <= limit


class _Answer:
    """A copy of the app's answer, as far as it can be stored."""

    def resource(self) -> str | None:
        """What the answer created: a File's or Message's `id`, or a file-engine `name`."""
        try:
            created = json.loads(self.body)
        except ValueError:
            return None
        if not isinstance(created, dict):
            return None
        found = created.get("id", created.get("name"))
        return found if isinstance(found, str) else None

    def __init__(self) -> None:
        self.status = 500
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.complete = False
        self.fits = True

    @property
    def storable(self) -> bool:
        """Complete, deterministic (not a server fault or a conflict) and small enough."""
        return self.complete and self.fits and self.status < 500 and self.status != 409

    def observe(self, message: Message) -> None:
        """Take in a message the app sends."""
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
            self.headers = [(bytes(n).lower(), bytes(v)) for n, v in message.get("headers", ())]
            self.fits = not message.get("trailers", False)
        elif kind == "http.response.body":
            chunk = message.get("body", b"")
            if self.fits and len(self.body) + len(chunk) <= MAX_STORED_BODY:
                self.body += chunk
            else:
                self.fits = False
                self.body.clear()
            self.complete = not message.get("more_body", False)
        else:
            self.fits = False  # a file sent by path, trailers: nothing to replay from

    def stored_headers(self) -> list[tuple[str, str]]:
        """The headers to replay, as text."""
        return [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in self.headers
            if name not in _NOT_STORED
        ]
