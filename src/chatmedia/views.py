"""The JSON shapes clients see: File, Message and Event. Workflows render them too, for the
event log, so they live outside the HTTP layer."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from chatmedia.models import Event, FileRecord, MessageRecord


def timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z."""
    return moment.isoformat().replace("+00:00", "Z")


def file_view(record: FileRecord, public_url: str) -> dict[str, Any]:
    """A File (ChatKitty's shape, extended). `url` is the content URL of a HOSTED file and
    the reference of an EXTERNAL one."""
    return {
        "id": record.id,
        "type": record.type,
        "name": record.name,
        "storedName": record.stored_name,
        "contentType": record.content_type,
        "size": record.size,
        "url": record.url or f"{public_url}/v1/files/{record.id}/content",
        "sha256": record.sha256,
        "conversationId": record.conversation_id,
        "properties": dict(record.properties),
        "createdAt": timestamp(record.created_at),
    }


def message_view(
    message: MessageRecord, file: FileRecord | None, public_url: str
) -> dict[str, Any]:
    """A Message; `file` is null for a text message or when its file has been deleted."""
    return {
        "id": message.id,
        "conversationId": message.conversation_id,
        "type": message.type,
        "body": message.body,
        "file": file_view(file, public_url) if file is not None else None,
        "groupTag": message.group_tag,
        "properties": dict(message.properties),
        "sender": dict(message.sender),
        "createdAt": timestamp(message.created_at),
    }


def event_view(event: Event) -> dict[str, Any]:
    """An event as SSE clients and webhooks see it."""
    return {
        "id": str(event.seq),
        "type": event.type,
        "conversationId": event.conversation_id,
        "createdAt": timestamp(event.created_at),
        "data": dict(event.data),
    }
