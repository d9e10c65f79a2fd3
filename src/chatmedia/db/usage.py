"""Repository of what tenants hold and may hold: `tenant_usage`, `tenant_quotas` and
`quota_reservations` (the rules are chatmedia.fairuse.quotas')."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from chatmedia.db.engine import Conn, insert_ignore
from chatmedia.db.schema import quota_reservations, tenant_quotas, tenant_usage
from chatmedia.models import FileRecord

_EPOCH_DAY = date(1970, 1, 1).toordinal()


def day_of(moment: datetime) -> int:
    """The day of an aware UTC time, counted from 1970-01-01 (`tenant_usage.day`)."""
    return moment.toordinal() - _EPOCH_DAY


_U = tenant_usage.c
# Every transaction that adds or removes files takes its tenant's row last of all its
# locks (after the blobs'), so that no two of them wait for each other in a circle.
_EMPTY = {"bytes": 0, "files": 0, "day": 0, "day_bytes": 0, "reserved_bytes": 0,
          "reserved_files": 0}  # fmt: skip
_LOCK = sa.select(tenant_usage).where(_U.tenant == sa.bindparam("tenant")).with_for_update()
# Every upload asks it: built once.
_LIMITS = sa.select(tenant_quotas).where(tenant_quotas.c.tenant == sa.bindparam("tenant"))


@dataclass(frozen=True, slots=True)
class Limits:
    """A tenant's quotas; None is unlimited."""

    max_bytes: int | None = None
    max_files: int | None = None
    max_daily_bytes: int | None = None

    @property
    def unlimited(self) -> bool:
        """True when nothing is limited."""
        return self.max_bytes is None and self.max_files is None and self.max_daily_bytes is None


@dataclass(frozen=True, slots=True)
class Figures:
    """What a tenant holds, adds today and has reserved for uploads under way."""

    tenant: str
    bytes: int = 0
    files: int = 0
    day: int = 0
    day_bytes: int = 0
    reserved_bytes: int = 0
    reserved_files: int = 0

    def bytes_on(self, day: int) -> int:
        """Bytes of the files added on `day`."""
        return self.day_bytes if self.day == day else 0


def _upsert(dialect: Any) -> Any:
    """INSERT … ON CONFLICT (tenant) DO UPDATE adding a file's figures, in `dialect`."""
    insert = dialect.insert(tenant_usage)
    new = insert.excluded
    return insert.on_conflict_do_update(
        index_elements=[_U.tenant],
        set_={
            "bytes": _U.bytes + new.bytes,
            "files": _U.files + new.files,
            "day_bytes": sa.case(
                (_U.day == new.day, _U.day_bytes + new.day_bytes), else_=new.day_bytes
            ),
            "day": new.day,
        },
    )


# Built once: every file added runs one.
_UPSERTS = {"sqlite": _upsert(sqlite), "postgresql": _upsert(postgresql)}


