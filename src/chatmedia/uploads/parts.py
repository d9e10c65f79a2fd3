"""An upload's bytes so far, in one file per upload on local disk.

A writer holding the upload's claim truncates the file to the committed offset (dropping
whatever a writer that lost its claim left past it), writes its bytes after it, and fsyncs
before it commits the new offset. It renews its claim before each piece it writes once the
last renewal is RENEW_AFTER old, so a piece is never written later than that after a
successful renewal — well within the lease that keeps every other writer out."""

from __future__ import annotations

import os
import re
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, BinaryIO

from anyio import to_thread

from chatmedia.storage.base import CHUNK_SIZE, in_pieces

_ID = re.compile(r"[A-Za-z0-9_-]{16,32}")
# Seconds between renewals of a writer's claim while its bytes flow.
RENEW_AFTER = 3.0


class ClaimLost(Exception):
    """Another writer took the upload over: stop writing."""


class UploadParts:
    """The folder of uploads' bytes."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def path(self, upload_id: str) -> Path:
        """The file of an upload's bytes."""
        if not _ID.fullmatch(upload_id):
            raise ValueError(f"not an upload id: {upload_id!r}")
        return self._root / upload_id

    async def append(
        self,
        upload_id: str,
        offset: int,
        chunks: AsyncIterable[bytes],
        renew: Callable[[], Awaitable[bool]],
        digest: Any | None = None,
    ) -> int:
        """Write `chunks` after the first `offset` bytes, feeding `digest` (a hash object)
        when given; the bytes written. Raises ClaimLost when a renewal fails, and whatever
        iterating `chunks` raises; the file may then hold bytes past `offset`, which the
        next writer drops."""
        file = await to_thread.run_sync(self._open, upload_id, offset)
        written = 0
        renewed = time.monotonic()
        try:
            async for piece in in_pieces(chunks):
                if time.monotonic() - renewed > RENEW_AFTER:
                    if not await renew():
                        raise ClaimLost(upload_id)
                    renewed = time.monotonic()
                if digest is not None:
                    await to_thread.run_sync(digest.update, piece)
                await to_thread.run_sync(file.write, piece)
                written += len(piece)
            await to_thread.run_sync(_sync, file)
        finally:
            await to_thread.run_sync(file.close)
        return written

    async def cut(self, upload_id: str, offset: int) -> None:
        """Drop whatever lies past `offset` (a chunk that failed its checksum)."""
        await to_thread.run_sync(os.truncate, self.path(upload_id), offset)

    async def read(
        self, upload_id: str, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        """The bytes from `start` to `end` (the end of the file), in chunks."""
        file = await to_thread.run_sync(self.path(upload_id).open, "rb")
        try:
            await to_thread.run_sync(file.seek, start)
            left = None if end is None else end - start
            while left is None or left > 0:
                size = CHUNK_SIZE if left is None else min(CHUNK_SIZE, left)
                chunk = await to_thread.run_sync(file.read, size)
                if not chunk:
                    return
                if left is not None:
                    left -= len(chunk)
                yield chunk
        finally:
            await to_thread.run_sync(file.close)

    async def remove(self, upload_id: str) -> None:
        """Drop an upload's bytes (there may be none)."""
        await to_thread.run_sync(self.path(upload_id).unlink, True)

    def _open(self, upload_id: str, offset: int) -> BinaryIO:
        self._root.mkdir(parents=True, exist_ok=True)
        path = self.path(upload_id)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        file = os.fdopen(fd, "r+b")
        file.truncate(offset)
        file.seek(offset)
        return file


def _sync(file: BinaryIO) -> None:
    file.flush()
    os.fsync(file.fileno())
