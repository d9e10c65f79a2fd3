"""What only the local backend promises: where blobs live on disk."""

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from anyio import to_thread

from chatmedia.storage import local
from chatmedia.storage.local import LocalBlobStore
from tests.contract.test_blob_store import stream

pytestmark = pytest.mark.anyio
T = TypeVar("T")


async def test_blobs_are_sharded_by_hash(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    staged = await store.put(stream(b"hello"))
    await store.promote(staged)
    digest = hashlib.sha256(b"hello").hexdigest()
    path = tmp_path / digest[:2] / digest[2:4] / digest
    assert store.local_path(digest) == path
    assert path.read_bytes() == b"hello"


@pytest.mark.parametrize("key", ["../../etc/passwd", "A" * 64, "", "0" * 63, "0" * 64 + "/x"])
def test_paths_come_only_from_hashes(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="not a blob key"):
        LocalBlobStore(tmp_path).local_path(key)


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The functions run in worker threads (through anyio) while the test runs."""
    called: list[object] = []
    run_sync = to_thread.run_sync

    async def counted(func: Callable[..., T], *args: object) -> T:
        called.append(func)
        return await run_sync(func, *args)

    monkeypatch.setattr(to_thread, "run_sync", counted)
    return called


async def test_a_small_upload_is_stored_in_one_thread_call(
    tmp_path: Path, hops: list[object]
) -> None:
    store = LocalBlobStore(tmp_path)
    data = os.urandom(100_000)
    staged = await store.put(stream(data))
    assert len(hops) == 1
    assert staged.sha256 == hashlib.sha256(data).hexdigest()
    assert staged.size == len(data)
    await store.promote(staged)
    assert store.local_path(staged.key).read_bytes() == data


async def test_short_reads_come_from_the_page_cache_without_a_thread(
    tmp_path: Path, hops: list[object]
) -> None:
    store = LocalBlobStore(tmp_path)
    data = os.urandom(300_000)
    staged = await store.put(stream(data))
    await store.promote(staged)
    hops.clear()

    async def read(start: int, end: int) -> bytes:
        return b"".join([chunk async for chunk in await store.open_range(staged.key, start, end)])

    # The blob was fsynced, so its pages are clean and the kernel drops them when asked.
    fd = os.open(store.local_path(staged.key), os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
    assert await read(100_000, 165_536) == data[100_000:165_536]
    assert len(hops) == 1  # from the disk: in a thread, not on the event loop
    assert await read(100_000, 165_536) == data[100_000:165_536]
    assert await read(100_001, 100_002) == data[100_001:100_002]
    assert len(hops) == 1  # cached now: read inline


async def test_a_large_upload_is_flushed_to_disk_while_it_arrives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fdatasyncs: list[int]
) -> None:
    monkeypatch.setattr(local._Writer, "FLUSH_EVERY", 1024 * 1024)
    data = os.urandom(5 * 1024 * 1024)
    store = LocalBlobStore(tmp_path)
    staged = await store.put(stream(data, 64 * 1024))
    assert staged.sha256 == hashlib.sha256(data).hexdigest()
    assert fdatasyncs  # before the final fsync, which writes what is left
    await store.promote(staged)
    assert store.local_path(staged.key).read_bytes() == data
