"""What admins do with what the scanner found: list the quarantine, scan a file again,
release a file (an override, audited), and purge quarantined files and kept bytes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import sqlalchemy as sa

from chatmedia.access.principal import Principal, operator
from chatmedia.cursors import decode_cursor, encode_cursor
from chatmedia.db.files import Files
from chatmedia.db.jobs import Jobs, NewJob
from chatmedia.db.scans import Scans
from chatmedia.db.schema import blobs, files
from chatmedia.errors import BadRequest
from chatmedia.models import FileRecord, QuarantineEntry, ScanState
from chatmedia.pipelines.files import get_file, remove_file
from chatmedia.pipelines.keys import audit_line
from chatmedia.scanning.job import SCAN_JOB
from chatmedia.scanning.outcome import apply_scan
from chatmedia.services import Services

# Scan states an admin may override.
_RELEASABLE = ("infected", "error")


def _scope(principal: Principal) -> str | None:
    """The tenant whose records the principal manages (None: every tenant's)."""
    return None if principal.tenant_free and not principal.acting else principal.tenant


async def list_quarantine(
    services: Services, principal: Principal, limit: int, cursor: str | None
) -> tuple[list[QuarantineEntry], str | None]:
    """A page of quarantine records the admin manages, newest first, and the next cursor."""
    principal.require("admin")
    before = decode_cursor(cursor) if cursor is not None else None
    async with services.db.read() as conn:
        entries, next_seq = await Scans(conn).entries(_scope(principal), limit, before)
    return entries, encode_cursor(next_seq) if next_seq else None


async def rescan_file(services: Services, principal: Principal, file_id: str) -> FileRecord:
    """Queue a scan of a file's bytes ahead of other work; its result comes as an event."""
    principal.require("admin")
    record = await get_file(services, principal, file_id)
    if record.sha256 is None:
        raise BadRequest("an EXTERNAL file has no bytes here to scan")
    if services.scanner is None:
        raise BadRequest("scanning is off on this node (CHATMEDIA_CLAMAV_URL)")
    now = datetime.now(UTC)
    async with services.db.write() as conn:
        await Jobs(conn).add([NewJob(SCAN_JOB, record.sha256, now)], now)
    services.bus.notify()
    audit_line("file.rescan", principal.key_id, file=record.id, tenant=record.tenant)
    return record


async def release_file(services: Services, principal: Principal, file_id: str) -> FileRecord:
    """An admin's override: serve a file whose bytes were found infected, or whose scan
    failed, as clean (every file of the same bytes with it); audited."""
    principal.require("admin")
    record = await get_file(services, principal, file_id)
    if record.sha256 is None or record.scan is None or record.scan.status not in _RELEASABLE:
        raise BadRequest("only a file found infected, or whose scan failed, can be released")
    now = datetime.now(UTC)
    state = ScanState("clean", scanned_at=now)
    async with services.db.write() as conn:
        await Scans(conn).release(record.sha256, principal.key_id, now)
        await apply_scan(conn, services.settings.public_url, record.sha256, state, None)
    services.bus.notify()
    audit_line(
        "file.released", principal.key_id, file=record.id, tenant=record.tenant,
        signature=record.scan.signature,
    )  # fmt: skip
    return replace(record, scan=state)


async def purge_quarantine(services: Services) -> int:
    """Delete every quarantined file (logging `file.deleted`) and the bytes kept of
    refused uploads; how many files and kept blobs went. The records stay, so the same
    bytes are still refused."""
    infected = (
        sa.select(files.c.id, files.c.tenant)
        .join(blobs, blobs.c.sha256 == files.c.sha256)
        .where(blobs.c.scan_status == "infected")
    )
    kept = sa.select(blobs.c.sha256).where(
        blobs.c.scan_status == "infected", ~sa.exists().where(files.c.sha256 == blobs.c.sha256)
    )
    async with services.db.read() as conn:
        found = [(row.id, row.tenant) for row in await conn.execute(infected)]
        orphans = list((await conn.execute(kept)).scalars())
    for file_id, tenant in found:
        async with services.db.write() as conn:
            record = await Files(conn, tenant).get(file_id)
            if record is not None and record.quarantined:
                await remove_file(conn, services, record)
    for sha256 in orphans:
        async with services.db.write() as conn:
            if await Files(conn, operator().tenant).release_blob(sha256):
                await services.store.delete(sha256)
    services.bus.notify()
    return len(found) + len(orphans)
