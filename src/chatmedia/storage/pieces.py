"""The files of resumable uploads' pieces on local disk (chatmedia.storage.local): how a
writer appends to a piece, and what this process knows of the pieces' hashes.

A writer appends to an earlier piece only while holding the piece's file lock (flock,
released by the kernel if the writer dies), and only when the file is still at its path
and holds exactly the bytes that count: a writer that lost its claim and left bytes that
do not count, or one still at the file, makes the next writer start a piece of its own.
Bytes are never taken out of a piece except by the writer that added them, under the
lock, while they are still its end (or, when a finished upload's piece becomes its blob,
what lies past the upload's end). So a late writer can never change a byte that counts.

The SHA-256 of a piece's bytes is worked out as they are written; this process keeps it
for the pieces it wrote last, so that a finished upload whose bytes all came through it
need not hash them again. Whatever another process did to a piece since shows in the
piece's size, and the hash then goes unused."""

from __future__ import annotations

import fcntl
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, BinaryIO

# How many pieces' hashes a process keeps (a few hundred bytes each).
KEPT_HASHES = 512


def open_to_append(path: Path, size: int) -> BinaryIO | None:
    """Piece file `path` open at its end and locked, if it holds exactly `size` bytes and
    no other writer is at it; None otherwise (or if it is gone)."""
    try:
        file = path.open("r+b")
    except FileNotFoundError:
        return None
    if not _lock(file, path) or os.fstat(file.fileno()).st_size != size:
        file.close()
        return None
    file.seek(size)
    return file


def open_to_stage(path: Path, size: int) -> BinaryIO | None:
    """Piece file `path` open and locked, holding at least `size` bytes (what lies past them
    is cut off: no writer's); None if another writer is at it, it is shorter, or gone."""
    try:
        file = path.open("r+b")
    except FileNotFoundError:
        return None
    actual = os.fstat(file.fileno()).st_size if _lock(file, path) else -1
    if actual < size:
        file.close()
        return None
    if actual > size:
        os.truncate(file.fileno(), size)
        os.fsync(file.fileno())
    return file


def cut_back(path: Path, start: int, end: int) -> None:
    """Take a writer's bytes `start`..`end` off piece file `path` again, if they are still
    its end and nobody is at it (else they stay, unused)."""
    file = open_to_append(path, end)
    if file is not None:
        with file:
            os.truncate(file.fileno(), start)
            os.fsync(file.fileno())


def undo_write(file: BinaryIO, path: Path, appended_at: int | None) -> None:
    """Take back a writer's failed write: its bytes off the earlier piece it appended to at
    `appended_at` (while it still holds the piece: closing the file ends the lock), or its
    own new piece `path`."""
    try:
        if appended_at is not None and not file.closed:
            file.flush()
            os.truncate(file.fileno(), appended_at)
            os.fsync(file.fileno())
    finally:
        file.close()
    if appended_at is None:
        path.unlink(missing_ok=True)


def _lock(file: BinaryIO, path: Path) -> bool:
    """Lock `file` for this writer alone, unless another has it or it is no longer at
    `path` (moved away as a blob, or removed, while we waited)."""
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return os.stat(path).st_ino == os.fstat(file.fileno()).st_ino
    except (BlockingIOError, FileNotFoundError):
        return False


class PieceHashes:
    """The SHA-256 state of the pieces this process wrote last, by piece name, with how
    many bytes it covers."""

    def __init__(self) -> None:
        self._kept: OrderedDict[str, tuple[int, Any]] = OrderedDict()

    def get(self, name: str, size: int) -> Any | None:
        """A copy of the hash of piece `name`'s first `size` bytes, if this process has it."""
        kept = self._kept.get(name)
        return kept[1].copy() if kept is not None and kept[0] == size else None

    def upto(self, name: str, size: int) -> tuple[int, Any] | None:
        """How many of piece `name`'s first `size` bytes this process hashed, and a copy of
        that hash, if it did."""
        kept = self._kept.get(name)
        return (kept[0], kept[1].copy()) if kept is not None and kept[0] <= size else None

    def keep(self, name: str, size: int, digest: Any) -> None:
        self._kept[name] = (size, digest)
        self._kept.move_to_end(name)
        while len(self._kept) > KEPT_HASHES:
            self._kept.popitem(last=False)

    def forget(self, name: str) -> None:
        self._kept.pop(name, None)

    def rename(self, name: str, new: str) -> None:
        """Keep what piece `name` had under `new` (its bytes are now that piece's)."""
        kept = self._kept.pop(name, None)
        if kept is not None:
            self.keep(new, *kept)

    def forget_upload(self, upload_id: str) -> None:
        for name in [n for n in self._kept if n.startswith(f"{upload_id}/")]:
            del self._kept[name]
