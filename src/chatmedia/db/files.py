"""Repository of files and the blobs they reference."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from chatmedia.db.changes import file_changed
from chatmedia.db.engine import Conn
from chatmedia.db.media import media_json, media_state
from chatmedia.db.pages import Conversations, newest_first
from chatmedia.db.schema import blobs, files
from chatmedia.models import FileRecord, MediaState, ScanState

# FileRecord's fields are the columns of `files` (besides the internal `seq`), and the
# scan state of its blob.
_BLOB_FIELDS = ("scan", "media", "metadata_stripped")
_RECORD_FIELDS = tuple(f.name for f in fields(FileRecord) if f.name not in _BLOB_FIELDS)
_BLOB_COLUMNS = (
    blobs.c.scan_status, blobs.c.scan_signature, blobs.c.scanned_at, blobs.c.media_status,
    blobs.c.media, blobs.c.metadata_stripped,
)  # fmt: skip
# A file with what its blob says of its bytes (an EXTERNAL file has no blob).
_FILES = sa.select(files, *_BLOB_COLUMNS).select_from(
    files.outerjoin(blobs, blobs.c.sha256 == files.c.sha256)
)
# The lookups of every download, built once: building a statement and its cache key takes
# SQLAlchemy about as long as SQLite takes to run it (60 of the 120 us of a lookup).
_BY_ID = _FILES.where(
    files.c.id == sa.bindparam("file_id"), files.c.tenant == sa.bindparam("tenant")
)
_ANY_BY_ID = _FILES.where(files.c.id == sa.bindparam("file_id"))
_BY_STORED_NAME = _FILES.where(files.c.stored_name == sa.bindparam("stored_name"))
# What only admins see: files whose bytes were found infected.
NOT_QUARANTINED = sa.or_(blobs.c.scan_status.is_(None), blobs.c.scan_status != "infected")
# An upload's statements too: the same SQL text each time, so that the driver runs its
# prepared statement again (sqlite3's statement cache, asyncpg's).
_DIALECTS = (("sqlite", sqlite), ("postgresql", postgresql))
_INSERT_NEW_NAME = {
    name: dialect.insert(files).on_conflict_do_nothing(index_elements=[files.c.stored_name])
    for name, dialect in _DIALECTS
}
_INSERT_BLOB = {name: dialect.insert(blobs).on_conflict_do_nothing() for name, dialect in _DIALECTS}
_LOCK_BLOB = (
    sa.select(blobs.c.sha256).where(blobs.c.sha256 == sa.bindparam("sha256")).with_for_update()
)


@dataclass(frozen=True, slots=True)
class BlobDerived:
    """What is known of new bytes as their row is made: their scan (and the signature
    version it used), their media, whether their metadata was stripped."""

    scan: ScanState | None = None
    scan_version: str | None = None
    media: MediaState | None = None
    stripped: bool = False

    def columns(self) -> dict[str, Any]:
        """The blob row's columns for it (every one, so the statement is always the same)."""
        scan, media = self.scan, self.media
        return {
            "scan_status": scan.status if scan else None,
            "scan_signature": scan.signature if scan else None,
            "scanned_at": scan.scanned_at if scan else None,
            "scan_version": self.scan_version,
            "media_status": media.status if media else None,
            "media": media_json(media) if media else None,
            "metadata_stripped": self.stripped or None,
        }


