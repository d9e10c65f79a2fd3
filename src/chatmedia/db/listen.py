"""Cross-node wake-ups: on PostgreSQL, each process LISTENs on the channel that
`Events.append` NOTIFYs at commit, and wakes its own readers (event streams, the webhook
dispatcher). A notification carries nothing: readers query the event log, so one lost
while the connection is down costs only latency, and each reconnect wakes everyone once
to catch up."""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio

from chatmedia.db.engine import PG_CONNECT_TIMEOUT, Database
from chatmedia.db.events import NOTIFY_CHANNEL

log = logging.getLogger("chatmedia.db")

# How often an idle listening connection is checked, and how long to wait after a failure.
HEARTBEAT_SECONDS = 10.0
RETRY_SECONDS = 1.0


async def listen_for_events(db: Database, wake: Callable[[], None], stopping: anyio.Event) -> None:
    """Call `wake` whenever any node logs an event, until `stopping` is set. Returns at once
    on SQLite, where the readers' own polling sees every process's events."""
    if not db.is_postgresql:
        return
    import asyncpg  # here: 16 MiB that a SQLite deployment's workers need not carry

    dsn = db.url.set(drivername="postgresql").render_as_string(hide_password=False)
    failing = False
    while not stopping.is_set():
        try:
            await _listen(dsn, wake, stopping)
            failing = False
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            if not failing:  # once per outage, not once a second
                log.warning("event notifications lost (%s); reconnecting", type(e).__name__)
            failing = True
            with anyio.move_on_after(RETRY_SECONDS):
                await stopping.wait()


async def _listen(dsn: str, wake: Callable[[], None], stopping: anyio.Event) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=PG_CONNECT_TIMEOUT)
    try:
        await conn.add_listener(NOTIFY_CHANNEL, lambda *_: wake())
        wake()  # events logged while this process was not listening
        while not stopping.is_set():
            with anyio.move_on_after(HEARTBEAT_SECONDS):
                await stopping.wait()
            # A connection that died quietly only shows when it is used.
            await conn.fetchval("SELECT 1", timeout=PG_CONNECT_TIMEOUT)
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(PG_CONNECT_TIMEOUT):
            await conn.close()
