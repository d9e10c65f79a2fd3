"""Webhooks: registering receivers, and delivering every event to them at least once, in
order per conversation, from the durable outbox written with each event.

A delivery that fails (an error status, a timeout, a refused destination) is retried after
CHATMEDIA_WEBHOOK_RETRY_BASE seconds, then twice as long each time (at most an hour
apart), for 24 hours; then it is marked failed and its queue moves on. The dispatcher
takes only the oldest pending delivery of each queue (a webhook and a conversation) and
leases it while it tries, so a queue is never delivered out of order or twice at once;
after a crash the lease runs out and the delivery is tried again.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import random
import secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import anyio

from chatmedia.access.principal import Principal
from chatmedia.cursors import decode_cursor, encode_cursor
from chatmedia.db.webhooks import Claimed, Delivery, Outbox, Webhook, Webhooks
from chatmedia.egress.urls import parse_source_url
from chatmedia.errors import (
    BadRequest,
    ChatMediaError,
    ConversationNotAllowed,
    SourceError,
    WebhookNotFound,
)
from chatmedia.pipelines.events import with_fresh_links
from chatmedia.services import BACKEND_OUTAGES, Services, is_outage
from chatmedia.views import event_view

log = logging.getLogger("chatmedia.webhooks")

EVENT_TYPES = (
    "message.created", "message.deleted", "file.created", "file.deleted", "file.updated",
    "file.quarantined", "conversation.deleted",
)  # fmt: skip
SIGNATURE_HEADER = "ChatMedia-Signature"
GIVE_UP_AFTER = timedelta(hours=24)
MAX_DELAY = timedelta(hours=1)
CONCURRENCY = 16
MIN_SECRET_LENGTH = 16


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ChatMedia-Signature value: t=<unix time>,v1=<hex HMAC-SHA256 of "t.body">."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def _tenant_wide(principal: Principal) -> str:
    """The tenant whose webhooks the principal manages. A webhook receives every event of
    its tenant, so a key restricted to conversations manages none."""
    if principal.conversations is not None:
        raise ConversationNotAllowed(
            "a webhook receives every conversation's events: this key is restricted to some"
        )
    return principal.tenant


async def create_webhook(
    services: Services,
    principal: Principal,
    url: str,
    events: Sequence[str] | None,
    secret: str | None,
) -> Webhook:
    """Register a receiver of `events` (all when None or ["*"]). Its URL obeys the import
    destination policy, checked now and at every delivery. The secret is generated when
    not given; it is returned here and never shown again."""
    tenant = _tenant_wide(principal)
    target = parse_source_url(url)
    # DestinationNotAllowed (403) before saving; a name that does not resolve (yet) cannot
    # be judged now, and every delivery checks again.
    with contextlib.suppress(SourceError):
        await services.fetcher.destination(target)
    kinds = tuple(events or ["*"])
    unknown = [k for k in kinds if k != "*" and k not in EVENT_TYPES]
    if unknown:
        raise BadRequest(f"unknown event types: {', '.join(unknown)}; use {', '.join(EVENT_TYPES)}")
    if secret is not None and len(secret) < MIN_SECRET_LENGTH:
        raise BadRequest(f"a webhook secret needs at least {MIN_SECRET_LENGTH} characters")
    hook = Webhook(
        id="wh_" + secrets.token_urlsafe(12),
        url=str(target.url),
        events=kinds,
        secret=secret or "whsec_" + secrets.token_urlsafe(32),
        created_at=datetime.now(UTC),
        tenant=tenant,
    )
    async with services.db.write() as conn:
        await Webhooks(conn, tenant).create(hook)
    return hook


async def list_webhooks(services: Services, principal: Principal) -> list[Webhook]:
    """Every webhook of the principal's tenant."""
    tenant = _tenant_wide(principal)
    async with services.db.read() as conn:
        return await Webhooks(conn, tenant).all()


async def get_webhook(services: Services, principal: Principal, hook_id: str) -> Webhook:
    """One webhook; raises WebhookNotFound."""
    tenant = _tenant_wide(principal)
    async with services.db.read() as conn:
        hook = await Webhooks(conn, tenant).get(hook_id)
    if hook is None:
        raise WebhookNotFound(f"no webhook with id '{hook_id}'")
    return hook


async def delete_webhook(services: Services, principal: Principal, hook_id: str) -> None:
    """Remove a webhook and the deliveries still queued for it."""
    tenant = _tenant_wide(principal)
    async with services.db.write() as conn:
        if not await Webhooks(conn, tenant).delete(hook_id):
            raise WebhookNotFound(f"no webhook with id '{hook_id}'")


