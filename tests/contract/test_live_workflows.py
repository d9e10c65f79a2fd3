"""The event stream and the webhook retry schedule, over a real database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

from chatmedia.access.principal import operator
from chatmedia.db.events import Events
from chatmedia.db.webhooks import Delivery
from chatmedia.fanout import Feed
from chatmedia.models import Event
from chatmedia.pipelines import events as events_pipeline
from chatmedia.pipelines.events import follow_events
from chatmedia.pipelines.messages import MessageDraft, post_message
from chatmedia.pipelines.webhooks import GIVE_UP_AFTER, MAX_DELAY, _retry_at
from chatmedia.services import Services

pytestmark = pytest.mark.anyio
SENDER = {"type": "API_KEY", "id": "key_test", "name": "tests"}
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


async def test_stream_replays_then_follows_then_keeps_alive(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events_pipeline, "KEEPALIVE_SECONDS", 0.3)
    monkeypatch.setattr(events_pipeline, "POLL_SECONDS", 0.1)
    before, _ = await post_message(services, operator(), MessageDraft("c1", SENDER, body="before"))
    seen: list[Event | None] = []
    with anyio.move_on_after(5):
        stream = follow_events(services, operator(), "c1", after=0)
        async for item in stream:
            seen.append(item)
            if len(seen) == 1:  # the replayed one; now one logged while following
                await post_message(services, operator(), MessageDraft("c1", SENDER, body="after"))
                await post_message(
                    services, operator(), MessageDraft("c2", SENDER, body="elsewhere")
                )
            if item is None:
                break
    bodies = [e.data["body"] for e in seen if e is not None]
    assert bodies == ["before", "after"]
    assert seen[-1] is None  # a keep-alive after the quiet interval
    assert before.id == seen[0].data["id"]  # type: ignore[union-attr]


async def test_a_new_stream_starts_from_now(services: Services) -> None:
    await post_message(services, operator(), MessageDraft("c1", SENDER, body="old"))
    stream = follow_events(services, operator(), "c1", after=None)
    with anyio.fail_after(5):
        first = anyio.create_task_group()
        async with first:
            first.start_soon(_post_soon, services)
            event = await stream.__anext__()
    assert event is not None
    assert event.data["body"] == "new"


async def _post_soon(services: Services) -> None:
    await anyio.sleep(0.2)
    await post_message(services, operator(), MessageDraft("c1", SENDER, body="new"))


def delivery(attempts: int, created: datetime) -> Delivery:
    return Delivery(
        1, "wh", 1, "message.created", "c1", "pending", attempts, created, None, None, None, created
    )


async def test_retries_double_from_the_base_and_stop_after_a_day(services: Services) -> None:
    settings = replace(services.settings, webhook_retry_base=5.0)
    with_base = replace(services, settings=settings)
    now = datetime.now(UTC)
    for attempts, expected in ((0, 5), (1, 10), (2, 20), (5, 160)):
        retry_at = _retry_at(with_base, delivery(attempts, now), now)
        assert retry_at is not None
        delay = (retry_at - now).total_seconds()
        assert expected <= delay <= expected * 1.1
    capped = _retry_at(with_base, delivery(20, now), now)
    assert capped is not None
    assert capped - now <= MAX_DELAY * 1.1
    late = now - GIVE_UP_AFTER + timedelta(seconds=10)  # the next retry (40 s) is too late
    assert _retry_at(with_base, delivery(3, late), now) is None


async def _log(services: Services, tenant: str, conversation: str | None, body: str) -> None:
    async with services.db.write() as conn:
        await Events(conn, tenant).append("message.created", conversation, {"body": body}, NOW)
    services.bus.notify()


async def _read(stream: AsyncIterator[Event | None], count: int, into: list[Event]) -> None:
    async for event in stream:
        assert event is not None
        into.append(event)
        if len(into) == count:
            break
    await stream.aclose()  # type: ignore[attr-defined]


async def test_streams_share_the_reading_and_each_sees_only_its_own(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forty streams of five kinds of principal: each gets exactly what it may see, once
    and in order, while the log is read about once per event, not once per stream."""
    shared_reads = 0
    logged_after = events_pipeline.logged_after

    async def counted(*args: Any) -> list[Event]:
        nonlocal shared_reads
        shared_reads += 1
        return await logged_after(*args)

    monkeypatch.setattr(events_pipeline, "logged_after", counted)
    logged = [
        ("default", "c1"), ("default", "c2"), ("acme", "c1"), ("default", None),
        ("default", "C3"), ("default", "d1"), ("default", "c1"),
    ]  # fmt: skip
    viewers = {
        "everything": (operator(), None),
        "c1": (operator(), "c1"),
        "restricted to c*": (replace(operator(), conversations=("c*",)), None),
        "restricted to d1, c1 of c1": (replace(operator(), conversations=("d1", "c1")), "c1"),
        "acme": (operator("acme"), None),
    }
    visible = {
        "everything": [0, 1, 3, 4, 5, 6],
        "c1": [0, 6],
        "restricted to c*": [0, 1, 6],  # not C3: patterns are case-sensitive, as `sees` is
        "restricted to d1, c1 of c1": [0, 6],
        "acme": [2],
    }
    received: dict[tuple[str, int], list[Event]] = {}
    async with anyio.create_task_group() as tasks:
        with anyio.fail_after(10):
            for n in range(8):
                for name, (principal, conversation) in viewers.items():
                    into = received[name, n] = []
                    stream = follow_events(services, principal, conversation, after=None)
                    tasks.start_soon(_read, stream, len(visible[name]), into)
            await anyio.sleep(0.2)  # every stream is open
            for number, (tenant, conversation) in enumerate(logged):
                await _log(services, tenant, conversation, str(number))
    for (name, _), events in received.items():
        assert [int(e.data["body"]) for e in events] == visible[name], name
    assert shared_reads <= 2 * len(logged)
    # From the log, by a stream that starts behind: the same rule.
    restricted, _ = viewers["restricted to c*"]
    replayed: list[Event] = []
    with anyio.fail_after(5):
        await _read(follow_events(services, restricted, None, after=0), 3, replayed)
    assert [int(e.data["body"]) for e in replayed] == visible["restricted to c*"]


