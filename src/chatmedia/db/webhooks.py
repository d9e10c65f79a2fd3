"""Repository of webhooks and the deliveries queued for them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from chatmedia.db.engine import Conn
from chatmedia.db.pages import newest_first
from chatmedia.db.schema import deliveries, events, webhooks
from chatmedia.models import Event


@dataclass(frozen=True, slots=True)
class Webhook:
    """A receiver of events. `secret` signs deliveries."""

    id: str
    url: str
    events: tuple[str, ...]
    secret: str
    created_at: datetime
    tenant: str


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event's delivery to one webhook."""

    seq: int
    webhook_id: str
    event_seq: int
    event_type: str
    conversation_id: str | None
    status: str
    attempts: int
    next_attempt_at: datetime
    last_status: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery taken for an attempt, with what it needs."""

    delivery: Delivery
    webhook: Webhook
    event: Event


class Webhooks:
    """Queries over one tenant's `webhooks` and their `deliveries` on one connection."""

    def __init__(self, conn: Conn, tenant: str) -> None:
        self._conn = conn
        self._tenant = tenant

    async def create(self, hook: Webhook) -> None:
        """Add a webhook; it receives its tenant's events logged from now on."""
        assert hook.tenant == self._tenant
        values = {
            "id": hook.id, "url": hook.url, "events": list(hook.events), "secret": hook.secret,
            "created_at": hook.created_at, "tenant": hook.tenant,
        }  # fmt: skip
        await self._conn.execute(webhooks.insert().values(values))

    async def all(self) -> list[Webhook]:
        """Every webhook of the tenant, oldest first."""
        query = (
            sa.select(webhooks)
            .where(webhooks.c.tenant == self._tenant)
            .order_by(webhooks.c.created_at)
        )
        return [_webhook(r) for r in await self._conn.execute(query)]

    async def get(self, hook_id: str) -> Webhook | None:
        """The webhook with this id."""
        query = sa.select(webhooks).where(
            webhooks.c.id == hook_id, webhooks.c.tenant == self._tenant
        )
        row = (await self._conn.execute(query)).first()
        return _webhook(row) if row else None

    async def delete(self, hook_id: str) -> bool:
        """Remove a webhook and its queued deliveries; False when there is none."""
        if await self.get(hook_id) is None:
            return False
        await self._conn.execute(deliveries.delete().where(deliveries.c.webhook_id == hook_id))
        await self._conn.execute(webhooks.delete().where(webhooks.c.id == hook_id))
        return True

    async def deliveries(
        self, hook_id: str, limit: int, before: int | None
    ) -> tuple[list[Delivery], int | None]:
        """A webhook's deliveries, newest first, and the seq to continue from."""
        query = (
            sa.select(deliveries, events.c.type, events.c.conversation_id)
            .join(events, events.c.seq == deliveries.c.event_seq)
            .where(deliveries.c.webhook_id == hook_id)
        )
        rows, next_seq = await newest_first(self._conn, query, deliveries.c.seq, limit, before)
        return [_delivery(r) for r in rows], next_seq


# How many of the oldest pending deliveries a claim looks through before it looks at the
# head of every queue instead (Outbox.claim_due).
_WINDOW = 256


def _claimable(candidates: sa.FromClause, *also: sa.ColumnElement[bool]) -> sa.Select[tuple[int]]:
    """The seqs of up to `limit` of `candidates` that are pending, due at `now` and not
    leased (and meet `also`), oldest event first. Built once: composing a statement costs
    more than running it."""
    now: sa.BindParameter[datetime] = sa.bindparam("now")
    return (
        sa.select(deliveries.c.seq)
        .join_from(candidates, deliveries, deliveries.c.seq == candidates.c.seq)
        .where(
            # Checked on the row itself: on PostgreSQL, a row another claimer settled after
            # this statement's snapshot is read again once it is locked.
            deliveries.c.status == "pending",
            deliveries.c.next_attempt_at <= now,
            sa.or_(deliveries.c.lease_until.is_(None), deliveries.c.lease_until < now),
            *also,
        )
        # By the candidates' columns: SQLite then reads the few candidates and looks each
        # delivery up, rather than walk every pending delivery in this order.
        .order_by(candidates.c.event_seq, candidates.c.seq)
        .limit(sa.bindparam("limit"))
        # Nodes claiming at once pass over each other's rows instead of waiting (SQLite
        # has no row locks; its write lock serializes claims already).
        .with_for_update(of=deliveries, skip_locked=True)
    )


