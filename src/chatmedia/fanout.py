"""One reading of the event log per process, shared by all of its event streams.

Each open stream is a `Subscription` to its process's `Feed`. When the bus says something
was logged here (and every poll interval, for what other processes logged), one stream
reads what is new, once for everyone, and hands each subscription the events its audience
may see; the others sleep. A message then costs one query per process, not one per
stream, and a thousand idle streams one poll per interval, not a thousand.

The reader is whichever stream waits with nothing to send (the feed passes the role on
when it gets something): there is a reader exactly when someone waits, and no task of its
own to start, stop or own.

Nothing is missed or repeated because the log's ids commit in order (`Events.append`):
reading "after the last id read" never skips an event. A subscription joins the feed at
its head H and from then on gets every event after H; what came before, its stream reads
from the log itself, up to H, and only then takes from its queue. The queue is bounded: a
subscription that would overflow it is dropped from the feed, and its stream reads the
log itself from where it was and joins again. No stream ever waits for another.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import anyio

from chatmedia.access.principal import conversation_matches
from chatmedia.models import Event

if TYPE_CHECKING:
    from chatmedia.bus import EventBus

# Events a subscription may hold untaken; past that its stream reads the log itself. The
# events are shared by every queue, so a queue costs a pointer per event.
QUEUE_LIMIT = 256
PAGE = 200  # events per read of the log


@dataclass(frozen=True, slots=True)
class Audience:
    """Whose events a stream receives: one tenant's, only of conversation `only` when set,
    and only of conversations matching `patterns` (exact ids and `prefix*`) when set."""

    tenant: str
    only: str | None = None
    patterns: tuple[str, ...] | None = None

    @property
    def key(self) -> tuple[str, str | None]:
        """The tenant and the conversation followed (None: all): only events of the same
        tenant and conversation, or of the same tenant for None, can be wanted."""
        return self.tenant, self.only

    def wants(self, event: Event) -> bool:
        """Whether the event is for this audience (`Conversations.clause` in Python: an
        event of no conversation is outside any restriction)."""
        if event.tenant != self.tenant:
            return False
        conversation = event.conversation_id
        if self.only is not None and conversation != self.only:
            return False
        if self.patterns is None:
            return True
        return conversation is not None and conversation_matches(self.patterns, conversation)


class EventLog(Protocol):
    """The event log as streams read it: file links in events signed as they are read."""

    @property
    def bus(self) -> EventBus:
        """What wakes the readers when this process logs an event."""
        ...

    async def newest(self) -> int:
        """The newest event's id (0: none)."""
        ...

    async def read(
        self, after: int, limit: int, audience: Audience | None = None, upto: int | None = None
    ) -> list[Event]:
        """Up to `limit` events with ids after `after` (and up to `upto`), oldest first: of
        every tenant, or those the log selects for `audience` (its SQL may select a few
        more: the caller filters with `Audience.wants`)."""
        ...


class Subscription:
    """One stream's place in the feed: the events for it that it has not taken yet."""

    __slots__ = ("audience", "cursor", "joined", "queue")

    def __init__(self, audience: Audience, cursor: int) -> None:
        self.audience = audience
        # Every event for the audience up to this id has been handed to the stream.
        self.cursor = cursor
        # A list, not a deque: it is short, and a thousand empty deques weigh 700 KiB.
        self.queue: list[Event] = []
        # False while the stream must read the log itself: before it joins, after overflow.
        self.joined = False

    @property
    def has_news(self) -> bool:
        """Whether the stream has something to do: events to take, or the log to read."""
        return bool(self.queue) or not self.joined

    def take(self) -> Event | None:
        """The next event, in id order, or None for now. Events up to the cursor are
        skipped: a stream that starts after the feed's head gets them from its queue too."""
        while self.queue:
            event = self.queue.pop(0)
            if event.seq > self.cursor:
                self.cursor = event.seq
                return event
        return None


