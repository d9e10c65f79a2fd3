"""Repository of what the scanner said: each blob's scan state, the quarantine, and the
signature version the nodes last acted on."""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa

from chatmedia.db.engine import Conn, upsert
from chatmedia.db.pages import newest_first
from chatmedia.db.schema import blobs, quarantine, service_state
from chatmedia.models import QuarantineEntry, ScanState, ScanStatus

# What an upload's scan asks first, as one statement of scalar subqueries.
_SHA256: sa.BindParameter[str] = sa.bindparam("sha256")
_REFUSED = (
    sa.select(quarantine.c.signature)
    .where(quarantine.c.sha256 == _SHA256, quarantine.c.released_at.is_(None))
    .limit(1)
    .scalar_subquery()
)


def _blob_column(column: sa.Column[Any]) -> sa.ScalarSelect[Any]:
    return sa.select(column).where(blobs.c.sha256 == _SHA256).scalar_subquery()


_BEFORE_SCAN = sa.select(
    _REFUSED.label("refused"),
    sa.exists().where(blobs.c.sha256 == _SHA256).label("stored"),
    *(_blob_column(c).label(c.name) for c in (
        blobs.c.scan_status, blobs.c.scan_signature, blobs.c.scanned_at, blobs.c.scan_version,
    )),
)  # fmt: skip
_ENTRY_FIELDS = tuple(f.name for f in fields(QuarantineEntry))


class Scans:
    """Scan states and quarantine records, on one connection (and so one transaction)."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def state(self, sha256: str) -> tuple[ScanState | None, str | None] | None:
        """A stored blob's scan state (None: stored without scanning) and the signature
        version it was scanned with; None when there is no such blob."""
        query = sa.select(
            blobs.c.scan_status, blobs.c.scan_signature, blobs.c.scanned_at, blobs.c.scan_version
        ).where(blobs.c.sha256 == sha256)
        row = (await self._conn.execute(query)).first()
        if row is None:
            return None
        if row.scan_status is None:
            return None, row.scan_version
        status = cast(ScanStatus, row.scan_status)
        return ScanState(status, row.scan_signature, row.scanned_at), row.scan_version

    async def before_scan(
        self, sha256: str
    ) -> tuple[str | None, tuple[ScanState | None, str | None] | None]:
        """In one statement: the signature these bytes were refused or quarantined for
        (unless released), and what `state` says of them."""
        row = (await self._conn.execute(_BEFORE_SCAN, {"sha256": sha256})).one()
        if not row.stored:
            return row.refused, None
        if row.scan_status is None:
            return row.refused, (None, row.scan_version)
        state = ScanState(cast(ScanStatus, row.scan_status), row.scan_signature, row.scanned_at)
        return row.refused, (state, row.scan_version)

    async def set_state(self, sha256: str, state: ScanState, version: str | None) -> None:
        """Record what the scanner said of a blob."""
        await self._conn.execute(
            blobs.update()
            .where(blobs.c.sha256 == sha256)
            .values(
                scan_status=state.status,
                scan_signature=state.signature,
                scanned_at=state.scanned_at,
                scan_version=version,
            )
        )

    async def recent_clean(
        self, since: datetime, version: str, before: datetime | None, limit: int
    ) -> list[tuple[str, datetime]]:
        """Up to `limit` clean blobs stored since `since` (and before `before`, when given)
        and scanned with other signatures than `version`: (sha256, stored at), newest
        first."""
        query = (
            sa.select(blobs.c.sha256, blobs.c.created_at)
            .where(
                blobs.c.scan_status == "clean",
                blobs.c.created_at >= since,
                sa.or_(blobs.c.scan_version.is_(None), blobs.c.scan_version != version),
            )
            .order_by(blobs.c.created_at.desc())
            .limit(limit)
        )
        if before is not None:
            query = query.where(blobs.c.created_at < before)
        return [(row.sha256, row.created_at) for row in await self._conn.execute(query)]

    async def add_entry(self, entry: QuarantineEntry) -> None:
        """Keep a quarantine record."""
        values = {name: getattr(entry, name) for name in _ENTRY_FIELDS if name != "seq"}
        await self._conn.execute(quarantine.insert().values(values))

    async def entries(
        self, tenant: str | None, limit: int, before: int | None
    ) -> tuple[list[QuarantineEntry], int | None]:
        """A page of quarantine records, newest first, of one tenant or (None) of all."""
        query = sa.select(quarantine)
        if tenant is not None:
            query = query.where(quarantine.c.tenant == tenant)
        rows, next_seq = await newest_first(self._conn, query, quarantine.c.seq, limit, before)
        return [_entry(row) for row in rows], next_seq

    async def release(self, sha256: str, by: str, now: datetime) -> int:
        """Mark the records of these bytes released by key `by`; how many there were."""
        result = await self._conn.execute(
            quarantine.update()
            .where(quarantine.c.sha256 == sha256, quarantine.c.released_at.is_(None))
            .values(released_at=now, released_by=by)
        )
        return result.rowcount

    async def forget(self, sha256: str) -> None:
        """Drop the records of these bytes (purged)."""
        await self._conn.execute(quarantine.delete().where(quarantine.c.sha256 == sha256))


async def shared_value(conn: Conn, name: str) -> str | None:
    """A fact the nodes share (`service_state`), or None when never set."""
    query = sa.select(service_state.c.value).where(service_state.c.name == name)
    return cast(str | None, await conn.scalar(query))


async def set_shared_value(conn: Conn, name: str, value: str, now: datetime) -> None:
    """Set a fact the nodes share."""
    table = upsert(conn, service_state)
    statement = table.on_conflict_do_update(
        index_elements=[service_state.c.name], set_={"value": value, "updated_at": now}
    )
    await conn.execute(statement, {"name": name, "value": value, "updated_at": now})


def _entry(row: sa.Row[Any]) -> QuarantineEntry:
    return QuarantineEntry(**{name: row._mapping[name] for name in _ENTRY_FIELDS})
