"""Secrets the server makes for itself, shared by every node through the database."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import sqlalchemy as sa

from chatmedia.db.engine import Database, insert_ignore
from chatmedia.db.schema import server_secrets


async def server_secret(db: Database, name: str) -> bytes:
    """The secret called `name`, made (256 random bits) the first time it is asked for."""
    query = sa.select(server_secrets.c.value).where(server_secrets.c.name == name)
    async with db.read() as conn:  # the usual case: no write lock
        value = await conn.scalar(query)
    if value is None:
        async with db.write() as conn:  # another node may make it at the same moment
            values = {"name": name, "value": secrets.token_hex(32), "created_at": datetime.now(UTC)}
            await conn.execute(insert_ignore(conn, server_secrets).values(values))
            value = await conn.scalar(query)
    return bytes.fromhex(str(value))
