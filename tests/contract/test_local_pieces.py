"""Resumable uploads' pieces on local disk: writers that follow each other append to one
file, a late or failed writer never changes a byte that counts, and a finished upload's
piece becomes its blob without its bytes being written again."""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chatmedia.storage import BlobMissing, StagedBlob
from chatmedia.storage.local import LocalBlobStore
from tests.contract.test_blob_store import stream

pytestmark = pytest.mark.anyio

UPLOAD = "u" * 22
FIRST = f"{UPLOAD}/{0:020d}-1"
A, B, C = os.urandom(300_000), os.urandom(1_500_000), os.urandom(70_000)


def piece_path(root: Path, name: str) -> Path:
    return root / ".uploads" / name


async def read(store: LocalBlobStore, staged: StagedBlob) -> bytes:
    return b"".join([chunk async for chunk in await store.open_staged(staged)])


async def failing(data: bytes) -> AsyncIterator[bytes]:
    yield data
    raise ConnectionError("the client went away")


async def test_writers_that_follow_each_other_append_to_one_piece(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    assert await store.put_segment(FIRST, stream(A)) == (FIRST, len(A))
    second = f"{UPLOAD}/{len(A):020d}-2"
    assert await store.put_segment(second, stream(B), (FIRST, len(A))) == (FIRST, len(B))
    assert piece_path(tmp_path, FIRST).read_bytes() == A + B
    assert not piece_path(tmp_path, second).exists()
    chunks = await store.open_segment(FIRST, len(A), len(B))
    assert b"".join([c async for c in chunks]) == B


async def test_a_piece_another_writer_holds_or_that_holds_more_is_left_alone(
    tmp_path: Path,
) -> None:
    store = LocalBlobStore(tmp_path)
    await store.put_segment(FIRST, stream(A))
    path = piece_path(tmp_path, FIRST)
    # A late writer still at the piece: the next one starts a piece of its own.
    with path.open("rb") as late:
        fcntl.flock(late.fileno(), fcntl.LOCK_EX)
        second = f"{UPLOAD}/{len(A):020d}-3"
        assert await store.put_segment(second, stream(B), (FIRST, len(A))) == (second, len(B))
    # Bytes past what counts (a writer that lost its claim): likewise.
    with path.open("ab") as garbage:
        garbage.write(b"late")
    third = f"{UPLOAD}/{len(A):020d}-4"
    assert await store.put_segment(third, stream(C), (FIRST, len(A))) == (third, len(C))
    assert path.read_bytes() == A + b"late"
    assert piece_path(tmp_path, second).read_bytes() == B


async def test_a_failed_append_takes_back_only_its_own_bytes(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    await store.put_segment(FIRST, stream(A))
    second = f"{UPLOAD}/{len(A):020d}-2"
    with pytest.raises(ConnectionError):
        await store.put_segment(second, failing(B), (FIRST, len(A)))
    assert piece_path(tmp_path, FIRST).read_bytes() == A
    # A writer's dropped segment goes while it is the piece's end, not once others follow.
    await store.put_segment(second, stream(B), (FIRST, len(A)))
    await store.delete_segment(FIRST, 0 + len(A), len(B))
    assert piece_path(tmp_path, FIRST).read_bytes() == A
    await store.put_segment(second, stream(B), (FIRST, len(A)))
    await store.put_segment(second, stream(C), (FIRST, len(A) + len(B)))
    await store.delete_segment(FIRST, len(A), len(B))  # no longer the end: it stays
    assert piece_path(tmp_path, FIRST).read_bytes() == A + B + C


@pytest.mark.parametrize("hashed_here", [True, False])
async def test_a_whole_piece_is_staged_without_a_copy(tmp_path: Path, hashed_here: bool) -> None:
    writer = LocalBlobStore(tmp_path)
    await writer.put_segment(FIRST, stream(A))
    await writer.put_segment(f"{UPLOAD}/{len(A):020d}-2", stream(B), (FIRST, len(A)))
    # Another process finishing the upload has no hash of its own: it hashes them all.
    store = writer if hashed_here else LocalBlobStore(tmp_path)
    path = piece_path(tmp_path, FIRST)
    with path.open("ab") as garbage:  # past the upload's end: no writer's bytes
        garbage.write(b"late")
    chunks = await store.open_segment(FIRST, 0, len(A + B))
    staged = await store.stage_piece(FIRST, len(A + B), chunks, lambda: True)
    assert staged.sha256 == hashlib.sha256(A + B).hexdigest()
    assert staged.size == len(A + B)
    assert os.path.samefile(store.staged_path(staged), path)  # the same file: no copy
    await store.promote(staged)
    await store.delete_segments(UPLOAD)
    assert store.local_path(staged.key).read_bytes() == A + B


async def test_a_piece_only_partly_hashed_here_is_hashed_from_there(tmp_path: Path) -> None:
    store, other = LocalBlobStore(tmp_path), LocalBlobStore(tmp_path)
    await store.put_segment(FIRST, stream(A))
    await other.put_segment(f"{UPLOAD}/{len(A):020d}-2", stream(B), (FIRST, len(A)))
    chunks = await store.open_segment(FIRST, 0, len(A + B))
    staged = await store.stage_piece(FIRST, len(A + B), chunks, lambda: True)
    assert staged.sha256 == hashlib.sha256(A + B).hexdigest()


async def test_bytes_changed_on_the_way_or_a_held_piece_are_written_anew(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    await store.put_segment(FIRST, stream(A))
    path = piece_path(tmp_path, FIRST)
    staged = await store.stage_piece(FIRST, len(A), stream(A[:1000]), lambda: False)
    assert await read(store, staged) == A[:1000]  # what the checks let through
    assert not os.path.samefile(store.staged_path(staged), path)
    with path.open("rb") as late:
        fcntl.flock(late.fileno(), fcntl.LOCK_EX)
        staged = await store.stage_piece(FIRST, len(A), stream(A), lambda: True)
    assert not os.path.samefile(store.staged_path(staged), path)
    assert await read(store, staged) == A
    assert path.read_bytes() == A


async def test_a_piece_that_does_not_hold_what_is_said_is_not_staged(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    await store.put_segment(FIRST, stream(A))
    # Read back short: the process that did not hash the piece finds out.
    with pytest.raises(BlobMissing):
        await LocalBlobStore(tmp_path).stage_piece(FIRST, len(A), stream(A[:-1]), lambda: True)
    assert not (tmp_path / ".staging").exists()
    # A piece shorter than its upload: what the checks pass on is written anew.
    os.truncate(piece_path(tmp_path, FIRST), len(A) - 1)
    staged = await store.stage_piece(FIRST, len(A), stream(A[:-1]), lambda: True)
    assert not os.path.samefile(store.staged_path(staged), piece_path(tmp_path, FIRST))
    assert await read(store, staged) == A[:-1]


async def test_a_piece_goes_to_disk_while_it_arrives(tmp_path: Path, fdatasyncs: list[int]) -> None:
    data = os.urandom(8 * 1024 * 1024)
    await LocalBlobStore(tmp_path).put_segment(FIRST, stream(data, 64 * 1024))
    assert fdatasyncs  # before the fsync that ends the write
    assert piece_path(tmp_path, FIRST).read_bytes() == data


async def test_bytes_hashed_as_they_were_written_are_not_read_again(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    data = os.urandom(4 * 1024 * 1024)
    await store.put_segment(FIRST, stream(data))
    read_back: list[int] = []

    async def counted() -> AsyncIterator[bytes]:
        async for chunk in await store.open_segment(FIRST, 0, len(data)):
            read_back.append(len(chunk))
            yield chunk

    staged = await store.stage_piece(FIRST, len(data), counted(), lambda: True)
    assert staged.sha256 == hashlib.sha256(data).hexdigest()
    assert 0 < sum(read_back) < len(data)  # the head, for the checks, and no more


@pytest.mark.parametrize("finisher", [0, 1])
async def test_processes_taking_turns_stage_the_right_hash(tmp_path: Path, finisher: int) -> None:
    # Two processes (each with its own hashes) append in turn, as two workers behind one
    # port do; whichever finishes hashes what it did not write itself.
    processes = [LocalBlobStore(tmp_path), LocalBlobStore(tmp_path)]
    parts = [os.urandom(200_000 + 1000 * i) for i in range(5)]
    end = 0
    for i, part in enumerate(parts):
        name = f"{UPLOAD}/{end:020d}-{i + 1}"
        after = (FIRST, end) if end else None
        assert (await processes[i % 2].put_segment(name, stream(part), after))[0] == FIRST
        end += len(part)
    store = processes[finisher]
    chunks = await store.open_segment(FIRST, 0, end)
    staged = await store.stage_piece(FIRST, end, chunks, lambda: True)
    assert staged.sha256 == hashlib.sha256(b"".join(parts)).hexdigest()