class Feed:
    """A process's shared reading of the event log (the module's docstring tells how)."""

    def __init__(self, queue_limit: int = QUEUE_LIMIT, page: int = PAGE) -> None:
        self.queue_limit = queue_limit
        self.page = page
        # The id of the last event read and handed out; None while nobody follows.
        self._head: int | None = None
        # The joined subscriptions by (tenant, conversation followed or None for all).
        self._subscriptions: dict[tuple[str, str | None], set[Subscription]] = {}
        # Subscriptions of streams waiting with nothing to send, longest waiting first.
        self._idle: dict[Subscription, None] = {}
        # What those streams sleep on: one per audience (streams of one conversation have
        # the same news), rung and forgotten when the audience has news or a reader is due.
        self._bells: dict[Audience, anyio.Event] = {}
        self._reader: Subscription | None = None
        # When the last read began, and the bus's version then; whether a page was full.
        self._read_at = -math.inf
        self._read_version = -1
        self._behind = False

    async def join(self, log: EventLog, sub: Subscription) -> int:
        """From now on, hand `sub` every event for it after the id returned (the stream
        reads those up to that id from the log itself)."""
        if self._head is None:
            newest = await log.newest()
            if self._head is None:  # no other stream set it meanwhile
                self._head = newest
        sub.joined = True
        self._subscriptions.setdefault(sub.audience.key, set()).add(sub)
        return self._head

    def leave(self, sub: Subscription) -> None:
        """The stream ended. Without streams the feed forgets its head: the next one to
        join starts at the log's end, not where a stream last read hours ago."""
        self._drop(sub)
        if self._reader is sub:
            self._hand_over()
        if not self._subscriptions:
            self._head = None
            self._read_version, self._read_at, self._behind = -1, -math.inf, False

    async def wait(self, log: EventLog, sub: Subscription, until: float, poll: float) -> None:
        """Return once `sub` has news, or at `until` (`anyio.current_time()`). Meanwhile, if
        no other stream reads the log for everyone, this one does: when the bus moves, and
        every `poll` seconds (events that other processes log wake nobody here)."""
        try:
            while not sub.has_news and (now := anyio.current_time()) < until:
                if self._reader is None:
                    self._reader = sub
                if self._reader is not sub:
                    self._idle[sub] = None
                    with anyio.move_on_after(until - now):
                        await self._bell(sub.audience).wait()
                elif self._behind or log.bus.version != self._read_version:
                    await self._read(log)
                elif now - self._read_at < poll:
                    with anyio.move_on_after(min(until, self._read_at + poll) - now):
                        await log.bus.wait(self._read_version)
                else:
                    await self._read(log)  # the poll
        finally:
            self._idle.pop(sub, None)
            if self._reader is sub:
                self._hand_over()

    async def _read(self, log: EventLog) -> None:
        """Read a page of what is new and hand it out. (A read cut short, its stream gone,
        counts for nothing: the next reader reads at once.)"""
        assert self._head is not None, "read by a stream that has not joined"
        version, began = log.bus.version, anyio.current_time()
        batch = await log.read(self._head, self.page)
        self._read_version, self._read_at = version, began
        self._behind = len(batch) == self.page
        if batch:
            self._head = batch[-1].seq
            for event in batch:
                self._publish(event)

    def _publish(self, event: Event) -> None:
        """Queue the event for every subscription that wants it: those following its
        conversation, and those following all of their tenant's."""
        keys = {(event.tenant, event.conversation_id), (event.tenant, None)}
        for key in keys:
            for sub in list(self._subscriptions.get(key, ())):  # a copy: some may overflow
                if not sub.audience.wants(event):
                    continue
                if len(sub.queue) < self.queue_limit:
                    sub.queue.append(event)
                    self._idle.pop(sub, None)  # it has news: not one to pass the reading to
                else:
                    self._drop(sub)  # its stream reads the log from its cursor, then rejoins
                self._ring(sub.audience)

    def _drop(self, sub: Subscription) -> None:
        sub.joined = False
        sub.queue.clear()
        self._idle.pop(sub, None)
        joined = self._subscriptions.get(sub.audience.key)
        if joined is not None:
            joined.discard(sub)
            if not joined:
                del self._subscriptions[sub.audience.key]

    def _hand_over(self) -> None:
        """The reader stops waiting: the stream that has waited longest reads next."""
        self._reader = None
        if self._idle:
            sub = next(iter(self._idle))
            del self._idle[sub]
            self._reader = sub
            self._ring(sub.audience)  # the others of its audience go back to sleep

    def _bell(self, audience: Audience) -> anyio.Event:
        bell = self._bells.get(audience)
        if bell is None:
            bell = self._bells[audience] = anyio.Event()
        return bell

    def _ring(self, audience: Audience) -> None:
        if (bell := self._bells.pop(audience, None)) is not None:
            bell.set()


async def follow(
    feed: Feed,
    log: EventLog,
    audience: Audience,
    after: int | None,
    keepalive: float,
    poll: float,
) -> AsyncIterator[Event | None]:
    """The audience's events after id `after` (None: from the log's end), in id order,
    each once; None after each `keepalive` seconds of silence."""
    sub = Subscription(audience, await log.newest() if after is None else after)
    quiet_since = anyio.current_time()
    try:
        while True:
            # 1. Join the feed (again, after an overflow); read what it will not bring.
            if not sub.joined:
                upto = await feed.join(log, sub)
                while sub.cursor < upto:
                    page = await log.read(sub.cursor, feed.page, audience, upto)
                    for logged in page:
                        sub.cursor = logged.seq
                        if audience.wants(logged):
                            yield logged
                            quiet_since = anyio.current_time()
                    if len(page) < feed.page:
                        sub.cursor = upto
            # 2. What the feed brought.
            while (event := sub.take()) is not None:
                yield event
                quiet_since = anyio.current_time()
            # 3. Wait for more, and say that the stream is alive after a silence.
            if anyio.current_time() - quiet_since >= keepalive:
                yield None
                quiet_since = anyio.current_time()
            else:
                await feed.wait(log, sub, quiet_since + keepalive, poll)
    finally:
        feed.leave(sub)
