"""When a file's content may be served, and to whom a quarantined file shows at all.

A file stored without scanning, found clean, or too large to scan is served. While its
scan is pending it is not (409 file_not_ready, its metadata saying why); nor after its scan
failed, unless CHATMEDIA_SCAN_FAIL=open. A file found infected is quarantined: its
metadata shows only to admins, its content to no one.
"""

from __future__ import annotations

from chatmedia.access.principal import ADMIN, Principal
from chatmedia.errors import FileNotFound, FileNotReady
from chatmedia.models import FileRecord

# Seconds a client is told to wait before asking again for content still being scanned.
RETRY_AFTER = 2


def shows(principal: Principal | None, record: FileRecord) -> bool:
    """Whether a file shows to the principal (None: to a link or a key-less download) as
    far as its scan goes: a quarantined file only to an admin."""
    return not record.quarantined or (principal is not None and ADMIN in principal.scopes)


def check_content(record: FileRecord, fail_open: bool) -> None:
    """Raise unless the file's content may be served now: FileNotFound when quarantined,
    FileNotReady while its scan is pending or after it failed (unless `fail_open`)."""
    scan = record.scan
    if scan is None or scan.status in ("clean", "skipped"):
        return
    if scan.status == "infected":
        raise FileNotFound(f"no file '{record.id}'")
    if scan.status == "error" and fail_open:
        return
    if scan.status == "pending":
        raise FileNotReady("the file is still being scanned", RETRY_AFTER)
    raise FileNotReady("the file's scan failed: it is not served until it is scanned again")