async def test_a_stream_behind_catches_up_and_a_stalled_one_holds_nobody_back(
    services: Services,
) -> None:
    """With queues of two events: a stream that starts 10 events back, one that reads at
    once, and one that stops reading after the first event; all get all 30."""
    services.bus.feed = Feed(queue_limit=2, page=4)
    for n in range(10):
        await _log(services, "default", "c1", str(n))
    prompt: list[Event] = []
    behind: list[Event] = []
    stalled: list[Event] = []
    prompt_done = anyio.Event()

    async def stall_after_one() -> None:
        stream = follow_events(services, operator(), "c1", after=0)
        async for event in stream:
            assert event is not None
            stalled.append(event)
            if len(stalled) == 1:
                await prompt_done.wait()
            if len(stalled) == 30:
                break
        await stream.aclose()  # type: ignore[attr-defined]

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(stall_after_one)
            tasks.start_soon(_read, follow_events(services, operator(), "c1", 10), 20, prompt)
            await anyio.sleep(0.2)
            tasks.start_soon(_read, follow_events(services, operator(), "c1", 0), 30, behind)
            for n in range(10, 30):
                await _log(services, "default", "c1", str(n))
                await anyio.sleep(0)
            while len(prompt) < 20:
                await anyio.sleep(0.01)
            prompt_done.set()  # the prompt one was not held back by the stalled one
    assert [e.data["body"] for e in prompt] == [str(n) for n in range(10, 30)]
    for events in (behind, stalled):
        assert [e.data["body"] for e in events] == [str(n) for n in range(30)]
