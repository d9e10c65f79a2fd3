"""Conversation tokens issued and accepted (chatmedia.access.tokens signs them): the
event-stream token, the agent page's token and its link, and `identify`, which turns a
request's `Authorization` header, an API key or a page token, into its Principal.

A token is accepted only while the key that made it is active, still holds every scope it
grants and still sees its conversation; it then stands for a Principal restricted to that
one conversation and to the scopes granted, whatever else the key may do."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from chatmedia.access.links import MAX_TTL
from chatmedia.access.principal import DEFAULT_TENANT, Principal, Scope
from chatmedia.access.tokens import (
    KIND,
    PAGE_TOKEN_PREFIX,
    SECRET_NAME,
    ConversationGrant,
    Purpose,
    check_grant,
    sign_grant,
)
from chatmedia.db.keys import Keys
from chatmedia.db.secrets import server_secret
from chatmedia.errors import (
    BadRequest,
    ChatMediaError,
    NotFound,
    TenantNotAllowed,
    Unauthorized,
)
from chatmedia.pipelines.keys import KeySpec, authenticate, create_key, principal_for
from chatmedia.services import Services

PAGE_TTL = timedelta(hours=12)
MAX_PAGE_TTL = MAX_TTL  # 7 days, as signed file links
# What every page token may do: see the conversation's files, messages and events.
PAGE_READ_SCOPES: frozenset[Scope] = frozenset({"files:read", "messages:read", "events:read"})


@dataclass(frozen=True, slots=True)
class PageRights:
    """What an agent's page may do beyond looking: upload, delete files, send messages."""

    can_upload: bool = False
    can_delete: bool = False
    can_send: bool = False

    @property
    def scopes(self) -> frozenset[Scope]:
        """The scopes a page token with these rights carries."""
        extra: list[Scope] = []
        if self.can_upload:
            extra.append("files:write")
        if self.can_delete:
            extra.append("files:delete")
        if self.can_send:
            extra.append("messages:write")
        return PAGE_READ_SCOPES | frozenset(extra)


async def issue_token(
    services: Services,
    principal: Principal,
    conversation_id: str,
    scopes: frozenset[Scope],
    ttl: timedelta,
    purpose: Purpose,
) -> tuple[str, datetime]:
    """A token granting `scopes` in this conversation for `ttl` (never past the key's own
    expiry), and its expiry. Raises MissingScope (403) for a scope the principal lacks,
    NotFound for a conversation it does not see."""
    # 1. It grants only what it holds, where it may look.
    principal.require(*sorted(scopes))
    if not principal.sees(conversation_id):
        raise NotFound(f"no conversation '{conversation_id}'")
    _check_conversation(conversation_id)
    # 2. Until the earlier of the lifetime asked for and the key's expiry.
    expires = math.ceil(time.time() + ttl.total_seconds())  # at least as long as asked
    if principal.expires_at is not None:
        expires = min(expires, int(principal.expires_at.timestamp()))
    grant = ConversationGrant(
        purpose, expires, principal.key_id, principal.tenant, conversation_id, scopes
    )
    # 3. Signed with the secret every node shares.
    token = sign_grant(await server_secret(services.db, SECRET_NAME), grant)
    return token, datetime.fromtimestamp(expires, UTC)