class Usage:
    """Queries over the usage, quotas and reservations of tenants, on one connection."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def count_file(self, record: FileRecord) -> None:
        """A file was added to its tenant (on the day it was created)."""
        size = stored_size(record)
        day = day_of(record.created_at)
        row = _EMPTY | {"tenant": record.tenant, "bytes": size, "files": 1, "day": day,
                        "day_bytes": size}  # fmt: skip
        await self._conn.execute(_UPSERTS[self._conn.dialect.name], row)

    async def uncount_files(self, records: Iterable[FileRecord]) -> None:
        """These files left their tenants (the day's figure stays: it counts what was
        added)."""
        gone: dict[str, tuple[int, int]] = {}
        for record in records:
            size, count = gone.get(record.tenant, (0, 0))
            gone[record.tenant] = (size + stored_size(record), count + 1)
        for tenant, (size, count) in gone.items():
            await self._conn.execute(
                tenant_usage.update()
                .where(_U.tenant == tenant)
                .values(bytes=_U.bytes - size, files=_U.files - count)
            )

    async def figures(self, tenant: str) -> Figures:
        """What `tenant` holds now (zeros for a tenant that never held anything)."""
        row = (await self._conn.execute(sa.select(tenant_usage).where(_U.tenant == tenant))).first()
        return _figures(row) if row else Figures(tenant)

    async def lock(self, tenant: str) -> Figures:
        """What `tenant` holds, its row locked until the transaction ends (SQLite's write
        transaction holds the whole database already)."""
        await self._conn.execute(
            insert_ignore(self._conn, tenant_usage), _EMPTY | {"tenant": tenant}
        )
        row = (await self._conn.execute(_LOCK, {"tenant": tenant})).one()
        return _figures(row)

    async def every(self) -> list[Figures]:
        """Every tenant that holds or held something, by name."""
        rows = await self._conn.execute(sa.select(tenant_usage).order_by(_U.tenant))
        return [_figures(r) for r in rows]

    async def limits(self, tenant: str) -> Limits | None:
        """The tenant's own quotas, or None when it has none of its own."""
        row = (await self._conn.execute(_LIMITS, {"tenant": tenant})).first()
        return Limits(row.max_bytes, row.max_files, row.max_daily_bytes) if row else None

    async def all_limits(self) -> dict[str, Limits]:
        """Every tenant's own quotas, by tenant."""
        rows = await self._conn.execute(sa.select(tenant_quotas))
        return {r.tenant: Limits(r.max_bytes, r.max_files, r.max_daily_bytes) for r in rows}

    async def set_limits(self, tenant: str, limits: Limits, now: datetime) -> None:
        """Give `tenant` quotas of its own."""
        await self._conn.execute(tenant_quotas.delete().where(tenant_quotas.c.tenant == tenant))
        await self._conn.execute(
            tenant_quotas.insert().values(
                tenant=tenant,
                max_bytes=limits.max_bytes,
                max_files=limits.max_files,
                max_daily_bytes=limits.max_daily_bytes,
                updated_at=now,
            )
        )

    async def reserve(
        self, reservation_id: str, tenant: str, size: int, files: int, expires_at: datetime
    ) -> None:
        """Hold `size` bytes and `files` files for an upload (the tenant's row is locked)."""
        await self._conn.execute(
            quota_reservations.insert().values(
                id=reservation_id, tenant=tenant, bytes=size, files=files, expires_at=expires_at
            )
        )
        await self._shift(tenant, size, files)

    async def grow(self, reservation_id: str, tenant: str, size: int, expires_at: datetime) -> bool:
        """Hold `size` more bytes and renew the lease; False when the reservation is gone
        (it expired)."""
        result = await self._conn.execute(
            quota_reservations.update()
            .where(quota_reservations.c.id == reservation_id)
            .values(bytes=quota_reservations.c.bytes + size, expires_at=expires_at)
        )
        if result.rowcount != 1:
            return False
        await self._shift(tenant, size, 0)
        return True

    async def reserved(self, reservation_id: str) -> int:
        """The bytes a reservation holds (0 when it is gone)."""
        c = quota_reservations.c
        held = await self._conn.scalar(sa.select(c.bytes).where(c.id == reservation_id))
        return int(held or 0)

    async def renew(self, reservation_id: str, expires_at: datetime) -> None:
        """Push back a reservation's lease (a resumable upload's, as its expiry moves)."""
        await self._conn.execute(
            quota_reservations.update()
            .where(quota_reservations.c.id == reservation_id)
            .values(expires_at=expires_at)
        )

    async def release(self, reservation_id: str) -> bool:
        """End a reservation; False when it had already ended (expired and swept)."""
        c = quota_reservations.c
        row = (
            await self._conn.execute(
                quota_reservations.delete()
                .where(c.id == reservation_id)
                .returning(c.tenant, c.bytes, c.files)
            )
        ).first()
        if row is None:
            return False
        await self._shift(row.tenant, -row.bytes, -row.files)
        return True

    async def expired_reservations(self, now: datetime, limit: int) -> list[str]:
        """Ids of reservations whose lease ended (their node stopped without ending them)."""
        c = quota_reservations.c
        rows = await self._conn.execute(
            sa.select(c.id).where(c.expires_at < now).order_by(c.expires_at).limit(limit)
        )
        return [r.id for r in rows]

    async def _shift(self, tenant: str, size: int, files: int) -> None:
        await self._conn.execute(
            tenant_usage.update()
            .where(_U.tenant == tenant)
            .values(
                reserved_bytes=_U.reserved_bytes + size, reserved_files=_U.reserved_files + files
            )
        )


def stored_size(record: FileRecord) -> int:
    """The bytes a file holds in the store: its size when HOSTED, nothing when EXTERNAL (a
    file whose blob another file shares counts in full all the same)."""
    return record.size if record.sha256 is not None else 0


def _figures(row: sa.Row[Any]) -> Figures:
    return Figures(
        row.tenant, row.bytes, row.files, row.day, row.day_bytes, row.reserved_bytes,
        row.reserved_files,
    )  # fmt: skip
