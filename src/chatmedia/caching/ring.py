"""The node's log of changed records: a ring of names in a map every process of the node
shares (chatmedia.sharedmap), so that a change one worker commits is seen by every other
worker on its next lookup, before that worker answers from its cache again.

The head of the map counts the names ever published; name number n lives in slot
n % SLOTS. A reader remembers the count it has seen and, when the head moves, reads the
names since; one that fell more than SLOTS behind has missed some and must forget all.
Reading the count takes no lock (one aligned 8-byte load), so a lookup that finds nothing
changed costs next to nothing.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from chatmedia.sharedmap import SharedMap

ENV_NAME = "CHATMEDIA_NODE_CHANGES"
SLOTS = 4096
_COUNT = struct.Struct("<Q")
_SLOT_SIZE = 64  # a length byte, then the name: at most 63 bytes
_FIRST_SLOT = 64
SIZE = _FIRST_SLOT + SLOTS * _SLOT_SIZE  # 256 KiB


class ChangeRing:
    """The ring in the file at `path` (created when missing), or in this process's memory
    alone when `path` is None."""

    def __init__(self, path: str | None = None) -> None:
        self._shared = SharedMap(path, SIZE, create=True)
        self._map = self._shared.map

    def published(self) -> int:
        """How many names were ever published (read without the lock)."""
        count: int = _COUNT.unpack_from(self._map, 0)[0]
        return count

    def publish(self, names: Iterable[str]) -> None:
        """Append the names (ids of at most 63 bytes)."""
        with self._shared.locked():
            count = self.published()
            for name in names:
                encoded = name.encode()
                if len(encoded) >= _SLOT_SIZE:
                    raise ValueError(f"a changed record's name is too long: {name!r}")
                offset = _FIRST_SLOT + (count % SLOTS) * _SLOT_SIZE
                self._map[offset : offset + 1 + len(encoded)] = bytes((len(encoded),)) + encoded
                count += 1
            _COUNT.pack_into(self._map, 0, count)

    def since(self, seen: int) -> tuple[list[str] | None, int]:
        """The names published after the first `seen` (None: too many to still be in the
        ring), and the count they bring it to."""
        with self._shared.locked():
            count = self.published()
            if count - seen > SLOTS:
                return None, count
            names = []
            for n in range(seen, count):
                offset = _FIRST_SLOT + (n % SLOTS) * _SLOT_SIZE
                length = self._map[offset]
                names.append(self._map[offset + 1 : offset + 1 + length].decode())
            return names, count
