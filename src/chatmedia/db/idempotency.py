"""Repository of idempotency keys: per API key (the scope), each Idempotency-Key is first
claimed by the request that carries it, then holds that request's answer for retries.

A claim's `created_at` doubles as its owner's token: completing or releasing a claim only
touches the row that claim made, so a request that outlived its claim (and had it taken
over as stale) cannot overwrite or delete its successor's row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from chatmedia.db.engine import Conn
from chatmedia.db.schema import idempotency_keys as keys_table


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """One key's state: claimed by a request in progress (`completed_at` is None), or
    holding the answer to that request and the hash of the request it answered."""

    scope: str
    key: str
    created_at: datetime
    completed_at: datetime | None = None
    request_hash: str | None = None
    status: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None


class IdempotencyKeys:
    """Queries over `idempotency_keys` on one connection (and so one transaction)."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def forget_resources(self, resources: Sequence[str]) -> int:
        """Forget the answers that created these things (erased: nothing may replay them)."""
        if not resources:
            return 0
        query = keys_table.delete().where(keys_table.c.resource.in_(list(resources)))
        return (await self._conn.execute(query)).rowcount

    async def get(self, scope: str, key: str) -> IdempotencyRecord | None:
        """The record of `key` in `scope`, whatever its age."""
        query = sa.select(keys_table).where(keys_table.c.scope == scope, keys_table.c.key == key)
        row = (await self._conn.execute(query)).first()
        return _record(row) if row else None

    async def claim(
        self,
        scope: str,
        key: str,
        now: datetime,
        *,
        expired_before: datetime,
        stale_before: datetime,
    ) -> bool:
        """Record `key` as in progress, created at `now` (the claim's token). A record created
        before `expired_before`, or still in progress and created before `stale_before`, is
        replaced. False when a live record holds the key."""
        c = keys_table.c
        dead = sa.or_(
            c.created_at < expired_before,
            sa.and_(c.completed_at.is_(None), c.created_at < stale_before),
        )
        await self._conn.execute(keys_table.delete().where(c.scope == scope, c.key == key, dead))
        # A plain insert, portable to every backend: the primary key refuses it when a live
        # record exists, including one a concurrent transaction has just inserted (on
        # PostgreSQL the insert waits for that transaction, then fails). The savepoint keeps
        # the enclosing transaction usable after the violation.
        try:
            async with self._conn.begin_nested():
                await self._conn.execute(
                    keys_table.insert().values(scope=scope, key=key, created_at=now)
                )
        except IntegrityError:
            return False
        return True

    async def complete(
        self,
        scope: str,
        key: str,
        claimed_at: datetime,
        *,
        request_hash: str,
        status: int,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        now: datetime,
        resource: str | None = None,
    ) -> bool:
        """Store the answer in the claim made at `claimed_at`. False when that claim is gone
        (swept, or taken over as stale)."""
        c = keys_table.c
        result = await self._conn.execute(
            keys_table.update()
            .where(
                c.scope == scope,
                c.key == key,
                c.created_at == claimed_at,
                c.completed_at.is_(None),
            )
            .values(
                request_hash=request_hash,
                status=status,
                headers=[[name, value] for name, value in headers],
                body=body,
                completed_at=now,
                resource=resource,
            )
        )
        return result.rowcount == 1

    async def release(self, scope: str, key: str, claimed_at: datetime) -> None:
        """Delete the claim made at `claimed_at` if it is still in progress, so that a retry
        runs anew."""
        c = keys_table.c
        await self._conn.execute(
            keys_table.delete().where(
                c.scope == scope,
                c.key == key,
                c.created_at == claimed_at,
                c.completed_at.is_(None),
            )
        )

    async def delete_created_before(self, cutoff: datetime, limit: int) -> int:
        """Delete up to `limit` of the oldest records created before `cutoff`; returns how
        many were deleted."""
        c = keys_table.c
        oldest = (
            sa.select(c.scope, c.key)
            .where(c.created_at < cutoff)
            .order_by(c.created_at)
            .limit(limit)
        )
        pairs = [(row.scope, row.key) for row in await self._conn.execute(oldest)]
        if not pairs:
            return 0
        await self._conn.execute(keys_table.delete().where(sa.tuple_(c.scope, c.key).in_(pairs)))
        return len(pairs)


def _record(row: sa.Row[Any]) -> IdempotencyRecord:
    headers = row.headers or []
    return IdempotencyRecord(
        scope=row.scope,
        key=row.key,
        created_at=row.created_at,
        completed_at=row.completed_at,
        request_hash=row.request_hash,
        status=row.status,
        headers=tuple((str(name), str(value)) for name, value in headers),
        body=row.body,
    )
