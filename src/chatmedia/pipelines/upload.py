"""Storing a file: the bytes stream through the size limit and the type check into staging,
then the file row and the blob become visible together."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, cast

import anyio
from anyio import to_thread

from chatmedia import mediatypes
from chatmedia.access.principal import Principal
from chatmedia.db.engine import Conn
from chatmedia.db.events import Events
from chatmedia.db.files import BlobDerived, Files
from chatmedia.db.jobs import Jobs, NewJob
from chatmedia.db.usage import Usage
from chatmedia.errors import FileTooLarge, UnsupportedMediaType
from chatmedia.fairuse.quotas import Reservation, reserve
from chatmedia.media.header import image_dimensions
from chatmedia.media.inline import describe_inline, forget_inline
from chatmedia.media.job import MEDIA_JOB
from chatmedia.media.kinds import initial_status, media_task
from chatmedia.media.strip import StripMode, Stripper
from chatmedia.media.upload import settle_media
from chatmedia.mediatypes import TypePolicy
from chatmedia.models import FileRecord, MediaState, ScanState
from chatmedia.naming import sanitize_name, stored_name, with_suffix
from chatmedia.scanning.job import SCAN_JOB
from chatmedia.scanning.upload import UploadScan, scan_upload, settle_scan
from chatmedia.services import Services
from chatmedia.storage import PieceStaging, StagedBlob
from chatmedia.units import format_size
from chatmedia.views import file_view


@dataclass(frozen=True, slots=True)
class UploadInfo:
    """What a client says about a file: its name, conversation and properties."""

    name: str | None = None
    conversation_id: str | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)
    # The id the File takes (a resumable upload's); a new one when None.
    file_id: str | None = None


def new_file_id() -> str:
    """An opaque file id with 128 random bits."""
    return secrets.token_urlsafe(16)


@dataclass(frozen=True, slots=True)
class StagedUpload:
    """Bytes checked and staged, with the type decided from them, and what the upload
    holds of its tenant's quotas."""

    blob: StagedBlob
    content_type: str
    reservation: Reservation
    scan: UploadScan | None
    # What the bytes' header said of an image's displayed size.
    dimensions: tuple[int, int] | None = None
    # Whether metadata (location…) was taken out of them (CHATMEDIA_STRIP_METADATA).
    stripped: bool = False
    # What was found of them as media before the upload answers (chatmedia.media.inline).
    media: MediaState | None = None


@asynccontextmanager
async def staged_upload(
    services: Services,
    chunks: AsyncIterable[bytes],
    uploader: Principal,
    expected: int | None = None,
    held: Reservation | None = None,
    piece: str | None = None,
) -> AsyncIterator[StagedUpload]:
    """Stream `chunks` (about `expected` bytes, when known) to staging for the uploader's
    tenant, enforcing the size limit, the type policy and the tenant's quotas as the bytes
    arrive (FileTooLarge, UnsupportedMediaType, QuotaExceeded), then scan them when
    scanning is on (MalwareDetected) and describe a new image when that is quick. If the
    block raises, the staged bytes (and previews) are dropped and the quota released; once
    `add_hosted_file` has made them visible, these are no-ops.
    `held`: what the upload holds of the quotas already (a resumable upload's); `piece`:
    the store's piece that holds `chunks` (a finished resumable upload's, see
    chatmedia.storage.PieceStaging), staged as it is when the checks change no byte."""
    settings = services.settings
    sniffer = TypeSniffer(settings.type_policy)
    stripper = Stripper(cast(StripMode, settings.strip_metadata))
    reservation = held or await reserve(services, uploader.tenant, expected)
    try:
        checked = sniffer.filter(limit_size(chunks, settings.max_upload_size))
        blob = await _stage(services, reservation.meter(stripper.filter(checked)), piece,
                            expected, lambda: stripper.passes_through)  # fmt: skip
        media = None
        try:
            scan = await scan_upload(services, blob, uploader)
            media = await describe_inline(
                services, blob, sniffer.content_type, scan.state if scan else None,
                sniffer.dimensions,
            )  # fmt: skip
            yield StagedUpload(
                blob, sniffer.content_type, reservation, scan, sniffer.dimensions,
                stripper.stripped, media,
            )  # fmt: skip
        except BaseException:
            with anyio.CancelScope(shield=True):
                await services.store.discard(blob)
                if media is not None:
                    await forget_inline(services, blob.sha256)
            raise
    finally:
        await reservation.release()


