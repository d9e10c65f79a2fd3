"""The storage interface. Blobs are content-addressed: a blob's key is the SHA-256 of its
bytes, so identical content is stored once.

Writing is two steps so that the metadata layer can make dedup and deletion race-free
(see chatmedia.pipelines.files): `put` streams the bytes into a staging area and hashes
them; `promote` then makes the staged blob visible under its key (or drops it when the key
already exists) while the caller holds the blob's database lock; `discard` drops it.

Optional capabilities are separate protocols, checked once when the app is wired up:
`LocalPaths` (a blob is a file on this machine, so the server can send it with
`http.response.pathsend` without Python reading the bytes), `Presigner` (the store can
hand out a short-lived URL that a client fetches the bytes from directly), `Segments`
(the store keeps the pieces of resumable uploads, where every node finds them) and
`PieceStaging` (a finished upload's piece becomes its staged blob without a copy).

A store raises `BlobMissing` for a blob it does not have and `StoreUnavailable` when it
could not be asked at all (a remote store that is down, slow or failing); callers answer
the first as missing content and the second as a temporary outage.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO, Protocol, runtime_checkable

from anyio import to_thread

# The size in which blob bytes are read and sent.
CHUNK_SIZE = 256 * 1024
# The size in which bytes being stored are hashed and written. Larger than CHUNK_SIZE: an
# upload holds two pieces at a time, a download two chunks, and there are far more
# downloads at once than uploads; each piece costs thread hops, and a 256 MiB upload
# measured 572-629 MB/s in 1 MiB pieces against 462-518 in 256 KiB ones
# (docs/benchmarks.md, "Large uploads").
PIECE_SIZE = 1024 * 1024


async def in_pieces(chunks: AsyncIterable[bytes]) -> AsyncGenerator[bytes, None]:
    """`chunks` regrouped into pieces of at least PIECE_SIZE bytes (the last may be short;
    none is empty), so that a client's tiny chunks do not each cost a thread hop or a call
    into a store's client."""
    pending: list[bytes] = []
    pending_size = 0
    async for chunk in chunks:
        pending.append(chunk)
        pending_size += len(chunk)
        if pending_size >= PIECE_SIZE:
            yield b"".join(pending)
            pending, pending_size = [], 0
    if pending:
        yield b"".join(pending)


async def then(first: bytes, rest: AsyncIterable[bytes]) -> AsyncGenerator[bytes, None]:
    """`first` (when not empty), then `rest`: a stream whose first piece was read ahead."""
    if first:
        yield first
    async for piece in rest:
        yield piece


async def nothing() -> AsyncGenerator[bytes, None]:  # an empty stream
    return
    yield


async def read_file(
    file: IO[bytes], length: int, size: int = CHUNK_SIZE
) -> AsyncGenerator[bytes, None]:
    """The next `length` bytes of `file`, `size` at a time, each read in a worker thread;
    BlobMissing when the file ends before them. The caller closes the file."""
    while length > 0:
        chunk = await to_thread.run_sync(file.read, min(size, length))
        if not chunk:
            raise BlobMissing("the bytes end before their recorded length")
        length -= len(chunk)
        yield chunk


# A piece of a resumable upload: `<upload id>/<start, 20 digits>-<writer's generation>`,
# and `p` after it for a part of a multipart upload (chatmedia.storage.s3segments).
SEGMENT_NAME = re.compile(r"[A-Za-z0-9_-]{16,32}/[0-9]{20}-[0-9]{1,10}p?")
UPLOAD_ID = re.compile(r"[A-Za-z0-9_-]{16,32}")


class BlobMissing(Exception):
    """A blob the metadata refers to is not in the store."""


class TooManyParts(Exception):
    """An upload came in more pieces than the store can join (S3: 10,000 parts)."""


class StoreUnavailable(Exception):
    """The store did not answer: unreachable, timed out, or failing on its side (5xx). The
    store's own error is chained as `__cause__`; retrying later may succeed."""


@dataclass(frozen=True, slots=True)
class StagedBlob:
    """Bytes written and hashed but not yet visible under their key."""

    key: str
    size: int
    sha256: str
    token: str


@dataclass(frozen=True, slots=True)
class BlobStat:
    """What the store knows of a stored blob."""

    key: str
    size: int


