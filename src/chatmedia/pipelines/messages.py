"""Conversations' messages: posting one (text; a stored file; an external file; a media URL,
ours or elsewhere; or an upload in the same request), reading, listing and deleting. Every
change and its events commit in one transaction."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, get_args
from urllib.parse import parse_qs, urlsplit

from chatmedia.cursors import decode_cursor, encode_cursor
from chatmedia.db.engine import Conn
from chatmedia.db.events import Events
from chatmedia.db.files import Files
from chatmedia.db.messages import Messages
from chatmedia.errors import BadRequest, FileNotFound, MessageNotFound
from chatmedia.mediatypes import OCTET_STREAM
from chatmedia.models import FileRecord, MessageRecord, MessageType
from chatmedia.pipelines.external import ExternalInfo, add_external_file
from chatmedia.pipelines.files import remove_file
from chatmedia.pipelines.upload import UploadInfo, add_hosted_file, staged_upload
from chatmedia.services import Services
from chatmedia.views import message_view

MEDIA_TYPES: dict[str, MessageType] = {"image": "IMAGE", "video": "VIDEO", "audio": "AUDIO"}
MESSAGE_TYPES: dict[str, MessageType] = {name: name for name in get_args(MessageType)}
Posted = tuple[MessageRecord, FileRecord | None]


@dataclass(frozen=True, slots=True)
class MessageDraft:
    """A message as a client describes it; `type` None means: from the file, if any."""

    conversation_id: str
    sender: Mapping[str, Any]
    type: str | None = None
    body: str | None = None
    group_tag: str | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoredFile:
    """Attach a file already stored here."""

    file_id: str


@dataclass(frozen=True, slots=True)
class MediaUrl:
    """Hybrid Chat's media message: one of our download URLs, or a file elsewhere."""

    url: str
    content_type: str | None = None
    name: str | None = None
    size: int | None = None


Attachment = StoredFile | ExternalInfo | MediaUrl


async def post_message(
    services: Services, draft: MessageDraft, attachment: Attachment | None = None
) -> Posted:
    """Add a message, with the file it carries (found, or added as an EXTERNAL file)."""
    async with services.db.write() as conn:
        # 1. Find or add the message's file.
        file = await _attached_file(conn, services, draft.conversation_id, attachment)
        # 2. Add the message and log its event.
        message = await _add_message(conn, services, draft, file)
    services.bus.notify()
    return message, file


async def post_upload_message(
    services: Services,
    chunks: AsyncIterable[bytes],
    describe: Callable[[], tuple[MessageDraft, UploadInfo]],
) -> Posted:
    """Upload a file and post the message that carries it, in one request and one
    transaction. `describe` gives both once the body has been read."""
    # 1. Stream the file to staging, checking size and type as the bytes arrive.
    async with staged_upload(services, chunks) as upload:
        draft, info = describe()
        async with services.db.write() as conn:
            # 2. Add the file, then the message, with both events.
            file = await add_hosted_file(conn, services, upload, info)
            message = await _add_message(conn, services, draft, file)
    services.bus.notify()
    return message, file


async def get_message(services: Services, conversation_id: str, message_id: str) -> Posted:
    """A message and its file (None if it has none, or it was deleted)."""
    async with services.db.read() as conn:
        message = await Messages(conn).get(conversation_id, message_id)
        if message is None:
            raise MessageNotFound(f"no message with id '{message_id}' in this conversation")
        file = await Files(conn).get(message.file_id) if message.file_id else None
    return message, file


async def list_messages(
    services: Services, conversation_id: str, limit: int, before: str | None
) -> tuple[list[Posted], str | None]:
    """A page of messages, newest first, and the cursor of the next page."""
    before_seq = decode_cursor(before) if before is not None else None
    async with services.db.read() as conn:
        messages, last_seq = await Messages(conn).page(conversation_id, limit, before_seq)
        files = await Files(conn).get_many({m.file_id for m in messages if m.file_id})
    page = [(m, files.get(m.file_id) if m.file_id else None) for m in messages]
    return page, encode_cursor(last_seq) if last_seq else None


