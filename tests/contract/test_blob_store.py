"""The BlobStore contract, run against every backend."""

import hashlib
from collections.abc import AsyncIterator
from datetime import timedelta

import anyio
import pytest

from chatmedia.storage import CHUNK_SIZE, BlobMissing, BlobStore

pytestmark = pytest.mark.anyio
DATA = bytes(range(256)) * 4099  # several chunks, not a multiple of the chunk size


async def stream(data: bytes, piece: int = 10_000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), piece):
        yield data[i : i + piece]


async def read(store: BlobStore, key: str, start: int, end: int) -> bytes:
    chunks = await store.open_range(key, start, end)
    try:
        return b"".join([c async for c in chunks])
    finally:
        await chunks.aclose()


async def test_put_hashes_and_stages_without_publishing(blob_store: BlobStore) -> None:
    staged = await blob_store.put(stream(DATA))
    assert staged.sha256 == hashlib.sha256(DATA).hexdigest()
    assert staged.size == len(DATA)
    assert await blob_store.stat(staged.key) is None
    await blob_store.promote(staged)
    stat = await blob_store.stat(staged.key)
    assert stat is not None
    assert stat.size == len(DATA)


async def test_ranges(blob_store: BlobStore) -> None:
    staged = await blob_store.put(stream(DATA))
    await blob_store.promote(staged)
    assert await read(blob_store, staged.key, 0, len(DATA)) == DATA
    assert await read(blob_store, staged.key, 5, 6) == DATA[5:6]
    end = len(DATA) - 3
    assert await read(blob_store, staged.key, CHUNK_SIZE - 1, end) == DATA[CHUNK_SIZE - 1 : end]


async def test_identical_content_is_stored_once(blob_store: BlobStore) -> None:
    first = await blob_store.put(stream(DATA))
    second = await blob_store.put(stream(DATA, piece=777))
    assert first.key == second.key
    await blob_store.promote(first)
    await blob_store.promote(second)
    await blob_store.promote(second)  # idempotent
    assert await read(blob_store, first.key, 0, len(DATA)) == DATA
    assert await blob_store.sweep_staging(timedelta(0)) == 0  # nothing left in staging


async def test_empty_blob(blob_store: BlobStore) -> None:
    staged = await blob_store.put(stream(b""))
    assert staged.sha256 == hashlib.sha256(b"").hexdigest()
    await blob_store.promote(staged)
    assert await read(blob_store, staged.key, 0, 0) == b""


async def test_failed_stream_leaves_nothing(blob_store: BlobStore) -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield DATA
        raise RuntimeError("client went away")

    with pytest.raises(RuntimeError, match="client went away"):
        await blob_store.put(failing())
    assert await blob_store.sweep_staging(timedelta(0)) == 0


async def test_cancelled_put_leaves_nothing(blob_store: BlobStore) -> None:
    async def stalls() -> AsyncIterator[bytes]:
        yield DATA  # a few pieces: a write is in flight when the stream stalls
        await anyio.sleep(60)
        yield b"never"

    with anyio.move_on_after(0.5) as scope:
        await blob_store.put(stalls())
    assert scope.cancelled_caught
    assert await blob_store.sweep_staging(timedelta(0)) == 0


async def test_discard_and_sweep(blob_store: BlobStore) -> None:
    staged = await blob_store.put(stream(DATA))
    await blob_store.discard(staged)
    assert await blob_store.stat(staged.key) is None
    abandoned = await blob_store.put(stream(b"abandoned"))
    assert await blob_store.sweep_staging(timedelta(hours=1)) == 0  # still fresh
    assert await blob_store.sweep_staging(timedelta(0)) == 1
    with pytest.raises(BlobMissing):
        await blob_store.promote(abandoned)


async def test_delete(blob_store: BlobStore) -> None:
    staged = await blob_store.put(stream(DATA))
    await blob_store.promote(staged)
    await blob_store.delete(staged.key)
    assert await blob_store.stat(staged.key) is None
    await blob_store.delete(staged.key)  # deleting a missing blob is fine
    with pytest.raises(BlobMissing):
        await blob_store.open_range(staged.key, 0, 1)


async def test_a_blob_shorter_than_asked_is_missing(blob_store: BlobStore) -> None:
    staged = await blob_store.put(stream(DATA))
    await blob_store.promote(staged)
    with pytest.raises(BlobMissing):  # found out while reading
        await read(blob_store, staged.key, 0, len(DATA) + 10)
    with pytest.raises(BlobMissing):  # found out before the first byte
        await blob_store.open_range(staged.key, len(DATA) + 5, len(DATA) + 10)
    with pytest.raises(BlobMissing):
        await blob_store.open_range(hashlib.sha256(b"absent").hexdigest(), 0, 0)
