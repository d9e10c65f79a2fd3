"""Following the event log: what SSE clients receive, and the signed URLs that let a
browser's EventSource (which cannot send an Authorization header) open a stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from chatmedia.access.principal import Principal, Scope
from chatmedia.bus import EventBus
from chatmedia.db.engine import Conn
from chatmedia.db.events import Events, delete_events_before, last_event_seq, logged_after
from chatmedia.db.files import link_generations
from chatmedia.db.pages import Conversations
from chatmedia.errors import NotFound
from chatmedia.fanout import Audience, follow
from chatmedia.models import Event
from chatmedia.pipelines.tokens import check_token, issue_token
from chatmedia.services import Services
from chatmedia.views import hosted_file_id, with_fresh_link

KEEPALIVE_SECONDS = 15.0
# Events logged by another process wake nobody here: they are found by polling this often
# (by one stream of the process for all).
POLL_SECONDS = 1.0
_STREAM_SCOPES: frozenset[Scope] = frozenset({"events:read"})


def follow_events(
    services: Services, principal: Principal, conversation_id: str | None, after: int | None
) -> AsyncIterator[Event | None]:
    """Every event the principal may see (its tenant's, of its conversations) after
    `after` (from the log, so nothing missed while disconnected is lost), then each new one
    as it is logged, in id order; with `after` None, only new ones. Of one conversation, or
    of all with `conversation_id` None. Yields None after each KEEPALIVE_SECONDS of
    silence. Raises NotFound for a conversation the principal does not see.

    The streams of a process share one reading of the log (chatmedia.fanout): a new event
    costs one query per process, however many streams are open."""
    if conversation_id is not None and not principal.sees(conversation_id):
        raise NotFound(f"no conversation '{conversation_id}'")
    audience = Audience(principal.tenant, conversation_id, principal.conversations)
    log = _Log(services)
    return follow(services.bus.feed, log, audience, after, KEEPALIVE_SECONDS, POLL_SECONDS)


@dataclass(frozen=True, slots=True)
class _Log:
    """The event log of the services' database, as `chatmedia.fanout` reads it."""

    services: Services

    @property
    def bus(self) -> EventBus:
        return self.services.bus

    async def newest(self) -> int:
        async with self.services.db.read() as conn:
            return await last_event_seq(conn)

    async def read(
        self, after: int, limit: int, audience: Audience | None = None, upto: int | None = None
    ) -> list[Event]:
        async with self.services.db.read() as conn:
            if audience is None:
                batch = await logged_after(conn, after, limit)
            else:
                conversations = Conversations(audience.only, audience.patterns)
                batch = await Events(conn, audience.tenant).after(after, conversations, limit, upto)
            return await with_fresh_links(conn, self.services, batch)


async def with_fresh_links(conn: Conn, services: Services, batch: list[Event]) -> list[Event]:
    """The events, their HOSTED files' URLs signed now: a URL sent from the log hours after
    its event is as fresh as one sent at once (and a revoked link stays revoked)."""
    ids = {file_id for e in batch if (file_id := hosted_file_id(e.data))}
    generations = await link_generations(conn, ids)
    return [replace(e, data=with_fresh_link(e.data, services.links, generations)) for e in batch]


async def stream_token(
    services: Services, principal: Principal, conversation_id: str
) -> tuple[str, datetime]:
    """A token that opens this conversation's event stream without a header, valid for
    CHATMEDIA_EVENTS_TOKEN_TTL and only while the principal's key is active; and its
    expiry. Raises NotFound for a conversation the principal does not see."""
    ttl = services.settings.events_token_ttl
    return await issue_token(services, principal, conversation_id, _STREAM_SCOPES, ttl, "stream")


async def check_stream_token(services: Services, token: str, conversation_id: str) -> Principal:
    """The principal a valid, unexpired token for this conversation stands for (its key's,
    restricted to reading this conversation's events), while its key is active; raises
    Unauthorized otherwise."""
    return await check_token(services, token, "stream", conversation_id)


async def prune_events(services: Services, now: datetime | None = None) -> int:
    """Forget events older than CHATMEDIA_EVENT_RETENTION (those a delivery still waits
    for are kept); returns how many were forgotten."""
    cutoff = (now or datetime.now(UTC)) - services.settings.event_retention
    async with services.db.write() as conn:
        return await delete_events_before(conn, cutoff)
