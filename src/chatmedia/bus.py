"""Wake-ups for this process's event streams and webhook dispatcher when events are logged.
The bus carries no events: readers query the event log, the source of truth, whenever they
are woken, so a wake-up that is missed or merged loses nothing. The process's event
streams share that reading through the bus's `feed` (chatmedia.fanout)."""

from __future__ import annotations

import anyio

from chatmedia.fanout import Feed


class EventBus:
    """A version counter and a way to wait for it to move; and the feed of the process's
    event streams, which it wakes."""

    def __init__(self) -> None:
        self.version = 0
        self._moved: anyio.Event | None = None
        self.feed = Feed()

    def notify(self) -> None:
        """Something was logged: wake every waiter."""
        self.version += 1
        if self._moved is not None:
            self._moved.set()
            self._moved = None

    async def wait(self, version: int) -> None:
        """Return once the version is past `version` (at once if it already is). Read the
        version before querying, then wait with it: nothing logged in between is missed."""
        if self.version != version:
            return
        if self._moved is None:
            self._moved = anyio.Event()
        await self._moved.wait()
