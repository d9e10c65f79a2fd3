"""FastAPI dependencies shared by the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from chatmedia.models import ApiKey
from chatmedia.pipelines.keys import authenticate
from chatmedia.services import Services


async def get_services(request: Request) -> Services:
    """The running app's services. Async on purpose: FastAPI runs a plain function
    dependency in its thread pool, a thread hop on every request."""
    services: Services = request.app.state.services
    return services


# Where a middleware that has already checked the request's key leaves it (request.state).
CHECKED_KEY = "api_key"


# Declares the scheme in the OpenAPI document; the key itself is read by `authenticate`.
bearer = HTTPBearer(
    auto_error=False, scheme_name="apiKey", description="An API key: `Authorization: Bearer cm_…`"
)


async def require_key(
    request: Request,
    _scheme: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)] = None,
) -> ApiKey:
    """The request's API key; answers 401 without a valid one."""
    checked: ApiKey | None = getattr(request.state, CHECKED_KEY, None)
    if checked is not None:
        return checked
    services: Services = request.app.state.services
    return await authenticate(services, request.headers.get("authorization"))
