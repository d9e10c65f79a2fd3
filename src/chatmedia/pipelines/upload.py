"""Storing a file: the bytes stream through the size limit and the type check into staging,
then the file row and the blob become visible together."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
from anyio import to_thread

from chatmedia import mediatypes
from chatmedia.db.files import Files
from chatmedia.errors import FileTooLarge, UnsupportedMediaType
from chatmedia.mediatypes import TypePolicy
from chatmedia.models import FileRecord
from chatmedia.naming import sanitize_name, stored_name, with_suffix
from chatmedia.services import Services
from chatmedia.storage import StagedBlob
from chatmedia.units import format_size


@dataclass(frozen=True, slots=True)
class UploadInfo:
    """What a client says about a file: its name, conversation and properties."""

    name: str | None = None
    conversation_id: str | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)


def new_file_id() -> str:
    """An opaque file id with 128 random bits."""
    return secrets.token_urlsafe(16)


async def store_file(
    services: Services, chunks: AsyncIterable[bytes], describe: Callable[[], UploadInfo]
) -> FileRecord:
    """Store the bytes of `chunks` as a new HOSTED file. `describe` gives the file's name and
    conversation once the bytes are in (in a multipart body they may come after the file).

    Raises FileTooLarge or UnsupportedMediaType while the bytes flow, and whatever
    `describe` raises; in every case nothing of the upload is left behind.
    """
    settings = services.settings
    # 1. Stream to staging, enforcing the size limit and the type policy as bytes arrive.
    sniffer = TypeSniffer(settings.type_policy)
    staged = await services.store.put(sniffer.filter(limit_size(chunks, settings.max_upload_size)))
    try:
        # 2. Read the metadata, complete now that the body is.
        info = describe()
        # 3. Record the file and make its blob visible, holding the blob's lock.
        return await _record(services, staged, info, sniffer.content_type)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await services.store.discard(staged)
        raise


async def _record(
    services: Services, staged: StagedBlob, info: UploadInfo, content_type: str
) -> FileRecord:
    now = datetime.now(UTC)
    default_name = mediatypes.DEFAULT_NAME_STEM + mediatypes.extension_for(content_type)
    name = sanitize_name(info.name, default=default_name)
    async with services.db.write() as conn:
        files = Files(conn)
        await files.lock_blob(staged.sha256, staged.size, now)
        record = FileRecord(
            id=new_file_id(),
            type="HOSTED",
            name=name,
            stored_name=await unique_stored_name(files, stored_name(info.conversation_id, name)),
            content_type=content_type,
            size=staged.size,
            sha256=staged.sha256,
            conversation_id=info.conversation_id,
            properties=dict(info.properties),
            created_at=now,
        )
        await files.insert(record)
        await services.store.promote(staged)
    return record


async def unique_stored_name(files: Files, wanted: str) -> str:
    """`wanted`, or `wanted` with a short random suffix before its extension when taken:
    an earlier file is never overwritten."""
    candidate = wanted
    while await files.stored_name_taken(candidate):
        candidate = with_suffix(wanted, secrets.token_hex(4))
    return candidate


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
        self.content_type = await to_thread.run_sync(
            mediatypes.detect, head[: mediatypes.SNIFF_SIZE]
        )
        if not self._policy.permits(self.content_type):
            raise UnsupportedMediaType(f"files of type {self.content_type} are not allowed")
        return head
