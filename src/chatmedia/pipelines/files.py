"""Reading, listing and deleting files, and the retention sweep.

Dedup and deletion are made race-free by the blob row's lock: an upload holds it while it
adds its file row and makes the blob visible; a deletion holds it while it checks that no
file references the blob and removes it from storage. So a blob is never removed while a
new upload of the same bytes is coming to use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from chatmedia.access.content import shows
from chatmedia.access.links import Disposition, Grant
from chatmedia.access.principal import ADMIN, Principal
from chatmedia.cursors import decode_cursor, encode_cursor
from chatmedia.db.engine import Conn
from chatmedia.db.files import Files, expired_files, file_by_id, file_by_stored_name
from chatmedia.db.pages import Conversations
from chatmedia.db.usage import Usage
from chatmedia.errors import BadRequest, FileNotFound, InvalidSignature
from chatmedia.media.store import delete_previews
from chatmedia.models import FileRecord, Page
from chatmedia.pipelines.upload import log_file_event
from chatmedia.services import Services

MAX_PAGE_SIZE = 1000
SWEEP_BATCH = 100


async def get_file(services: Services, principal: Principal, file_id: str) -> FileRecord:
    """The file with this id, if the principal sees it; raises FileNotFound."""
    record = await _lookup(services, file_id=file_id)
    if record is None or not _sees(principal, record):
        raise FileNotFound(f"no file with id '{file_id}'")
    return record


async def _lookup(
    services: Services, file_id: str | None = None, stored_name: str | None = None
) -> FileRecord | None:
    """The file of any tenant with this id or stored name: from the cache when it is
    there (chatmedia.caching.records), else from the database, then kept."""
    cache = services.cache
    record = cache.file(file_id) if file_id is not None else cache.file_named(stored_name or "")
    if record is not None:
        return record
    version = cache.version()
    async with services.db.read() as conn:
        if file_id is not None:
            record = await file_by_id(conn, file_id)
        else:
            record = await file_by_stored_name(conn, stored_name or "")
    if record is not None:
        cache.keep_file(record, version)
    return record


def _sees(principal: Principal, record: FileRecord) -> bool:
    return (
        record.tenant == principal.tenant
        and principal.sees(record.conversation_id)
        and shows(principal, record)
    )


async def _visible_file(conn: Conn, principal: Principal, file_id: str) -> FileRecord:
    """The file with this id in the principal's tenant and conversations; FileNotFound
    otherwise, as for a file that does not exist."""
    record = await Files(conn, principal.tenant).get(file_id)
    if record is None or not principal.sees(record.conversation_id) or not shows(principal, record):
        raise FileNotFound(f"no file with id '{file_id}'")
    return record


async def linked_file(
    services: Services, grant: Grant, file_id: str | None = None, stored_name: str | None = None
) -> FileRecord:
    """The file a valid link grants (by id, or by the file-engine's name), while it exists
    and the link is not revoked; raises FileNotFound, InvalidSignature."""
    record = await _lookup(services, file_id, stored_name)
    if record is None or not shows(None, record):
        raise FileNotFound(f"no file '{file_id or stored_name}'")
    if record.link_generation != grant.generation:
        raise InvalidSignature("the link was revoked")
    return record


async def create_link(
    services: Services,
    principal: Principal,
    file_id: str,
    ttl: timedelta,
    disposition: Disposition,
) -> tuple[str, datetime]:
    """A signed link to the content of a HOSTED file the principal sees, valid `ttl`; and
    when it expires."""
    record = await get_file(services, principal, file_id)
    if record.sha256 is None:
        raise BadRequest("an EXTERNAL file is linked by its own url")
    url, expires = services.links.content_url(
        record.id, record.link_generation, ttl=ttl, disposition=disposition
    )
    return url, datetime.fromtimestamp(expires, UTC)


async def revoke_links(services: Services, principal: Principal, file_id: str) -> None:
    """End every link made so far to a file the principal sees."""
    async with services.db.write() as conn:
        await _visible_file(conn, principal, file_id)
        await Files(conn, principal.tenant).next_link_generation(file_id)


async def get_file_by_stored_name(
    services: Services, principal: Principal | None, name: str
) -> FileRecord:
    """The file the file-engine API knows by `name`, if the principal sees it (None: the
    key-less download, which knows every tenant's files by their unique names); raises
    FileNotFound."""
    record = await _lookup(services, stored_name=name)
    if record is None or not (
        shows(None, record) if principal is None else _sees(principal, record)
    ):
        raise FileNotFound(f"no file named '{name}'")
    return record


async def list_files(
    services: Services,
    principal: Principal,
    conversation_id: str | None,
    limit: int,
    cursor: str | None,
) -> Page:
    """A page of the files the principal sees, newest first; `cursor` is the previous
    page's `next_cursor`. Pages stay consistent while files are added: a cursor marks a
    position, not an offset."""
    before = decode_cursor(cursor) if cursor is not None else None
    conversations = Conversations(only=conversation_id, patterns=principal.conversations)
    quarantined = ADMIN in principal.scopes
    async with services.db.read() as conn:
        files = Files(conn, principal.tenant)
        items, last_seq = await files.page(conversations, limit, before, quarantined)
    return Page(items=tuple(items), next_cursor=encode_cursor(last_seq) if last_seq else None)


async def delete_file(services: Services, principal: Principal, file_id: str) -> FileRecord:
    """Delete a file the principal sees: its row, and its blob when no other file uses the
    same bytes."""
    async with services.db.write() as conn:
        record = await _visible_file(conn, principal, file_id)
        await remove_file(conn, services, record)
    services.bus.notify()
    return record


async def remove_file(conn: Conn, services: Services, record: FileRecord) -> None:
    """In the caller's write transaction: remove a file (see `drop_files`) and log
    `file.deleted`."""
    await drop_files(conn, services, [record])
    await log_file_event(conn, services, "file.deleted", record, datetime.now(UTC))


async def drop_files(conn: Conn, services: Services, records: Sequence[FileRecord]) -> None:
    """In the caller's write transaction: remove the files' rows and release their blobs,
    removing the bytes (and their previews) while holding a blob's lock when no other file
    uses them; then, as
    the transaction's last lock, take them out of their tenants' usage."""
    gone = []
    for record in records:
        files = Files(conn, record.tenant)
        if await files.delete(record.id):
            gone.append(record)
        if record.sha256 and await files.release_blob(record.sha256):
            await services.store.delete(record.sha256)
            await delete_previews(services, record.sha256)
    await Usage(conn).uncount_files(gone)


async def sweep_expired(services: Services, now: datetime | None = None) -> int:
    """Delete every file older than the retention period; returns how many were deleted."""
    retention = services.settings.retention
    if retention is None:
        return 0
    cutoff = (now or datetime.now(UTC)) - retention
    deleted = 0
    while True:
        async with services.db.read() as conn:
            batch = await expired_files(conn, cutoff, SWEEP_BATCH)
        for expired in batch:
            async with services.db.write() as conn:
                record = await Files(conn, expired.tenant).get(expired.id)
                if record is None:  # deleted meanwhile by a client
                    continue
                await remove_file(conn, services, record)
            deleted += 1
        if batch:
            services.bus.notify()
        if len(batch) < SWEEP_BATCH:
            return deleted
