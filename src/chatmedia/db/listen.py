"""Cross-node news: on PostgreSQL, each process LISTENs on the channels that
`Events.append` and `chatmedia.db.changes` NOTIFY at commit.

- An event wakes the process's own readers (event streams, the webhook dispatcher). It
  carries nothing: readers query the event log, so one lost while the connection is down
  costs only latency, and each reconnect wakes everyone once to catch up.
- A change to cached records is handed to the process's cache, which is trusted only
  while this connection proves alive, every HEARTBEAT_SECONDS (chatmedia.caching.records):
  notifications a dead connection misses must not leave a stale record served."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Protocol

import anyio

from chatmedia.db.changes import CHANGES_CHANNEL, TRUST_SECONDS
from chatmedia.db.engine import PG_CONNECT_TIMEOUT, Database
from chatmedia.db.events import NOTIFY_CHANNEL

log = logging.getLogger("chatmedia.db")

# How often the listening connection is checked (well within the cache's trust), and how
# long to wait after a failure.
HEARTBEAT_SECONDS = TRUST_SECONDS / 4
RETRY_SECONDS = 1.0


class ChangeListener(Protocol):
    """What hears of changes to cached records (chatmedia.caching.records.RecordCache)."""

    def forget_remote(self, names: Iterable[str]) -> None: ...
    def trust_until(self, moment: float) -> None: ...
    def distrust(self) -> None: ...


async def listen_for_events(
    db: Database, wake: Callable[[], None], cache: ChangeListener, stopping: anyio.Event
) -> None:
    """Call `wake` whenever any node logs an event, and tell `cache` of every change to
    cached records, until `stopping` is set. Returns at once on SQLite, where the readers'
    own polling sees every process's events, and the node's ring every change."""
    if not db.is_postgresql:
        return
    import asyncpg  # here: 16 MiB that a SQLite deployment's workers need not carry

    dsn = db.url.set(drivername="postgresql").render_as_string(hide_password=False)
    failing = False
    while not stopping.is_set():
        try:
            await _listen(dsn, wake, cache, stopping)
            failing = False
        # InternalClientError: a connection left mid-operation by a server that stopped
        # answering ("another operation is in progress"), as broken as a closed one.
        except (
            OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
            asyncpg.InternalClientError,
        ) as e:  # fmt: skip
            cache.distrust()
            if not failing:  # once per outage, not once a second
                log.warning("event notifications lost (%s); reconnecting", type(e).__name__)
            failing = True
            with anyio.move_on_after(RETRY_SECONDS):
                await stopping.wait()


async def _listen(
    dsn: str, wake: Callable[[], None], cache: ChangeListener, stopping: anyio.Event
) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=PG_CONNECT_TIMEOUT)
    try:
        await conn.add_listener(NOTIFY_CHANNEL, lambda *_: wake())
        await conn.add_listener(
            CHANGES_CHANNEL, lambda _c, _p, _ch, names: cache.forget_remote(names.split(","))
        )
        wake()  # events logged while this process was not listening
        cache.distrust()  # and changes made meanwhile: what is kept is read anew
        while not stopping.is_set():
            # A connection that died quietly only shows when it is used. Notifications
            # committed before the query was sent arrive before its answer.
            sent = time.monotonic()
            await conn.fetchval("SELECT 1", timeout=PG_CONNECT_TIMEOUT)
            cache.trust_until(sent + TRUST_SECONDS)
            with anyio.move_on_after(HEARTBEAT_SECONDS):
                await stopping.wait()
    finally:
        cache.distrust()
        with anyio.CancelScope(shield=True), anyio.move_on_after(PG_CONNECT_TIMEOUT):
            await conn.close()
