"""Conversation tokens (chatmedia.access.tokens, chatmedia.pipelines.tokens): a tampered,
expired, foreign or misused token is refused, and a token never grants more than its key
holds, nor anywhere else than its one conversation."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatmedia.access.principal import SCOPES, Principal, Scope
from chatmedia.access.tokens import (
    PAGE_TOKEN_PREFIX,
    ConversationGrant,
    check_grant,
    sign_grant,
)
from chatmedia.config import Settings
from chatmedia.db.migrate import upgrade
from chatmedia.errors import BadRequest, MissingScope, NotFound, TenantNotAllowed, Unauthorized
from chatmedia.pipelines.keys import KeySpec, create_key, principal_for, revoke_key
from chatmedia.pipelines.tokens import (
    PAGE_READ_SCOPES,
    PageRights,
    check_token,
    identify,
    issue_token,
    ui_link,
)
from chatmedia.services import Services, open_services

SECRET = b"s" * 32
NOW = 1_800_000_000
conversations = st.text(st.characters(exclude_characters="*"), min_size=1, max_size=255)
scope_sets = st.frozensets(st.sampled_from(SCOPES))


def grant(**changes: object) -> ConversationGrant:
    base = ConversationGrant("page", NOW + 60, "key_1", "acme", "c42", PAGE_READ_SCOPES)
    return replace(base, **changes)  # type: ignore[arg-type]


@given(
    conversation=conversations,
    tenant=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True),
    scopes=scope_sets,
    purpose=st.sampled_from(["page", "stream"]),
)
def test_a_token_round_trips(
    conversation: str, tenant: str, scopes: frozenset[Scope], purpose: str
) -> None:
    made = grant(conversation_id=conversation, tenant=tenant, scopes=scopes, purpose=purpose)
    token = sign_grant(SECRET, made)
    assert token.startswith(PAGE_TOKEN_PREFIX) == (purpose == "page")
    assert token.isascii()
    assert check_grant(SECRET, token, made.purpose, NOW, conversation) == made


@given(position=st.integers(min_value=0), replacement=st.characters(codec="ascii"))
def test_any_changed_character_is_refused(position: int, replacement: str) -> None:
    token = sign_grant(SECRET, grant())
    body = token[len(PAGE_TOKEN_PREFIX) :]
    position %= len(body)
    if body[position] == replacement:
        return
    forged = PAGE_TOKEN_PREFIX + body[:position] + replacement + body[position + 1 :]
    # The signature is compared as text, so even a last character whose low bits base64
    # would ignore counts.
    with pytest.raises(Unauthorized):
        check_grant(SECRET, forged, "page", NOW)


@given(garbage=st.text(max_size=300))
def test_garbage_is_refused_as_unauthorized(garbage: str) -> None:
    for token in (garbage, PAGE_TOKEN_PREFIX + garbage):
        with pytest.raises(Unauthorized):
            check_grant(SECRET, token, "page", NOW)


def test_expired_foreign_and_misused_tokens_are_refused() -> None:
    token = sign_grant(SECRET, grant())
    assert check_grant(SECRET, token, "page", NOW + 59).conversation_id == "c42"
    with pytest.raises(Unauthorized, match="expired"):
        check_grant(SECRET, token, "page", NOW + 60)
    with pytest.raises(Unauthorized, match="another conversation"):
        check_grant(SECRET, token, "page", NOW, "c43")
    with pytest.raises(Unauthorized):
        check_grant(b"t" * 32, token, "page", NOW)  # another deployment's secret
    with pytest.raises(Unauthorized):
        check_grant(SECRET, token, "stream", NOW)  # a page token does not open a stream
    stream = sign_grant(SECRET, grant(purpose="stream"))
    with pytest.raises(Unauthorized):
        check_grant(SECRET, PAGE_TOKEN_PREFIX + stream, "page", NOW)


@given(
    rights=st.tuples(st.booleans(), st.booleans(), st.booleans()),
    held=scope_sets,
)
def test_rights_map_to_scopes_within_the_read_ones(
    rights: tuple[bool, bool, bool], held: frozenset[Scope]
) -> None:
    scopes = PageRights(*rights).scopes
    assert scopes >= PAGE_READ_SCOPES
    assert ("files:write" in scopes, "files:delete" in scopes, "messages:write" in scopes) == rights
    assert "admin" not in scopes
    assert "webhooks" not in scopes


@pytest.fixture
async def services(make_settings: Callable[..., Settings]) -> AsyncIterator[Services]:
    opened = open_services(make_settings())
    await upgrade(opened.db)
    yield opened
    await opened.close()


async def key(services: Services, *scopes: Scope, **spec: object) -> Principal:
    made, _ = await create_key(services, KeySpec("k", scopes or ("admin",), **spec))  # type: ignore[arg-type]
    return principal_for(made)


@pytest.mark.anyio
async def test_a_page_token_stands_for_one_conversation_and_the_rights_granted(
    services: Services,
) -> None:
    issuer = await key(services, "files:read", "files:write", "messages:read", "events:read")
    rights = PageRights(can_upload=True)
    url, expires = await ui_link(services, issuer, "c 42/x", rights)
    assert url.startswith(f"{services.settings.public_url}/ui/conversations/c%2042%2Fx#token=")
    lives = expires - datetime.now(UTC)
    assert timedelta(hours=11, minutes=59) < lives <= timedelta(hours=12, seconds=1)  # rounded up
    token = url.split("#token=")[1]
    principal = await identify(services, f"Bearer {token}")
    assert principal.conversations == ("c 42/x",)
    assert principal.scopes == rights.scopes
    assert principal.sees("c 42/x")
    assert not principal.sees("c 42/x2")
    assert not principal.sees(None)
    assert principal.tenant == "default"
    assert not principal.has("files:delete")
    with pytest.raises(TenantNotAllowed):
        await identify(services, f"Bearer {token}", tenant="other")
    # A key is still a key.
    _, secret = await create_key(services, KeySpec("plain", ("files:read",)))
    assert (await identify(services, f"Bearer {secret}")).conversations is None


@pytest.mark.anyio
async def test_a_token_grants_nothing_its_key_lacks(services: Services) -> None:
    reader = await key(services, "files:read", "messages:read", "events:read")
    for rights in (PageRights(can_upload=True), PageRights(can_delete=True), PageRights(True)):
        with pytest.raises(MissingScope):
            await ui_link(services, reader, "c1", rights)
    with pytest.raises(MissingScope):  # not even the reading ones
        await ui_link(services, await key(services, "files:read"), "c1", PageRights())
    restricted = await key(
        services, "files:read", "messages:read", "events:read", conversations=("acme-*",)
    )
    with pytest.raises(NotFound):
        await ui_link(services, restricted, "other", PageRights())
    assert await ui_link(services, restricted, "acme-1", PageRights())
    with pytest.raises(BadRequest):  # it would read as a prefix
        await ui_link(services, await key(services), "acme-*", PageRights())
    with pytest.raises(BadRequest):
        await ui_link(services, reader, "c1", PageRights(), timedelta(days=8))


@pytest.mark.anyio
async def test_a_token_lives_no_longer_than_its_key_and_dies_with_it(
    services: Services,
) -> None:
    soon = datetime.now(UTC) + timedelta(minutes=5)
    short = await key(services, expires_at=soon)
    _, expires = await ui_link(services, short, "c1", PageRights(True, True, True))
    assert expires <= soon
    admin = await key(services)
    token, _ = await issue_token(
        services, admin, "c1", PAGE_READ_SCOPES, timedelta(hours=1), "page"
    )
    assert (await check_token(services, token, "page")).key_id == admin.key_id
    await revoke_key(services, admin.key_id)
    with pytest.raises(Unauthorized, match="revoked"):
        await check_token(services, token, "page")


@pytest.mark.anyio
async def test_stream_and_page_tokens_are_not_interchangeable(services: Services) -> None:
    admin = await key(services)
    stream, _ = await issue_token(
        services, admin, "c1", frozenset({"events:read"}), timedelta(minutes=5), "stream"
    )
    with pytest.raises(Unauthorized):
        await identify(services, f"Bearer {PAGE_TOKEN_PREFIX}{stream}")
    principal = await check_token(services, stream, "stream", "c1")
    assert principal.scopes == frozenset({"events:read"})
    assert principal.conversations == ("c1",)
    with pytest.raises(Unauthorized):
        await check_token(services, stream, "stream", "c2")