def _oldest_pending() -> sa.Subquery:
    """The _WINDOW oldest pending deliveries, read in order from (status, event_seq)."""
    return (
        sa.select(deliveries.c.seq, deliveries.c.event_seq)
        .where(deliveries.c.status == "pending")
        .order_by(deliveries.c.event_seq, deliveries.c.seq)
        .limit(_WINDOW)
        .subquery("oldest_pending")
    )


def _is_head() -> sa.ColumnElement[bool]:
    """No earlier delivery of its queue is pending: one seek in (status, webhook_id,
    queue, event_seq), whatever was delivered before."""
    earlier = deliveries.alias("earlier")
    return ~sa.exists().where(
        earlier.c.status == "pending",
        earlier.c.webhook_id == deliveries.c.webhook_id,
        earlier.c.queue == deliveries.c.queue,
        earlier.c.event_seq < deliveries.c.event_seq,
    )


def _queue_heads() -> sa.CTE:
    """The oldest pending delivery of every queue (`seq`, `webhook_id`, `queue`,
    `event_seq`), found without reading the rest of any queue: a recursive walk over the
    index (status, webhook_id, queue, event_seq), where from one queue's head one seek
    finds the next queue of the same webhook with its head first (or the first queue of the
    next webhook). A seek or two per queue, however long the queues and however many were
    delivered. (`event_seq` is unique within a queue: one delivery per event and webhook.)"""
    first = (
        sa.select(
            deliveries.c.seq, deliveries.c.webhook_id, deliveries.c.queue, deliveries.c.event_seq
        )
        .where(deliveries.c.status == "pending")
        .order_by(deliveries.c.webhook_id, deliveries.c.queue, deliveries.c.event_seq)
        .limit(1)
        .subquery("oldest")  # SQLite takes no LIMIT in a UNION's first member itself
    )
    heads = sa.select(first).cte("heads", recursive=True)
    later = deliveries.alias("later")
    next_queue = (
        sa.select(later.c.seq)
        .where(
            later.c.status == "pending",
            later.c.webhook_id == heads.c.webhook_id,
            later.c.queue > heads.c.queue,
        )
        .order_by(later.c.queue, later.c.event_seq)
        .limit(1)
        .scalar_subquery()
    )
    next_webhook = (
        sa.select(later.c.seq)
        .where(later.c.status == "pending", later.c.webhook_id > heads.c.webhook_id)
        .order_by(later.c.webhook_id, later.c.queue, later.c.event_seq)
        .limit(1)
        .scalar_subquery()
    )
    head = deliveries.alias("head")
    step = sa.select(head.c.seq, head.c.webhook_id, head.c.queue, head.c.event_seq).join_from(
        heads, head, head.c.seq == sa.func.coalesce(next_queue, next_webhook)
    )
    return heads.union_all(step)


_DUE_AMONG_OLDEST = _claimable(_oldest_pending(), _is_head())
_DUE_HEADS = _claimable(_queue_heads())


