"""API keys: creating, listing, revoking, and checking a request's key."""

from __future__ import annotations

from chatmedia.db.keys import Keys
from chatmedia.errors import Unauthorized
from chatmedia.models import ApiKey
from chatmedia.services import Services

FIRST_KEY_NAME = "default"


async def create_key(services: Services, name: str) -> tuple[ApiKey, str]:
    """A new key and its secret, which is shown once and never stored."""
    async with services.db.write() as conn:
        return await Keys(conn).create(name)


async def create_first_key(services: Services) -> str | None:
    """On an empty database, create the first key and return its secret; else None."""
    async with services.db.write() as conn:
        keys = Keys(conn)
        if await keys.count():
            return None
        _, secret = await keys.create(FIRST_KEY_NAME)
        return secret


async def list_keys(services: Services) -> list[ApiKey]:
    """Every key, revoked ones included."""
    async with services.db.read() as conn:
        return await Keys(conn).all()


async def revoke_key(services: Services, key_id: str) -> bool:
    """Revoke a key; False when there is no such active key."""
    async with services.db.write() as conn:
        return await Keys(conn).revoke(key_id)


async def authenticate(services: Services, authorization: str | None) -> ApiKey:
    """The key named by an `Authorization: Bearer <key>` header; raises Unauthorized."""
    scheme, _, secret = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized("send an API key as 'Authorization: Bearer <key>'")
    async with services.db.read() as conn:
        key = await Keys(conn).authenticate(secret.strip())
    if key is None:
        raise Unauthorized("the API key is not valid")
    return key
