"""What a write transaction changed that readers may keep cached.

A repository method that hides or alters a row the download path caches (a file's, a
key's) names it here; `Database.write` collects the names of its transaction and hands them
on only once it has committed (a rolled-back change hid nothing). On PostgreSQL it also
NOTIFYs them inside the transaction, so every node hears of them exactly when they commit
and never of a change that did not happen (chatmedia.caching explains the contract).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

import sqlalchemy as sa

if TYPE_CHECKING:  # PostgreSQL's only (see chatmedia.db.engine)
    from sqlalchemy.ext.asyncio import AsyncConnection

# The PostgreSQL channel that carries the names, joined by ",".
CHANGES_CHANNEL = "chatmedia_changes"
# NOTIFY takes payloads under 8,000 bytes; names are ids of at most 63 bytes.
_PAYLOAD_NAMES = 100
# A node's cache on PostgreSQL answers only while its listener proved alive this recently,
# so that another node's change reaches it within this time (chatmedia.caching.records).
TRUST_SECONDS = 1.0
FILE = "f:"
KEY = "k:"

_pending: ContextVar[list[str] | None] = ContextVar("chatmedia_changes", default=None)


def file_changed(file_id: str) -> None:
    """The file's row changed or went, in the current write transaction."""
    _note(FILE + file_id)


def key_changed(key_id: str) -> None:
    """The key's row changed (revoked), in the current write transaction."""
    _note(KEY + key_id)


def _note(name: str) -> None:
    pending = _pending.get()
    if pending is None:
        raise RuntimeError("a cached row changed outside a write transaction")
    pending.append(name)


@contextmanager
def collecting() -> Iterator[list[str]]:
    """The names noted within the block (a write transaction's)."""
    names: list[str] = []
    token = _pending.set(names)
    try:
        yield names
    finally:
        _pending.reset(token)


async def notify(conn: AsyncConnection, names: Sequence[str]) -> None:
    """NOTIFY the names on CHANGES_CHANNEL, delivered when the transaction commits."""
    for start in range(0, len(names), _PAYLOAD_NAMES):
        payload = ",".join(names[start : start + _PAYLOAD_NAMES])
        await conn.execute(sa.select(sa.func.pg_notify(CHANGES_CHANNEL, payload)))