async def delete_message(
    services: Services, conversation_id: str, message_id: str, delete_file: bool
) -> None:
    """Delete a message (logging `message.deleted`), and its file when asked to."""
    async with services.db.write() as conn:
        message = await Messages(conn).get(conversation_id, message_id)
        if message is None:
            raise MessageNotFound(f"no message with id '{message_id}' in this conversation")
        file = await Files(conn).get(message.file_id) if message.file_id else None
        await Messages(conn).delete(message_id)
        if delete_file and file is not None:
            await remove_file(conn, services, file)
        data = message_view(message, file, services.settings.public_url)
        await Events(conn).append("message.deleted", conversation_id, data, datetime.now(UTC))
    services.bus.notify()


async def _attached_file(
    conn: Conn, services: Services, conversation_id: str, attachment: Attachment | None
) -> FileRecord | None:
    if attachment is None:
        return None
    if isinstance(attachment, StoredFile):
        return await _stored_file(conn, file_id=attachment.file_id)
    if isinstance(attachment, ExternalInfo):
        external = replace(attachment, conversation_id=conversation_id)
        return await add_external_file(conn, services, external)
    own = own_file_reference(services.settings.public_url, attachment.url)
    if own is not None:
        return await _stored_file(conn, **own)
    external = ExternalInfo(
        url=attachment.url,
        content_type=attachment.content_type or OCTET_STREAM,
        size=attachment.size or 0,
        name=attachment.name,
        conversation_id=conversation_id,
    )
    return await add_external_file(conn, services, external)


async def _stored_file(
    conn: Conn, file_id: str | None = None, stored_name: str | None = None
) -> FileRecord:
    files = Files(conn)
    file = (
        await files.get(file_id) if file_id else await files.get_by_stored_name(stored_name or "")
    )
    if file is None:
        raise FileNotFound(f"no file '{file_id or stored_name}' to attach")
    return file


def own_file_reference(public_url: str, url: str) -> dict[str, str] | None:
    """`{"file_id": …}` or `{"stored_name": …}` when `url` is one of our download URLs (the
    native content URL, or the file-engine's downloadFileStream?filename=…); else None."""
    base, target = urlsplit(public_url), urlsplit(url)
    if (target.scheme, target.netloc.lower()) != (base.scheme, base.netloc.lower()):
        return None
    path = target.path.removeprefix(base.path.rstrip("/"))
    parts = path.split("/")
    if len(parts) == 5 and parts[:3] == ["", "v1", "files"] and parts[4] == "content" and parts[3]:
        return {"file_id": parts[3]}
    if path == "/file-engine/api/downloadFileStream":
        names = parse_qs(target.query).get("filename")
        if names:
            return {"stored_name": names[0]}
    return None


async def _add_message(
    conn: Conn, services: Services, draft: MessageDraft, file: FileRecord | None
) -> MessageRecord:
    message = MessageRecord(
        id=secrets.token_urlsafe(16),
        conversation_id=draft.conversation_id,
        type=_message_type(draft, file),
        body=draft.body,
        file_id=file.id if file else None,
        group_tag=draft.group_tag,
        properties=dict(draft.properties),
        sender=dict(draft.sender),
        created_at=datetime.now(UTC),
    )
    await Messages(conn).insert(message)
    data = message_view(message, file, services.settings.public_url)
    await Events(conn).append("message.created", draft.conversation_id, data, message.created_at)
    return message


def _message_type(draft: MessageDraft, file: FileRecord | None) -> MessageType:
    requested = draft.type.upper() if draft.type else None
    if requested is not None and requested not in MESSAGE_TYPES:
        raise BadRequest(f"type must be one of {', '.join(MESSAGE_TYPES)}")
    if file is None:
        if requested not in (None, "TEXT"):
            raise BadRequest(f"a {requested} message needs a file")
        if not draft.body:
            raise BadRequest("a TEXT message needs a body")
        return "TEXT"
    if requested == "TEXT":
        raise BadRequest("a TEXT message cannot carry a file; use FILE, IMAGE, VIDEO or AUDIO")
    if requested is not None:
        return MESSAGE_TYPES[requested]
    return MEDIA_TYPES.get(file.content_type.split("/")[0], "FILE")