class BlobStore(Protocol):
    """Content-addressed blob storage."""

    async def put(self, chunks: AsyncIterable[bytes]) -> StagedBlob:
        """Stream `chunks` to staging while hashing them. If iterating `chunks` raises,
        nothing is left behind and the exception propagates."""
        ...

    async def promote(self, staged: StagedBlob) -> None:
        """Make a staged blob readable under its key; idempotent; a no-op for content
        already stored (the staged copy is dropped)."""
        ...

    async def discard(self, staged: StagedBlob) -> None:
        """Drop a staged blob that will not be promoted."""
        ...

    async def open_range(self, key: str, start: int, end: int) -> AsyncGenerator[bytes, None]:
        """The bytes `start` to `end` (exclusive) of a stored blob, in chunks. The blob is
        opened before this returns (raising BlobMissing), so a caller can still answer with
        an error before it sends headers; close the iterator with `aclose()`."""
        ...

    async def open_staged(self, staged: StagedBlob) -> AsyncGenerator[bytes, None]:
        """The bytes of a staged blob, in chunks, as `open_range` gives a stored one's (for
        a scan before they are made visible)."""
        ...

    async def delete(self, key: str) -> None:
        """Remove a blob; removing a missing blob is not an error."""
        ...

    async def stat(self, key: str) -> BlobStat | None:
        """The stored blob's size, or None when there is no such blob."""
        ...

    async def sweep_staging(self, older_than: timedelta) -> int:
        """Drop staged writes abandoned by a crash; returns how many were dropped."""
        ...


@runtime_checkable
class Segments(Protocol):
    """A store that also keeps the bytes of resumable uploads under way (chatmedia.uploads),
    apart from blobs, in pieces named `<upload id>/<start>-<writer>`: a piece holds the
    upload's bytes from `start`, as one writer or (where a store can append) several
    writers in turn wrote them."""

    async def begin_segments(self, upload_id: str) -> None:
        """Get ready to keep the pieces of a new upload."""
        ...

    async def put_segment(
        self,
        name: str,
        chunks: AsyncIterable[bytes],
        after: tuple[str, int] | None = None,
        total: int | None = None,
    ) -> tuple[str, int]:
        """Write `chunks` durably into a new piece `name` or, where the store can, at the
        end of piece `after[0]` while it still holds exactly `after[1]` bytes and no other
        writer is at it; the piece written to and how many bytes. If iterating `chunks`
        raises, nothing of them is left and the exception propagates; BlobMissing if the
        upload's pieces were removed meanwhile (where a store can tell). `total`, the
        upload's length when known, tells a store that joins pieces the last one.
        A store may keep the bytes of the piece `after` again in the new one (S3 does, to
        make a part of them); the new piece then starts where that one did."""
        ...

    async def join_segments(self, upload_id: str, names: list[str], number: int) -> str | None:
        """Once an upload is whole: the one piece that holds all of it, from 0, made from
        the pieces `names` of its segments in order (`number`: a generation no writer
        used but the caller, for one more piece), or None when the store keeps the
        pieces as they are."""
        ...

    async def open_segment(
        self, name: str, offset: int, length: int
    ) -> AsyncGenerator[bytes, None]:
        """The `length` bytes of piece `name` from `offset`, in chunks."""
        ...

    async def delete_segment(self, name: str, offset: int = 0, length: int = 0) -> None:
        """Drop the `length` bytes at `offset` of piece `name` that one writer added: the
        whole piece when they are its start (a missing piece is not an error); else only
        while they are still its end, or they stay there, unused."""
        ...

    async def delete_segments(self, upload_id: str) -> None:
        """Remove every piece of an upload (there may be none)."""
        ...


@runtime_checkable
class PieceStaging(Protocol):
    """A store that can make a piece of a finished upload its staged blob without copying
    its bytes."""

    async def stage_piece(
        self, name: str, size: int, chunks: AsyncIterable[bytes], same: Callable[[], bool]
    ) -> StagedBlob:
        """Stage `chunks`, which are the `size` bytes of piece `name` read back through an
        upload's checks, as `put` does. When `same()` says, once the first chunk is in,
        that the checks pass them on unchanged, and the piece holds exactly them, the
        piece's file itself is staged (hashed as they stream by) rather than a copy."""
        ...


def segment_start(name: str) -> int:
    """Where in its upload piece `name` starts."""
    return int(name.rpartition("/")[2].partition("-")[0])


@runtime_checkable
class Closing(Protocol):
    """A store holding connections of its own, to let go of when the app stops."""

    async def aclose(self) -> None: ...


@runtime_checkable
class LocalPaths(Protocol):
    """A store whose blobs are files on this machine."""

    def local_path(self, key: str) -> Path:
        """The path of a stored blob."""
        ...

    def staged_path(self, staged: StagedBlob) -> Path:
        """The path of staged bytes, until they are promoted or discarded."""
        ...


@runtime_checkable
class Presigner(Protocol):
    """A store that can sign URLs through which a client downloads a blob directly."""

    async def presigned_url(self, key: str, expires: timedelta) -> str:
        """A URL that answers GET with the bytes of blob `key` until `expires` from now. It
        is a bearer credential for that blob: hand it only to whoever may read the blob."""
        ...
