"""Webhooks: registering receivers and looking at their deliveries."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from chatmedia.access.principal import Principal
from chatmedia.db.webhooks import Delivery, Webhook
from chatmedia.errors import (
    DestinationNotAllowed,
    InvalidCursor,
    InvalidSourceUrl,
    RequestTooLarge,
    WebhookNotFound,
)
from chatmedia.http.deps import authorized, get_services
from chatmedia.http.jsonbody import json_body_doc, read_body, validate
from chatmedia.http.openapi import LOCATION, answers
from chatmedia.http.routes.files import CURSOR
from chatmedia.http.schemas import WebhookBody
from chatmedia.http.shapes import DeliveryPage, WebhookList
from chatmedia.http.shapes import Webhook as WebhookShape
from chatmedia.pipelines import webhooks
from chatmedia.services import Services
from chatmedia.views import timestamp

router = APIRouter(prefix="/v1", tags=["webhooks"])
ServicesDep = Annotated[Services, Depends(get_services)]
Manager = Annotated[Principal, authorized("webhooks")]


def webhook_view(hook: Webhook, with_secret: bool = False) -> dict[str, Any]:
    """A webhook; its secret only when it has just been created."""
    view = {
        "id": hook.id,
        "url": hook.url,
        "events": list(hook.events),
        "createdAt": timestamp(hook.created_at),
    }
    if with_secret:
        view["secret"] = hook.secret
    return view


def delivery_view(delivery: Delivery) -> dict[str, Any]:
    """A delivery: its event, status, attempts and last outcome."""
    return {
        "id": str(delivery.seq),
        "eventId": str(delivery.event_seq),
        "eventType": delivery.event_type,
        "conversationId": delivery.conversation_id,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "lastStatus": delivery.last_status,
        "lastError": delivery.last_error,
        "nextAttemptAt": timestamp(delivery.next_attempt_at)
        if delivery.status == "pending"
        else None,
        "deliveredAt": timestamp(delivery.delivered_at) if delivery.delivered_at else None,
        "createdAt": timestamp(delivery.created_at),
    }


@router.post(
    "/webhooks",
    status_code=201,
    openapi_extra=json_body_doc(WebhookBody),
    response_model=None,
    responses=answers(
        InvalidSourceUrl,
        RequestTooLarge,
        DestinationNotAllowed,
        ok=WebhookShape,
        status=201,
        headers=LOCATION,
    ),
    summary="Add a webhook",
)
async def create_webhook(
    request: Request, services: ServicesDep, principal: Manager
) -> JSONResponse:
    """Every event of the chosen types is POSTed to `url`, signed with
    `ChatMedia-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "t.body">`."""
    body = validate(WebhookBody, await read_body(request))
    hook = await webhooks.create_webhook(services, principal, body.url, body.events, body.secret)
    location = f"{services.settings.public_url}/v1/webhooks/{hook.id}"
    return JSONResponse(webhook_view(hook, with_secret=True), 201, {"Location": location})


@router.get(
    "/webhooks", response_model=None, responses=answers(ok=WebhookList), summary="List webhooks"
)
async def list_webhooks(services: ServicesDep, principal: Manager) -> dict[str, Any]:
    """Every webhook (secrets are not shown)."""
    return {"items": [webhook_view(h) for h in await webhooks.list_webhooks(services, principal)]}


@router.get(
    "/webhooks/{webhookId}",
    response_model=None,
    responses=answers(WebhookNotFound, ok=WebhookShape),
    summary="A webhook",
)
async def get_webhook(
    webhook_id: Annotated[str, Path(alias="webhookId")], services: ServicesDep, principal: Manager
) -> dict[str, Any]:
    """The webhook (its secret is not shown)."""
    return webhook_view(await webhooks.get_webhook(services, principal, webhook_id))


@router.delete(
    "/webhooks/{webhookId}",
    status_code=204,
    response_class=Response,
    responses=answers(WebhookNotFound),
    summary="Delete a webhook",
)
async def delete_webhook(
    webhook_id: Annotated[str, Path(alias="webhookId")], services: ServicesDep, principal: Manager
) -> Response:
    """Stops deliveries, including the queued ones."""
    await webhooks.delete_webhook(services, principal, webhook_id)
    return Response(status_code=204)


@router.get(
    "/webhooks/{webhookId}/deliveries",
    response_model=None,
    responses=answers(WebhookNotFound, InvalidCursor, ok=DeliveryPage),
    summary="A webhook's deliveries",
)
async def list_deliveries(
    webhook_id: Annotated[str, Path(alias="webhookId")],
    services: ServicesDep,
    principal: Manager,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: Annotated[str | None, CURSOR] = None,
) -> dict[str, Any]:
    """Newest first: status, attempts, last status and error of each."""
    page, next_cursor = await webhooks.list_deliveries(
        services, principal, webhook_id, limit, cursor
    )
    return {"items": [delivery_view(d) for d in page], "nextCursor": next_cursor}
