"""Messages of conversations, and the live event streams (Server-Sent Events)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from chatmedia.access.principal import Principal
from chatmedia.errors import (
    FileNotFound,
    FileNotReady,
    InvalidCursor,
    InvalidSourceUrl,
    MessageNotFound,
    MissingScope,
    NotFound,
    RequestTooLarge,
)
from chatmedia.http.deps import (
    authorized,
    bearer,
    credential_check,
    get_services,
    request_principal,
)
from chatmedia.http.forms import declared_length, message_info, read_form
from chatmedia.http.jsonbody import json_body_doc, read_body, validate
from chatmedia.http.openapi import EVENT_STREAM, LOCATION, answers
from chatmedia.http.routes.files import (
    CURSOR,
    FORM_ERRORS,
    IDEMPOTENCY_KEY,
    IDEMPOTENT,
    TEXT_PART,
    UPLOAD_ERRORS,
    form_doc,
)
from chatmedia.http.schemas import MessageBody
from chatmedia.http.shapes import Erased, Message, MessagePage, StreamLink
from chatmedia.models import Event
from chatmedia.pipelines import erasure, events, messages
from chatmedia.services import Services
from chatmedia.views import event_view, message_view, timestamp

router = APIRouter(prefix="/v1", tags=["conversations"])
ServicesDep = Annotated[Services, Depends(get_services)]
MessageReader = Annotated[Principal, authorized("messages:read")]
MessageWriter = Annotated[Principal, authorized("messages:write")]
EventReader = Annotated[Principal, authorized("events:read")]
ConversationId = Annotated[str, Path(alias="conversationId", min_length=1, max_length=255)]
MAX_PAGE = 1000

_POST_DOC = json_body_doc(MessageBody, IDEMPOTENCY_KEY)
_POST_DOC["requestBody"]["content"] |= form_doc(
    {
        "body": TEXT_PART,
        "groupTag": TEXT_PART,
        "type": {"enum": ["FILE", "IMAGE", "VIDEO", "AUDIO"]},
        "properties": {"type": "object"},
    },
    loose=True,
)
LAST_EVENT_ID = "^[0-9]{1,18}$"
# A browser's EventSource cannot send a header: a stream token in the query instead.
_STREAM_AUTH: dict[str, Any] = {"security": [{bearer.scheme_name: []}, {"streamToken": []}]}


def key_sender(principal: Principal) -> dict[str, Any]:
    """Who sent a message when the client does not say: the API key."""
    return {"type": "API_KEY", "id": principal.key_id, "name": principal.key_name}


@router.post(
    "/conversations/{conversationId}/messages",
    status_code=201,
    openapi_extra=_POST_DOC,
    response_model=None,
    responses=answers(
        *FORM_ERRORS,
        *UPLOAD_ERRORS,
        *IDEMPOTENT,
        InvalidSourceUrl,
        RequestTooLarge,
        FileNotFound,
        FileNotReady,
        ok=Message,
        status=201,
        headers=LOCATION,
    ),
    summary="Post a message",
)
async def post_message(
    conversation_id: ConversationId,
    request: Request,
    services: ServicesDep,
    principal: MessageWriter,
) -> JSONResponse:
    """JSON: a text message, or a media message with `fileId`, `file` or `mediaUrl`.
    multipart/form-data: `file` plus optional `body`, `groupTag`, `properties`."""
    sender = key_sender(principal)
    content_type = request.headers.get("content-type", "")
    if content_type.lower().startswith("multipart/form-data"):
        form = read_form(request)
        message, file = await messages.post_upload_message(
            services,
            principal,
            form.file_chunks(),
            lambda: message_info(form, conversation_id, sender),
            declared_length(request),
        )
    else:
        body = validate(MessageBody, await read_body(request))
        draft, attachment = body.to_post(conversation_id, sender)
        message, file = await messages.post_message(services, principal, draft, attachment)
    base = services.settings.public_url
    location = f"{base}/v1/conversations/{quote(conversation_id, safe='')}/messages/{message.id}"
    view = message_view(message, file, base, services.links)
    return JSONResponse(view, 201, {"Location": location})


@router.get(
    "/conversations/{conversationId}/messages",
    response_model=None,
    responses=answers(InvalidCursor, ok=MessagePage),
    summary="List messages, newest first",
)
async def list_messages(
    conversation_id: ConversationId,
    services: ServicesDep,
    principal: MessageReader,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    before: Annotated[str | None, CURSOR] = None,
) -> dict[str, Any]:
    """A page of messages; pass `nextCursor` back as `before` for the next page."""
    page, cursor = await messages.list_messages(services, principal, conversation_id, limit, before)
    base = services.settings.public_url
    items = [message_view(m, f, base, services.links) for m, f in page]
    return {"items": items, "nextCursor": cursor}


@router.get(
    "/conversations/{conversationId}/messages/{messageId}",
    response_model=None,
    responses=answers(MessageNotFound, ok=Message),
    summary="A message",
)
async def get_message(
    conversation_id: ConversationId,
    message_id: Annotated[str, Path(alias="messageId")],
    services: ServicesDep,
    principal: MessageReader,
) -> dict[str, Any]:
    """The Message, with its File."""
    message, file = await messages.get_message(services, principal, conversation_id, message_id)
    return message_view(message, file, services.settings.public_url, services.links)


@router.delete(
    "/conversations/{conversationId}/messages/{messageId}",
    status_code=204,
    response_class=Response,
    responses=answers(MessageNotFound),
    summary="Delete a message",
)
async def delete_message(
    conversation_id: ConversationId,
    message_id: Annotated[str, Path(alias="messageId")],
    services: ServicesDep,
    principal: MessageWriter,
    delete_file: Annotated[bool, Query(alias="deleteFile")] = False,
) -> Response:
    """Removes the message; its file stays unless `deleteFile=true` (files:delete too)."""
    await messages.delete_message(services, principal, conversation_id, message_id, delete_file)
    return Response(status_code=204)


@router.delete(
    "/conversations/{conversationId}",
    response_model=None,
    responses=answers(NotFound, ok=Erased),
    summary="Erase a conversation",
)
async def erase_conversation(
    conversation_id: ConversationId,
    services: ServicesDep,
    principal: Annotated[Principal, authorized("files:delete", "messages:write")],
) -> dict[str, int]:
    """Every file, message and event of the conversation, its pending webhook deliveries,
    the Idempotency-Key answers that could replay it and the blobs no other file uses;
    then one `conversation.deleted` event. Idempotent: once done, it answers zeros."""
    erased = await erasure.erase_conversation(services, principal, conversation_id)
    return {"files": erased.files, "messages": erased.messages, "events": erased.events}


@router.post(
    "/conversations/{conversationId}/events/token",
    response_model=None,
    responses=answers(NotFound, ok=StreamLink),
    summary="A signed stream URL",
)
async def stream_token(
    conversation_id: ConversationId, services: ServicesDep, principal: EventReader
) -> dict[str, str]:
    """A short-lived URL of this conversation's event stream that needs no header (for a
    browser's EventSource)."""
    token, expires = await events.stream_token(services, principal, conversation_id)
    path = f"/v1/conversations/{quote(conversation_id, safe='')}/events"
    url = f"{services.settings.public_url}{path}?token={token}"
    return {"url": url, "expiresAt": timestamp(expires)}


