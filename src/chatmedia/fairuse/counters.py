"""Rate-limit counters that every worker process of a node shares: a storage of the
`limits` package kept in a shared memory map.

The `limits` package keeps its in-memory counters in one process; granian runs several, so
a limit counted in each would let a client through once per worker. Here the counters are
slots of a map every worker shares (chatmedia.sharedmap: the server's main process creates
the file and names it in CHATMEDIA_NODE_COUNTERS; a process started without it keeps
counters of its own), updated under the map's lock.

A slot holds one key's counts: its hash, when the slot may be reused, and a sliding
window's index, current and previous counts (or a plain counter's value). The table is
open-addressed with a bounded probe; when every probed slot is live, the one that lapses
soonest is taken over, so the table can be full without failing a request (that key's count
starts over: never a refusal of someone else).
"""

from __future__ import annotations

import hashlib
import struct
import threading
import time
from math import floor

from limits.storage import SlidingWindowCounterSupport, Storage

from chatmedia.sharedmap import SharedMap, create_node_file

ENV_NAME = "CHATMEDIA_NODE_COUNTERS"
# hash, reusable after (ms), window index, current count, previous count.
_SLOT = struct.Struct("<QqqII")
SLOTS = 1 << 15  # 32,768 keys live at once: 1 MiB
_PROBES = 16
# Before the slots: when a plain counter was last started (ms), read without the lock.
_HEADER = struct.Struct("<q")
_FIRST_SLOT = 64
SIZE = _FIRST_SLOT + _SLOT.size * SLOTS


def create_counters_file(directory: str | None = None) -> str:
    """A new zeroed counters file for a node's workers to share; the caller removes it."""
    return create_node_file("chatmedia-counters-", SIZE, directory)


def _hash(key: str) -> int:
    # Never 0, which marks an empty slot.
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") or 1


class NodeCounters(Storage, SlidingWindowCounterSupport):
    """The counters in the file at `path` (None: in memory of this process alone)."""

    STORAGE_SCHEME = ["chatmedia-node"]

    def __init__(self, path: str | None = None) -> None:
        super().__init__()
        self._shared = SharedMap(path, SIZE)
        self._map = self._shared.map
        self._locked = self._shared.locked
        self._last = threading.local()

    @property
    def base_exceptions(self) -> type[Exception]:
        return OSError

    def _find(self, key_hash: int, now_ms: int) -> tuple[int, tuple[int, int, int, int, int]]:
        """The slot of `key_hash`: its offset and fields; for a key without a live slot,
        the slot to give it (the first lapsed one, else the one that lapses soonest) with
        fields of zeros. A key always lives before the first slot never used (a slot is
        never emptied again, only left to lapse), so a lookup stops there."""
        start = key_hash % SLOTS
        free = oldest = -1
        oldest_until = 0
        for probe in range(_PROBES):
            offset = _FIRST_SLOT + ((start + probe) % SLOTS) * _SLOT.size
            fields = _SLOT.unpack_from(self._map, offset)
            if fields[1] > now_ms:  # live
                if fields[0] == key_hash:
                    return offset, fields
                if oldest < 0 or fields[1] < oldest_until:
                    oldest, oldest_until = offset, fields[1]
            else:
                if free < 0:
                    free = offset
                if fields[0] == 0:  # never used
                    break
        return (free if free >= 0 else oldest), (key_hash, 0, 0, 0, 0)

    # The sliding window counter (what the rate limits use).

    def _window(self, key_hash: int, expiry: int, now: float) -> tuple[int, int, int, int, float]:
        """The slot's offset, window index, previous and current counts, and how far into
        the window `now` is (0-1)."""
        offset, (_, _, index, current, previous) = self._find(key_hash, int(now * 1000))
        window = int(now // expiry)
        if index == window - 1:
            previous, current = current, 0
        elif index != window:
            previous, current = 0, 0
        return offset, window, previous, current, (now / expiry) % 1

    def acquire_sliding_window_entry(
        self, key: str, limit: int, expiry: int, amount: int = 1
    ) -> bool:
        if amount > limit:
            return False
        now = time.time()
        key_hash = _hash(key)
        with self._locked():
            offset, window, previous, current, elapsed = self._window(key_hash, expiry, now)
            if floor(previous * (1 - elapsed) + current) + amount > limit:
                return False
            reusable_after = (window + 2) * expiry * 1000
            fields = (key_hash, reusable_after, window, current + amount, previous)
            _SLOT.pack_into(self._map, offset, *fields)
        self._last.window = (previous * (1 - elapsed) + current + amount, (1 - elapsed) * expiry)
        return True

    def last_acquired(self) -> tuple[float, float]:
        """After an entry was acquired, in the same thread: the window's weighted count
        then, and the seconds until the window moves on (saving a second look to tell a
        client how many requests it has left)."""
        window: tuple[float, float] = self._last.window
        return window

    def get_sliding_window(self, key: str, expiry: int) -> tuple[int, float, int, float]:
        now = time.time()
        with self._locked():
            _, _, previous, current, elapsed = self._window(_hash(key), expiry, now)
        previous_ttl = (1 - elapsed) * expiry if previous else 0.0
        return previous, previous_ttl, current, (1 - elapsed) * expiry + expiry

    def clear_sliding_window(self, key: str, expiry: int) -> None:
        self.clear(key)

    # A plain counter that lapses (what the lockout uses).

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now_ms = int(time.time() * 1000)
        key_hash = _hash(key)
        with self._locked():
            offset, (_, until, _, count, _) = self._find(key_hash, now_ms)
            if until <= now_ms:
                until, count = now_ms + expiry * 1000, 0
                _HEADER.pack_into(self._map, 0, now_ms)
            _SLOT.pack_into(self._map, offset, key_hash, until, 0, count + amount, 0)
        return count + amount

    def plain_started_since(self, moment: float) -> bool:
        """Whether any plain counter was started after `moment` (time.time()): read
        without taking the lock, so that looking for a counter that nobody started costs
        next to nothing."""
        started_ms: int = _HEADER.unpack_from(self._map, 0)[0]
        return started_ms >= moment * 1000

    def get(self, key: str) -> int:
        return self.plain(key)[0]

    def get_expiry(self, key: str) -> float:
        count, lapses_at = self.plain(key)
        return lapses_at if count else time.time()

    def plain(self, key: str) -> tuple[int, float]:
        """A plain counter's count and when it lapses (time.time()), in one look; (0, 0)
        when it is not running."""
        now_ms = int(time.time() * 1000)
        with self._locked():
            _, (_, until, _, count, _) = self._find(_hash(key), now_ms)
        return (count, until / 1000) if until > now_ms else (0, 0.0)

    def clear(self, key: str) -> None:
        with self._locked():
            offset, fields = self._find(_hash(key), int(time.time() * 1000))
            if fields[1]:  # lapsed from now on; not emptied (see _find)
                _SLOT.pack_into(self._map, offset, fields[0], 0, 0, 0, 0)

    def check(self) -> bool:
        return True

    def reset(self) -> int | None:
        with self._locked():
            self._map[:] = bytes(SIZE)
        return None