async def _stage(
    services: Services,
    chunks: AsyncIterable[bytes],
    piece: str | None,
    size: int | None,
    unchanged: Callable[[], bool],
) -> StagedBlob:
    store = services.store
    if piece is not None and size is not None and isinstance(store, PieceStaging):
        return await store.stage_piece(piece, size, chunks, unchanged)
    return await store.put(chunks)


async def add_hosted_file(
    conn: Conn, services: Services, upload: StagedUpload, info: UploadInfo, tenant: str
) -> FileRecord:
    """In the caller's write transaction: add the file's row to `tenant`, log
    `file.created`, and make its blob visible, holding the blob's lock (see
    chatmedia.pipelines.files)."""
    now = datetime.now(UTC)
    default_name = mediatypes.DEFAULT_NAME_STEM + mediatypes.extension_for(upload.content_type)
    name = sanitize_name(info.name, default=default_name)
    scan, media = await _settle_blob(conn, services, upload, tenant, now)
    record = FileRecord(
        id=info.file_id or new_file_id(),
        type="HOSTED",
        name=name,
        stored_name=stored_name(info.conversation_id, name),
        content_type=upload.content_type,
        size=upload.blob.size,
        sha256=upload.blob.sha256,
        conversation_id=info.conversation_id,
        properties=dict(info.properties),
        created_at=now,
        tenant=tenant,
        scan=scan,
        media=media,
        metadata_stripped=upload.stripped,
    )
    record = await insert_file(conn, record)
    # The tenant's usage row is the last lock taken (see chatmedia.db.usage).
    await upload.reservation.settle(conn, record.size)
    await Usage(conn).count_file(record)
    await services.store.promote(upload.blob)
    await log_file_event(conn, services, "file.created", record, now)
    return record


async def _settle_blob(
    conn: Conn, services: Services, upload: StagedUpload, tenant: str, now: datetime
) -> tuple[ScanState | None, MediaState | None]:
    """Lock the upload's blob row (made now for new bytes, with what is known of them and
    their jobs) and settle what its file shows of the bytes' scan and media."""
    sha256 = upload.blob.sha256
    scan = upload.scan
    media = None
    status = initial_status(upload.content_type)
    if status is not None and services.settings.media_processing:
        width, height = upload.dimensions or (None, None)
        media = upload.media or MediaState(status, width=width, height=height)
    new = BlobDerived(scan.state if scan else None, scan.version if scan else None, media,
                      upload.stripped)  # fmt: skip
    if await Files(conn, tenant).lock_blob(sha256, upload.blob.size, now, new):
        waiting = ((SCAN_JOB, new.scan), (MEDIA_JOB, new.media))
        jobs = [NewJob(kind, sha256, now) for kind, state in waiting if state and is_pending(state)]
        await Jobs(conn).add(jobs, now)
        return new.scan, new.media
    # Bytes stored before: their row says what is known, and may learn from this upload.
    url = services.settings.public_url
    settled = await settle_scan(conn, url, sha256, scan, now) if scan is not None else None
    media = await settle_media(
        conn, sha256, upload.content_type, upload.dimensions, upload.stripped, now,
        processing=services.settings.media_processing,
    )  # fmt: skip
    return settled, media


def is_pending(state: ScanState | MediaState) -> bool:
    """Whether work on the bytes waits for its job."""
    return state.status == "pending"


