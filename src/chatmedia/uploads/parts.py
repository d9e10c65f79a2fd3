"""An upload's bytes so far: its pieces, one per request that wrote, each in the store
under a name of its own (chatmedia.storage.Segments), where every node finds them.

A writer holds the upload's claim while its piece streams in, renewing it every
RENEW_AFTER seconds, and stops as soon as a renewal fails; its piece counts only once the
claim's compare-and-set commits it. A piece of a writer that lost its claim has a name no
committed piece has, so it can never overwrite one; it is deleted."""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

from chatmedia.db.uploads import Segment
from chatmedia.storage import BlobMissing, Segments

# Seconds between renewals of a writer's claim while its bytes flow.
RENEW_AFTER = 3.0


class ClaimLost(Exception):
    """Another writer took the upload over: stop writing."""


class UploadParts:
    """Uploads' pieces in a store."""

    def __init__(self, store: Segments) -> None:
        self._store = store

    async def write(
        self,
        upload_id: str,
        start: int,
        generation: int,
        chunks: AsyncIterable[bytes],
        renew: Callable[[], Awaitable[bool]],
        digest: Any | None = None,
    ) -> Segment:
        """A new piece of `chunks` from `start`, feeding `digest` (a hash object) when
        given. Raises ClaimLost when a renewal fails or the upload was ended meanwhile, and
        what iterating `chunks` raises;
        nothing of the piece is then left."""
        name = f"{upload_id}/{start:020d}-{generation}"
        try:
            written = await self._store.put_segment(name, _renewing(chunks, renew, digest))
        except BlobMissing:  # the upload was ended while its bytes came
            raise ClaimLost() from None
        return Segment(start, written, name)

    async def read(self, segments: list[Segment], end: int | None = None) -> AsyncIterator[bytes]:
        """The bytes of the pieces in order, up to `end` when given."""
        for segment in segments:
            if end is not None and segment.start >= end:
                return
            length = segment.length if end is None else min(segment.length, end - segment.start)
            async with aclosing(await self._store.open_segment(segment.name, length)) as chunks:
                async for chunk in chunks:
                    yield chunk

    async def discard(self, segment: Segment) -> None:
        """Drop a piece that does not count."""
        await self._store.delete_segment(segment.name)

    async def remove(self, upload_id: str) -> None:
        """Drop every piece of an upload."""
        await self._store.delete_segments(upload_id)


async def _renewing(
    chunks: AsyncIterable[bytes], renew: Callable[[], Awaitable[bool]], digest: Any | None
) -> AsyncIterator[bytes]:
    renewed = time.monotonic()
    async for chunk in chunks:
        if time.monotonic() - renewed > RENEW_AFTER:
            if not await renew():
                raise ClaimLost()
            renewed = time.monotonic()
        if digest is not None:
            digest.update(chunk)
        yield chunk