async def check_token(
    services: Services, token: str, purpose: Purpose, conversation_id: str | None = None
) -> Principal:
    """The Principal a valid token for `purpose` (and, when given, this conversation)
    stands for: its key's, restricted to the token's conversation and scopes. Raises
    Unauthorized for a forged, expired or foreign token, or one whose key was revoked,
    expired, or no longer holds what the token grants."""
    # 1. The signature, the purpose, the expiry and the conversation.
    secret = await server_secret(services.db, SECRET_NAME)
    grant = check_grant(secret, token, purpose, time.time(), conversation_id)
    what = KIND[purpose]
    # 2. The key that made it, still active, in the token's tenant.
    async with services.db.read() as conn:
        key = await Keys(conn).get(grant.key_id)
    if key is None or not key.active(datetime.now(UTC)):
        raise Unauthorized(f"the key that made this {what} was revoked or has expired")
    try:
        issuer = principal_for(key, grant.tenant)
    except ChatMediaError:
        raise Unauthorized(f"the key that made this {what} no longer acts there") from None
    # 3. Still holding what it granted, where it granted it.
    if not issuer.sees(grant.conversation_id) or not all(issuer.has(s) for s in grant.scopes):
        raise Unauthorized(f"the key that made this {what} no longer grants it")
    services.key_use.record(key.id)
    expires = datetime.fromtimestamp(grant.expires, UTC)
    return replace(
        issuer,
        scopes=grant.scopes,
        conversations=(grant.conversation_id,),
        expires_at=min(expires, issuer.expires_at) if issuer.expires_at else expires,
        tenant_free=False,
        acting=False,
    )


async def identify(
    services: Services, authorization: str | None, tenant: str | None = None
) -> Principal:
    """The Principal of an `Authorization: Bearer …` header: a page token (`cmpage_…`),
    else an API key acting in `tenant` (chatmedia.pipelines.keys.authenticate). A page
    token acts only in its own tenant. Raises Unauthorized (401)."""
    scheme, _, secret = (authorization or "").partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret.startswith(PAGE_TOKEN_PREFIX):
        return await authenticate(services, authorization, tenant)
    principal = await check_token(services, secret, "page")
    if tenant is not None and tenant != principal.tenant:
        raise TenantNotAllowed(f"this page token cannot act in tenant {tenant}")
    return principal


async def ui_link(
    services: Services,
    principal: Principal,
    conversation_id: str,
    rights: PageRights,
    ttl: timedelta = PAGE_TTL,
) -> tuple[str, datetime]:
    """The link of the agent's media page of a conversation, and when it stops working.

    The token travels in the URL's fragment (`#token=…`): browsers never send a fragment
    to a server, nor in a Referer, so the token reaches no access log, proxy or other
    site; the page reads it and takes it out of the address bar at once."""
    _check_lifetime(ttl)
    token, expires = await issue_token(
        services, principal, conversation_id, rights.scopes, ttl, "page"
    )
    path = f"/ui/conversations/{quote(conversation_id, safe='')}"
    return f"{services.settings.public_url}{path}#token={token}", expires


async def operator_ui_link(
    services: Services,
    tenant: str,
    conversation_id: str,
    rights: PageRights,
    ttl: timedelta = PAGE_TTL,
) -> tuple[str, datetime, str]:
    """The page link `chatmedia ui-link` prints, its expiry and the id of the key it
    rests on. The operator holds no key, and a token must rest on one that can be revoked:
    a key of its own is made, with only the link's scopes, for that conversation alone,
    expiring with the link (`chatmedia keys revoke ID` ends the link at once)."""
    _check_conversation(conversation_id)  # before a key is made for nothing
    _check_lifetime(ttl)
    spec = KeySpec(
        name=f"ui-link {conversation_id}"[:100],
        scopes=tuple(sorted(rights.scopes)),
        tenant=None if tenant == DEFAULT_TENANT else tenant,
        conversations=(conversation_id,),
        expires_at=datetime.now(UTC) + ttl,
    )
    key, _ = await create_key(services, spec)
    url, expires = await ui_link(services, principal_for(key), conversation_id, rights, ttl)
    return url, expires, key.id


def _check_conversation(conversation_id: str) -> None:
    if "*" in conversation_id:  # a restriction to it would read as a prefix
        raise BadRequest("a conversation id with '*' cannot have a token")


def _check_lifetime(ttl: timedelta) -> None:
    if not timedelta(seconds=1) <= ttl <= MAX_PAGE_TTL:
        raise BadRequest("a page link lives from 1 second to 7 days")