class Files:
    """Queries over one tenant's `files`, and over `blobs` (shared by every tenant), on
    one connection (and so one transaction)."""

    def __init__(self, conn: Conn, tenant: str) -> None:
        self._conn = conn
        self._tenant = tenant

    async def get(self, file_id: str) -> FileRecord | None:
        """The file with this id."""
        params = {"file_id": file_id, "tenant": self._tenant}
        row = (await self._conn.execute(_BY_ID, params)).first()
        return _record(row) if row else None

    async def get_many(self, file_ids: set[str]) -> dict[str, FileRecord]:
        """The files with these ids, by id (missing ones are left out)."""
        if not file_ids:
            return {}
        query = _FILES.where(files.c.id.in_(file_ids), files.c.tenant == self._tenant)
        return {row.id: _record(row) for row in await self._conn.execute(query)}

    async def get_by_stored_name(self, stored_name: str) -> FileRecord | None:
        """The file the file-engine API knows by this name, in this tenant."""
        record = await file_by_stored_name(self._conn, stored_name)
        return record if record is not None and record.tenant == self._tenant else None

    async def page(
        self,
        conversations: Conversations,
        limit: int,
        before_seq: int | None,
        quarantined: bool = False,
    ) -> tuple[list[FileRecord], int | None]:
        """Up to `limit` files of the conversations, newest first, older than `before_seq`
        when given, and those found infected only when `quarantined`; also the seq to
        continue from, or None when there are no more."""
        query = _FILES.where(files.c.tenant == self._tenant)
        query = query.where(conversations.clause(files.c.conversation_id))
        if not quarantined:
            query = query.where(NOT_QUARANTINED)
        rows, next_seq = await newest_first(self._conn, query, files.c.seq, limit, before_seq)
        return [_record(r) for r in rows], next_seq

    async def insert(self, record: FileRecord) -> bool:
        """Add a file; False, adding nothing, when a file of any tenant has its stored
        name (concurrently too: PostgreSQL waits for the other transaction to end). Its
        blob row must exist (see `lock_blob`). The caller counts it in its tenant's usage
        (chatmedia.db.usage) as the transaction's last lock."""
        values = {name: getattr(record, name) for name in _RECORD_FIELDS}
        values["properties"] = dict(record.properties)
        result = await self._conn.execute(_INSERT_NEW_NAME[self._conn.dialect.name], values)
        return result.rowcount == 1

    async def next_link_generation(self, file_id: str) -> bool:
        """End every link of the file made so far; False when there is no such file."""
        result = await self._conn.execute(
            files.update()
            .where(files.c.id == file_id, files.c.tenant == self._tenant)
            .values(link_generation=files.c.link_generation + 1)
        )
        return _changed(file_id, result.rowcount)

    async def delete(self, file_id: str) -> bool:
        """Remove a file's row; False when it was gone already. The caller uncounts it from
        its tenant's usage as the transaction's last lock."""
        result = await self._conn.execute(
            files.delete().where(files.c.id == file_id, files.c.tenant == self._tenant)
        )
        return _changed(file_id, result.rowcount)

    async def lock_blob(
        self, sha256: str, size: int, now: datetime, derived: BlobDerived | None = None
    ) -> bool:
        """Make sure the blob row exists and hold its lock until the transaction ends, so
        that no concurrent deletion can remove the blob while a new file comes to use it.
        True when the row is new, made with `derived` (what is known of the bytes); a row
        that was there keeps what it knows."""
        insert = _INSERT_BLOB[self._conn.dialect.name]
        row = {"sha256": sha256, "size": size, "created_at": now}
        row |= (derived or BlobDerived()).columns()
        # A deletion may remove the row between the two statements: then insert it anew.
        for _ in range(3):
            made = (await self._conn.execute(insert, row)).rowcount == 1
            if (await self._conn.execute(_LOCK_BLOB, {"sha256": sha256})).first() is not None:
                return made
        raise RuntimeError(f"could not lock blob {sha256}")

    async def release_blob(self, sha256: str) -> bool:
        """Remove the blob row when no file references it any more. True when removed: the
        caller then deletes the blob from storage before the transaction commits."""
        lock = sa.select(blobs.c.sha256).where(blobs.c.sha256 == sha256).with_for_update()
        if (await self._conn.execute(lock)).first() is None:
            return False
        in_use = sa.select(files.c.seq).where(files.c.sha256 == sha256).limit(1)
        if (await self._conn.execute(in_use)).first() is not None:
            return False
        await self._conn.execute(blobs.delete().where(blobs.c.sha256 == sha256))
        return True


async def file_by_stored_name(conn: Conn, stored_name: str) -> FileRecord | None:
    """The file of any tenant with this stored name (they are unique across the service:
    the file-engine's key-less download knows files by name alone)."""
    row = (await conn.execute(_BY_STORED_NAME, {"stored_name": stored_name})).first()
    return _record(row) if row else None


async def file_by_id(conn: Conn, file_id: str) -> FileRecord | None:
    """The file of any tenant with this id (ids are unique across the service: a signed
    link names a file by id alone)."""
    row = (await conn.execute(_ANY_BY_ID, {"file_id": file_id})).first()
    return _record(row) if row else None


async def files_of_blob(conn: Conn, sha256: str) -> list[FileRecord]:
    """Every file of any tenant whose content is this blob; each noted as changed for the
    readers that cache it (the caller is changing the blob's scan state)."""
    records = [_record(r) for r in await conn.execute(_FILES.where(files.c.sha256 == sha256))]
    for record in records:
        file_changed(record.id)
    return records


async def link_generations(conn: Conn, file_ids: set[str]) -> dict[str, int]:
    """The current link generation of each of these files that still exists and is not
    quarantined."""
    if not file_ids:
        return {}
    query = (
        sa.select(files.c.id, files.c.link_generation)
        .select_from(files.outerjoin(blobs, blobs.c.sha256 == files.c.sha256))
        .where(files.c.id.in_(file_ids), NOT_QUARANTINED)
    )
    return {row.id: row.link_generation for row in await conn.execute(query)}


async def expired_files(conn: Conn, created_before: datetime, limit: int) -> list[FileRecord]:
    """The oldest files of any tenant created before `created_before`."""
    query = (
        _FILES.where(files.c.created_at < created_before).order_by(files.c.created_at).limit(limit)
    )
    return [_record(r) for r in await conn.execute(query)]


def _changed(file_id: str, rowcount: int) -> bool:
    """Whether the file's row changed; if so, noted for the readers that cache it."""
    if rowcount != 1:
        return False
    file_changed(file_id)
    return True


def _record(row: sa.Row[Any]) -> FileRecord:
    values = row._mapping
    status = values["scan_status"]
    scan = None
    if status is not None:
        scan = ScanState(status, values["scan_signature"], values["scanned_at"])
    return FileRecord(
        **{name: values[name] for name in _RECORD_FIELDS},
        scan=scan,
        media=media_state(values["media_status"], values["media"]),
        metadata_stripped=bool(values["metadata_stripped"]),
    )
