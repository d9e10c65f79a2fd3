"""The shared feed of event streams (chatmedia.fanout), over an event log in memory: each
subscriber gets what its audience may see, once and in order, however many there are,
wherever they start and however slowly they read."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatmedia.access.principal import Principal
from chatmedia.bus import EventBus
from chatmedia.fanout import Audience, Feed, follow
from chatmedia.models import Event

NOW = datetime(2026, 5, 1, tzinfo=UTC)
TENANTS = ("t1", "t2")
CONVERSATIONS = ("c1", "c2", "cx", "d1", None)
PATTERNS = (None, ("c1",), ("c*",), ("d1", "cx"), ())
FOREVER = 3600.0  # keep-alives and polls that never come during a test


@dataclass
class MemoryLog:
    """An event log in a list; `read` for an audience selects by tenant only (as an SQL
    clause may select more than the audience wants), so the stream must filter itself."""

    bus: EventBus = field(default_factory=EventBus)
    events: list[Event] = field(default_factory=list)
    shared_reads: int = 0  # reads for every stream (no audience)

    def append(self, tenant: str, conversation: str | None, here: bool = True) -> Event:
        """Log an event, here (the bus wakes the readers) or by another process (found
        when something else wakes them)."""
        event = Event(len(self.events) + 1, "message.created", conversation, {}, NOW, tenant)
        self.events.append(event)
        if here:
            self.bus.notify()
        return event

    async def newest(self) -> int:
        await anyio.lowlevel.checkpoint()
        return len(self.events)

    async def read(
        self, after: int, limit: int, audience: Audience | None = None, upto: int | None = None
    ) -> list[Event]:
        await anyio.lowlevel.checkpoint()
        if audience is None:
            self.shared_reads += 1
        found = [
            e
            for e in self.events
            if e.seq > after
            and (upto is None or e.seq <= upto)
            and (audience is None or e.tenant == audience.tenant)
        ]
        return found[:limit]


def expected(log: MemoryLog, audience: Audience, after: int) -> list[int]:
    return [e.seq for e in log.events if e.seq > after and audience.wants(e)]


audiences = st.builds(
    Audience,
    st.sampled_from(TENANTS),
    st.sampled_from((None, "c1", "cx")),
    st.sampled_from(PATTERNS),
)
Append = tuple[str, str | None, bool]
appends = st.lists(
    st.tuples(st.sampled_from(TENANTS), st.sampled_from(CONVERSATIONS), st.booleans()),
    max_size=12,
)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Append], list[list[Append]], list[Subscriber]]:
    before = draw(appends)
    bursts = draw(st.lists(appends, min_size=1, max_size=5))
    total = len(before) + sum(len(b) for b in bursts)
    subscribers = draw(
        st.lists(
            st.builds(
                Subscriber,
                audiences,
                # From the start, behind, at the end, or at an id not logged yet (a
                # Last-Event-ID ahead of what the feed has read).
                st.integers(0, total),
                st.sampled_from(("eager", "lazy", "stalled")),
            ),
            min_size=1,
            max_size=8,
        )
    )
    return before, bursts, subscribers


@dataclass
class Subscriber:
    audience: Audience
    after: int
    pace: str  # eager: reads at once; lazy: yields between reads; stalled: stops after one
    received: list[int] = field(default_factory=list)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.integers(1, 4), st.integers(1, 4))
def test_each_subscriber_gets_its_events_once_in_order(
    scenario: tuple[list[Append], list[list[Append]], list[Subscriber]],
    queue_limit: int,
    page: int,
) -> None:
    """Subscribers start at different points of the log (some behind the feed), read at
    different paces, and one that stalls overflows its small queue: every one still gets
    exactly its audience's events after its start, in id order, and the stalled ones do
    not hold back the others (or this would time out)."""
    before, bursts, subscribers = scenario
    log = MemoryLog()
    for tenant, conversation, here in before:
        log.append(tenant, conversation, here)
    feed = Feed(queue_limit=queue_limit, page=page)
    everything_logged = anyio.Event()
    others_done = anyio.Event()

    async def consume(sub: Subscriber, wanted: int) -> None:
        stream = follow(feed, log, sub.audience, sub.after, FOREVER, FOREVER)
        try:
            while len(sub.received) < wanted:
                event = await stream.__anext__()
                assert event is not None
                sub.received.append(event.seq)
                if sub.pace == "lazy":
                    await anyio.sleep(0)
                elif sub.pace == "stalled" and len(sub.received) == 1:
                    await others_done.wait()
        finally:
            await stream.aclose()

    async def write() -> None:
        for burst in bursts:
            for tenant, conversation, here in burst:
                log.append(tenant, conversation, here)
            await anyio.sleep(0)
            queues = [len(s.queue) for subs in feed._subscriptions.values() for s in subs]
            assert all(n <= queue_limit for n in queues)  # bounded, however slow the reader
        log.bus.notify()  # as a poll would: the other processes' events are found
        everything_logged.set()

    async def run() -> None:
        # What each will have: known in advance, since every event is.
        future = MemoryLog(events=[*log.events])
        for tenant, conversation, _ in (a for b in bursts for a in b):
            future.append(tenant, conversation)
        with anyio.fail_after(5):
            async with anyio.create_task_group() as slow:
                async with anyio.create_task_group() as tasks:
                    for sub in subscribers:
                        wanted = len(expected(future, sub.audience, sub.after))
                        group = slow if sub.pace == "stalled" else tasks
                        group.start_soon(consume, sub, wanted)
                    tasks.start_soon(write)
                others_done.set()
        assert everything_logged.is_set()
        for sub in subscribers:
            assert sub.received == expected(log, sub.audience, sub.after), sub

    anyio.run(run)


@pytest.mark.anyio
async def test_a_thousand_subscribers_share_one_read_per_event() -> None:
    log = MemoryLog()
    feed = Feed()
    received: list[list[int]] = [[] for _ in range(1000)]

    async def consume(mine: list[int]) -> None:
        async for event in follow(feed, log, Audience("t1", "c1"), 0, FOREVER, FOREVER):
            assert event is not None
            mine.append(event.seq)
            if len(mine) == 5:
                return

    async with anyio.create_task_group() as tasks:
        for mine in received:
            tasks.start_soon(consume, mine)
        for _ in range(5):
            await anyio.sleep(0.01)
            log.append("t1", "c1")
            log.append("t2", "c1")  # another tenant's: for none of them
    assert all(mine == [1, 3, 5, 7, 9] for mine in received)
    assert log.shared_reads <= 10  # one per wake-up, not one per subscriber


@pytest.mark.anyio
async def test_idle_subscribers_poll_once_per_interval_and_keep_alive() -> None:
    log = MemoryLog()
    feed = Feed()
    keepalives = 0

    async def consume() -> None:
        nonlocal keepalives
        async for event in follow(feed, log, Audience("t1"), None, keepalive=0.5, poll=0.1):
            assert event is None
            keepalives += 1

    with anyio.move_on_after(0.75):
        async with anyio.create_task_group() as tasks:
            for _ in range(200):
                tasks.start_soon(consume)
    assert keepalives == 200  # one each, after 0.5 s of silence
    assert 5 <= log.shared_reads <= 10  # ~one poll per 0.1 s for all of them


@pytest.mark.anyio
async def test_a_new_subscriber_starts_at_the_end_of_the_log() -> None:
    log = MemoryLog()
    log.append("t1", "c1")
    feed = Feed()
    stream = follow(feed, log, Audience("t1"), None, FOREVER, FOREVER)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(_append_soon, log)
        with anyio.fail_after(5):
            event = await stream.__anext__()
    await stream.aclose()
    assert event is not None
    assert event.seq == 2


async def _append_soon(log: MemoryLog) -> None:
    await anyio.sleep(0.05)
    log.append("t1", "c1")


@pytest.mark.anyio
async def test_the_reading_passes_on_when_the_reader_leaves() -> None:
    """Cancel the stream that reads for the others: another takes over at once."""
    log = MemoryLog()
    feed = Feed()
    got: list[int] = []

    reader = anyio.CancelScope()

    async def consume(audience: Audience) -> None:
        async for event in follow(feed, log, audience, 0, FOREVER, FOREVER):
            assert event is not None
            got.append(event.seq)

    async def first() -> None:
        with reader:
            await consume(Audience("t1", "c1"))

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(first)  # the first to wait: it reads for both
        await anyio.sleep(0.05)
        tasks.start_soon(consume, Audience("t1", "c2"))
        await anyio.sleep(0.05)
        reader.cancel()  # the reader's client went away
        await anyio.sleep(0.05)
        log.append("t1", "c2")
        with anyio.fail_after(0.5):  # well before any poll
            while not got:
                await anyio.sleep(0.01)
        tasks.cancel_scope.cancel()
    assert got == [1]


@settings(max_examples=300)
@given(
    audiences,
    st.sampled_from(TENANTS),
    st.one_of(st.none(), st.text("cdx1*-", min_size=1, max_size=4)),
)
def test_an_audience_sees_what_its_principal_sees(
    audience: Audience, tenant: str, conversation: str | None
) -> None:
    event = Event(1, "message.created", conversation, {}, NOW, tenant)
    principal = Principal("k", "k", frozenset(), audience.tenant, audience.patterns)
    visible = (
        tenant == audience.tenant
        and (audience.only is None or conversation == audience.only)
        and principal.sees(conversation)
    )
    assert audience.wants(event) == visible
