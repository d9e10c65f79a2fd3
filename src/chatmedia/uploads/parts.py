"""An upload's bytes so far: its segments, one per request that wrote, in the store's
pieces (chatmedia.storage.Segments), where every node finds them. A new writer's segment
goes into a piece of its own, named for its start and claim, or on the end of the piece
of the segment before it, where the store can append and nobody else is at that piece.

A writer holds the upload's claim while its piece streams in, renewing it every
RENEW_AFTER seconds, and stops as soon as a renewal fails; its piece counts only once the
claim's compare-and-set commits it. A writer that lost its claim writes either to a piece
of a name no committed segment has, or past the end of the committed bytes of a piece it
alone holds, so it can never overwrite a segment that counts; its bytes are dropped."""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

from chatmedia.db.uploads import Segment
from chatmedia.storage import BlobMissing, PieceStaging, Segments, segment_start

# Seconds between renewals of a writer's claim while its bytes flow.
RENEW_AFTER = 3.0


class ClaimLost(Exception):
    """Another writer took the upload over: stop writing."""


class UploadParts:
    """Uploads' pieces in a store."""

    def __init__(self, store: Segments) -> None:
        self._store = store

    async def begin(self, upload_id: str) -> None:
        """Get the store ready for a new upload's pieces."""
        await self._store.begin_segments(upload_id)

    async def write(
        self,
        upload_id: str,
        start: int,
        generation: int,
        chunks: AsyncIterable[bytes],
        renew: Callable[[], Awaitable[bool]],
        digest: Any | None = None,
        last: Segment | None = None,
        total: int | None = None,
    ) -> Segment:
        """A new segment of `chunks` from `start`, after segment `last` (the upload's last
        committed one, if any), feeding `digest` (a hash object) when given; `total`, the
        upload's length when known. Raises
        ClaimLost when a renewal fails or the upload was ended meanwhile, and what
        iterating `chunks` raises; nothing of the segment is then left."""
        name = f"{upload_id}/{start:020d}-{generation}"
        after = (last.name, _offset(last) + last.length) if last is not None else None
        try:
            name, written = await self._store.put_segment(
                name, _renewing(chunks, renew, digest), after, total
            )
        except BlobMissing:  # the upload was ended while its bytes came
            raise ClaimLost() from None
        return Segment(start, written, name)

    async def join(self, upload_id: str, segments: list[Segment], number: int) -> list[Segment]:
        """A whole upload's segments as the store reads them once joined (`number`: the
        generation of the caller's claim, which no other writer has)."""
        joined = await self._store.join_segments(upload_id, [s.name for s in segments], number)
        if joined is None:
            return segments
        return [Segment(0, sum(s.length for s in segments), joined)]

    def whole_piece(self, segments: list[Segment]) -> str | None:
        """The one piece holding every segment of an upload, from its start, when there is
        one and the store can stage it as the upload's blob (else None)."""
        names = {segment.name for segment in segments}
        if len(names) != 1 or not isinstance(self._store, PieceStaging):
            return None
        return names.pop() if _offset(segments[0]) == 0 == segments[0].start else None

    async def read(self, segments: list[Segment], end: int | None = None) -> AsyncIterator[bytes]:
        """The bytes of the pieces in order, up to `end` when given."""
        for segment in segments:
            if end is not None and segment.start >= end:
                return
            length = segment.length if end is None else min(segment.length, end - segment.start)
            opened = await self._store.open_segment(segment.name, _offset(segment), length)
            async with aclosing(opened) as chunks:
                async for chunk in chunks:
                    yield chunk

    async def discard(self, segment: Segment) -> None:
        """Drop a segment that does not count."""
        await self._store.delete_segment(segment.name, _offset(segment), segment.length)

    async def remove(self, upload_id: str) -> None:
        """Drop every piece of an upload."""
        await self._store.delete_segments(upload_id)


def _offset(segment: Segment) -> int:
    """Where in its piece a segment's bytes are."""
    return segment.start - segment_start(segment.name)


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
