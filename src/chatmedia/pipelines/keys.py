"""API keys: creating, listing, revoking, and turning a request's key into a Principal.

Every change to a key is written to the log as one structured line (who, what, when)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from chatmedia.access.principal import (
    ADMIN,
    DEFAULT_TENANT,
    Principal,
    Scope,
    is_tenant,
    pattern_covered,
)
from chatmedia.db.keys import ActiveKey, Keys, hash_key
from chatmedia.errors import (
    BadRequest,
    ConversationNotAllowed,
    KeyNotFound,
    MissingScope,
    TenantNotAllowed,
    Unauthorized,
)
from chatmedia.fairuse.rates import Rate, parse_rate
from chatmedia.models import ApiKey
from chatmedia.services import Services

FIRST_KEY_NAME = "default"
MISSING_KEY = "send an API key as 'Authorization: Bearer <key>'"
OPERATOR = "operator"  # who acts from the command line, in the audit log
audit = logging.getLogger("chatmedia.audit")


@dataclass(frozen=True, slots=True)
class KeySpec:
    """What a new key may do: by default everything (admin), in no tenant of its own."""

    name: str
    scopes: tuple[Scope, ...] = (ADMIN,)
    tenant: str | None = None
    conversations: tuple[str, ...] | None = None
    expires_at: datetime | None = None
    rate_limit: Rate | None = None


def audit_line(action: str, actor: str, **details: object) -> None:
    """One structured line for the audit log: who did what, when."""
    record = {"action": action, "actor": actor, "at": datetime.now(UTC).isoformat()} | details
    audit.info("%s", json.dumps(record, default=str, separators=(",", ":")))


async def create_key(
    services: Services, spec: KeySpec, creator: Principal | None = None
) -> tuple[ApiKey, str]:
    """A new key and its secret, which is shown once and never stored. A `creator` (None:
    the operator) can never give a key more than it has itself: a scope it lacks, another
    tenant, conversations outside its own, or a later expiry."""
    if creator is not None:
        spec = _delegated(creator, spec, services.settings.rate_limit)
    if spec.tenant is not None and not is_tenant(spec.tenant):
        raise BadRequest("tenant must be 1-64 letters, digits, '.', '_' or '-'")
    if spec.expires_at is not None and spec.expires_at <= datetime.now(UTC):
        raise BadRequest("expiresAt must be in the future")
    async with services.db.write() as conn:
        key, secret = await Keys(conn).create(
            spec.name,
            spec.scopes,
            spec.tenant,
            spec.conversations,
            spec.expires_at,
            None if spec.rate_limit is None else str(spec.rate_limit),
        )
    audit_line(
        "key.created",
        creator.key_id if creator else OPERATOR,
        key=key.id,
        scopes=list(key.scopes),
        tenant=key.tenant,
        conversations=key.conversations,
        expires_at=key.expires_at,
        rate_limit=key.rate_limit,
    )
    return key, secret


def _delegated(creator: Principal, spec: KeySpec, default_rate: Rate | None) -> KeySpec:
    """`spec` as `creator` may grant it, its tenant and expiry defaulting to the creator's."""
    lacking = [s for s in spec.scopes if not creator.has(s)]
    if lacking:
        raise MissingScope(f"a key cannot grant scopes it lacks: {', '.join(lacking)}")
    tenant = spec.tenant
    if not creator.tenant_free or creator.acting:
        tenant = tenant or creator.tenant
        if tenant != creator.tenant:
            raise TenantNotAllowed(f"this key cannot create keys in tenant {tenant}")
    conversations = spec.conversations
    if creator.conversations is not None:
        conversations = conversations or creator.conversations
        outside = [c for c in conversations if not pattern_covered(creator.conversations, c)]
        if outside:
            raise ConversationNotAllowed(
                f"a key cannot grant conversations outside its own: {', '.join(outside)}"
            )
    expires_at = spec.expires_at
    if creator.expires_at is not None:
        expires_at = min(expires_at or creator.expires_at, creator.expires_at)
    return KeySpec(
        spec.name,
        spec.scopes,
        tenant,
        conversations,
        expires_at,
        _rate_granted(creator, spec.rate_limit, default_rate),
    )


def _rate_granted(creator: Principal, wanted: Rate | None, default: Rate | None) -> Rate | None:
    """The rate a key gives another: at most its own (its own rate, else the default), so
    that no key lifts its tenant's limits; by default its own rate when it has one."""
    own = parse_rate(creator.rate_limit) if creator.rate_limit else None
    if wanted is None:
        return own
    ceiling = own or default
    if ceiling is not None and wanted.per_second > ceiling.per_second:
        raise BadRequest(f"a key cannot grant a rate above its own ({ceiling})")
    return wanted


