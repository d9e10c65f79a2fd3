"""Giving memory back once a burst of requests is over.

Concurrent uploads grow a worker's heap (multipart buffers, pieces in flight, SQLAlchemy's
rows); Python frees those objects at once, but glibc's allocator keeps the freed pages of
its heaps and arenas mapped, so a worker that served a burst stays as large as the burst
made it. `malloc_trim` returns them to the system. It walks the heap (a millisecond or so),
so it runs only when the worker has served requests and then none for a second. Elsewhere
than on glibc there is nothing to call, and nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

import anyio

QUIET_SECONDS = 1.0


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    function = getattr(ctypes.CDLL(name), "malloc_trim", None)
    return None if function is None else function


_trim = _malloc_trim()


async def trim_when_quiet(served: Callable[[], int], stopping: anyio.Event) -> None:
    """Until `stopping`: give freed heap memory back whenever `served` (a count of requests
    answered) has moved since the last time, then stood still for QUIET_SECONDS."""
    if _trim is None:
        return
    trimmed = seen = served()
    while not stopping.is_set():
        with anyio.move_on_after(QUIET_SECONDS):
            await stopping.wait()
        now = served()
        if now == seen and now != trimmed:
            _trim(0)
            trimmed = now
        seen = now
