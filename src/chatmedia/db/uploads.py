"""Repository of resumable uploads under way (chatmedia.uploads).

Writing to an upload takes a claim: the row's `generation` goes up by one and a short
lease starts, only when the client's offset is the row's and no other writer's lease is
live. The writer renews its lease as its bytes arrive and ends with a compare-and-set of
the offset on its generation; a writer whose generation moved on (its lease ran out and
another took over) can neither renew nor commit: its bytes are discarded."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from chatmedia.db.engine import Conn
from chatmedia.db.schema import upload_segments, uploads


@dataclass(frozen=True, slots=True)
class Upload:
    """An upload under way: whose, where its File goes, how long and how far it is."""

    id: str
    tenant: str
    key_id: str
    conversation_id: str | None
    name: str | None
    properties: dict[str, Any]
    length: int | None
    offset: int
    generation: int
    lease_until: datetime | None
    created_at: datetime
    expires_at: datetime


_FIELDS = tuple(f.name for f in fields(Upload))


@dataclass(frozen=True, slots=True)
class Segment:
    """A piece of an upload: its bytes from `start`, in the store under `name`."""

    start: int
    length: int
    name: str


@dataclass(frozen=True, slots=True)
class Claim:
    """A writer's right to add bytes at `offset`, while `generation` is the row's."""

    upload: Upload
    generation: int
    # The upload's last segment, which the writer's bytes follow (None: they start it).
    last: Segment | None = None


class Uploads:
    """Uploads under way, on one connection (and so one transaction)."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def create(self, upload: Upload) -> None:
        """Record a new upload."""
        values = {name: getattr(upload, name) for name in _FIELDS}
        await self._conn.execute(uploads.insert().values(values))

    async def get(self, upload_id: str) -> Upload | None:
        """The upload with this id."""
        row = (await self._conn.execute(uploads.select().where(uploads.c.id == upload_id))).first()
        return Upload(**{name: row._mapping[name] for name in _FIELDS}) if row else None

    async def claim(
        self, upload: Upload, offset: int, now: datetime, lease: timedelta
    ) -> Claim | None:
        """Take the right to write at `offset`, after the upload's last segment; None when
        the offset is not the upload's or another writer's lease is live (the caller tells
        which from `upload`)."""
        result = await self._conn.execute(
            uploads.update()
            .where(
                uploads.c.id == upload.id,
                uploads.c.offset == offset,
                uploads.c.generation == upload.generation,
                sa.or_(uploads.c.lease_until.is_(None), uploads.c.lease_until <= now),
            )
            .values(generation=upload.generation + 1, lease_until=now + lease)
        )
        if result.rowcount != 1:
            return None
        last = _segments_of(upload.id).order_by(upload_segments.c.start.desc()).limit(1)
        row = (await self._conn.execute(last)).first()
        return Claim(
            upload, upload.generation + 1, Segment(row.start, row.length, row.name) if row else None
        )

    async def renew(self, claim: Claim, until: datetime) -> bool:
        """Extend the claim's lease; False when the claim was lost."""
        result = await self._conn.execute(
            uploads.update()
            .where(uploads.c.id == claim.upload.id, uploads.c.generation == claim.generation)
            .values(lease_until=until)
        )
        return result.rowcount == 1

    async def commit(
        self,
        claim: Claim,
        offset: int,
        length: int | None,
        expires_at: datetime,
        segment: Segment | None = None,
        hold_until: datetime | None = None,
    ) -> bool:
        """Move the upload to `offset` with `segment` its new last piece (and its length,
        when now known), and end the claim, or hold it until `hold_until` (the upload
        becoming its File); False, changing nothing, when the claim was lost."""
        result = await self._conn.execute(
            uploads.update()
            .where(uploads.c.id == claim.upload.id, uploads.c.generation == claim.generation)
            .values(offset=offset, length=length, lease_until=hold_until, expires_at=expires_at)
        )
        if result.rowcount != 1:
            return False
        if segment is not None:
            row = {"upload_id": claim.upload.id, "start": segment.start,
                   "length": segment.length, "name": segment.name}  # fmt: skip
            await self._conn.execute(upload_segments.insert().values(row))
        return True

    async def segments(self, upload_id: str) -> list[Segment]:
        """An upload's pieces, in order."""
        query = _segments_of(upload_id).order_by(upload_segments.c.start)
        return [Segment(r.start, r.length, r.name) for r in await self._conn.execute(query)]

    async def set_length(self, upload: Upload, length: int) -> bool:
        """Say a deferred length, once; False when it was said meanwhile."""
        result = await self._conn.execute(
            uploads.update()
            .where(uploads.c.id == upload.id, uploads.c.length.is_(None))
            .values(length=length)
        )
        return result.rowcount == 1

    async def delete(self, upload_id: str) -> bool:
        """Forget an upload (done, terminated or expired) and its pieces; False when it was
        gone."""
        await self._conn.execute(
            upload_segments.delete().where(upload_segments.c.upload_id == upload_id)
        )
        result = await self._conn.execute(uploads.delete().where(uploads.c.id == upload_id))
        return result.rowcount == 1

    async def expired(self, now: datetime, limit: int) -> list[str]:
        """Ids of uploads untouched past their expiry, with no live writer."""
        query = (
            sa.select(uploads.c.id)
            .where(
                uploads.c.expires_at < now,
                sa.or_(uploads.c.lease_until.is_(None), uploads.c.lease_until <= now),
            )
            .limit(limit)
        )
        return list((await self._conn.execute(query)).scalars())


def _segments_of(upload_id: str) -> sa.Select[tuple[int, int, str]]:
    columns = (upload_segments.c.start, upload_segments.c.length, upload_segments.c.name)
    return sa.select(*columns).where(upload_segments.c.upload_id == upload_id)