async def list_deliveries(
    services: Services, principal: Principal, hook_id: str, limit: int, cursor: str | None
) -> tuple[list[Delivery], str | None]:
    """A page of a webhook's deliveries, newest first (attempts, last status and error),
    and the cursor of the next page."""
    hook = await get_webhook(services, principal, hook_id)
    before = decode_cursor(cursor) if cursor is not None else None
    async with services.db.read() as conn:
        page, next_seq = await Webhooks(conn, hook.tenant).deliveries(hook_id, limit, before)
    return page, encode_cursor(next_seq) if next_seq else None


async def deliver_forever(services: Services, stopping: anyio.Event) -> None:
    """The dispatcher: claims due deliveries and attempts them, up to CONCURRENCY at once,
    woken by new events and at least once a second for retries that come due, until
    `stopping` is set (attempts under way are let finish)."""
    # A lease outlasts an attempt (which the webhook timeout bounds); after a crash it runs
    # out and another dispatcher, or this one restarted, tries again.
    lease = timedelta(seconds=services.settings.webhook_timeout + 5)
    slots = anyio.Semaphore(CONCURRENCY)
    async with anyio.create_task_group() as attempts:
        while not stopping.is_set():
            version = services.bus.version
            free = slots.value
            claimed: list[Claimed] = []
            if free:
                try:
                    async with services.db.write() as conn:
                        claimed = await Outbox(conn).claim_due(datetime.now(UTC), lease, free)
                except Exception as e:
                    if is_outage(e):
                        log.warning("could not claim webhook deliveries (%s); trying again", e)
                    else:
                        log.exception("could not claim webhook deliveries; trying again")
            for item in claimed:
                await slots.acquire()
                attempts.start_soon(_attempt_and_release, services, item, slots)
            if not claimed:
                with anyio.move_on_after(1.0):
                    await services.bus.wait(version)


async def _attempt_and_release(
    services: Services, claimed: Claimed, slots: anyio.Semaphore
) -> None:
    try:
        await attempt_delivery(services, claimed)
    except BACKEND_OUTAGES as e:  # its lease runs out and it is tried again
        log.warning("could not record delivery %s (%s)", claimed.delivery.seq, e)
    except Exception:
        log.exception("webhook delivery %s failed unexpectedly", claimed.delivery.seq)
    finally:
        slots.release()


async def attempt_delivery(services: Services, claimed: Claimed) -> None:
    """POST one event to its webhook, signed, and record the outcome."""
    hook, delivery = claimed.webhook, claimed.delivery
    async with services.db.read() as conn:
        [event] = await with_fresh_links(conn, services, [claimed.event])
    body = json.dumps(event_view(event), separators=(",", ":")).encode()
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: signature(hook.secret, timestamp, body),
        "ChatMedia-Event-Id": str(claimed.event.seq),
        "ChatMedia-Event-Type": claimed.event.type,
    }
    status: int | None = None
    error: str | None = None
    try:
        with anyio.fail_after(services.settings.webhook_timeout):
            status, _ = await services.fetcher.post(
                parse_source_url(hook.url), headers, content=body
            )
        if not 200 <= status < 300:
            error = f"the receiver answered {status}"
    except TimeoutError:
        error = f"no answer within {services.settings.webhook_timeout:g} seconds"
    except ChatMediaError as e:
        error = e.message
    now = datetime.now(UTC)
    retry_at = None if error is None else _retry_at(services, delivery, now)
    async with services.db.write() as conn:
        await Outbox(conn).record_attempt(
            delivery.seq, now, delivered=error is None, status=status, error=error,
            next_attempt_at=retry_at,
        )  # fmt: skip
    if error is not None and retry_at is None:
        log.warning("gave up delivering event %s to webhook %s", claimed.event.seq, hook.id)
    services.bus.notify()  # the queue's next delivery may now go


def _retry_at(services: Services, delivery: Delivery, now: datetime) -> datetime | None:
    """When to try again (doubling from the base, with up to 10% jitter), or None once 24
    hours have passed since the delivery was queued."""
    base = services.settings.webhook_retry_base
    delay = timedelta(seconds=base * 2 ** min(delivery.attempts, 30))
    delay = min(delay, MAX_DELAY) * (1 + random.random() / 10)
    retry_at = now + delay
    return retry_at if retry_at - delivery.created_at < GIVE_UP_AFTER else None
