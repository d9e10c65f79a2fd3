"""Erasing a conversation: a customer's request to be forgotten, in one call.

Every file, message and event of the conversation goes, with its pending webhook
deliveries, the idempotency answers that could replay it, and every blob no other file
uses; then one `conversation.deleted` event tells connectors to erase their side. It runs
in bounded batches, each its own short write transaction, so it never holds the write
lock for long; run again after an interruption, it finishes the work (and answers zeros
once there is nothing left).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from chatmedia.access.principal import Principal
from chatmedia.db.events import Events
from chatmedia.db.files import Files
from chatmedia.db.idempotency import IdempotencyKeys
from chatmedia.db.messages import Messages
from chatmedia.db.pages import Conversations
from chatmedia.errors import NotFound
from chatmedia.pipelines.files import drop_files
from chatmedia.pipelines.keys import audit_line
from chatmedia.services import Services

BATCH = 200
CONVERSATION_DELETED = "conversation.deleted"


@dataclass(frozen=True, slots=True)
class Erased:
    """How many of each went."""

    files: int = 0
    messages: int = 0
    events: int = 0


async def erase_conversation(
    services: Services, principal: Principal, conversation_id: str
) -> Erased:
    """Erase a conversation of the principal's tenant (files:delete and messages:write);
    one outside its restriction answers as if it did not exist (NotFound)."""
    principal.require("files:delete", "messages:write")
    if not principal.sees(conversation_id):
        raise NotFound(f"no conversation '{conversation_id}'")
    tenant = principal.tenant
    # 1. Files, and the blobs only they used, and the answers that created them.
    files = 0
    while batch := await _erase_files(services, tenant, conversation_id):
        files += batch
    # 2. Messages, and the answers that created them.
    messages = 0
    while batch := await _erase_messages(services, tenant, conversation_id):
        messages += batch
    # 3. Events, with their deliveries, pending or not (earlier erasures' notices stay).
    events = 0
    while True:
        async with services.db.write() as conn:
            events_of = Events(conn, tenant)
            batch = await events_of.delete_some_of(conversation_id, BATCH, CONVERSATION_DELETED)
        events += batch
        if batch < BATCH:
            break
    erased = Erased(files, messages, events)
    # 4. Tell the streams and webhooks, once there was something to erase.
    if erased != Erased():
        data = {"conversationId": conversation_id, "files": files, "messages": messages,
                "events": events}  # fmt: skip
        async with services.db.write() as conn:
            now = datetime.now(UTC)
            await Events(conn, tenant).append(CONVERSATION_DELETED, conversation_id, data, now)
        services.bus.notify()
    audit_line(
        "conversation.erased", principal.key_id, tenant=tenant, conversation=conversation_id,
        files=files, messages=messages, events=events,
    )  # fmt: skip
    return erased


async def _erase_files(services: Services, tenant: str, conversation_id: str) -> int:
    async with services.db.write() as conn:
        repository = Files(conn, tenant)
        batch, _ = await repository.page(Conversations(only=conversation_id), BATCH, None)
        await drop_files(conn, services, batch)
        names = [r.id for r in batch] + [r.stored_name for r in batch]
        await IdempotencyKeys(conn).forget_resources(names)
    return len(batch)


async def _erase_messages(services: Services, tenant: str, conversation_id: str) -> int:
    async with services.db.write() as conn:
        ids = await Messages(conn, tenant).delete_some_of(conversation_id, BATCH)
        await IdempotencyKeys(conn).forget_resources(ids)
    return len(ids)
