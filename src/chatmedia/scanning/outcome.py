"""What a scan's result changes: the blob's scan state, and for every file of those bytes
its event (`file.updated`, or `file.quarantined` with a quarantine record) and its cached
copies on every worker and node (chatmedia.processing.files)."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime

from chatmedia.db.engine import Conn
from chatmedia.db.events import Events
from chatmedia.db.scans import Scans
from chatmedia.models import FileRecord, QuarantineEntry, ScanState
from chatmedia.processing.files import changed_files, tell_updated

log = logging.getLogger("chatmedia.scanning")

QUARANTINED = "file.quarantined"


async def apply_scan(
    conn: Conn, public_url: str, sha256: str, state: ScanState, version: str | None
) -> list[FileRecord]:
    """In the caller's write transaction: record `state` for the blob and tell of it for
    each of its files; returns the files as they now are. A file found infected is
    quarantined (hidden from everyone but admins) with a record of what was found."""
    await Scans(conn).set_state(sha256, state, version)
    changed = await changed_files(conn, sha256, lambda r: replace(r, scan=state))
    if state.status != "infected":
        await tell_updated(conn, public_url, changed)
        return changed
    for record in changed:
        await _quarantine(conn, record, state)
    return changed


async def _quarantine(conn: Conn, record: FileRecord, state: ScanState) -> None:
    assert record.sha256 is not None
    assert state.signature is not None
    now = state.scanned_at or datetime.now(UTC)
    log.warning("file %s of tenant %s quarantined: %s", record.id, record.tenant, state.signature)
    entry = QuarantineEntry(
        seq=0, sha256=record.sha256, size=record.size, signature=state.signature,
        tenant=record.tenant, key_id=None, file_id=record.id, blob_kept=True, detected_at=now,
    )  # fmt: skip
    await Scans(conn).add_entry(entry)
    # What a client needs to take the file away, and nothing it could no longer see.
    data = {
        "id": record.id,
        "conversationId": record.conversation_id,
        "scan": {"status": "infected"},
    }
    await Events(conn, record.tenant).append(QUARANTINED, record.conversation_id, data, now)
