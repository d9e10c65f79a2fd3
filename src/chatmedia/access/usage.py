"""When keys were last used, gathered in memory and written in batches: the listing shows
it to the minute, and no request pays a database write for it."""

from __future__ import annotations

from datetime import datetime


class KeyUse:
    """Last-use times by key id, truncated to the minute, since the last `drain`."""

    def __init__(self) -> None:
        self._seen: dict[str, datetime] = {}

    def record(self, key_id: str, now: datetime) -> None:
        """Note a use of the key (a dictionary write: cheap enough for every request)."""
        self._seen[key_id] = now.replace(second=0, microsecond=0)

    def drain(self) -> dict[str, datetime]:
        """The times gathered so far, forgetting them."""
        seen, self._seen = self._seen, {}
        return seen
