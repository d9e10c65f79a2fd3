"""Resumable uploads, one workflow per tus request: create, write (PATCH), look (HEAD),
terminate (DELETE). The last byte in sends the bytes through the one-shot upload's
pipeline (chatmedia.pipelines.upload) under the upload's id, which becomes the File's."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from anyio import to_thread
from starlette.requests import ClientDisconnect

from chatmedia import mediatypes
from chatmedia.access.principal import Principal
from chatmedia.db.files import Files
from chatmedia.db.uploads import Claim, Upload, Uploads
from chatmedia.db.usage import Usage
from chatmedia.errors import (
    ChecksumMismatch,
    FileTooLarge,
    InvalidUploadHeader,
    UnsupportedMediaType,
    UploadExpired,
    UploadLocked,
    UploadNotFound,
    UploadOffsetMismatch,
    UploadTooFragmented,
)
from chatmedia.fairuse.quotas import adopt_upload, hold_upload, upload_hold
from chatmedia.models import FileRecord
from chatmedia.pipelines.upload import UploadInfo, new_file_id, store_file
from chatmedia.services import Services
from chatmedia.storage import BlobMissing, Segments, TooManyParts, nothing
from chatmedia.units import format_size
from chatmedia.uploads.parts import ClaimLost, UploadParts
from chatmedia.uploads.protocol import Checksum

# A writer's lease: renewed while its bytes flow; past it, another request takes over.
LEASE = timedelta(seconds=10)
# How long the request that wrote the last byte holds the upload while it becomes a File.
FINISH_LEASE = timedelta(minutes=10)
# Why an upload ended while it was written to.
_FRAGMENTED = "the upload took more than 10,000 requests; send it again in larger chunks"
_GONE = "the upload's stored bytes are gone (expired); start again"
# Upload-Metadata keys with a meaning of their own; the others become properties.
_NAME_KEYS = ("filename", "name")
_OWN_KEYS = (*_NAME_KEYS, "filetype", "conversationId")


@dataclass(frozen=True, slots=True)
class Written:
    """Where an upload is after a request, and its File once the last byte is in."""

    upload: Upload
    file: FileRecord | None = None


def parts_of(services: Services) -> UploadParts:
    """Where uploads' pieces are kept: the blob store, where every node finds them."""
    store = services.store
    if not isinstance(store, Segments):
        raise TypeError(f"{store!r} cannot keep the pieces of resumable uploads")
    return UploadParts(store)


async def create_upload(
    services: Services,
    principal: Principal,
    length: int | None,
    pairs: Mapping[str, str],
    body: AsyncIterable[bytes] | None = None,
    checksum: Checksum | None = None,
) -> Written:
    """A new upload (its id is the File's to be) of `length` bytes (None: said later),
    described by its Upload-Metadata `pairs`; with `body`, its first bytes."""
    settings = services.settings
    # 1. What the file will be: within the size limit, in a conversation the key may use,
    # with room in the tenant's quotas, held from now on.
    if length is not None and length > settings.max_upload_size:
        raise FileTooLarge(
            f"the file is larger than the limit of {format_size(settings.max_upload_size)}"
        )
    conversation = pairs.get("conversationId") or None
    principal.check_create(conversation)
    upload_id, now = new_file_id(), datetime.now(UTC)
    await hold_upload(services, principal.tenant, upload_id, length, now + settings.upload_expiry)
    # 2. Recorded, to be found by any node.
    upload = Upload(
        id=upload_id, tenant=principal.tenant, key_id=principal.key_id,
        conversation_id=conversation, name=next((pairs[k] for k in _NAME_KEYS if k in pairs), None),
        properties={k: v for k, v in pairs.items() if k not in _OWN_KEYS}, length=length,
        offset=0, generation=0, lease_until=None, created_at=now,
        expires_at=now + settings.upload_expiry,
    )  # fmt: skip
    try:
        await parts_of(services).begin(upload.id)
        async with services.db.write() as conn:
            await Uploads(conn).create(upload)
    except BaseException:
        await _drop(services, upload.id)
        raise
    # 3. creation-with-upload: the first bytes came with it (an empty file is whole).
    if body is None and length != 0:
        return Written(upload)
    return await write(services, principal, upload.id, 0, body or nothing(), checksum)


async def upload_state(services: Services, principal: Principal, upload_id: str) -> Written:
    """The upload as HEAD shows it; an upload that became a File shows as complete, with
    its File."""
    return Written(*await _find(services, principal, upload_id))


