"""API keys over HTTP, for platforms that mint keys per account or per agent (admin)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse, Response

from chatmedia.access.principal import Principal
from chatmedia.errors import (
    ConversationNotAllowed,
    KeyNotFound,
    MissingScope,
    RequestTooLarge,
    TenantNotAllowed,
)
from chatmedia.http.deps import authorized, get_services
from chatmedia.http.jsonbody import json_body_doc, read_body, validate
from chatmedia.http.openapi import LOCATION, answers
from chatmedia.http.schemas import KeyBody
from chatmedia.http.shapes import Key, KeyList
from chatmedia.models import ApiKey
from chatmedia.pipelines import keys
from chatmedia.services import Services
from chatmedia.views import timestamp

router = APIRouter(prefix="/v1", tags=["keys"])
ServicesDep = Annotated[Services, Depends(get_services)]
Admin = Annotated[Principal, authorized("admin")]


def key_view(key: ApiKey, secret: str | None = None) -> dict[str, Any]:
    """A key as listed; its secret only in the answer that created it."""
    view: dict[str, Any] = {
        "id": key.id,
        "name": key.name,
        "scopes": list(key.scopes),
        "tenant": key.tenant,
        "conversations": list(key.conversations) if key.conversations is not None else None,
        "expiresAt": timestamp(key.expires_at) if key.expires_at else None,
        "createdAt": timestamp(key.created_at),
        "lastUsedAt": timestamp(key.last_used_at) if key.last_used_at else None,
        "revokedAt": timestamp(key.revoked_at) if key.revoked_at else None,
        "rateLimit": key.rate_limit,
    }
    if secret is not None:
        view["key"] = secret
    return view


@router.post(
    "/keys",
    status_code=201,
    openapi_extra=json_body_doc(KeyBody),
    response_model=None,
    responses=answers(
        RequestTooLarge,
        MissingScope,
        TenantNotAllowed,
        ConversationNotAllowed,
        ok=Key,
        status=201,
        headers=LOCATION,
    ),
    summary="Create a key",
)
async def create_key(request: Request, services: ServicesDep, principal: Admin) -> JSONResponse:
    """A new key, shown in this answer only. It can never have more than the key that
    creates it: no scope, tenant or conversation it lacks, no later expiry, no higher
    rate."""
    body = validate(KeyBody, await read_body(request))
    key, secret = await keys.create_key(services, body.to_spec(), principal)
    location = f"{services.settings.public_url}/v1/keys/{key.id}"
    return JSONResponse(key_view(key, secret), 201, {"Location": location})


@router.get("/keys", response_model=None, responses=answers(ok=KeyList), summary="List keys")
async def list_keys(services: ServicesDep, principal: Admin) -> dict[str, Any]:
    """The keys this key manages (its tenant's; every key for one without a tenant),
    revoked ones included, never their secrets."""
    return {"items": [key_view(k) for k in await keys.list_keys(services, principal)]}


@router.delete(
    "/keys/{keyId}",
    status_code=204,
    response_class=Response,
    responses=answers(KeyNotFound),
    summary="Revoke a key",
)
async def revoke_key(
    key_id: Annotated[str, Path(alias="keyId")], services: ServicesDep, principal: Admin
) -> Response:
    """From now on every request with the key gets 401."""
    await keys.revoke_key(services, key_id, principal)
    return Response(status_code=204)
