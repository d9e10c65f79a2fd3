"""Repository of API keys. A key is shown once when created; only its SHA-256 is stored
(keys carry 256 random bits, so a fast hash is enough)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from chatmedia.db.engine import Conn
from chatmedia.db.schema import api_keys
from chatmedia.models import ApiKey

KEY_PREFIX = "cm_"
# The lookup of every request, built once (see chatmedia.db.files).
_ACTIVE_BY_HASH = sa.select(api_keys).where(
    api_keys.c.key_hash == sa.bindparam("key_hash"), api_keys.c.revoked_at.is_(None)
)


def hash_key(secret: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(secret.encode()).hexdigest()


class Keys:
    """Queries over `api_keys` on one connection."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def create(self, name: str) -> tuple[ApiKey, str]:
        """A new key and its secret (which is not stored)."""
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        key = ApiKey(
            id="key_" + secrets.token_hex(6),
            name=name,
            prefix=secret[:8],
            created_at=datetime.now(UTC),
            revoked_at=None,
        )
        await self._conn.execute(
            api_keys.insert().values(
                id=key.id,
                name=key.name,
                key_hash=hash_key(secret),
                prefix=key.prefix,
                created_at=key.created_at,
            )
        )
        return key, secret

    async def all(self) -> list[ApiKey]:
        """Every key, oldest first, revoked ones included."""
        rows = await self._conn.execute(sa.select(api_keys).order_by(api_keys.c.created_at))
        return [_key(r) for r in rows]

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
        return result.rowcount == 1

    async def is_active(self, key_id: str) -> bool:
        """True while the key with this id exists and is not revoked."""
        query = sa.select(api_keys.c.id).where(
            api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None)
        )
        return (await self._conn.execute(query)).first() is not None

    async def authenticate(self, secret: str) -> ApiKey | None:
        """The active key with this secret, or None."""
        row = (await self._conn.execute(_ACTIVE_BY_HASH, {"key_hash": hash_key(secret)})).first()
        return _key(row) if row else None


def _key(row: sa.Row[Any]) -> ApiKey:
    return ApiKey(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )
