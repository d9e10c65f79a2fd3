"""Scanning an upload before it is visible: refused at once when its bytes were refused
before, scanned inline for up to CHATMEDIA_SCAN_INLINE_TIMEOUT, and otherwise stored
`pending` with a job that finishes the scan (chatmedia.scanning.job)."""

from __future__ import annotations

import logging
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime

import anyio

from chatmedia.access.principal import Principal
from chatmedia.db.engine import Conn
from chatmedia.db.files import Files
from chatmedia.db.jobs import Jobs, NewJob
from chatmedia.db.scans import Scans
from chatmedia.errors import MalwareDetected
from chatmedia.models import QuarantineEntry, ScanState
from chatmedia.scanning.clamd import ScanFailed, ScannerUnavailable
from chatmedia.scanning.job import SCAN_JOB
from chatmedia.scanning.outcome import apply_scan
from chatmedia.services import Services
from chatmedia.storage import StagedBlob

log = logging.getLogger("chatmedia.scanning")

PENDING = ScanState("pending")
# States a later upload of the same bytes takes over without scanning them again.
_SETTLED = ("clean", "skipped")


@dataclass(frozen=True, slots=True)
class UploadScan:
    """What the scanner said of an upload's bytes, with the signature version it used."""

    state: ScanState
    version: str | None = None


async def scan_upload(
    services: Services, staged: StagedBlob, uploader: Principal
) -> UploadScan | None:
    """The scan of staged bytes (None when scanning is off). Raises MalwareDetected, with
    a quarantine record kept, when they are infected or were refused before."""
    scanner = services.scanner
    if scanner is None:
        return None
    settings = services.settings
    # 1. Bytes refused before are refused at once; bytes scanned before are not scanned again.
    async with services.db.read() as conn:
        signature, known = await Scans(conn).before_scan(staged.sha256)
    if signature is not None:
        log.warning(
            "upload by key %s of tenant %s refused again: %s", uploader.key_id, uploader.tenant,
            signature,
        )  # fmt: skip
        raise MalwareDetected(signature)
    if known is not None and known[0] is not None and known[0].status in _SETTLED:
        return UploadScan(known[0], known[1])
    # 2. Too large for the scanner: stored, said so.
    if staged.size > settings.scan_max_size:
        return UploadScan(ScanState("skipped", scanned_at=datetime.now(UTC)))
    # 3. Scan for as long as the upload may wait; past that, its job finishes the scan.
    version = scanner.version
    verdict = None
    with anyio.move_on_after(settings.scan_inline_timeout):
        try:
            async with aclosing(await services.store.open_staged(staged)) as chunks:
                verdict = await scanner.scan(chunks)
        except (ScannerUnavailable, ScanFailed) as e:
            log.warning("an upload waits for its scan: %s", e)
    if verdict is None:
        return UploadScan(PENDING)
    now = datetime.now(UTC)
    if verdict.signature is None:
        return UploadScan(ScanState("clean", scanned_at=now), version)
    # 4. Infected: refused, with a record of it; files of the same bytes stored meanwhile
    # (pending) are quarantined with it.
    async with services.db.write() as conn:
        await _refuse(conn, services, staged, uploader, verdict.signature, now)
    services.bus.notify()
    raise MalwareDetected(verdict.signature)


async def _refuse(
    conn: Conn,
    services: Services,
    staged: StagedBlob,
    uploader: Principal,
    signature: str,
    now: datetime,
) -> None:
    keep = services.settings.scan_keep_infected
    log.warning(
        "upload by key %s of tenant %s refused: %s", uploader.key_id, uploader.tenant, signature
    )
    entry = QuarantineEntry(
        seq=0, sha256=staged.sha256, size=staged.size, signature=signature,
        tenant=uploader.tenant, key_id=uploader.key_id, file_id=None, blob_kept=keep,
        detected_at=now,
    )  # fmt: skip
    scans = Scans(conn)
    await scans.add_entry(entry)
    if keep or await scans.state(staged.sha256) is not None:
        await Files(conn, uploader.tenant).lock_blob(staged.sha256, staged.size, now)
        state = ScanState("infected", signature, now)
        await apply_scan(conn, services.settings.public_url, staged.sha256, state, None)
        if keep:
            await services.store.promote(staged)


async def settle_scan(
    conn: Conn, public_url: str, sha256: str, scan: UploadScan, now: datetime
) -> ScanState:
    """In the upload's write transaction, its blob's lock held: the scan state its file
    has. A first final word on the bytes is recorded (telling the files of the same bytes
    that waited for it); bytes still pending get their job. Raises MalwareDetected when
    the bytes were found infected meanwhile."""
    current = await Scans(conn).state(sha256)
    state = current[0] if current is not None else None
    if state is not None and state.status == "infected":
        raise MalwareDetected(state.signature or "malware")
    if state is not None and state.status in _SETTLED:
        return state
    if scan.state.status != "pending":
        await apply_scan(conn, public_url, sha256, scan.state, scan.version)
        return scan.state
    if state is None or state.status != "pending":
        await apply_scan(conn, public_url, sha256, PENDING, None)
    await Jobs(conn).add([NewJob(SCAN_JOB, sha256, now)], now)
    return PENDING
