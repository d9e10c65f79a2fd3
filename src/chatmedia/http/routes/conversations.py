"""Messages of conversations, and the live event streams (Server-Sent Events)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from chatmedia.errors import BadRequest
from chatmedia.http.deps import get_services, require_key
from chatmedia.http.forms import message_info, read_form
from chatmedia.http.jsonbody import json_body_doc, read_body, validate
from chatmedia.http.routes.files import UPLOAD_FORM
from chatmedia.http.schemas import MessageBody
from chatmedia.models import ApiKey, Event
from chatmedia.pipelines import events, messages
from chatmedia.pipelines.keys import authenticate
from chatmedia.services import Services
from chatmedia.views import event_view, message_view, timestamp

router = APIRouter(prefix="/v1", tags=["conversations"])
ServicesDep = Annotated[Services, Depends(get_services)]
KeyDep = Annotated[ApiKey, Depends(require_key)]
ConversationId = Annotated[str, Path(alias="conversationId", min_length=1, max_length=255)]
MAX_PAGE = 1000

_POST_DOC = json_body_doc(MessageBody)
_POST_DOC["requestBody"]["content"] |= UPLOAD_FORM["requestBody"]["content"]


def key_sender(key: ApiKey) -> dict[str, Any]:
    """Who sent a message when the client does not say: the API key."""
    return {"type": "API_KEY", "id": key.id, "name": key.name}


@router.post(
    "/conversations/{conversationId}/messages",
    status_code=201,
    openapi_extra=_POST_DOC,
    summary="Post a message",
)
async def post_message(
    conversation_id: ConversationId, request: Request, services: ServicesDep, key: KeyDep
) -> JSONResponse:
    """JSON: a text message, or a media message with `fileId`, `file` or `mediaUrl`.
    multipart/form-data: `file` plus optional `body`, `groupTag`, `properties`."""
    sender = key_sender(key)
    content_type = request.headers.get("content-type", "")
    if content_type.lower().startswith("multipart/form-data"):
        form = read_form(request)
        message, file = await messages.post_upload_message(
            services, form.file_chunks(), lambda: message_info(form, conversation_id, sender)
        )
    else:
        body = validate(MessageBody, await read_body(request))
        draft, attachment = body.to_post(conversation_id, sender)
        message, file = await messages.post_message(services, draft, attachment)
    base = services.settings.public_url
    location = f"{base}/v1/conversations/{conversation_id}/messages/{message.id}"
    return JSONResponse(message_view(message, file, base), 201, {"Location": location})


@router.get("/conversations/{conversationId}/messages", summary="List messages, newest first")
async def list_messages(
    conversation_id: ConversationId,
    services: ServicesDep,
    _key: KeyDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    before: str | None = None,
) -> dict[str, Any]:
    """A page of messages; pass `nextCursor` back as `before` for the next page."""
    page, cursor = await messages.list_messages(services, conversation_id, limit, before)
    base = services.settings.public_url
    return {"items": [message_view(m, f, base) for m, f in page], "nextCursor": cursor}


@router.get("/conversations/{conversationId}/messages/{messageId}", summary="A message")
async def get_message(
    conversation_id: ConversationId,
    message_id: Annotated[str, Path(alias="messageId")],
    services: ServicesDep,
    _key: KeyDep,
) -> dict[str, Any]:
    """The Message, with its File."""
    message, file = await messages.get_message(services, conversation_id, message_id)
    return message_view(message, file, services.settings.public_url)


@router.delete(
    "/conversations/{conversationId}/messages/{messageId}",
    status_code=204,
    summary="Delete a message",
)
async def delete_message(
    conversation_id: ConversationId,
    message_id: Annotated[str, Path(alias="messageId")],
    services: ServicesDep,
    _key: KeyDep,
    delete_file: Annotated[bool, Query(alias="deleteFile")] = False,
) -> Response:
    """Removes the message; its file stays unless `deleteFile=true`."""
    await messages.delete_message(services, conversation_id, message_id, delete_file)
    return Response(status_code=204)


@router.post("/conversations/{conversationId}/events/token", summary="A signed stream URL")
async def stream_token(
    conversation_id: ConversationId, services: ServicesDep, key: KeyDep
) -> dict[str, str]:
    """A short-lived URL of this conversation's event stream that needs no header (for a
    browser's EventSource)."""
    token, expires = await events.stream_token(services, conversation_id, key)
    url = f"{services.settings.public_url}/v1/conversations/{conversation_id}/events?token={token}"
    return {"url": url, "expiresAt": timestamp(expires)}


@router.get("/conversations/{conversationId}/events", summary="A conversation's events (SSE)")
async def conversation_events(
    conversation_id: ConversationId,
    request: Request,
    services: ServicesDep,
    token: str | None = None,
    last_event_id: Annotated[str | None, Header()] = None,
    since: Annotated[str | None, Query(alias="lastEventId")] = None,
) -> StreamingResponse:
    """Server-Sent Events of the conversation: message.created, message.deleted,
    file.created, file.deleted. Resume with `Last-Event-ID` (or `?lastEventId=`)."""
    if token is not None:
        await events.check_stream_token(services, token, conversation_id)
    else:
        await authenticate(services, request.headers.get("authorization"))
    return _stream(services, conversation_id, last_event_id or since)


@router.get("/events", summary="Every conversation's events (SSE)")
async def all_events(
    services: ServicesDep,
    _key: KeyDep,
    last_event_id: Annotated[str | None, Header()] = None,
    since: Annotated[str | None, Query(alias="lastEventId")] = None,
) -> StreamingResponse:
    """Server-Sent Events of all conversations (and of files in none)."""
    return _stream(services, None, last_event_id or since)


def _stream(
    services: Services, conversation_id: str | None, after: str | None
) -> StreamingResponse:
    if after is not None and not (after.isdigit() and len(after) < 20):
        raise BadRequest("Last-Event-ID must be an event id")
    followed = events.follow_events(services, conversation_id, int(after) if after else None)
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
