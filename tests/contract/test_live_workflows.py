"""The event stream and the webhook retry schedule, over a real database."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import anyio
import pytest

from chatmedia.access.principal import operator
from chatmedia.db.webhooks import Delivery
from chatmedia.models import Event
from chatmedia.pipelines import events as events_pipeline
from chatmedia.pipelines.events import follow_events
from chatmedia.pipelines.messages import MessageDraft, post_message
from chatmedia.pipelines.webhooks import GIVE_UP_AFTER, MAX_DELAY, _retry_at
from chatmedia.services import Services

pytestmark = pytest.mark.anyio
SENDER = {"type": "API_KEY", "id": "key_test", "name": "tests"}


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
