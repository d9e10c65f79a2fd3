"""The records a download needs, kept in each worker process: a file's row by id and by
stored name, and an active key by the hash of its secret.

The contract that makes this safe: a change that hides or alters a cached record (a
deletion, a key's revocation, a link revocation, an erasure, a quarantine) is noted by the
repository that makes it (chatmedia.db.changes), and once its transaction commits:

- every process of the node hears of it through the node's ChangeRing before it next
  answers from its cache (the committing process publishes it before it answers);
- every other node hears of it through PostgreSQL's NOTIFY, which `chatmedia.db.listen`
  hands to `forget_remote`. A cache on PostgreSQL is trusted only while that listener has
  proved its connection alive within the last TRUST_SECONDS, so a change is seen within
  that time even when notifications are lost: an untrusted cache answers nothing, and
  lookups go to the database.

A lookup that went to the database keeps what it read only if nothing it read changed
meanwhile (`version` before the read, `keep_*` after). A key's expiry is checked on every
use by the caller, from the cached record. Misses are never cached: a record created later
must be found. Each kind is a bounded LRU.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Generic, TypeVar

from chatmedia.caching.ring import ChangeRing
from chatmedia.db.changes import FILE, KEY
from chatmedia.db.keys import ActiveKey
from chatmedia.models import FileRecord

KEYS_KEPT = 1024

_V = TypeVar("_V")
Version = tuple[int, int]


class _Lru(Generic[_V]):
    """At most `size` values by key, the least recently used going first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.values: OrderedDict[str, _V] = OrderedDict()

    def get(self, key: str) -> _V | None:
        value = self.values.get(key)
        if value is not None:
            self.values.move_to_end(key)
        return value

    def put(self, key: str, value: _V) -> _V | None:
        """Keep the value; the one it pushed out, if any."""
        self.values[key] = value
        self.values.move_to_end(key)
        if len(self.values) > self.size:
            return self.values.popitem(last=False)[1]
        return None


class RecordCache:
    """This process's cache of files (`files` at most; 0 turns the cache off) and keys,
    kept true by the node's `ring` and, on PostgreSQL (`trusted` False until the listener
    says otherwise), by notifications from the other nodes."""

    def __init__(self, ring: ChangeRing, files: int, *, trusted: bool = True) -> None:
        self._ring = ring
        self._seen = ring.published()
        self._files: _Lru[FileRecord] = _Lru(files)
        self._ids_by_name: dict[str, str] = {}
        self._keys: _Lru[ActiveKey] = _Lru(KEYS_KEPT if files else 0)
        self._hash_by_key_id: dict[str, str] = {}
        self._remote = 0  # changes heard from other nodes so far
        self._trusted_until = math.inf if trusted else 0.0

    # Lookups.

    def file(self, file_id: str) -> FileRecord | None:
        """The file with this id, if kept and still as it is in the database."""
        return self._files.get(file_id) if self._current() else None

    def file_named(self, stored_name: str) -> FileRecord | None:
        """The file with this stored name, if kept and still as it is in the database."""
        file_id = self._ids_by_name.get(stored_name)
        return None if file_id is None else self.file(file_id)

    def key(self, key_hash: str) -> ActiveKey | None:
        """The active key whose secret has this hash, if kept and not revoked since."""
        return self._keys.get(key_hash) if self._current() else None

    # Keeping what a lookup read from the database.

    def version(self) -> Version:
        """Taken before reading from the database, and given back to `keep_*`."""
        return self._ring.published(), self._remote

    def keep_file(self, record: FileRecord, version: Version) -> None:
        """Keep a file read from the database, unless it changed since `version`."""
        if not self._files.size or not self._unchanged_since(version, FILE + record.id):
            return
        old = self._files.values.get(record.id)
        if old is not None:
            self._ids_by_name.pop(old.stored_name, None)
        pushed = self._files.put(record.id, record)
        if pushed is not None:
            self._ids_by_name.pop(pushed.stored_name, None)
        self._ids_by_name[record.stored_name] = record.id

    def keep_key(self, key_hash: str, key: ActiveKey, version: Version) -> None:
        """Keep a key read from the database, unless it changed since `version`."""
        if not self._keys.size or not self._unchanged_since(version, KEY + key.id):
            return
        pushed = self._keys.put(key_hash, key)
        if pushed is not None:
            self._hash_by_key_id.pop(pushed.id, None)
        self._hash_by_key_id[key.id] = key_hash

    # Hearing of changes.

    def forget_remote(self, names: Iterable[str]) -> None:
        """Changes another node made (or this one: hearing them twice costs nothing)."""
        self._remote += 1
        self._forget(names)

    def trust_until(self, moment: float) -> None:
        """Answer from the cache until `moment` (time.monotonic())."""
        self._trusted_until = moment

    def distrust(self) -> None:
        """Changes may have been missed: forget everything, and answer nothing until
        trusted again."""
        self._trusted_until = 0.0
        self._remote += 1
        self._clear()

    def _current(self) -> bool:
        """Apply the node's changes not yet seen; False when the cache may not answer."""
        if time.monotonic() >= self._trusted_until:
            return False
        if self._ring.published() != self._seen:
            names, self._seen = self._ring.since(self._seen)
            if names is None:
                self._clear()
            else:
                self._forget(names)
        return True

    def _unchanged_since(self, version: Version, name: str) -> bool:
        published, remote = version
        if remote != self._remote or not self._current():
            return False
        if published == self._seen:
            return True
        changed, _ = self._ring.since(published)
        return changed is not None and name not in changed

    def _forget(self, names: Iterable[str]) -> None:
        for name in names:
            if name.startswith(FILE):
                record = self._files.values.pop(name[len(FILE) :], None)
                if record is not None:
                    self._ids_by_name.pop(record.stored_name, None)
            elif name.startswith(KEY):
                key_hash = self._hash_by_key_id.pop(name[len(KEY) :], None)
                if key_hash is not None:
                    self._keys.values.pop(key_hash, None)

    def _clear(self) -> None:
        self._files.values.clear()
        self._ids_by_name.clear()
        self._keys.values.clear()
        self._hash_by_key_id.clear()
