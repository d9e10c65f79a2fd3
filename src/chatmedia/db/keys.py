"""Repository of API keys. A key is shown once when created; only its SHA-256 is stored
(keys carry 256 random bits, so a fast hash is enough)."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from chatmedia.db.changes import key_changed
from chatmedia.db.engine import Conn
from chatmedia.db.schema import api_keys
from chatmedia.models import ApiKey

KEY_PREFIX = "cm_"
# The lookup of every request, built once (see chatmedia.db.files), of what a request
# needs of its key and no more (every column decoded costs each request).
_ACTIVE_BY_HASH = sa.select(
    api_keys.c.id,
    api_keys.c.name,
    api_keys.c.scopes,
    api_keys.c.tenant,
    api_keys.c.conversations,
    api_keys.c.expires_at,
    api_keys.c.rate_limit,
).where(api_keys.c.key_hash == sa.bindparam("key_hash"), api_keys.c.revoked_at.is_(None))


@dataclass(frozen=True, slots=True)
class ActiveKey:
    """What a request needs of its unrevoked key."""

    id: str
    name: str
    scopes: tuple[str, ...]
    tenant: str | None
    conversations: tuple[str, ...] | None
    expires_at: datetime | None
    rate_limit: str | None


def hash_key(secret: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(secret.encode()).hexdigest()


class Keys:
    """Queries over `api_keys` on one connection."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def create(
        self,
        name: str,
        scopes: Sequence[str] = ("admin",),
        tenant: str | None = None,
        conversations: Sequence[str] | None = None,
        expires_at: datetime | None = None,
        rate_limit: str | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key and its secret (which is not stored)."""
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        key = ApiKey(
            id="key_" + secrets.token_hex(6),
            name=name,
            prefix=secret[:8],
            created_at=datetime.now(UTC),
            revoked_at=None,
            scopes=tuple(scopes),
            tenant=tenant,
            conversations=None if conversations is None else tuple(conversations),
            expires_at=expires_at,
            last_used_at=None,
            rate_limit=rate_limit,
        )
        await self._conn.execute(
            api_keys.insert().values(
                id=key.id,
                name=key.name,
                key_hash=hash_key(secret),
                prefix=key.prefix,
                created_at=key.created_at,
                scopes=list(key.scopes),
                tenant=key.tenant,
                conversations=None if key.conversations is None else list(key.conversations),
                expires_at=key.expires_at,
                rate_limit=key.rate_limit,
            )
        )
        return key, secret

    async def all(self, tenant: str | None = None) -> list[ApiKey]:
        """Every key (of one tenant's, when given), oldest first, revoked ones included."""
        query = sa.select(api_keys).order_by(api_keys.c.created_at)
        if tenant is not None:
            query = query.where(api_keys.c.tenant == tenant)
        return [_key(r) for r in await self._conn.execute(query)]

    async def get(self, key_id: str) -> ApiKey | None:
        """The key with this id, revoked or not."""
        row = (await self._conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id))).first()
        return _key(row) if row else None

    async def count(self) -> int:
        """How many keys exist, revoked ones included."""
        return int(await self._conn.scalar(sa.select(sa.func.count()).select_from(api_keys)) or 0)

    async def revoke(self, key_id: str) -> bool:
        """Revoke a key; False when there is no such active key."""
        result = await self._conn.execute(
            api_keys.update()
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )
        if result.rowcount != 1:
            return False
        key_changed(key_id)
        return True

    async def authenticate(self, key_hash: str) -> ActiveKey | None:
        """The unrevoked key whose secret has this `hash_key`, or None (expiry is the
        caller's to judge)."""
        row = (await self._conn.execute(_ACTIVE_BY_HASH, {"key_hash": key_hash})).first()
        if row is None:
            return None
        conversations = None if row.conversations is None else tuple(row.conversations)
        return ActiveKey(
            row.id,
            row.name,
            tuple(row.scopes),
            row.tenant,
            conversations,
            row.expires_at,
            row.rate_limit,
        )

    async def mark_used(self, last_use: Mapping[str, datetime]) -> None:
        """Record when keys were last used (never moving a time back)."""
        column = api_keys.c.last_used_at
        for key_id, moment in last_use.items():
            await self._conn.execute(
                api_keys.update()
                .where(api_keys.c.id == key_id, sa.or_(column.is_(None), column < moment))
                .values(last_used_at=moment)
            )


def _key(row: sa.Row[Any]) -> ApiKey:
    return ApiKey(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        scopes=tuple(row.scopes),
        tenant=row.tenant,
        conversations=None if row.conversations is None else tuple(row.conversations),
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        rate_limit=row.rate_limit,
    )
