"""Who may see what, through a real `chatmedia serve`: every route against a key without
its scope, a key of another tenant, a key restricted to another conversation, an expired
key and a revoked one; key management over HTTP and the command line."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from chatmedia.access.principal import SCOPES
from tests.conftest import png_bytes
from tests.e2e.conftest import Server
from tests.pgserver import PostgresServer, postgres
from tests.receivers import WebhookReceiver, sse_events
from tests.s3server import S3Server, s3_server

__all__ = ["postgres", "s3_server"]  # the session's servers, for the world fixture
pytestmark = pytest.mark.e2e
PNG = png_bytes(2, 2)
CONVERSATION = "c-a"
MADE_UP = "nothing_here_at_all_x1"


@dataclass
class World:
    """A server with one file, message and webhook in the default tenant (conversation
    c-a), and keys to try them with."""

    server: Server
    file: dict[str, Any]
    message: dict[str, Any]
    webhook: dict[str, Any]
    keys: dict[str, str]

    def call(self, key: str | None, route: Route, real: bool = True) -> httpx.Response:
        """The route called with `key`, on the real things (else on made-up ids)."""
        headers = {"Authorization": f"Bearer {self.keys[key]}"} if key else {}
        path = route.path.format(
            file=self.file["id"] if real else MADE_UP,
            message=self.message["id"] if real else MADE_UP,
            webhook=self.webhook["id"] if real else MADE_UP,
            name=self.file["storedName"] if real else MADE_UP,
            c=CONVERSATION,
        )
        with self.server.client(headers=headers) as client:
            return client.request(route.method, path, **route.body())


def create_key(server: Server, **body: Any) -> str:
    """A new key's secret, created over HTTP with the first (admin) key."""
    with server.client(headers=server.auth) as client:
        answer = client.post("/v1/keys", json={"name": "k"} | body)
    assert answer.status_code == 201, answer.text
    secret: str = answer.json()["key"]
    return secret


