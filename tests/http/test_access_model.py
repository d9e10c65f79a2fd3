"""Random keys against files of two tenants: a read succeeds exactly when a model of the
access rules, written here apart from the server's, says it may."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from chatmedia.config import load_settings
from chatmedia.http.app import create_app
from chatmedia.pipelines.keys import KeySpec, create_key
from tests.conftest import png_bytes
from tests.http.conftest import Api

TENANTS = ("default", "t2")
CONVERSATIONS = ("acme-1", "acme-2", "beta-1", "acme", None)
PATTERNS = ("acme-*", "acme-1", "beta-*", "beta-1", "a*", "acme", "zzz", "*")
SCOPES = ("files:read", "files:write", "messages:read", "admin")
World = tuple[Api, list[dict[str, Any]]]


def may_read(key: dict[str, Any], file: dict[str, Any]) -> tuple[bool, int]:
    """The model: (may read, the status when not)."""
    if "files:read" not in key["scopes"] and "admin" not in key["scopes"]:
        return False, 403
    if (key["tenant"] or "default") != file["tenant"]:
        return False, 404
    allowed = key["conversations"]
    if allowed is None:
        return True, 200
    conversation = file["conversationId"]
    if conversation is None:
        return False, 404
    for pattern in allowed:
        if pattern.endswith("*") and conversation[: len(pattern) - 1] == pattern[:-1]:
            return True, 200
        if pattern == conversation:
            return True, 200
    return False, 404


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("access")
    app = create_app(load_settings({"CHATMEDIA_DATA_DIR": str(root / "data")}, cwd=root))
    with TestClient(app, raise_server_exceptions=False) as client:
        services = app.state.services
        _, secret = client.portal.call(create_key, services, KeySpec("admin"))  # type: ignore[union-attr]
        yield _made(Api(client=client, key=secret, services=services))


def _made(api: Api) -> World:
    made = []
    for tenant in TENANTS:
        for n, conversation in enumerate(CONVERSATIONS):
            data = {"conversationId": conversation} if conversation else {}
            answer = api.client.post(
                "/v1/files",
                params={"tenant": tenant},
                headers=api.auth,
                files={"file": (f"{n}.png", png_bytes(n + 1, 1))},
                data=data,
            )
            assert answer.status_code == 201, answer.text
            made.append(answer.json() | {"tenant": tenant})
    return api, made


keys = st.fixed_dictionaries(
    {
        "tenant": st.sampled_from((None, *TENANTS)),
        "scopes": st.lists(st.sampled_from(SCOPES), min_size=1, max_size=3, unique=True),
        "conversations": st.none() | st.lists(st.sampled_from(PATTERNS), min_size=1, max_size=3),
    }
)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(key=keys)
def test_reads_follow_the_model(
    world: tuple[Api, list[dict[str, Any]]], key: dict[str, Any]
) -> None:
    api, files = world
    spec = KeySpec(
        name="random",
        scopes=tuple(key["scopes"]),
        tenant=key["tenant"],
        conversations=tuple(key["conversations"]) if key["conversations"] else None,
    )
    key["conversations"] = spec.conversations
    _, secret = api.client.portal.call(create_key, api.services, spec)  # type: ignore[union-attr]
    headers = {"Authorization": f"Bearer {secret}"}
    for file in files:
        _allowed, status = may_read(key, file)
        answer = api.client.get(f"/v1/files/{file['id']}", headers=headers)
        assert answer.status_code == status, (key, file["tenant"], file["conversationId"])
        content = api.client.get(f"/v1/files/{file['id']}/content", headers=headers)
        assert content.status_code == status
    listed = api.client.get("/v1/files", headers=headers, params={"limit": 100})
    if may_read(key, files[0])[1] == 403:
        assert listed.status_code == 403
        return
    expected = {f["id"] for f in files if may_read(key, f)[0]}
    assert {f["id"] for f in listed.json()["items"]} == expected
