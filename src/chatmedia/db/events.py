"""Repository of the event log and its outbox of webhook deliveries."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

import sqlalchemy as sa

from chatmedia.db.engine import Conn
from chatmedia.db.pages import Conversations
from chatmedia.db.schema import deliveries, events, webhooks
from chatmedia.models import Event

ALL_EVENTS = "*"
# PostgreSQL: the channel that tells every node an event was logged, and the advisory lock
# that makes events commit in id order.
NOTIFY_CHANNEL = "chatmedia_events"
_APPEND_LOCK = 0x63686D65  # "chme"
# No id is above this: "after `seq`" with no upper bound.
_NO_BOUND = 2**63 - 1
_INSERT = events.insert()
_HOOKS = sa.select(webhooks.c.id, webhooks.c.events).where(
    webhooks.c.tenant == sa.bindparam("tenant")
)
# Built once: event streams run these on every wake-up, and building a statement costs more
# than running it (SQLAlchemy caches the compiled form of a statement object it has seen).
_AFTER = (
    sa.select(events)
    .where(events.c.seq > sa.bindparam("after"), events.c.seq <= sa.bindparam("upto"))
    .order_by(events.c.seq)
    .limit(sa.bindparam("limit"))
)
_TENANT_AFTER = _AFTER.where(events.c.tenant == sa.bindparam("tenant"))
_NEWEST = sa.select(sa.func.max(events.c.seq))


class Events:
    """Queries over one tenant's `events` (and the deliveries each fans out to its
    webhooks)."""

    def __init__(self, conn: Conn, tenant: str) -> None:
        self._conn = conn
        self._tenant = tenant

    async def append(
        self, kind: str, conversation_id: str | None, data: Mapping[str, Any], now: datetime
    ) -> Event:
        """Log an event and queue its delivery to every webhook that wants it, in the
        caller's transaction: the change, its event and its deliveries commit together.

        On PostgreSQL, ids come from a sequence, and transactions could commit in another
        order than they took their ids: a reader that has seen event 8 would then never see
        event 7. So appends hold a transaction lock until commit, which makes id order
        commit order (the cost: appends are serialized, as SQLite's are anyway), and a
        NOTIFY, sent at commit, wakes the readers of every node. To keep that lock short and
        free of deadlocks, append as the last step of a transaction, after every row lock."""
        if self._conn.dialect.name == "postgresql":
            await self._conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_APPEND_LOCK)))
            await self._conn.execute(sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, "")))
        values = {
            "type": kind,
            "conversation_id": conversation_id,
            "data": dict(data),
            "created_at": now,
            "tenant": self._tenant,
        }
        result = await self._conn.execute(_INSERT, values)
        seq = int(result.inserted_primary_key[0])  # type: ignore[index]
        hooks = await self._conn.execute(_HOOKS, {"tenant": self._tenant})
        rows = [
            {
                "webhook_id": hook.id,
                "event_seq": seq,
                "queue": conversation_id or "",
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for hook in hooks
            if ALL_EVENTS in hook.events or kind in hook.events
        ]
        if rows:
            await self._conn.execute(deliveries.insert(), rows)
        return Event(seq, kind, conversation_id, dict(data), now, self._tenant)

    async def after(
        self, seq: int, conversations: Conversations, limit: int, upto: int | None = None
    ) -> list[Event]:
        """The tenant's events newer than `seq` (and not newer than `upto`) in
        `conversations`, oldest first."""
        values = {"after": seq, "upto": _NO_BOUND if upto is None else upto, "limit": limit}
        rows = await self._conn.execute(_after_in(conversations), values | {"tenant": self._tenant})
        return [_event(r) for r in rows]

    async def delete_some_of(self, conversation_id: str, limit: int, keep: str) -> int:
        """Remove up to `limit` events of the conversation (but those of type `keep`) with
        their deliveries, pending or not; how many events."""
        query = (
            sa.select(events.c.seq)
            .where(events.c.conversation_id == conversation_id, events.c.tenant == self._tenant)
            .where(events.c.type != keep)
            .limit(limit)
        )
        seqs = list((await self._conn.scalars(query)).all())
        if seqs:
            await self._conn.execute(deliveries.delete().where(deliveries.c.event_seq.in_(seqs)))
            await self._conn.execute(events.delete().where(events.c.seq.in_(seqs)))
        return len(seqs)


async def logged_after(conn: Conn, seq: int, limit: int) -> list[Event]:
    """Every tenant's events newer than `seq`, oldest first: what a process's shared feed
    reads once for all its streams, which each keep their own."""
    rows = await conn.execute(_AFTER, {"after": seq, "upto": _NO_BOUND, "limit": limit})
    return [_event(r) for r in rows]


async def last_event_seq(conn: Conn) -> int:
    """The newest event's id (of any tenant: ids are shared), 0 when there is none."""
    return int(await conn.scalar(_NEWEST) or 0)


async def delete_events_before(conn: Conn, moment: datetime) -> int:
    """Forget events (of every tenant) older than `moment` that no delivery waits for."""
    waiting = sa.select(deliveries.c.event_seq).where(deliveries.c.status == "pending")
    old_deliveries = deliveries.delete().where(
        deliveries.c.status != "pending",
        deliveries.c.event_seq.in_(sa.select(events.c.seq).where(events.c.created_at < moment)),
    )
    await conn.execute(old_deliveries)
    result = await conn.execute(
        events.delete().where(events.c.created_at < moment, events.c.seq.not_in(waiting))
    )
    return result.rowcount


@lru_cache(maxsize=256)
def _after_in(conversations: Conversations) -> sa.Select[Any]:
    """`_TENANT_AFTER` within `conversations`, one statement per distinct restriction (a
    process's streams have few)."""
    return _TENANT_AFTER.where(conversations.clause(events.c.conversation_id))


def _event(row: sa.Row[Any]) -> Event:
    return Event(row.seq, row.type, row.conversation_id, row.data, row.created_at, row.tenant)
