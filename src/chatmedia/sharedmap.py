"""A memory map that every process of a node shares, and a lock over it.

Some state must be one for all the worker processes of a node: the rate-limit counters
(chatmedia.fairuse.counters) and the log of changed records (chatmedia.caching.ring). Each
lives in a small file mapped by every process; an exclusive `flock` on the file, which
queues waiters in the kernel, makes an update atomic across processes, and a thread lock
does the same within one. Without a file the map is the calling process's alone.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_SHM = "/dev/shm"  # noqa: S108 (memory, not disk; mkstemp makes names unguessable)


def create_node_file(prefix: str, size: int, directory: str | None = None) -> str:
    """A new zeroed file of `size` bytes for a node's processes to map, in /dev/shm when it
    can be written; the caller removes it."""
    where = directory or (_SHM if os.access(_SHM, os.W_OK) else None)
    fd, path = tempfile.mkstemp(prefix=prefix, dir=where)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
    return path


class SharedMap:
    """`size` bytes mapped from the file at `path` (created, zeroed, when `create` and it
    does not exist), or from memory of this process alone when `path` is None."""

    def __init__(self, path: str | None, size: int, *, create: bool = False) -> None:
        self._fd = None
        if path is not None:
            self._fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o600)
            with self._file_locked():  # two processes creating it at once grow it once
                if os.fstat(self._fd).st_size < size:
                    os.ftruncate(self._fd, size)
        self.map = mmap.mmap(-1 if self._fd is None else self._fd, size)
        self._thread_lock = threading.Lock()

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive use of the map: within this process, and across the node's."""
        with self._thread_lock, self._file_locked():
            yield

    @contextmanager
    def _file_locked(self) -> Iterator[None]:
        if self._fd is None:
            yield
            return
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
