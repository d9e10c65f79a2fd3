"""Conversation tokens: a credential limited to one conversation of one tenant and to some
scopes, until an expiry, signed with a server secret (HMAC-SHA256).

Two kinds are made: the event-stream token (`?token=` of a conversation's SSE route, for a
browser's EventSource, which cannot send a header) and the page token of the agent's media
page (`Authorization: Bearer cmpage_…`, chatmedia.ui). A token names its purpose, so one
kind is never taken for the other. It also names the key that made it: the services
(chatmedia.pipelines.tokens) accept it only while that key is active, holds the scopes and
sees the conversation.

    token   = payload "." signature          (both unpadded base64url)
    payload = JSON [purpose, expires, key id, tenant, conversation, [scopes…]]

Here only signing and checking the signature, the purpose, the expiry and the
conversation: pure functions of a secret and a time, so they are tested exhaustively."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from chatmedia.access.principal import SCOPES, Scope
from chatmedia.errors import Unauthorized

Purpose = Literal["stream", "page"]
# How messages name each kind.
KIND: dict[Purpose, str] = {"stream": "stream token", "page": "page token"}
PAGE_TOKEN_PREFIX = "cmpage_"  # noqa: S105 (tells a page token from an API key)
# The name of the secret (kept in the database, shared by every node) that signs them.
SECRET_NAME = "events-stream-token"  # noqa: S105 (a name, not a secret); kept from before pages
# A token longer than this is not ours (a payload holds at most 255 + 64 + a few ids).
MAX_TOKEN_LENGTH = 2048


@dataclass(frozen=True, slots=True)
class ConversationGrant:
    """What a token grants: `scopes` in one conversation of `tenant`, until `expires`
    (Unix seconds), on behalf of the key `key_id`."""

    purpose: Purpose
    expires: int
    key_id: str
    tenant: str
    conversation_id: str
    scopes: frozenset[Scope]


def sign_grant(secret: bytes, grant: ConversationGrant) -> str:
    """The token of `grant` (page tokens carry PAGE_TOKEN_PREFIX)."""
    fields = [
        grant.purpose,
        grant.expires,
        grant.key_id,
        grant.tenant,
        grant.conversation_id,
        sorted(grant.scopes),
    ]
    payload = _b64(json.dumps(fields, separators=(",", ":")).encode())
    token = f"{payload}.{_b64(_mac(secret, payload))}"
    return PAGE_TOKEN_PREFIX + token if grant.purpose == "page" else token


def check_grant(
    secret: bytes,
    token: str,
    purpose: Purpose,
    now: float,
    conversation_id: str | None = None,
) -> ConversationGrant:
    """The grant of a token signed with `secret`, for `purpose`, unexpired at `now` and,
    when given, for `conversation_id`; raises Unauthorized otherwise (the message never
    repeats the token)."""
    what = KIND[purpose]
    if purpose == "page":
        if not token.startswith(PAGE_TOKEN_PREFIX):
            raise Unauthorized(f"the {what} is not valid")
        token = token[len(PAGE_TOKEN_PREFIX) :]
    payload, _, signature = token.partition(".")
    # Ours are short base64url text: anything else fails before any work.
    if len(token) > MAX_TOKEN_LENGTH or not token.isascii():
        raise Unauthorized(f"the {what} is not valid")
    if not hmac.compare_digest(_b64(_mac(secret, payload)), signature):
        raise Unauthorized(f"the {what} is not valid")
    grant = _parse(payload)
    if grant is None or grant.purpose != purpose:
        raise Unauthorized(f"the {what} is not valid")
    if grant.expires <= now:
        raise Unauthorized(f"the {what} has expired; ask for a new one")
    if conversation_id is not None and grant.conversation_id != conversation_id:
        raise Unauthorized(f"the {what} is for another conversation")
    return grant


def scope_set(names: Iterable[str]) -> frozenset[Scope]:
    """The scopes among `names` (unknown names are dropped)."""
    wanted = set(names)
    return frozenset(s for s in SCOPES if s in wanted)


def _parse(payload: str) -> ConversationGrant | None:
    # Only a payload we signed gets here; still, never trust its shape blindly.
    try:
        fields = json.loads(_unb64(payload))
        purpose, expires, key_id, tenant, conversation, scopes = fields
    except (ValueError, TypeError):
        return None
    texts = (purpose, key_id, tenant, conversation)
    if not all(isinstance(t, str) for t in texts) or type(expires) is not int:
        return None
    if purpose not in ("stream", "page") or not isinstance(scopes, list):
        return None
    return ConversationGrant(purpose, expires, key_id, tenant, conversation, scope_set(scopes))


def _mac(secret: bytes, payload: str) -> bytes:
    return hmac.new(secret, payload.encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, binascii.Error):
        raise ValueError("not base64") from None
