"""The pieces of resumable uploads in S3 (chatmedia.storage.Segments for S3BlobStore).

With static credentials (chatmedia.storage.s3parts) an upload's bytes go into one S3
multipart upload, begun when the upload is created, at the staging key its blob will
have, ``staging/<token>``:

- A writer's bytes are spooled to a local temp file as they arrive (memory stays flat),
  then become **part number <the writer's claim generation>**. Generations come from the
  database and each claim has its own, so a writer that lost its claim can only ever
  write a part of its own number, which is then never joined: it cannot overwrite a part
  that counts. The piece is named ``<id>/<start>-<generation>p``.
- Bytes that cannot be a part yet (under 5 MiB with the upload not whole) are a **tail**,
  an object ``uploads/<id>/<start>-<generation>`` as without credentials. The next writer
  reads the tail and sends it ahead of its own bytes, into a new tail or its part; that
  piece then starts where the tail did.
- `join_segments` completes the multipart upload with the parts of the committed
  segments, in order: the object appears at ``staging/<token>``, named as the piece
  ``<id>/00000000000000000000-0``, and `stage_piece` stages it where it is, hashing it
  as the upload's checks read it back, without a copy.

Without static credentials each writer's bytes are an object of their own, read back and
stored again when the upload is whole.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterable, Callable
from contextlib import aclosing
from typing import IO, TYPE_CHECKING, Any

from anyio import to_thread

from chatmedia.storage.base import (
    PIECE_SIZE,
    SEGMENT_NAME,
    UPLOAD_ID,
    BlobMissing,
    StagedBlob,
    TooManyParts,
    in_pieces,
    nothing,
    read_file,
    segment_start,
    then,
)
from chatmedia.storage.pieces import PieceHashes
from chatmedia.storage.s3parts import MAX_PART_NUMBER, MIN_PART_SIZE, MultipartParts

if TYPE_CHECKING:
    from chatmedia.storage.s3 import S3BlobStore

# The piece an upload's joined parts are read as: it starts at 0 and no writer has
# generation 0 (claims count from 1).
_JOINED = "00000000000000000000-0"
_PART = re.compile(r"[A-Za-z0-9_-]{16,32}/([0-9]{20})-([0-9]{1,10})p")
# Upload ids whose multipart upload this process has seen, to spare a listing.
_KNOWN_UPLOADS = 1024


def joined_name(upload_id: str) -> str:
    return f"{upload_id}/{_JOINED}"


def staging_token(upload_id: str) -> str:
    """The staging token of an upload's multipart upload: its blob once joined."""
    return hashlib.sha256(f"resumable upload {upload_id}".encode()).hexdigest()[:32]


def is_part(name: str) -> bool:
    return _PART.fullmatch(name) is not None