@pytest.fixture(scope="module", params=["sqlite+local", "postgresql+s3"])
def world(
    request: pytest.FixtureRequest,
    start_server: Callable[..., Server],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[World]:
    # The matrix sends hundreds of bad keys from this one address: no lockout here (it has
    # tests of its own in test_fair_use.py).
    settings = {
        "import_allow_networks": "127.0.0.1/32",
        "import_ports": "1-65535",
        "auth_failure_limit": "off",
    }
    if request.param == "sqlite+local":
        yield _world(start_server(**settings))
        return
    postgres: PostgresServer = request.getfixturevalue("postgres")
    s3: S3Server = request.getfixturevalue("s3_server")
    server = Server(
        tmp_path_factory.mktemp("pg-access"),
        database_url=postgres.new_database(),
        storage_url=s3.url("access-" + secrets.token_hex(4)),
        **settings,
    )
    server.cli("migrate")
    server.start()
    yield _world(server)
    server.stop()


def _world(server: Server) -> World:
    with server.client(headers=server.auth) as client:
        file = client.post(
            "/v1/files", files={"file": ("a.png", PNG)}, data={"conversationId": CONVERSATION}
        ).json()
        message = client.post(
            f"/v1/conversations/{CONVERSATION}/messages", json={"fileId": file["id"]}
        ).json()
        webhook = client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/h"}).json()
    everything = [s for s in SCOPES if s != "admin"]
    keys = {
        "admin": server.key,
        "other tenant": create_key(server, scopes=["admin"], tenant="t2"),
        "other conversation": create_key(server, scopes=everything, conversations=["c-b*"]),
        "expired": create_key(
            server,
            scopes=["admin"],
            expiresAt=(datetime.now(UTC) + timedelta(seconds=1)).isoformat(),
        ),
    }
    for scope in SCOPES:
        keys[f"without {scope}"] = create_key(server, scopes=[s for s in everything if s != scope])
    with server.client(headers=server.auth) as client:
        answer = client.post("/v1/keys", json={"name": "doomed", "scopes": ["admin"]}).json()
        keys["revoked"] = answer["key"]
        assert client.delete(f"/v1/keys/{answer['id']}").status_code == 204
    time.sleep(1.1)  # the expiring key's second passes
    return World(server, file, message, webhook, keys)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    scope: str | None
    # What a key of another tenant, and one restricted to another conversation, get.
    other_tenant: int
    other_conversation: int
    json: dict[str, Any] | None = None
    form: dict[str, str] | None = None

    def body(self) -> dict[str, Any]:
        if self.form is not None:
            return {"files": {"file": ("b.png", PNG)}, "data": self.form}
        return {"json": self.json} if self.json is not None else {}


ROUTES = [
    Route("GET", "/v1/files", "files:read", 200, 200),
    Route("GET", "/v1/files/{file}", "files:read", 404, 404),
    Route("GET", "/v1/files/{file}/content", "files:read", 404, 404),
    Route("HEAD", "/v1/files/{file}/content", "files:read", 404, 404),
    Route("DELETE", "/v1/files/{file}", "files:delete", 404, 404),
    Route("POST", "/v1/files", "files:write", 201, 403, form={"conversationId": CONVERSATION}),
    Route(
        "POST",
        "/v1/files/external",
        "files:write",
        201,
        403,
        json={
            "url": "https://x.example/a.png",
            "contentType": "image/png",
            "size": 1,
            "conversationId": CONVERSATION,
        },
    ),
    Route(
        "POST",
        "/v1/files/import",
        "files:write",
        403,  # it gets as far as the fetch, which no destination allows here
        403,
        json={"sourceUrl": "http://127.0.0.2:9/x", "conversationId": CONVERSATION},
    ),
    Route("GET", "/v1/conversations/{c}/messages", "messages:read", 200, 200),
    Route("GET", "/v1/conversations/{c}/messages/{message}", "messages:read", 404, 404),
    Route("DELETE", "/v1/conversations/{c}/messages/{message}", "messages:write", 404, 404),
    Route("POST", "/v1/conversations/{c}/messages", "messages:write", 201, 403, json={"body": "x"}),
    Route("POST", "/v1/conversations/{c}/events/token", "events:read", 200, 404),
    Route("POST", "/v1/conversations/{c}/ui-links", "files:read", 201, 404, json={}),
    Route("GET", "/v1/webhooks", "webhooks", 200, 403),
    Route("GET", "/v1/webhooks/{webhook}", "webhooks", 404, 403),
    Route("GET", "/v1/webhooks/{webhook}/deliveries", "webhooks", 404, 403),
    Route("DELETE", "/v1/webhooks/{webhook}", "webhooks", 404, 403),
    Route("POST", "/v1/webhooks", "webhooks", 201, 403, json={"url": "http://127.0.0.1:9/h"}),
    Route("GET", "/file-engine/api/getFileStat?filename={name}", "files:read", 404, 404),
    Route(
        "POST",
        "/file-engine/api/uploadFileStream",
        "files:write",
        200,
        404,
        form={"conversationId": CONVERSATION},
    ),
    Route("GET", "/v1/keys", "admin", 200, 403),
    Route("POST", "/v1/keys", "admin", 201, 403, json={"name": "n", "scopes": ["files:read"]}),
    Route("GET", "/v1/config", None, 200, 200),
]


def _label(route: Route) -> str:
    return f"{route.method} {route.path}"


@pytest.mark.parametrize("route", [r for r in ROUTES if r.scope], ids=_label)
def test_a_key_without_the_scope_is_refused(world: World, route: Route) -> None:
    answer = world.call(f"without {route.scope}", route)
    assert answer.status_code == 403, answer.text
    if route.method != "HEAD":
        assert answer.json()["error"]["code"] == "missing_scope"


@pytest.mark.parametrize("route", ROUTES, ids=_label)
def test_another_tenant_sees_nothing_of_this_one(world: World, route: Route) -> None:
    answer = world.call("other tenant", route)
    assert answer.status_code == route.other_tenant, answer.text
    _as_if_absent(world, "other tenant", route, answer)


@pytest.mark.parametrize("route", ROUTES, ids=_label)
def test_a_key_of_other_conversations_sees_nothing_here(world: World, route: Route) -> None:
    answer = world.call("other conversation", route)
    assert answer.status_code == route.other_conversation, answer.text
    if answer.status_code == 403 and route.method != "HEAD":
        code = answer.json()["error"]["code"]
        assert code in ("conversation_not_allowed", "missing_scope"), code
    _as_if_absent(world, "other conversation", route, answer)


@pytest.mark.parametrize("route", ROUTES, ids=_label)
@pytest.mark.parametrize("key", ["expired", "revoked", None])
def test_expired_revoked_and_missing_keys_get_401(
    world: World, route: Route, key: str | None
) -> None:
    answer = world.call(key, route)
    assert answer.status_code == 401, answer.text
    if route.method != "HEAD":
        assert answer.json()["error"]["code"] == "unauthorized"


def _as_if_absent(world: World, key: str, route: Route, answer: httpx.Response) -> None:
    """The answer is the one for things that do not exist, and names none of them."""
    if answer.status_code == 404:
        absent = world.call(key, route, real=False)
        real_ids = (world.file["id"], world.message["id"], world.webhook["id"])
        text = answer.text
        for real_id in (*real_ids, world.file["storedName"]):
            text = text.replace(real_id, MADE_UP)
        assert (absent.status_code, absent.text) == (404, text)
    elif route.method == "GET":
        for thing in (world.file["id"], world.message["id"], world.webhook["id"]):
            assert thing not in answer.text


def test_keys_grant_no_more_than_their_creator_has(start_server: Callable[..., Server]) -> None:
    server = start_server()
    tenant_admin = create_key(server, scopes=["admin"], tenant="t2")
    narrow = create_key(
        server,
        scopes=["admin"],
        conversations=["acme-*"],
        expiresAt=(datetime.now(UTC) + timedelta(hours=1)).isoformat(),
    )

    def post(secret: str, **body: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {secret}"}
        with server.client(headers=headers) as client:
            return client.post("/v1/keys", json={"name": "child"} | body)

    # A tenant's admin makes keys of its tenant only.
    child = post(tenant_admin, scopes=["files:read"])
    assert child.status_code == 201
    assert child.json()["tenant"] == "t2"
    refused = post(tenant_admin, scopes=["files:read"], tenant="default")
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "tenant_not_allowed")
    # Conversations within its own, an expiry no later than its own.
    inner = post(narrow, scopes=["files:read"], conversations=["acme-eu-*", "acme-1"])
    assert inner.status_code == 201, inner.text
    assert post(narrow, scopes=["files:read"]).json()["conversations"] == ["acme-*"]
    outside = post(narrow, scopes=["files:read"], conversations=["other"])
    assert (outside.status_code, outside.json()["error"]["code"]) == (
        403,
        "conversation_not_allowed",
    )
    later = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    capped = post(narrow, scopes=["files:read"], conversations=["acme-1"], expiresAt=later)
    assert capped.json()["expiresAt"] < later.replace("+00:00", "Z")
    # Listing: never a secret; a tenant's admin sees its tenant's keys only.
    with server.client(headers={"Authorization": f"Bearer {tenant_admin}"}) as client:
        listed = client.get("/v1/keys").json()["items"]
        assert {k["tenant"] for k in listed} == {"t2"}
        assert all("key" not in k for k in listed)
        # Another tenant's key is not there to revoke.
        with server.client(headers=server.auth) as admin:
            default_ids = [
                k["id"] for k in admin.get("/v1/keys").json()["items"] if not k["tenant"]
            ]
        assert client.delete(f"/v1/keys/{default_ids[0]}").status_code == 404
        assert client.delete(f"/v1/keys/{child.json()['id']}").status_code == 204
        again = client.delete(f"/v1/keys/{child.json()['id']}")
        assert (again.status_code, again.json()["error"]["code"]) == (404, "key_not_found")
    log = server.log.read_text()
    assert '"action":"key.created"' in log
    assert '"action":"key.revoked"' in log
    assert tenant_admin not in log
    assert child.json()["key"] not in log


def test_keys_cli_options_and_last_use(start_server: Callable[..., Server]) -> None:
    server = start_server()
    created = server.cli(
        "keys", "create", "--name", "agent", "--scope", "files:read", "--scope", "files:write",
        "--tenant", "acme", "--conversation", "acme-*", "--expires", "30d",
    )  # fmt: skip
    secret = created.stdout.strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {secret}"}
    with server.client(headers=headers) as client:
        assert client.get("/v1/files").status_code == 200
        assert client.get("/v1/webhooks").status_code == 403
        upload = client.post(
            "/v1/files", files={"file": ("a.png", PNG)}, data={"conversationId": "x"}
        )
        assert upload.json()["error"]["code"] == "conversation_not_allowed"
    assert (
        server.cli("keys", "create", "--name", "n", "--scope", "bogus", check=False).returncode == 1
    )
    server.stop()  # writes the last-use times it gathered
    listed = server.cli("keys", "list").stdout
    row = next(line for line in listed.splitlines() if "agent" in line)
    assert "files:read files:write" in row
    assert "acme" in row
    assert row.count(datetime.now(UTC).strftime("%Y-%m-%d")) >= 2  # created and last used
    server.start()


def test_a_revoked_key_is_refused_by_every_worker_at_once(
    start_server: Callable[..., Server],
) -> None:
    server = start_server(workers="2")
    secret = create_key(server, scopes=["files:read"])
    headers = {"Authorization": f"Bearer {secret}"}
    clients = [c for cs in server.clients_on_each_worker(2).values() for c in cs]
    # Both workers take (and cache) the key, then it is revoked.
    assert all(c.get("/v1/files", headers=headers).status_code == 200 for c in clients * 5)
    with server.client(headers=server.auth) as admin:
        key = next(
            k for k in admin.get("/v1/keys").json()["items"] if k["scopes"] == ["files:read"]
        )
        assert admin.delete(f"/v1/keys/{key['id']}").status_code == 204
    assert all(c.get("/v1/files", headers=headers).status_code == 401 for c in clients * 5)
    for client in clients:
        client.close()


def test_streams_and_webhooks_carry_only_their_tenants_events(
    start_server: Callable[..., Server],
) -> None:
    server = start_server(import_allow_networks="127.0.0.1/32", import_ports="1-65535")
    other = create_key(server, scopes=["admin"], tenant="t2")
    theirs = {"Authorization": f"Bearer {other}"}
    with WebhookReceiver() as receiver, server.client() as client:
        assert client.post("/v1/webhooks", json={"url": receiver.url}, headers=theirs).is_success
        mine = client.post("/v1/conversations/c1/messages", json={"body": "mine"},
                           headers=server.auth).json()  # fmt: skip
        their = client.post("/v1/conversations/c1/messages", json={"body": "theirs"},
                            headers=theirs).json()  # fmt: skip
        deadline = time.monotonic() + 10
        while not receiver.acknowledged() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # a wrong delivery would have come by now too
        delivered = [json.loads(r.body)["data"]["id"] for r in receiver.acknowledged()]
        assert delivered == [their["id"]]
        with client.stream(
            "GET", "/v1/events", params={"lastEventId": "0"}, headers=theirs
        ) as stream:
            first = next(sse_events(stream))
        assert first.data["data"]["id"] == their["id"]
        assert mine["id"] not in json.dumps(first.data)