class Outbox:
    """The deliveries of every tenant, as the dispatcher takes and settles them."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def claim_due(self, now: datetime, lease: timedelta, limit: int) -> list[Claimed]:
        """Take up to `limit` deliveries that are due, each the oldest pending one of its
        queue (a webhook and a conversation), oldest event first, and lease them for
        `lease`: a queue is never attempted out of order, nor twice at once.

        This runs under SQLite's write lock, so its cost must not grow with the backlog.
        Most often the oldest pending deliveries hold enough due queue heads: the first
        query looks only at those (_WINDOW at most) and, as they are the oldest, takes what
        a look at every queue would take. When they do not (queues held back by an attempt
        under way or a retry to come, or fewer due than asked), the second looks at the
        head of every queue, each found with an index seek or two."""
        params = {"now": now, "limit": limit}
        seqs = list((await self._conn.scalars(_DUE_AMONG_OLDEST, params)).all())
        if len(seqs) < limit:
            # It finds those again too: locks this transaction holds skip nothing.
            seqs = list((await self._conn.scalars(_DUE_HEADS, params)).all())
        if not seqs:
            return []
        await self._conn.execute(
            deliveries.update().where(deliveries.c.seq.in_(seqs)).values(lease_until=now + lease)
        )
        query = (
            sa.select(deliveries, webhooks, events)
            .join(webhooks, webhooks.c.id == deliveries.c.webhook_id)
            .join(events, events.c.seq == deliveries.c.event_seq)
            .where(deliveries.c.seq.in_(seqs))
            .order_by(deliveries.c.event_seq, deliveries.c.seq)
        )
        rows = (await self._conn.execute(query)).all()
        return [_claimed(r) for r in rows]

    async def record_attempt(
        self,
        seq: int,
        now: datetime,
        *,
        delivered: bool,
        status: int | None,
        error: str | None,
        next_attempt_at: datetime | None,
    ) -> None:
        """Note an attempt's outcome: delivered, to be retried at `next_attempt_at`, or given
        up (failed) when that is None. `last_error` keeps the latest failure's error."""
        values: dict[str, Any] = {
            "attempts": deliveries.c.attempts + 1, "last_status": status, "lease_until": None,
        }  # fmt: skip
        if error is not None:  # a later success keeps it: it tells why there were retries
            values["last_error"] = error
        if delivered:
            values |= {"status": "delivered", "delivered_at": now}
        elif next_attempt_at is None:
            values |= {"status": "failed"}
        else:
            values |= {"next_attempt_at": next_attempt_at}
        await self._conn.execute(deliveries.update().where(deliveries.c.seq == seq).values(values))


def _webhook(row: Any) -> Webhook:
    mapping = row._mapping
    return Webhook(
        id=mapping[webhooks.c.id],
        url=mapping[webhooks.c.url],
        events=tuple(mapping[webhooks.c.events]),
        secret=mapping[webhooks.c.secret],
        created_at=mapping[webhooks.c.created_at],
        tenant=mapping[webhooks.c.tenant],
    )


def _delivery(row: Any) -> Delivery:
    mapping = row._mapping
    return Delivery(
        seq=mapping[deliveries.c.seq],
        webhook_id=mapping[deliveries.c.webhook_id],
        event_seq=mapping[deliveries.c.event_seq],
        event_type=mapping[events.c.type],
        conversation_id=mapping[events.c.conversation_id],
        status=mapping[deliveries.c.status],
        attempts=mapping[deliveries.c.attempts],
        next_attempt_at=mapping[deliveries.c.next_attempt_at],
        last_status=mapping[deliveries.c.last_status],
        last_error=mapping[deliveries.c.last_error],
        delivered_at=mapping[deliveries.c.delivered_at],
        created_at=mapping[deliveries.c.created_at],
    )


def _claimed(row: Any) -> Claimed:
    mapping = row._mapping
    event = Event(
        mapping[events.c.seq], mapping[events.c.type], mapping[events.c.conversation_id],
        mapping[events.c.data], mapping[events.c.created_at], mapping[events.c.tenant],
    )  # fmt: skip
    return Claimed(delivery=_delivery(row), webhook=_webhook(row), event=event)