async def write(
    services: Services,
    principal: Principal,
    upload_id: str,
    offset: int,
    chunks: AsyncIterable[bytes],
    checksum: Checksum | None,
    length: int | None = None,
) -> Written:
    """Add the bytes of a PATCH at `offset` (and the deferred `length`, when said now).
    A connection cut mid-way keeps what arrived (without a checksum to check)."""
    upload, done = await _find(services, principal, upload_id)
    if done is not None and offset == upload.offset:
        return Written(upload, done)  # a retry of the request that finished it
    if offset != upload.offset:
        raise UploadOffsetMismatch(f"the upload is at offset {upload.offset}")
    if length is not None:
        upload = await _say_length(services, upload, length)
    # 1. The right to write, unless another request has it.
    claim = await _claim(services, upload, offset)
    settings = services.settings
    parts = parts_of(services)
    limit = (upload.length if upload.length is not None else settings.max_upload_size) - offset
    digest = checksum.hasher() if checksum is not None else None
    cut = _Interrupted()

    async def renew() -> bool:
        async with services.db.write() as conn:
            return await Uploads(conn).renew(claim, datetime.now(UTC) + LEASE)

    # 2. The bytes, within what the upload may still take, as a piece of its own; once
    # the first bytes are in, their type decides whether the rest may come, and a chunk
    # that fails its checksum (or cannot be checked, cut short) is dropped whole.
    within = _within(cut.ended(chunks), limit, upload.length)
    checked = _verified(_typed(services, upload, offset, within), digest, checksum, cut)
    try:
        segment = await parts.write(
            upload.id, offset, claim.generation, checked, renew, digest, claim.last, upload.length
        )
    except ClaimLost:
        await _lost(services, claim)
    except UnsupportedMediaType as e:
        await _end(services, upload.id, e)
    except TooManyParts:  # no later claim could write either: the upload ends
        await _end(services, upload.id, UploadTooFragmented(_FRAGMENTED))
    except BaseException:
        await _release(services, claim, offset)
        raise
    end = offset + segment.length
    # 3. The new offset, then the File once the last byte is in.
    complete = upload.length is not None and end == upload.length
    if segment.length == 0:
        await parts.discard(segment)
    async with services.db.write() as conn:
        expires = datetime.now(UTC) + settings.upload_expiry
        hold = datetime.now(UTC) + FINISH_LEASE if complete else None
        piece = segment if segment.length else None
        committed = await Uploads(conn).commit(claim, end, upload.length, expires, piece, hold)
        if committed:
            await Usage(conn).renew(upload_hold(upload.id), expires)
    if not committed:
        await parts.discard(segment)
        raise UploadOffsetMismatch("another request took the upload over")
    upload = replace(upload, offset=end, expires_at=expires, generation=claim.generation)
    if not complete:
        return Written(upload)
    return Written(upload, await _finish(services, principal, upload))


async def terminate(services: Services, principal: Principal, upload_id: str) -> None:
    """End an upload and drop its bytes (termination)."""
    upload, _ = await _find(services, principal, upload_id)
    await _drop(services, upload.id)


async def sweep_expired_uploads(services: Services, limit: int = 100) -> int:
    """Remove uploads untouched past their expiry, with their bytes; how many."""
    async with services.db.read() as conn:
        expired = await Uploads(conn).expired(datetime.now(UTC), limit)
    for upload_id in expired:
        await _drop(services, upload_id)
    return len(expired)


async def _find(
    services: Services, principal: Principal, upload_id: str
) -> tuple[Upload, FileRecord | None]:
    """The upload, if the principal may write to it; one that became its File shows
    complete, with the File."""
    async with services.db.read() as conn:
        upload = await Uploads(conn).get(upload_id)
        file = None if upload is not None else await Files(conn, principal.tenant).get(upload_id)
    if upload is None and file is not None and principal.sees(file.conversation_id):
        now = file.created_at
        done = Upload(file.id, file.tenant, principal.key_id, file.conversation_id, file.name,
                      dict(file.properties), file.size, file.size, 0, None, now, now)  # fmt: skip
        return done, file
    if upload is None or upload.tenant != principal.tenant:
        raise UploadNotFound(f"no upload '{upload_id}'")
    if not principal.sees(upload.conversation_id):
        raise UploadNotFound(f"no upload '{upload_id}'")
    if upload.expires_at < datetime.now(UTC) and upload.lease_until is None:
        await _end(services, upload.id, UploadExpired("the upload expired; start again"))
    return upload, None


async def _claim(services: Services, upload: Upload, offset: int) -> Claim:
    now = datetime.now(UTC)
    async with services.db.write() as conn:
        uploads = Uploads(conn)
        claim = await uploads.claim(upload, offset, now, LEASE)
        current = await uploads.get(upload.id) if claim is None else None
    if claim is not None:
        return claim
    if current is None:
        raise UploadNotFound(f"no upload '{upload.id}'")
    if current.offset != offset:
        raise UploadOffsetMismatch(f"the upload is at offset {current.offset}")
    wait = (current.lease_until or now) - now
    raise UploadLocked(
        "another request is writing to the upload", max(1, round(wait.total_seconds()))
    )


async def _lost(services: Services, claim: Claim) -> NoReturn:
    """Why a writer had to stop: another took the upload over or ended it, or (the claim
    still its own) the store no longer has the upload's pieces, which ends the upload."""
    async with services.db.read() as conn:
        current = await Uploads(conn).get(claim.upload.id)
    if current is not None and current.generation == claim.generation:
        await _end(services, claim.upload.id, UploadExpired(_GONE))
    raise UploadOffsetMismatch("the upload was taken over or ended meanwhile")


