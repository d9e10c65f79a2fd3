"""Blobs as files on local disk, under sharded folders named from their SHA-256
(``ab/cd/abcd…``); writes go to a staging folder on the same filesystem, are fsynced, and
are renamed into place."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
import shutil
import time
from collections.abc import AsyncGenerator, AsyncIterable, Callable
from contextlib import aclosing
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import anyio
from anyio import to_thread

from chatmedia.storage.base import (
    CHUNK_SIZE,
    PIECE_SIZE,
    SEGMENT_NAME,
    UPLOAD_ID,
    BlobMissing,
    BlobStat,
    StagedBlob,
    in_pieces,
    read_file,
    then,
)
from chatmedia.storage.pieces import (
    PieceHashes,
    cut_back,
    open_to_append,
    open_to_stage,
    undo_write,
)

_KEY = re.compile(r"[0-9a-f]{64}")
_TOKEN = re.compile(r"[0-9a-f]{32}")
# Linux ≥ 4.14 reads from the page cache only with this flag, failing rather than waiting.
_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)


class LocalBlobStore:
    """A `BlobStore` (and `LocalPaths`) over a folder."""

    def __init__(self, root: Path) -> None:
        self._root = root.resolve()
        self._staging = self._root / ".staging"
        self._uploads = self._root / ".uploads"
        self._hashes = PieceHashes()

    def local_path(self, key: str) -> Path:
        """The path of blob `key`; the key must be a SHA-256 hex digest."""
        if not _KEY.fullmatch(key):  # 64 hex digits: nothing that could leave the folder
            raise ValueError(f"not a blob key: {key!r}")
        return self._root.joinpath(key[:2], key[2:4], key)

    def _staged_path(self, token: str) -> Path:
        if not _TOKEN.fullmatch(token):
            raise ValueError(f"not a staging token: {token!r}")
        return self._staging / token

    def staged_path(self, staged: StagedBlob) -> Path:
        return self._staged_path(staged.token)

    async def put(self, chunks: AsyncIterable[bytes]) -> StagedBlob:
        token = secrets.token_hex(16)
        path = self._staged_path(token)
        pieces = in_pieces(chunks)
        first = await anext(pieces, b"")
        # in_pieces yields a short piece only once the stream has ended (with the checks
        # of whoever feeds it, such as the multipart reader's): most chat media are that
        # one piece, hashed, written and fsynced in one thread call instead of four.
        if len(first) < PIECE_SIZE:
            await pieces.aclose()
            sha256 = await to_thread.run_sync(_store_whole, path, first)
            return StagedBlob(key=sha256, size=len(first), sha256=sha256, token=token)
        digest = hashlib.sha256()
        writer = _Writer(await to_thread.run_sync(_create, path), digest)
        try:
            await writer.write(first)
            async for piece in pieces:
                await writer.write(piece)
            await writer.finish()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await writer.abandon(partial(_close_unlink, path=path))
            raise
        sha256 = digest.hexdigest()
        return StagedBlob(key=sha256, size=writer.size, sha256=sha256, token=token)

    async def promote(self, staged: StagedBlob) -> None:
        await to_thread.run_sync(self._promote, staged)

    def _promote(self, staged: StagedBlob) -> None:
        source = self._staged_path(staged.token)
        target = self.local_path(staged.key)
        if target.exists():
            source.unlink(missing_ok=True)
            return
        if not source.exists():
            raise BlobMissing(f"staged blob {staged.token} is gone")
        _make_dirs(target.parent, self._root)
        os.replace(source, target)
        _fsync_dir(target.parent)

    async def discard(self, staged: StagedBlob) -> None:
        await to_thread.run_sync(self._staged_path(staged.token).unlink, True)

    async def open_range(self, key: str, start: int, end: int) -> AsyncGenerator[bytes, None]:
        path = self.local_path(key)
        try:
            if end - start <= CHUNK_SIZE:  # a short range (video seeking): one read
                data = _read_cached(path, start, end - start)
                if data is None:
                    data = await to_thread.run_sync(_read_at, path, start, end - start)
                return _once(data)
            file = await to_thread.run_sync(_open_at, path, start)
        except FileNotFoundError:
            raise BlobMissing(f"blob {key} is missing") from None
        return _read_range(file, end - start)

    async def open_staged(self, staged: StagedBlob) -> AsyncGenerator[bytes, None]:
        try:
            file = await to_thread.run_sync(_open_at, self._staged_path(staged.token), 0)
        except FileNotFoundError:
            raise BlobMissing(f"staged blob {staged.token} is gone") from None
        return _read_range(file, staged.size)

    async def begin_segments(self, upload_id: str) -> None:
        pass  # the upload's folder is made with its first piece

    async def put_segment(
        self,
        name: str,
        chunks: AsyncIterable[bytes],
        after: tuple[str, int] | None = None,
        total: int | None = None,
    ) -> tuple[str, int]:
        path, appended_at, file = self._segment_path(name), None, None
        if after is not None:  # one file for the PATCHes that follow each other
            file = await to_thread.run_sync(open_to_append, self._segment_path(after[0]), after[1])
            if file is not None:
                name, appended_at = after
                path = self._segment_path(name)
        if file is None:
            file = await to_thread.run_sync(_create, path)
        digest = self._hashes.get(name, appended_at) if appended_at else hashlib.sha256()
        writer = _Writer(file, digest, _Writer.PIECE_FLUSH_EVERY)
        try:
            async for piece in in_pieces(chunks):
                await writer.write(piece)
            await writer.finish()
            if appended_at is None:
                await to_thread.run_sync(_fsync_dir, path.parent)
        except BaseException as e:
            with anyio.CancelScope(shield=True):
                await writer.abandon(partial(undo_write, path=path, appended_at=appended_at))
                self._hashes.forget(name)
            if isinstance(e, FileNotFoundError):  # the upload's folder went: it was ended
                raise BlobMissing(
                    f"the pieces of upload {name.split('/')[0]} were removed"
                ) from None
            raise
        if digest is not None:
            self._hashes.keep(name, (appended_at or 0) + writer.size, digest)
        return name, writer.size

    async def open_segment(
        self, name: str, offset: int, length: int
    ) -> AsyncGenerator[bytes, None]:
        try:
            file = await to_thread.run_sync(_open_at, self._segment_path(name), offset)
        except FileNotFoundError:
            raise BlobMissing(f"segment {name} is missing") from None
        return _read_range(file, length)

    async def delete_segment(self, name: str, offset: int = 0, length: int = 0) -> None:
        self._hashes.forget(name)
        path = self._segment_path(name)
        if offset:
            await to_thread.run_sync(cut_back, path, offset, offset + length)
        else:
            await to_thread.run_sync(path.unlink, True)

    async def delete_segments(self, upload_id: str) -> None:
        if not UPLOAD_ID.fullmatch(upload_id):
            raise ValueError(f"not an upload id: {upload_id!r}")
        self._hashes.forget_upload(upload_id)
        await to_thread.run_sync(partial(shutil.rmtree, self._uploads / upload_id, True))

    async def join_segments(self, upload_id: str, names: list[str], number: int) -> str | None:
        return None  # a file is appended to: the pieces are read as they are

    async def stage_piece(
        self, name: str, size: int, chunks: AsyncIterable[bytes], same: Callable[[], bool]
    ) -> StagedBlob:
        path = self._segment_path(name)
        async with aclosing(in_pieces(chunks)) as pieces:
            first = await anext(pieces, b"")
            file = await to_thread.run_sync(open_to_stage, path, size) if same() else None
            if file is None:  # changed on the way (metadata taken out), or another writer's
                return await self.put(then(first, pieces))
            return await self._stage_file(file, name, size, then(first, pieces))

    async def _stage_file(
        self, file: BinaryIO, name: str, size: int, pieces: AsyncIterable[bytes]
    ) -> StagedBlob:
        """Stage locked piece file `file` (see `stage_piece`), then let it go."""
        try:
            # 1. Hashed as they stream by, from where this process's own hash ends; when
            # it hashed them all as they were written, the checks have had what they look
            # at (the head) and the rest need not be read again.
            hashed, digest = self._hashes.upto(name, size) or (0, hashlib.sha256())
            if hashed < size:
                seen = 0
                async for piece in pieces:
                    if seen + len(piece) > hashed:
                        part = memoryview(piece)[hashed - seen :]
                        await to_thread.run_sync(digest.update, part)
                        hashed = seen + len(piece)
                    seen += len(piece)
                if seen != size:
                    raise BlobMissing(f"piece {name} does not hold its upload's {size} bytes")
            # 2. The piece's file, staged under a second name; promoting moves that one.
            token = secrets.token_hex(16)
            await to_thread.run_sync(_link, self._segment_path(name), self._staged_path(token))
        finally:
            await to_thread.run_sync(file.close)
        sha256 = digest.hexdigest()
        return StagedBlob(key=sha256, size=size, sha256=sha256, token=token)

    def _segment_path(self, name: str) -> Path:
        if not SEGMENT_NAME.fullmatch(name):
            raise ValueError(f"not a segment name: {name!r}")
        return self._uploads / name

    async def delete(self, key: str) -> None:
        await to_thread.run_sync(self.local_path(key).unlink, True)

    async def stat(self, key: str) -> BlobStat | None:
        try:
            st = await to_thread.run_sync(os.stat, self.local_path(key))
        except FileNotFoundError:
            return None
        return BlobStat(key=key, size=st.st_size)

    async def sweep_staging(self, older_than: timedelta) -> int:
        return await to_thread.run_sync(self._sweep_staging, older_than.total_seconds())

    def _sweep_staging(self, max_age: float) -> int:
        cutoff = time.time() - max_age
        dropped = 0
        for entry in os.scandir(self._staging) if self._staging.is_dir() else ():
            if _TOKEN.fullmatch(entry.name) and entry.stat().st_mtime < cutoff:
                Path(entry.path).unlink(missing_ok=True)
                dropped += 1
        return dropped


class _Writer:
    """Hashes and writes pieces in worker threads with one piece in flight, so the next
    piece is parsed while the last one is hashed and, at the same time, written (hashlib
    and file writes release the GIL). At most two pieces are held: memory does not follow
    the file size.

    Every FLUSH_EVERY bytes it also starts an fdatasync in the background, so that the
    disk takes the bytes while more arrive and the fsync that ends the upload has little
    left to write (for 256 MiB it was 0.13 s of a 0.58 s upload)."""

    FLUSH_EVERY = 32 * 1024 * 1024
    # A resumable upload's PATCH ends with an fsync its client waits for, as a whole upload
    # does, but its pieces are a few MiB: 8 MiB arriving in 12 ms took 21 ms to be on disk
    # without a flush under way, 16 with one every 2 MiB.
    PIECE_FLUSH_EVERY = 2 * 1024 * 1024

    def __init__(self, file: BinaryIO, digest: Any | None, flush_every: int = 0) -> None:
        self.file = file
        self._flush_every = flush_every or self.FLUSH_EVERY
        # None: nothing to hash (bytes appended to a piece whose earlier bytes this process
        # did not hash).
        self.digest = digest
        self.size = 0
        self._in_flight: list[asyncio.Future[Any]] = []
        self._flushing: asyncio.Future[None] | None = None
        self._flushed_at = 0

    async def write(self, piece: bytes) -> None:
        await self._settle()
        loop = asyncio.get_running_loop()
        self._in_flight = [loop.run_in_executor(None, self.file.write, piece)]
        if self.digest is not None:
            self._in_flight.append(loop.run_in_executor(None, self.digest.update, piece))
        self.size += len(piece)
        if self.size - self._flushed_at >= self._flush_every and self._flushing is None:
            self._flushed_at = self.size
            self._flushing = loop.run_in_executor(None, os.fdatasync, self.file.fileno())

    async def finish(self) -> None:
        """Wait for the last write, then fsync and close the file."""
        await self._settle()
        await self._settle_flush()
        await to_thread.run_sync(_sync_close, self.file)

    async def abandon(self, drop: Callable[[BinaryIO], None]) -> None:
        """Let the work in flight end (it must not race the close), then `drop` the file."""
        pending = [*self._in_flight, *([self._flushing] if self._flushing else [])]
        if pending:
            await asyncio.wait(pending)
        await to_thread.run_sync(drop, self.file)

    async def _settle(self) -> None:
        # Shielded: if this wait is cancelled, the work goes on and abandon() waits.
        for future in self._in_flight:
            await asyncio.shield(future)
        self._in_flight = []
        if self._flushing is not None and self._flushing.done():
            await self._settle_flush()

    async def _settle_flush(self) -> None:
        if self._flushing is not None:
            await asyncio.shield(self._flushing)
            self._flushing = None


async def _read_range(file: BinaryIO, length: int) -> AsyncGenerator[bytes, None]:
    with file:
        async with aclosing(read_file(file, length)) as chunks:
            async for chunk in chunks:
                yield chunk


async def _once(data: bytes) -> AsyncGenerator[bytes, None]:
    yield data


def _link(path: Path, staged: Path) -> None:
    """A second name for piece file `path` in staging (the piece's own goes with its
    upload), as new as a staged file (the staging sweep goes by age)."""
    staged.parent.mkdir(parents=True, exist_ok=True)
    os.link(path, staged)
    os.utime(staged)


def _read_cached(path: Path, offset: int, length: int) -> bytes | None:
    """The bytes if the page cache holds all of them, read on the calling thread without
    waiting for the disk (RWF_NOWAIT); None when they would have to come from the disk.

    A thread hop costs more than copying 256 KiB from the cache, and most reads of a
    chat's media are of files just sent. Opening the file may still touch the disk when
    its folder is cold; that is one small read, as in the thread it would be."""
    if _NOWAIT is None:
        return None
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        buffer = bytearray(length)
        read = os.preadv(fd, [buffer], offset, _NOWAIT)
    except OSError:  # BlockingIOError when not cached; a filesystem without RWF_NOWAIT
        return None
    finally:
        os.close(fd)
    return bytes(buffer) if read == length else None


def _read_at(path: Path, offset: int, length: int) -> bytes:
    with path.open("rb") as file:
        file.seek(offset)
        data = file.read(length)
    if len(data) < length:
        raise BlobMissing("blob is shorter than its recorded size")
    return data


def _store_whole(path: Path, data: bytes) -> str:
    """Write `data` to a new file at `path`, durably; its SHA-256. Nothing is left behind
    on failure."""
    file = _create(path)
    try:
        file.write(data)
        _sync_close(file)
    except BaseException:
        _close_unlink(file, path)
        raise
    return hashlib.sha256(data).hexdigest()


def _create(path: Path) -> BinaryIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("xb")


def _sync_close(file: BinaryIO) -> None:
    file.flush()
    os.fsync(file.fileno())
    file.close()


def _close_unlink(file: BinaryIO, path: Path) -> None:
    file.close()
    path.unlink(missing_ok=True)


def _open_at(path: Path, offset: int) -> BinaryIO:
    file = path.open("rb")
    file.seek(offset)
    return file


def _make_dirs(path: Path, root: Path) -> None:
    """Create `path` and its missing parents below `root`, fsyncing each new entry's parent so
    that a crash cannot lose a renamed blob's folder."""
    if path == root or path.is_dir():
        return
    _make_dirs(path.parent, root)
    try:
        path.mkdir()
    except FileExistsError:
        return
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