async def store_file(
    services: Services,
    principal: Principal,
    chunks: AsyncIterable[bytes],
    describe: Callable[[], UploadInfo],
    expected: int | None = None,
    held: Reservation | None = None,
    piece: str | None = None,
) -> FileRecord:
    """Store the bytes of `chunks` (about `expected` bytes, when known) as a new HOSTED
    file of the principal's tenant. `describe` gives the file's name and conversation once
    the bytes are in (in a multipart body they may come after the file); `held`, what the
    upload holds of the tenant's quotas already; `piece`, the store's piece that holds
    them (see `staged_upload`).

    Raises QuotaExceeded before or while the bytes flow, FileTooLarge or
    UnsupportedMediaType while they flow, MalwareDetected once they are in, whatever
    `describe` raises, and ConversationNotAllowed; in every case nothing of the upload is
    left behind (but the quarantine record of malware).
    """
    # 1. Stream to staging, checking size, type and quotas as the bytes arrive.
    async with staged_upload(services, chunks, principal, expected, held, piece) as upload:
        # 2. Read the metadata, complete now that the body is, and check where it goes.
        info = describe()
        principal.check_create(info.conversation_id)
        # 3. Record the file, log its event and make its blob visible, in one transaction.
        async with services.db.write() as conn:
            record = await add_hosted_file(conn, services, upload, info, principal.tenant)
    services.bus.notify()
    return record


async def log_file_event(
    conn: Conn, services: Services, kind: str, record: FileRecord, now: datetime
) -> None:
    """Log `file.created` or `file.deleted` in the caller's transaction."""
    data = file_view(record, services.settings.public_url)
    await Events(conn, record.tenant).append(kind, record.conversation_id, data, now)


async def insert_file(conn: Conn, record: FileRecord) -> FileRecord:
    """Add the file's row under its stored name or, when an earlier or a concurrent file of
    any tenant has it (the file-engine knows files by name alone), under that name with a
    short random suffix before its extension: a file is never overwritten, and concurrent
    uploads of one name never fail for it. Returns the record as added."""
    files = Files(conn, record.tenant)
    wanted = record.stored_name
    while not await files.insert(record):
        record = replace(record, stored_name=with_suffix(wanted, secrets.token_hex(4)))
    return record


async def limit_size(chunks: AsyncIterable[bytes], max_size: int) -> AsyncIterator[bytes]:
    """Pass `chunks` through, raising FileTooLarge as soon as they exceed `max_size` bytes."""
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > max_size:
            raise FileTooLarge(f"the file is larger than the limit of {format_size(max_size)}")
        yield chunk


class TypeSniffer:
    """Decides the content type from the first bytes (never from what the client says) and
    stops the stream when the policy refuses that type."""

    def __init__(self, policy: TypePolicy) -> None:
        self._policy = policy
        self.content_type = mediatypes.OCTET_STREAM
        # An image's displayed size, when its header (in the head) gives it.
        self.dimensions: tuple[int, int] | None = None

    async def filter(self, chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        """Pass `chunks` through once the head has been checked."""
        head: list[bytes] = []
        head_size = 0
        decided = False
        async for chunk in chunks:
            if decided:
                yield chunk
                continue
            head.append(chunk)
            head_size += len(chunk)
            if head_size >= mediatypes.SNIFF_SIZE:
                decided = True
                yield await self._check(b"".join(head))
        if not decided:
            yield await self._check(b"".join(head))

    async def _check(self, head: bytes) -> bytes:
        self.content_type, self.dimensions = await to_thread.run_sync(
            _read_head, head[: mediatypes.SNIFF_SIZE]
        )
        if not self._policy.permits(self.content_type):
            raise UnsupportedMediaType(f"files of type {self.content_type} are not allowed")
        return head


def _read_head(head: bytes) -> tuple[str, tuple[int, int] | None]:
    """The type of content that starts with `head`, and an image's displayed size when its
    header is in `head` (headers read, nothing decoded)."""
    content_type = mediatypes.detect(head)
    is_image = media_task(content_type) == "image"
    return content_type, image_dimensions(head) if is_image else None
