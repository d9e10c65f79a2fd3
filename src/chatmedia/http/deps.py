"""FastAPI dependencies shared by the routes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, SecurityScopes

from chatmedia.access.principal import Principal, Scope, widget
from chatmedia.errors import InvalidSignature, LinkExpired, OriginNotAllowed, Unauthorized
from chatmedia.pipelines.keys import MISSING_KEY
from chatmedia.pipelines.tokens import identify
from chatmedia.services import Services


async def get_services(request: Request) -> Services:
    """The running app's services. Async on purpose: FastAPI runs a plain function
    dependency in its thread pool, a thread hop on every request."""
    services: Services = request.app.state.services
    return services


# Where a middleware that has already authenticated the request leaves its principal
# (request.state).
CHECKED_PRINCIPAL = "principal"
# Declares the scheme in the OpenAPI document; the key itself is read by `authenticate`.
bearer = HTTPBearer(
    auto_error=False, scheme_name="apiKey", description="An API key: `Authorization: Bearer cm_…`"
)
# An admin key without a tenant of its own acts in another tenant with ?tenant=NAME.
TENANT_PARAMETER = "tenant"


# What a credential that does not hold raises: each counts toward its address's lockout.
CREDENTIAL_FAILURES = (Unauthorized, InvalidSignature, LinkExpired)


@contextmanager
def credential_check(services: Services, request: Request) -> Iterator[None]:
    """Checking a credential (a key, a signed link, a stream or page token): a failure counts
    against the client's address, and past the limit answers 429 instead."""
    try:
        yield
    except CREDENTIAL_FAILURES:
        services.limiter.failed(request.scope)
        raise


async def request_principal(request: Request) -> Principal:
    """Who the request is: the principal of its API key or page token, counted against
    the (issuing) key's rate; raises Unauthorized (401) or RateLimited (429)."""
    checked: Principal | None = getattr(request.state, CHECKED_PRINCIPAL, None)
    if checked is not None:
        return checked
    services: Services = request.app.state.services
    authorization = request.headers.get("authorization")
    if authorization is None:
        services.limiter.refuse_if_locked_out(request.scope)
        raise Unauthorized(MISSING_KEY)
    tenant = request.query_params.get(TENANT_PARAMETER) if request.scope["query_string"] else None
    with credential_check(services, request):
        principal = await identify(services, authorization, tenant)
    services.limiter.admit_key(request.scope, principal.key_id, principal.rate_limit)
    return principal


async def _authorize(
    request: Request,
    required: SecurityScopes,
    _scheme: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)] = None,
) -> Principal:
    principal = await request_principal(request)
    principal.require(*required.scopes)  # type: ignore[arg-type]
    return principal


def authorized(*scopes: Scope) -> Any:
    """The dependency of a route that needs a key holding `scopes` (none: any valid key):
    the request's Principal, or 401 / 403 missing_scope. The OpenAPI document shows the
    scopes as the operation's security requirement."""
    return Security(_authorize, scopes=list(scopes))


async def widget_or_principal(request: Request, *scopes: Scope) -> Principal:
    """The request's principal holding `scopes` (as `authorized`), or with
    CHATMEDIA_COMPAT_UPLOAD=open and no key at all, a customer widget's."""
    services: Services = request.app.state.services
    settings = services.settings
    if settings.compat_upload == "open" and "authorization" not in request.headers:
        origin = request.headers.get("origin")
        if origin is not None and origin not in settings.cors_origins:
            raise OriginNotAllowed(f"uploads without a key are not taken from {origin}")
        services.limiter.admit_anonymous(request.scope)
        return widget(settings.compat_upload_tenant)
    principal = await request_principal(request)
    principal.require(*scopes)
    return principal


async def _widget_or_authorize(
    request: Request,
    required: SecurityScopes,
    _scheme: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)] = None,
) -> Principal:
    return await widget_or_principal(request, *required.scopes)  # type: ignore[arg-type]


def widget_or_authorized(*scopes: Scope) -> Any:
    """As `authorized`, but with CHATMEDIA_COMPAT_UPLOAD=open a request without any key
    is a customer widget's upload into CHATMEDIA_COMPAT_UPLOAD_TENANT, taken only from
    the CORS origins when it names its Origin."""
    return Security(_widget_or_authorize, scopes=list(scopes))
