"""When keys were last used, gathered in memory and written in batches: the listing shows
it to the minute, and no request pays a database write for it."""

from __future__ import annotations

import time
from datetime import UTC, datetime


class KeyUse:
    """Last-use times by key id, to the minute, since the last `drain`."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def record(self, key_id: str) -> None:
        """Note a use of the key now (a dictionary write: cheap enough for every request)."""
        self._seen[key_id] = int(time.time()) // 60

    def drain(self) -> dict[str, datetime]:
        """The times gathered so far, forgetting them."""
        seen, self._seen = self._seen, {}
        return {k: datetime.fromtimestamp(minute * 60, UTC) for k, minute in seen.items()}
