"""FastAPI dependencies shared by the routes."""

from __future__ import annotations

from fastapi import Request

from chatmedia.models import ApiKey
from chatmedia.pipelines.keys import authenticate
from chatmedia.services import Services


def get_services(request: Request) -> Services:
    """The running app's services."""
    services: Services = request.app.state.services
    return services


async def require_key(request: Request) -> ApiKey:
    """The request's API key; answers 401 without a valid one."""
    return await authenticate(get_services(request), request.headers.get("authorization"))
