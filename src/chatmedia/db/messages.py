"""Repository of conversations' messages."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import sqlalchemy as sa

from chatmedia.db.engine import Conn
from chatmedia.db.pages import newest_first
from chatmedia.db.schema import messages
from chatmedia.models import MessageRecord

# MessageRecord's fields are the columns of `messages` (besides the internal `seq`).
_FIELDS = tuple(f.name for f in fields(MessageRecord))


class Messages:
    """Queries over one tenant's `messages` on one connection."""

    def __init__(self, conn: Conn, tenant: str) -> None:
        self._conn = conn
        self._tenant = tenant

    async def insert(self, message: MessageRecord) -> None:
        """Add a message."""
        assert message.tenant == self._tenant
        values = {name: getattr(message, name) for name in _FIELDS}
        values["properties"] = dict(message.properties)
        values["sender"] = dict(message.sender)
        await self._conn.execute(messages.insert(), values)

    async def get(self, conversation_id: str, message_id: str) -> MessageRecord | None:
        """A message of a conversation."""
        query = sa.select(messages).where(
            messages.c.id == message_id,
            messages.c.conversation_id == conversation_id,
            messages.c.tenant == self._tenant,
        )
        row = (await self._conn.execute(query)).first()
        return _message(row) if row else None

    async def page(
        self, conversation_id: str, limit: int, before_seq: int | None
    ) -> tuple[list[MessageRecord], int | None]:
        """Up to `limit` messages, newest first, older than `before_seq` when given; also the
        seq to continue from, or None when there are no more."""
        query = sa.select(messages).where(
            messages.c.conversation_id == conversation_id, messages.c.tenant == self._tenant
        )
        rows, next_seq = await newest_first(self._conn, query, messages.c.seq, limit, before_seq)
        return [_message(r) for r in rows], next_seq

    async def delete_some_of(self, conversation_id: str, limit: int) -> list[str]:
        """Remove up to `limit` messages of the conversation; their ids."""
        query = (
            sa.select(messages.c.id)
            .where(messages.c.conversation_id == conversation_id, messages.c.tenant == self._tenant)
            .limit(limit)
        )
        ids = list((await self._conn.scalars(query)).all())
        if ids:
            await self._conn.execute(messages.delete().where(messages.c.id.in_(ids)))
        return ids

    async def delete(self, message_id: str) -> None:
        """Remove a message."""
        await self._conn.execute(
            messages.delete().where(messages.c.id == message_id, messages.c.tenant == self._tenant)
        )


def _message(row: sa.Row[Any]) -> MessageRecord:
    return MessageRecord(**{name: row._mapping[name] for name in _FIELDS})