async def create_first_key(services: Services) -> str | None:
    """On an empty database, create the first key (admin) and return its secret."""
    async with services.db.write() as conn:
        keys = Keys(conn)
        if await keys.count():
            return None
        key, secret = await keys.create(FIRST_KEY_NAME, (ADMIN,))
    audit_line("key.created", OPERATOR, key=key.id, scopes=[ADMIN], first=True)
    return secret


async def list_keys(services: Services, viewer: Principal | None = None) -> list[ApiKey]:
    """Every key the viewer may manage (the operator: all), revoked ones included: a key
    without a tenant of its own sees every key, unless it acts in a tenant."""
    tenant = None if viewer is None or (viewer.tenant_free and not viewer.acting) else viewer.tenant
    async with services.db.read() as conn:
        return await Keys(conn).all(tenant)


async def revoke_key(services: Services, key_id: str, revoker: Principal | None = None) -> None:
    """Revoke a key: from now on every request with it gets 401. Raises KeyNotFound when
    there is no such active key the revoker may manage."""
    async with services.db.write() as conn:
        keys = Keys(conn)
        key = await keys.get(key_id)
        if key is None or (revoker is not None and not _manages(revoker, key)):
            raise KeyNotFound(f"no key {key_id}")
        if not await keys.revoke(key_id):
            raise KeyNotFound(f"key {key_id} is already revoked")
    audit_line("key.revoked", revoker.key_id if revoker else OPERATOR, key=key_id)


def _manages(principal: Principal, key: ApiKey) -> bool:
    if principal.tenant_free and not principal.acting:
        return True
    return (key.tenant or DEFAULT_TENANT) == principal.tenant


def principal_for(key: ApiKey | ActiveKey, tenant: str | None = None) -> Principal:
    """What `key` may do, acting in `tenant` (a key without a tenant of its own works in
    the default one; an admin key without one may act in any)."""
    own = key.tenant or DEFAULT_TENANT
    acting = tenant is not None and tenant != own
    if acting:
        assert tenant is not None
        if not is_tenant(tenant):
            raise BadRequest("tenant must be 1-64 letters, digits, '.', '_' or '-'")
        if key.tenant is not None or ADMIN not in key.scopes:
            raise TenantNotAllowed(f"this key cannot act in tenant {tenant}")
    return Principal(
        key_id=key.id,
        key_name=key.name,
        scopes=frozenset(key.scopes),  # type: ignore[arg-type]
        tenant=tenant if acting and tenant else own,
        conversations=key.conversations,
        expires_at=key.expires_at,
        tenant_free=key.tenant is None,
        acting=acting,
        rate_limit=key.rate_limit,
    )


async def authenticate(
    services: Services, authorization: str | None, tenant: str | None = None
) -> Principal:
    """The principal of an `Authorization: Bearer <key>` header, acting in `tenant` when
    given; raises Unauthorized for a missing, unknown, revoked or expired key."""
    scheme, _, secret = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized(MISSING_KEY)
    key_hash = hash_key(secret.strip())
    key = services.cache.key(key_hash)
    if key is None:
        version = services.cache.version()
        async with services.db.read() as conn:
            key = await Keys(conn).authenticate(key_hash)
        if key is not None:
            services.cache.keep_key(key_hash, key, version)
    if key is None:
        raise Unauthorized("the API key is not valid")
    if key.expires_at is not None and key.expires_at <= datetime.now(UTC):
        raise Unauthorized("the API key has expired")
    services.key_use.record(key.id)
    return principal_for(key, tenant)


async def record_key_use(services: Services) -> None:
    """Write the last-use times gathered since the previous call (to the minute)."""
    used = services.key_use.drain()
    if used:
        async with services.db.write() as conn:
            await Keys(conn).mark_used(used)


def parse_scopes(names: Sequence[str]) -> tuple[Scope, ...]:
    """Scope names as given by a client; raises BadRequest for an unknown one."""
    from chatmedia.access.principal import SCOPES

    unknown = [n for n in names if n not in SCOPES]
    if unknown:
        raise BadRequest(f"unknown scopes: {', '.join(unknown)}; use {', '.join(SCOPES)}")
    return tuple(dict.fromkeys(names))  # type: ignore[arg-type]
