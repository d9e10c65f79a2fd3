"""Usage and quotas of tenants (chatmedia.fairuse.quotas)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request

from chatmedia.access.principal import TENANT_PATTERN, Principal
from chatmedia.errors import RequestTooLarge, TenantNotAllowed
from chatmedia.http.deps import authorized, get_services
from chatmedia.http.jsonbody import json_body_doc, read_body, validate
from chatmedia.http.openapi import answers
from chatmedia.http.schemas import QuotaBody
from chatmedia.http.shapes import TenantList
from chatmedia.http.shapes import TenantUsage as TenantUsageShape
from chatmedia.pipelines import tenants
from chatmedia.pipelines.tenants import TenantUsage
from chatmedia.services import Services

router = APIRouter(prefix="/v1", tags=["tenants"])
ServicesDep = Annotated[Services, Depends(get_services)]
Admin = Annotated[Principal, authorized("admin")]


def usage_view(usage: TenantUsage) -> dict[str, Any]:
    """A tenant's usage as the API shows it."""
    figures, limits = usage.figures, usage.limits
    return {
        "tenant": figures.tenant,
        "bytes": figures.bytes,
        "files": figures.files,
        "dailyBytes": usage.daily_bytes,
        "reserved": {"bytes": figures.reserved_bytes, "files": figures.reserved_files},
        "quota": {
            "maxBytes": limits.max_bytes,
            "maxFiles": limits.max_files,
            "maxDailyBytes": limits.max_daily_bytes,
        },
        "ownQuota": usage.own,
    }


@router.get("/usage", response_model=None, responses=answers(ok=TenantUsageShape), summary="Usage")
async def get_usage(
    services: ServicesDep, principal: Annotated[Principal, authorized()]
) -> dict[str, Any]:
    """What the key's tenant holds and may hold (an admin key without a tenant of its own:
    any tenant's, with `?tenant=`). Deleting files frees quota at once."""
    return usage_view(await tenants.tenant_usage(services, principal.tenant))


@router.get(
    "/tenants",
    response_model=None,
    responses=answers(TenantNotAllowed, ok=TenantList),
    summary="List tenants",
)
async def list_tenants(services: ServicesDep, principal: Admin) -> dict[str, Any]:
    """Every tenant that holds something or has quotas of its own (an admin key without a
    tenant of its own; any other sees its own tenant alone)."""
    if principal.tenant_free and not principal.acting:
        found = await tenants.every_tenant(services)
    else:
        found = [await tenants.tenant_usage(services, principal.tenant)]
    return {"items": [usage_view(u) for u in found]}


@router.put(
    "/tenants/{tenant}/quota",
    openapi_extra=json_body_doc(QuotaBody),
    response_model=None,
    responses=answers(RequestTooLarge, TenantNotAllowed, ok=TenantUsageShape),
    summary="Set a tenant's quotas",
)
async def set_quota(
    request: Request,
    tenant: Annotated[str, Path(pattern=TENANT_PATTERN)],
    services: ServicesDep,
    principal: Admin,
) -> dict[str, Any]:
    """The tenant's own quotas, replacing the defaults wholly (null: unlimited), from the
    next upload on. Only an admin key without a tenant of its own may set them."""
    body = validate(QuotaBody, await read_body(request))
    return usage_view(await tenants.set_quota(services, tenant, body.to_limits(), principal))
