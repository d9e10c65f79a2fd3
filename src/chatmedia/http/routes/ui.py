"""The agent's media page: the route that makes its links, and where it is served
(chatmedia.ui)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Path, Request
from fastapi.responses import JSONResponse

from chatmedia.access.principal import Principal
from chatmedia.errors import NotFound, RequestTooLarge
from chatmedia.http.deps import authorized, get_services
from chatmedia.http.jsonbody import json_body_doc, read_body, validate
from chatmedia.http.openapi import answers
from chatmedia.http.schemas import UiLinkBody
from chatmedia.http.shapes import StreamLink
from chatmedia.pipelines.tokens import PageRights, ui_link
from chatmedia.services import Services
from chatmedia.ui.page import ui_app
from chatmedia.views import timestamp

router = APIRouter(prefix="/v1", tags=["conversations"])
ServicesDep = Annotated[Services, Depends(get_services)]
# What every page may do; the rights asked for need their scopes too (403 missing_scope).
PageIssuer = Annotated[Principal, authorized("files:read", "messages:read", "events:read")]
ConversationId = Annotated[str, Path(alias="conversationId", min_length=1, max_length=255)]


@router.post(
    "/conversations/{conversationId}/ui-links",
    status_code=201,
    openapi_extra=json_body_doc(UiLinkBody),
    response_model=None,
    responses=answers(NotFound, RequestTooLarge, ok=StreamLink, status=201),
    summary="A link to the conversation's media page",
)
async def create_ui_link(
    conversation_id: ConversationId, request: Request, services: ServicesDep, principal: PageIssuer
) -> JSONResponse:
    """A link to the agent's media page of this conversation, for `expiresIn` seconds
    (12 hours by default), with the rights asked for: `canUpload` (needs files:write),
    `canDelete` (files:delete), `canSend` (messages:write). Its token is in the URL's
    fragment, which browsers never send to a server."""
    body = validate(UiLinkBody, await read_body(request))
    rights = PageRights(body.can_upload, body.can_delete, body.can_send)
    ttl = timedelta(seconds=body.expires_in)
    url, expires = await ui_link(services, principal, conversation_id, rights, ttl)
    return JSONResponse({"url": url, "expiresAt": timestamp(expires)}, 201)


def mount_ui(app: FastAPI, services: Services) -> None:
    """Serve the page and its assets under /ui (outside the API's document)."""
    app.mount("/ui", ui_app(services.settings.ui_frame_ancestors), name="ui")