async def _release(services: Services, claim: Claim, offset: int) -> None:
    """End a claim without moving the offset."""
    async with services.db.write() as conn:
        expires = datetime.now(UTC) + services.settings.upload_expiry
        await Uploads(conn).commit(claim, offset, claim.upload.length, expires)


async def _say_length(services: Services, upload: Upload, length: int) -> Upload:
    if upload.length is not None:
        if upload.length != length:
            raise InvalidUploadHeader("Upload-Length differs from the one said before")
        return upload
    if length > services.settings.max_upload_size:
        raise FileTooLarge("Upload-Length is past the size limit")
    if length < upload.offset:
        raise InvalidUploadHeader("Upload-Length is below the upload's offset")
    async with services.db.write() as conn:
        await Uploads(conn).set_length(upload, length)
    return replace(upload, length=length)


async def _typed(
    services: Services, upload: Upload, offset: int, chunks: AsyncIterable[bytes]
) -> AsyncIterator[bytes]:
    """`chunks` from `offset`, checked by type before any byte past the upload's head
    (its first SNIFF_SIZE bytes, or all of a shorter one) is let through: raises
    UnsupportedMediaType for a type the settings refuse."""
    size = upload.length if upload.length is not None else services.settings.max_upload_size
    head = min(mediatypes.SNIFF_SIZE, size)
    if offset >= head:
        async for chunk in chunks:
            yield chunk
        return
    async with services.db.read() as conn:
        segments = await Uploads(conn).segments(upload.id)
    data = bytearray().join([chunk async for chunk in parts_of(services).read(segments, offset)])
    held: list[bytes] = []
    async for chunk in chunks:
        if len(data) < head:
            data += chunk[: head - len(data)]
            held.append(chunk)
            if len(data) < head:
                continue
            await _check_type(services, bytes(data))
            for kept in held:
                yield kept
            held = []
        else:
            yield chunk
    if held and len(data) == size:  # the whole of an upload shorter than the head
        await _check_type(services, bytes(data))
    for kept in held:
        yield kept


async def _check_type(services: Services, head: bytes) -> None:
    content_type = await to_thread.run_sync(mediatypes.detect, head)
    if not services.settings.type_policy.permits(content_type):
        raise UnsupportedMediaType(f"files of type {content_type} are not allowed")


async def _finish(services: Services, principal: Principal, upload: Upload) -> FileRecord:
    """The File of a complete upload, through the one-shot upload's pipeline; then the
    upload is gone. The caller holds the upload (FINISH_LEASE)."""
    async with services.db.read() as conn:
        done = await Files(conn, upload.tenant).get(upload.id)
    if done is not None:  # made by a request that stopped before it could say so
        await _drop(services, upload.id)
        return done
    info = UploadInfo(upload.name, upload.conversation_id, upload.properties, file_id=upload.id)
    async with services.db.read() as conn:
        segments = await Uploads(conn).segments(upload.id)
    parts = parts_of(services)
    try:
        segments = await parts.join(upload.id, segments, upload.generation)
        held = await adopt_upload(services, upload.tenant, upload.id)
        record = await store_file(services, principal, parts.read(segments), lambda: info,
                                  upload.length, held, parts.whole_piece(segments))  # fmt: skip
    except TooManyParts:
        await _end(services, upload.id, UploadTooFragmented(_FRAGMENTED))
    except BlobMissing:  # the store lost its pieces (an S3 lifecycle rule, say)
        await _end(services, upload.id, UploadExpired(_GONE))
    await _drop(services, upload.id)
    return record


async def _end(services: Services, upload_id: str, error: Exception) -> NoReturn:
    """Drop the upload, which cannot go on, and answer `error`."""
    await _drop(services, upload_id)
    raise error from None


async def _drop(services: Services, upload_id: str) -> None:
    async with services.db.write() as conn:
        await Uploads(conn).delete(upload_id)
        await Usage(conn).release(upload_hold(upload_id))
    await parts_of(services).remove(upload_id)


async def _verified(
    chunks: AsyncIterable[bytes], digest: Any, checksum: Checksum | None, cut: _Interrupted
) -> AsyncIterator[bytes]:
    """`chunks`, then, when the PATCH carried Upload-Checksum, the check that they came
    whole and match it (`digest` has seen them by then), raised within the stream so that
    the store keeps none of them."""
    async for chunk in chunks:
        yield chunk
    if checksum is None:
        return
    if cut.happened:
        raise ClientDisconnect()
    if digest is None or digest.digest() != checksum.digest:
        raise ChecksumMismatch(f"the chunk's {checksum.algorithm} is not the one sent")


class _Interrupted:
    """Whether the client went away mid-body; the bytes until then still count."""

    def __init__(self) -> None:
        self.happened = False

    async def ended(self, chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        try:
            async for chunk in chunks:
                yield chunk
        except ClientDisconnect:
            self.happened = True


async def _within(
    chunks: AsyncIterable[bytes], limit: int, length: int | None
) -> AsyncIterator[bytes]:
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > limit:
            what = "the upload's length" if length is not None else "the size limit"
            raise FileTooLarge(f"the bytes pass {what}")
        yield chunk
