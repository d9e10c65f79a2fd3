"""The outbox's claim, run against every database: each queue (a webhook and a
conversation) is delivered in event order, however many of its deliveries were delivered
before, and only deliveries that are due and not leased are taken, oldest event first."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from chatmedia.access.principal import DEFAULT_TENANT
from chatmedia.db import Database
from chatmedia.db.events import Events
from chatmedia.db.migrate import _config
from chatmedia.db.schema import deliveries
from chatmedia.db.webhooks import Claimed, Outbox, Webhook, Webhooks

pytestmark = pytest.mark.anyio
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)
QUEUES = ("c0", "c1", "c2", None)  # None: events of no conversation, a queue of their own


@dataclass(frozen=True, slots=True)
class Row:
    """What the claim looks at in a delivery."""

    seq: int
    queue: tuple[str, str]
    event_seq: int
    status: str
    next_attempt_at: datetime
    lease_until: datetime | None


async def fill(database: Database, events: int) -> None:
    """Two webhooks that take every event, and `events` events over QUEUES."""
    async with database.write() as conn:
        for n in (1, 2):
            hook = Webhook(f"wh_{n}", "https://example.com/h", ("*",), "s" * 32, NOW,
                           DEFAULT_TENANT)  # fmt: skip
            await Webhooks(conn, DEFAULT_TENANT).create(hook)
        for n in range(events):
            conversation = QUEUES[n * 7 % len(QUEUES)]
            await Events(conn, DEFAULT_TENANT).append("message.created", conversation, {}, NOW)


async def rows(database: Database) -> list[Row]:
    async with database.read() as conn:
        found = await conn.execute(sa.select(deliveries).order_by(deliveries.c.seq))
        return [_row(r) for r in found]


def _row(r: sa.Row[Any]) -> Row:
    return Row(r.seq, (r.webhook_id, r.queue), r.event_seq, r.status, r.next_attempt_at,
               r.lease_until)  # fmt: skip


def claimable(table: list[Row], now: datetime, limit: int) -> list[int]:
    """The claim's rule, plainly: a queue's oldest pending delivery (failed ones do not
    hold their queue back), if it is due and not leased; oldest event first."""
    heads: dict[tuple[str, str], Row] = {}
    for row in table:
        head = heads.get(row.queue)
        if row.status == "pending" and (head is None or row.event_seq < head.event_seq):
            heads[row.queue] = row
    due = [
        r
        for r in heads.values()
        if r.next_attempt_at <= now and (r.lease_until is None or r.lease_until < now)
    ]
    return [r.seq for r in sorted(due, key=lambda r: (r.event_seq, r.seq))][:limit]


async def test_a_queue_goes_in_order_however_much_of_it_was_delivered(
    database: Database,
) -> None:
    """A dispatcher's life: claims while earlier claims are still in flight, some attempts
    fail and are retried later; a later delivery of a queue is never taken while an earlier
    one waits, all the way through a long backlog."""
    await fill(database, 200)
    now = NOW
    in_flight: list[Claimed] = []
    delivered: list[int] = []
    order: dict[tuple[str, str], list[int]] = {}
    for _ in range(1000):  # about 250 rounds are needed
        now += timedelta(seconds=1)
        table = await rows(database)
        async with database.write() as conn:
            claimed = await Outbox(conn).claim_due(now, LEASE, limit=5)
        assert [c.delivery.seq for c in claimed] == claimable(table, now, 5)
        busy = {(c.delivery.webhook_id, c.event.conversation_id or "") for c in in_flight}
        for item in claimed:
            queue = (item.delivery.webhook_id, item.event.conversation_id or "")
            assert queue not in busy  # never two of a queue at once
            busy.add(queue)
            waiting = [r.event_seq for r in table if r.queue == queue and r.status == "pending"]
            assert item.delivery.event_seq == min(waiting)  # never past an earlier one
        if not claimed and not in_flight and all(r.status != "pending" for r in table):
            break
        # Settle what was claimed a round ago; this round's stay in flight meanwhile.
        async with database.write() as conn:
            for item in in_flight:
                seq = item.delivery.seq
                retry = seq % 6 == 0 and item.delivery.attempts == 0
                await Outbox(conn).record_attempt(
                    seq, now, delivered=not retry, status=500 if retry else 200,
                    error="the receiver answered 500" if retry else None,
                    next_attempt_at=now + timedelta(seconds=3) if retry else None,
                )  # fmt: skip
                if not retry:
                    delivered.append(seq)
                    queue = (item.delivery.webhook_id, item.event.conversation_id or "")
                    order.setdefault(queue, []).append(item.delivery.event_seq)
        in_flight = claimed
    else:
        pytest.fail("deliveries are left that are never claimed")
    assert len(delivered) == 400 == len(set(delivered))
    assert all(seqs == sorted(seqs) for seqs in order.values())
    assert len(order) == 2 * len(QUEUES)


async def test_claims_follow_the_rule_over_any_state(database: Database) -> None:
    """Random mixes of delivered, failed, retrying, leased and waiting deliveries, most of
    them delivered already: the claim takes exactly what the rule says."""
    await fill(database, 80)
    table = await rows(database)
    chance = random.Random(7)
    for limit in (1, 3, 16, 200, 1, 5, 16, 200):
        now = NOW + timedelta(minutes=10)
        states = [
            {
                "b_seq": row.seq,
                "b_status": chance.choice(["delivered"] * 6 + ["failed", "pending", "pending"]),
                "b_next": now + timedelta(seconds=chance.choice([-60, -1, 0, 1, 60])),
                "b_lease": chance.choice(
                    [None, None, now - timedelta(seconds=1), now, now + LEASE]
                ),
            }
            for row in table
        ]
        update = (
            deliveries.update()
            .where(deliveries.c.seq == sa.bindparam("b_seq"))
            .values(
                status=sa.bindparam("b_status"),
                next_attempt_at=sa.bindparam("b_next"),
                lease_until=sa.bindparam("b_lease"),
            )
        )
        async with database.write() as conn:
            await conn.execute(update, states)
        before = await rows(database)
        async with database.write() as conn:
            claimed = await Outbox(conn).claim_due(now, LEASE, limit)
        expected = claimable(before, now, limit)
        assert [c.delivery.seq for c in claimed] == expected
        after = {r.seq: r for r in await rows(database)}
        assert all(after[seq].lease_until == now + LEASE for seq in expected)
        # Leased now, those queues give nothing more until the lease runs out.
        async with database.write() as conn:
            again = await Outbox(conn).claim_due(now, LEASE, 200)
        assert not {c.delivery.seq for c in again} & set(expected)
        assert not {(c.delivery.webhook_id, c.event.conversation_id or "") for c in again} & {
            after[seq].queue for seq in expected
        }


async def test_queues_held_back_do_not_hide_the_others(database: Database) -> None:
    """Hundreds of the oldest pending deliveries are in queues held back (one head waits
    for a retry, the other is being attempted): the newer queues' heads are still taken,
    in order."""
    async with database.write() as conn:
        for n in (1, 2):
            hook = Webhook(f"wh_{n}", "https://example.com/h", ("*",), "s" * 32, NOW,
                           DEFAULT_TENANT)  # fmt: skip
            await Webhooks(conn, DEFAULT_TENANT).create(hook)
        for _ in range(300):
            await Events(conn, DEFAULT_TENANT).append("message.created", "busy", {}, NOW)
        for n in range(5):
            await Events(conn, DEFAULT_TENANT).append("message.created", f"c{n}", {}, NOW)
    now = NOW + timedelta(seconds=1)
    async with database.write() as conn:
        [first, second] = await Outbox(conn).claim_due(now, LEASE, limit=2)
        assert {first.event.conversation_id, second.event.conversation_id} == {"busy"}
        await Outbox(conn).record_attempt(
            first.delivery.seq, now, delivered=False, status=503, error="down",
            next_attempt_at=now + timedelta(hours=1),
        )  # fmt: skip
    for n, limit in enumerate((1, 4, 10, 16), start=1):
        table = await rows(database)
        at = now + timedelta(milliseconds=n)  # the leases of the round before ran out
        async with database.write() as conn:
            claimed = await Outbox(conn).claim_due(at, timedelta(0), limit)
        assert [c.delivery.seq for c in claimed] == claimable(table, at, limit)
        assert {c.event.conversation_id for c in claimed} <= {f"c{n}" for n in range(5)}
        assert len(claimed) == min(limit, 10)
    later = now + timedelta(hours=2)  # the retry is due, the lease ran out
    async with database.write() as conn:
        claimed = await Outbox(conn).claim_due(later, LEASE, 2)
    assert [c.delivery.seq for c in claimed] == [first.delivery.seq, second.delivery.seq]


async def test_the_claim_index_migration_goes_down_and_up(database: Database) -> None:
    """0007 swaps the outbox's indexes, both ways, over a database with deliveries."""
    await fill(database, 10)

    def indexes(connection: sa.Connection) -> set[str]:
        return {str(i["name"]) for i in sa.inspect(connection).get_indexes("deliveries")}

    def migrate(connection: sa.Connection, revision: str) -> set[str]:
        if revision == "0006":
            command.downgrade(_config(connection), revision)
        else:
            command.upgrade(_config(connection), revision)
        return indexes(connection)

    old = {"ix_deliveries_status_next_attempt_at", "ix_deliveries_webhook_id_queue_event_seq"}
    new = {"ix_deliveries_status_event_seq", "ix_deliveries_status_webhook_id_queue_event_seq"}
    async with database.write() as conn:
        down = await conn.run_sync(migrate, "0006")
    assert old <= down
    assert not new & down
    async with database.write() as conn:
        up = await conn.run_sync(migrate, "head")
    assert new <= up
    assert not old & up
    async with database.write() as conn:
        claimed = await Outbox(conn).claim_due(NOW, LEASE, 200)
    assert len(claimed) == 2 * len(QUEUES)  # every queue's head, after the round trip
