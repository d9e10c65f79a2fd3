"""Who is asking, as one value every workflow receives.

A key (and later a signed URL or a page token) becomes a `Principal`: what it may do
(scopes), in which tenant, and within which conversations. Workflows ask it; routes never
check access by hand.

    files:read  files:write  files:delete  messages:read  messages:write  events:read
    webhooks    admin (keys, tenants, the admin routes; implies every other scope)

A conversation restriction is a list of exact ids and prefixes written `acme-*`. A key
restricted to conversations sees only things of those conversations: a file without a
conversation is outside every restriction. Outside, a read answers as if nothing were
there (404); a creation is refused (403 conversation_not_allowed).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args

from chatmedia.errors import ConversationNotAllowed, MissingScope

Scope = Literal[
    "files:read",
    "files:write",
    "files:delete",
    "messages:read",
    "messages:write",
    "events:read",
    "webhooks",
    "admin",
]
SCOPES: tuple[Scope, ...] = get_args(Scope)
ADMIN: Scope = "admin"
DEFAULT_TENANT = "default"
TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
# An exact conversation id, or a prefix ending in "*".
CONVERSATION_PATTERN = r"^[^*]{1,255}\*?$"
_TENANT = re.compile(TENANT_PATTERN)


def is_tenant(text: str) -> bool:
    """A valid tenant name: 1-64 letters, digits, '.', '_' or '-', not starting with one
    of the last three."""
    return _TENANT.fullmatch(text) is not None


def conversation_matches(patterns: Iterable[str], conversation_id: str) -> bool:
    """True when the id is one of `patterns` or starts with a `prefix*` of them."""
    return any(
        conversation_id.startswith(p[:-1]) if p.endswith("*") else conversation_id == p
        for p in patterns
    )


def pattern_covered(patterns: Iterable[str], pattern: str) -> bool:
    """True when every conversation `pattern` names is one of `patterns`' too."""
    if not pattern.endswith("*"):
        return conversation_matches(patterns, pattern)
    prefix = pattern[:-1]
    return any(p.endswith("*") and prefix.startswith(p[:-1]) for p in patterns)


@dataclass(frozen=True, slots=True)
class Principal:
    """What the request may do: the key's id and name (the sender of its messages), its
    scopes, the tenant it acts in, and its conversation restriction (None: any)."""

    key_id: str
    key_name: str
    scopes: frozenset[Scope]
    tenant: str
    conversations: tuple[str, ...] | None = None
    expires_at: datetime | None = None
    # A key without a tenant of its own (it may act in any, when admin), and whether it
    # acts in another tenant than the default one (?tenant=).
    tenant_free: bool = False
    acting: bool = False
    # The key's own request rate ("50/s"), when it has one (chatmedia.fairuse).
    rate_limit: str | None = None

    def has(self, scope: Scope) -> bool:
        """True when the principal holds `scope` (admin holds every scope)."""
        return scope in self.scopes or ADMIN in self.scopes

    def require(self, *scopes: Scope) -> None:
        """Raise MissingScope (403) unless the principal holds every one of `scopes`."""
        missing = [s for s in scopes if not self.has(s)]
        if missing:
            raise MissingScope(f"this key lacks the scope {', '.join(missing)}")

    def sees(self, conversation_id: str | None) -> bool:
        """True when things of this conversation (None: of none) are visible to it."""
        if self.conversations is None:
            return True
        return conversation_id is not None and conversation_matches(
            self.conversations, conversation_id
        )

    def check_create(self, conversation_id: str | None) -> None:
        """Raise ConversationNotAllowed (403) unless it may create things there."""
        if not self.sees(conversation_id):
            where = f"conversation {conversation_id}" if conversation_id else "no conversation"
            raise ConversationNotAllowed(f"this key may not create things in {where}")


def operator(tenant: str = DEFAULT_TENANT) -> Principal:
    """Every right in `tenant`: who acts from the command line, and the server's own work."""
    return Principal(
        key_id="operator",
        key_name="operator",
        scopes=frozenset({ADMIN}),
        tenant=tenant,
        tenant_free=True,
    )


def widget(tenant: str) -> Principal:
    """A customer widget uploading without a key (CHATMEDIA_COMPAT_UPLOAD=open): it may
    add files to `tenant`, and nothing else."""
    return Principal(
        key_id="widget",
        key_name="customer widget",
        scopes=frozenset({"files:write"}),
        tenant=tenant,
    )
