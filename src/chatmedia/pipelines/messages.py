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

from chatmedia.access.content import shows
from chatmedia.access.principal import Principal
from chatmedia.cursors import decode_cursor, encode_cursor
from chatmedia.db.engine import Conn
from chatmedia.db.events import Events
from chatmedia.db.files import Files
from chatmedia.db.messages import Messages
from chatmedia.db.uploads import Uploads
from chatmedia.errors import BadRequest, FileNotFound, FileNotReady, MessageNotFound
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
    services: Services,
    principal: Principal,
    draft: MessageDraft,
    attachment: Attachment | None = None,
) -> Posted:
    """Add a message, with the file it carries (found, or added as an EXTERNAL file: that
    needs files:write too)."""
    principal.check_create(draft.conversation_id)
    async with services.db.write() as conn:
        # 1. Find or add the message's file.
        file = await _attached_file(conn, services, principal, draft.conversation_id, attachment)
        # 2. Add the message and log its event.
        message = await _add_message(conn, services, principal.tenant, draft, file)
    services.bus.notify()
    return message, file


async def post_upload_message(
    services: Services,
    principal: Principal,
    chunks: AsyncIterable[bytes],
    describe: Callable[[], tuple[MessageDraft, UploadInfo]],
    expected: int | None = None,
) -> Posted:
    """Upload a file and post the message that carries it, in one request and one
    transaction (files:write and messages:write). `describe` gives both once the body has
    been read; `expected` is about how many bytes the file has, when known."""
    principal.require("files:write")
    # 1. Stream the file to staging, checking size, type and quotas as the bytes arrive.
    async with staged_upload(services, chunks, principal, expected) as upload:
        draft, info = describe()
        principal.check_create(draft.conversation_id)
        async with services.db.write() as conn:
            # 2. Add the file, then the message, with both events.
            file = await add_hosted_file(conn, services, upload, info, principal.tenant)
            message = await _add_message(conn, services, principal.tenant, draft, file)
    services.bus.notify()
    return message, file


async def get_message(
    services: Services, principal: Principal, conversation_id: str, message_id: str
) -> Posted:
    """A message and its file (None if it has none, or it was deleted)."""
    async with services.db.read() as conn:
        message = await Messages(conn, principal.tenant).get(conversation_id, message_id)
        if message is None or not principal.sees(conversation_id):
            raise MessageNotFound(f"no message with id '{message_id}' in this conversation")
        file = await _file_of(conn, principal, message)
    return message, file


async def list_messages(
    services: Services,
    principal: Principal,
    conversation_id: str,
    limit: int,
    before: str | None,
) -> tuple[list[Posted], str | None]:
    """A page of messages, newest first, and the cursor of the next page (none at all in
    a conversation the principal does not see)."""
    before_seq = decode_cursor(before) if before is not None else None
    if not principal.sees(conversation_id):
        return [], None
    async with services.db.read() as conn:
        messages, last_seq = await Messages(conn, principal.tenant).page(
            conversation_id, limit, before_seq
        )
        files = await Files(conn, principal.tenant).get_many(
            {m.file_id for m in messages if m.file_id}
        )
    page = [(m, _visible(principal, files.get(m.file_id or ""))) for m in messages]
    return page, encode_cursor(last_seq) if last_seq else None


async def delete_message(
    services: Services,
    principal: Principal,
    conversation_id: str,
    message_id: str,
    delete_file: bool,
) -> None:
    """Delete a message (logging `message.deleted`), and its file when asked to (which
    needs files:delete)."""
    if delete_file:
        principal.require("files:delete")
    tenant = principal.tenant
    async with services.db.write() as conn:
        message = await Messages(conn, tenant).get(conversation_id, message_id)
        if message is None or not principal.sees(conversation_id):
            raise MessageNotFound(f"no message with id '{message_id}' in this conversation")
        file = await _file_of(conn, principal, message)
        await Messages(conn, tenant).delete(message_id)
        if delete_file and file is not None:
            await remove_file(conn, services, file)
        data = message_view(message, file, services.settings.public_url)
        now = datetime.now(UTC)
        await Events(conn, tenant).append("message.deleted", conversation_id, data, now)
    services.bus.notify()


async def _file_of(conn: Conn, principal: Principal, message: MessageRecord) -> FileRecord | None:
    if message.file_id is None:
        return None
    return _visible(principal, await Files(conn, principal.tenant).get(message.file_id))


def _visible(principal: Principal, file: FileRecord | None) -> FileRecord | None:
    """The file, unless the principal may not see it (then shown as none)."""
    if file is None or not principal.sees(file.conversation_id) or not shows(principal, file):
        return None
    return file


async def _attached_file(
    conn: Conn,
    services: Services,
    principal: Principal,
    conversation_id: str,
    attachment: Attachment | None,
) -> FileRecord | None:
    if attachment is None:
        return None
    if isinstance(attachment, StoredFile):
        return await _stored_file(conn, principal, file_id=attachment.file_id)
    if isinstance(attachment, ExternalInfo):
        principal.require("files:write")
        external = replace(attachment, conversation_id=conversation_id)
        return await add_external_file(conn, services, external, principal.tenant)
    own = own_file_reference(services.settings.public_url, attachment.url)
    if own is not None:
        return await _stored_file(conn, principal, **own)
    principal.require("files:write")
    external = ExternalInfo(
        url=attachment.url,
        content_type=attachment.content_type or OCTET_STREAM,
        size=attachment.size or 0,
        name=attachment.name,
        conversation_id=conversation_id,
    )
    return await add_external_file(conn, services, external, principal.tenant)


async def _stored_file(
    conn: Conn, principal: Principal, file_id: str | None = None, stored_name: str | None = None
) -> FileRecord:
    files = Files(conn, principal.tenant)
    file = (
        await files.get(file_id) if file_id else await files.get_by_stored_name(stored_name or "")
    )
    if file is None and file_id and await Uploads(conn).get(file_id) is not None:
        raise FileNotReady(f"file '{file_id}' is still being uploaded")
    if file is None or _visible(principal, file) is None:
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
    conn: Conn, services: Services, tenant: str, draft: MessageDraft, file: FileRecord | None
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
        tenant=tenant,
    )
    await Messages(conn, tenant).insert(message)
    data = message_view(message, file, services.settings.public_url)
    events = Events(conn, tenant)
    await events.append("message.created", draft.conversation_id, data, message.created_at)
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