class S3Segments:
    """Uploads' pieces for an S3BlobStore; `parts` None without static credentials."""

    def __init__(self, store: S3BlobStore, parts: MultipartParts | None) -> None:
        self._store = store
        self._parts = parts
        self._uploads: OrderedDict[str, str] = OrderedDict()
        # The hash of an upload's bytes from 0 to the end of a piece this process wrote.
        self._hashes = PieceHashes()

    async def aclose(self) -> None:
        if self._parts is not None:
            await self._parts.aclose()

    async def begin(self, upload_id: str) -> None:
        if self._parts is not None:
            key = _staged_key(upload_id)
            self._remember(upload_id, await self._parts.create(key))

    async def put(
        self,
        name: str,
        chunks: AsyncIterable[bytes],
        after: tuple[str, int] | None,
        total: int | None,
    ) -> tuple[str, int]:
        if self._parts is None:  # one object per writer
            return name, (await self._store.write_object(_object_key(name), chunks)).size
        upload_id, start, generation = _parse(name)
        digest = _hash_from(self._hashes, after, start)
        with tempfile.TemporaryFile() as spool:
            # 1. The writer's bytes, spooled (and hashed, following the upload's hash so
            # far when this process has it) as they arrive.
            written = 0
            async for piece in in_pieces(chunks):
                await to_thread.run_sync(_spool, spool, piece, digest)
                written += len(piece)
            if written == 0:
                return name, 0
            # 2. With the tail before them, a part when they can be one, else a new tail.
            tail = after if after is not None and not is_part(after[0]) else None
            begins = segment_start(tail[0]) if tail is not None else start
            size = written + (tail[1] if tail is not None else 0)
            body = self._tail_then(tail, spool, written)
            if size >= MIN_PART_SIZE or (total is not None and start + written == total):
                key, upload = _staged_key(upload_id), await self._upload_of(upload_id)
                await self._parts.put_part(key, upload, _part_number(generation), body, size)
                piece_name = f"{upload_id}/{begins:020d}-{generation}p"
            else:
                piece_name = f"{upload_id}/{begins:020d}-{generation}"
                await self._store.write_object(_object_key(piece_name), body)
        if digest is not None:
            self._hashes.keep(piece_name, start + written, digest)
        return piece_name, written

    async def _tail_then(
        self, tail: tuple[str, int] | None, spool: IO[bytes], length: int
    ) -> AsyncGenerator[bytes, None]:
        if tail is not None:
            opened = await self._store.read_object(_object_key(tail[0]), 0, tail[1])
            async with aclosing(opened) as chunks:
                async for chunk in chunks:
                    yield chunk
        await to_thread.run_sync(spool.seek, 0)
        async with aclosing(read_file(spool, length, PIECE_SIZE)) as pieces:
            async for piece in pieces:
                yield piece

    async def open(self, name: str, offset: int, length: int) -> AsyncGenerator[bytes, None]:
        if is_part(name):
            raise BlobMissing(f"piece {name} is a part, read only once joined")
        return await self._store.read_object(_object_key(name), offset, offset + length)

    async def delete(self, name: str) -> None:
        if not is_part(name):  # a part no committed segment names is never joined
            await self._store.delete_object(_object_key(name))

    async def delete_all(self, upload_id: str) -> None:
        if not UPLOAD_ID.fullmatch(upload_id):
            raise ValueError(f"not an upload id: {upload_id!r}")
        if self._parts is not None:
            key = _staged_key(upload_id)
            for found, upload in await self._parts.uploads(key):
                if found == key:
                    await self._parts.abort(key, upload)
            self._uploads.pop(upload_id, None)
        self._hashes.forget_upload(upload_id)
        await self._store.delete_objects(f"uploads/{upload_id}/")

    async def join(self, upload_id: str, names: list[str], number: int) -> str | None:
        if self._parts is None:
            return None
        key = _staged_key(upload_id)
        try:
            upload = await self._upload_of(upload_id)
        except BlobMissing:  # joined already by a request that stopped before it was done
            if await self._store.object_size(key) is None:
                raise
            return joined_name(upload_id)
        # A last tail (the last request brought no bytes) becomes the last part; an
        # upload of no bytes at all, an empty object.
        if not names:
            await self._parts.abort(key, upload)
            await self._store.write_object(key, nothing())
            return joined_name(upload_id)
        if not is_part(names[-1]):
            size = await self._store.object_size(_object_key(names[-1]))
            if size is None:
                raise BlobMissing(f"the tail {names[-1]} is missing")
            body = await self._store.read_object(_object_key(names[-1]), 0, size)
            await self._parts.put_part(key, upload, _part_number(number), body, size)
        numbers = [int(m.group(2)) for n in names if (m := _PART.fullmatch(n))]
        numbers += [] if is_part(names[-1]) else [number]
        etags = await self._parts.parts(key, upload)
        await self._parts.complete(key, upload, [(n, etags[n]) for n in numbers])
        self._uploads.pop(upload_id, None)
        self._hashes.rename(names[-1], joined_name(upload_id))
        return joined_name(upload_id)

    async def stage(
        self, name: str, size: int, chunks: AsyncIterable[bytes], same: Callable[[], bool]
    ) -> StagedBlob:
        upload_id = name.partition("/")[0]
        joined = name == joined_name(upload_id)
        async with aclosing(in_pieces(chunks)) as pieces:
            first = await anext(pieces, b"")
            if not joined or not same():  # a copy, as `put` makes
                staged = await self._store.put(then(first, pieces))
                if joined:
                    await self._store.delete_object(_staged_key(upload_id))
                return staged
            # When this process hashed every byte as it came, the checks have had what
            # they look at (the head) and the rest need not be read again.
            digest = self._hashes.get(name, size)
            if digest is None:
                digest, seen = hashlib.sha256(first), len(first)
                async for piece in pieces:
                    await to_thread.run_sync(digest.update, piece)
                    seen += len(piece)
                if seen != size:
                    raise BlobMissing(f"upload {upload_id} does not hold its {size} bytes")
        self._hashes.forget(name)
        sha256 = digest.hexdigest()
        return StagedBlob(key=sha256, size=size, sha256=sha256, token=staging_token(upload_id))

    async def _upload_of(self, upload_id: str) -> str:
        """The id of the upload's multipart upload; BlobMissing when it has none (ended)."""
        assert self._parts is not None
        known = self._uploads.get(upload_id)
        if known is not None:
            return known
        key = _staged_key(upload_id)
        found = [upload for at, upload in await self._parts.uploads(key) if at == key]
        if not found:
            raise BlobMissing(f"upload {upload_id} has no multipart upload")
        self._remember(upload_id, found[0])
        return found[0]

    def _remember(self, upload_id: str, upload: str) -> None:
        self._uploads[upload_id] = upload
        if len(self._uploads) > _KNOWN_UPLOADS:
            self._uploads.popitem(last=False)


def _hash_from(hashes: PieceHashes, after: tuple[str, int] | None, start: int) -> Any | None:
    """The hash of an upload's bytes before `start`, when this process has it (and so
    wrote the piece `after` that ends there)."""
    if after is None:
        return hashlib.sha256() if start == 0 else None
    return hashes.get(after[0], start)


def _part_number(generation: int) -> int:
    """A writer's generation as its part's number, which S3 bounds."""
    if generation > MAX_PART_NUMBER:
        raise TooManyParts("the upload took more than 10,000 requests")
    return generation


def _spool(file: IO[bytes], piece: bytes, digest: Any | None) -> None:
    file.write(piece)
    if digest is not None:
        digest.update(piece)


def _parse(name: str) -> tuple[str, int, int]:
    upload_id, _, rest = name.partition("/")
    start, _, generation = rest.removesuffix("p").partition("-")
    return upload_id, int(start), int(generation)


def _staged_key(upload_id: str) -> str:
    return f"staging/{staging_token(upload_id)}"


def _object_key(name: str) -> str:
    if not SEGMENT_NAME.fullmatch(name) or is_part(name):
        raise ValueError(f"not the name of a piece kept as an object: {name!r}")
    upload_id, _, generation = _parse(name)
    if generation == 0:
        return _staged_key(upload_id)
    return f"uploads/{name}"