@router.get(
    "/conversations/{conversationId}/events",
    response_class=StreamingResponse,
    responses=answers(MissingScope, NotFound, ok=EVENT_STREAM),
    openapi_extra=_STREAM_AUTH,
    summary="A conversation's events (SSE)",
)
async def conversation_events(
    conversation_id: ConversationId,
    request: Request,
    services: ServicesDep,
    token: Annotated[str | None, Query(include_in_schema=False)] = None,
    last_event_id: Annotated[str | None, Header(pattern=LAST_EVENT_ID)] = None,
    since: Annotated[str | None, Query(alias="lastEventId", pattern=LAST_EVENT_ID)] = None,
) -> StreamingResponse:
    """Server-Sent Events of the conversation: message.created, message.deleted,
    file.created, file.deleted, file.updated (its scan finished), file.quarantined. Resume
    with `Last-Event-ID` (or `?lastEventId=`)."""
    if token is not None:
        with credential_check(services, request):
            principal = await events.check_stream_token(services, token, conversation_id)
        services.limiter.admit_key(request.scope, principal.key_id, principal.rate_limit)
    else:
        principal = await request_principal(request)
    principal.require("events:read")
    return _stream(services, principal, conversation_id, last_event_id or since)


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses=answers(ok=EVENT_STREAM),
    summary="Every conversation's events (SSE)",
)
async def all_events(
    services: ServicesDep,
    principal: EventReader,
    last_event_id: Annotated[str | None, Header(pattern=LAST_EVENT_ID)] = None,
    since: Annotated[str | None, Query(alias="lastEventId", pattern=LAST_EVENT_ID)] = None,
) -> StreamingResponse:
    """Server-Sent Events of all the conversations the key sees (and of files in none)."""
    return _stream(services, principal, None, last_event_id or since)


def _stream(
    services: Services, principal: Principal, conversation_id: str | None, after: str | None
) -> StreamingResponse:
    followed = events.follow_events(
        services, principal, conversation_id, int(after) if after else None
    )
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(_sse(followed), media_type="text/event-stream", headers=headers)


async def _sse(followed: AsyncIterator[Event | None]) -> AsyncIterator[bytes]:
    # The format of the HTML standard's "server-sent events"; a comment at once, so the
    # client sees the stream open before the first event.
    yield b": connected\n\n"
    async for event in followed:
        if event is None:
            yield b": keep-alive\n\n"
            continue
        data = json.dumps(event_view(event), separators=(",", ":"))
        yield f"id: {event.seq}\nevent: {event.type}\ndata: {data}\n\n".encode()
