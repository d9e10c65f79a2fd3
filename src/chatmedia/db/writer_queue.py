"""The queue that the writers of every process of a node join for one SQLite database.

SQLite lets one writer in at a time, and a writer that finds the database locked waits in
its busy handler, which sleeps (1, 2, 5 … up to 100 ms a time) and ignores arrival order:
two worker processes' writers meeting there made small uploads slower with two workers
than with one. So before BEGIN IMMEDIATE a process's writer (and the group of writers it
commits for, chatmedia.db.sqlite) takes an exclusive `flock` on a file beside the database.
The kernel queues the waiters and wakes the next one as soon as the holder lets go: the
writers of every process queue without sleeping, each process's queue still sharing its
commits, and SQLite's busy handler is left to writers that are not chatmedia's.
"""

from __future__ import annotations

import fcntl
import os
import threading
from dataclasses import dataclass

import anyio
from anyio import to_thread


@dataclass
class _Wait:
    """A wait in a thread that its caller may give up on: whoever finishes last closes."""

    done: bool = False
    abandoned: bool = False


class NodeWriterLock:
    """The lock of the file at `path` (None: this process is the database's only one),
    waited for at most `patience` seconds."""

    def __init__(self, path: str | None, patience: float) -> None:
        self._path = path
        self._patience = patience
        self._handoff = threading.Lock()

    async def acquire(self) -> int | None:
        """Wait for the lock (TimeoutError after the patience): the file descriptor that
        holds it, for `release`. Free, it is taken without a thread hop."""
        if self._path is None:
            return None
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            pass  # another process writes: wait in a thread, where the kernel wakes us
        except BaseException:
            os.close(fd)
            raise
        wait = _Wait()
        try:
            with anyio.fail_after(self._patience):
                await to_thread.run_sync(self._wait, fd, wait, abandon_on_cancel=True)
        except BaseException:
            with self._handoff:
                if wait.done:
                    os.close(fd)
                else:  # the thread closes it when the lock comes
                    wait.abandoned = True
            raise
        return fd

    def _wait(self, fd: int, wait: _Wait) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        finally:
            with self._handoff:
                wait.done = True
                if wait.abandoned:
                    os.close(fd)

    @staticmethod
    def release(fd: int | None) -> None:
        """Let the next writer of the node in."""
        if fd is not None:
            os.close(fd)
