"""Quotas per tenant through real servers: twenty concurrent uploads racing to the last
free bytes never pass the quota and leave nothing behind (SQLite; PostgreSQL with two
nodes), the file and daily quotas, the file-engine's convention, and usage after
uploads, deduplicated uploads, deletes and erasure."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.e2e.conftest import Server
from tests.e2e.test_erasure import _in_store
from tests.e2e.test_nodes import nodes
from tests.pgserver import postgres
from tests.s3server import s3_server

__all__ = ["nodes", "postgres", "s3_server"]  # fixtures used below
pytestmark = pytest.mark.e2e
SIZE = 100_000
TENANT = "acme"
SCOPES = ["files:read", "files:write", "files:delete", "messages:read", "messages:write"]


def tenant_key(server: Server, tenant: str = TENANT) -> dict[str, str]:
    with server.client(headers=server.auth) as client:
        made = client.post("/v1/keys", json={"name": tenant, "scopes": SCOPES, "tenant": tenant})
    assert made.status_code == 201, made.text
    return {"Authorization": "Bearer " + made.json()["key"]}


def set_quota(server: Server, tenant: str = TENANT, **quota: int | None) -> dict[str, object]:
    with server.client(headers=server.auth) as client:
        answer = client.put(f"/v1/tenants/{tenant}/quota", json=quota)
    assert answer.status_code == 200, answer.text
    usage: dict[str, object] = answer.json()
    return usage


def usage(server: Server, key: dict[str, str]) -> dict[str, object]:
    with server.client(headers=key) as client:
        answer = client.get("/v1/usage")
    assert answer.status_code == 200, answer.text
    found: dict[str, object] = answer.json()
    return found


def upload(url: str, key: dict[str, str], data: bytes, conversation: str = "c1") -> httpx.Response:
    return httpx.post(
        url + "/v1/files",
        files={"file": ("f.bin", data)},
        data={"conversationId": conversation},
        headers=key,
        timeout=60,
    )


def assert_quota_exceeded(answer: httpx.Response, quota: str) -> None:
    assert answer.status_code == 403, answer.text
    error = answer.json()["error"]
    assert error["code"] == "quota_exceeded"
    assert quota in error["message"]


def race_to_the_quota(servers: list[Server]) -> None:
    """Twenty uploads of SIZE bytes at once, spread over `servers`, into a tenant with room
    for ten: never over, every refusal a clean 403, nothing of a refused upload kept."""
    first = servers[0]
    key = tenant_key(first)
    set_quota(first, maxBytes=10 * SIZE)
    payloads = [secrets.token_bytes(SIZE) for _ in range(20)]
    with ThreadPoolExecutor(20) as pool:
        answers = list(
            pool.map(lambda n: upload(servers[n % len(servers)].url, key, payloads[n]), range(20))
        )
    stored = [a for a in answers if a.status_code == 201]
    for answer in answers:
        if answer.status_code != 201:
            assert_quota_exceeded(answer, "maxBytes")
    assert 5 <= len(stored) <= 10, [a.status_code for a in answers]
    # One name for all: each stored under a name of its own, on any node.
    assert len({a.json()["storedName"] for a in stored}) == len(stored)
    figures = usage(first, key)
    assert figures["bytes"] == len(stored) * SIZE <= 10 * SIZE
    assert figures["files"] == len(stored)
    assert figures["reserved"] == {"bytes": 0, "files": 0}
    assert figures["quota"] == {"maxBytes": 10 * SIZE, "maxFiles": None, "maxDailyBytes": None}
    with first.client(headers=key) as client:
        assert len(client.get("/v1/files?limit=100").json()["items"]) == len(stored)
    kept = {a.json()["sha256"] for a in stored}
    for data in payloads:
        digest = hashlib.sha256(data).hexdigest()
        assert _in_store(first, digest) is (digest in kept)
    # Deleting frees the quota at once, on every node.
    with first.client(headers=key) as client:
        assert client.delete(f"/v1/files/{stored[0].json()['id']}").status_code == 204
    assert usage(servers[-1], key)["bytes"] == (len(stored) - 1) * SIZE
    room = 10 * SIZE - (len(stored) - 1) * SIZE
    assert upload(servers[-1].url, key, secrets.token_bytes(room - 1000)).status_code == 201


def test_concurrent_uploads_never_pass_the_quota_on_sqlite(
    start_server: Callable[..., Server],
) -> None:
    race_to_the_quota([start_server(workers="2")])


def test_concurrent_uploads_never_pass_the_quota_on_two_postgresql_nodes(
    nodes: Callable[..., Server],
) -> None:
    race_to_the_quota([nodes(), nodes()])


def test_usage_counts_files_in_full_and_frees_on_delete_and_erasure(
    start_server: Callable[..., Server],
) -> None:
    server = start_server()
    key = tenant_key(server)
    data = secrets.token_bytes(SIZE)
    assert usage(server, key) | {"reserved": None} == {
        "tenant": TENANT, "bytes": 0, "files": 0, "dailyBytes": 0, "reserved": None,
        "quota": {"maxBytes": None, "maxFiles": None, "maxDailyBytes": None},
        "ownQuota": False,
    }  # fmt: skip
    first = upload(server.url, key, data, "keep")
    second = upload(server.url, key, data, "erase")  # the same bytes: one blob, two files
    assert first.json()["sha256"] == second.json()["sha256"]
    with server.client(headers=key) as client:
        reference = {"url": "https://cdn.example.com/a.pdf", "contentType": "application/pdf"}
        client.post(
            "/v1/files/external", json=reference | {"size": 5000, "conversationId": "erase"}
        )
    assert (usage(server, key)["bytes"], usage(server, key)["files"]) == (2 * SIZE, 3)
    assert usage(server, key)["dailyBytes"] == 2 * SIZE
    with server.client(headers=key) as client:
        assert client.delete("/v1/conversations/erase").json()["files"] == 2
        assert (usage(server, key)["bytes"], usage(server, key)["files"]) == (SIZE, 1)
        assert client.delete(f"/v1/files/{first.json()['id']}").status_code == 204
    figures = usage(server, key)
    assert (figures["bytes"], figures["files"]) == (0, 0)
    assert figures["dailyBytes"] == 2 * SIZE  # what was added today stays counted
    # Another tenant is untouched; the admin sees every tenant.
    with server.client(headers=server.auth) as client:
        listed = {t["tenant"]: t for t in client.get("/v1/tenants").json()["items"]}
        assert listed[TENANT]["bytes"] == 0
        assert client.get("/v1/usage", params={"tenant": TENANT}).json()["tenant"] == TENANT
    assert TENANT in server.cli("tenants", "list").stdout


def test_file_and_daily_quotas_and_the_file_engine_convention(
    start_server: Callable[..., Server],
) -> None:
    server = start_server()
    key = tenant_key(server)
    server.cli("tenants", "set-quota", TENANT, "--files", "2", "--daily-bytes", "250kB")
    assert usage(server, key)["quota"] == {
        "maxBytes": None, "maxFiles": 2, "maxDailyBytes": 250_000,
    }  # fmt: skip
    assert upload(server.url, key, secrets.token_bytes(SIZE)).status_code == 201
    assert_quota_exceeded(upload(server.url, key, secrets.token_bytes(2 * SIZE)), "maxDailyBytes")
    assert upload(server.url, key, secrets.token_bytes(SIZE)).status_code == 201
    assert_quota_exceeded(upload(server.url, key, b"tiny"), "maxFiles")
    with server.client(headers=key) as client:
        reference = {"url": "https://cdn.example.com/b", "contentType": "image/png", "size": 1}
        external = client.post("/v1/files/external", json=reference)
        assert_quota_exceeded(external, "maxFiles")
        engine = client.post(
            "/file-engine/api/uploadFileStream",
            files={"file": ("a.bin", b"tiny")},
            data={"conversationId": "c1"},
        )
        assert engine.status_code == 404  # the file-engine's convention for a client's mistake
        assert engine.json()["error"]["code"] == "quota_exceeded"
        # A tenant's own admin key cannot lift its quotas.
        own_admin = client.post(
            "/v1/keys",
            json={"name": "boss", "scopes": ["admin"]},
            headers=server.auth,
            params={"tenant": TENANT},
        )
        boss = {"Authorization": "Bearer " + own_admin.json()["key"]}
        lifted = client.put(f"/v1/tenants/{TENANT}/quota", json={}, headers=boss)
        assert lifted.status_code == 403
        assert lifted.json()["error"]["code"] == "tenant_not_allowed"
    # Unlimited again: null everywhere.
    assert set_quota(server)["quota"] == {"maxBytes": None, "maxFiles": None,
                                          "maxDailyBytes": None}  # fmt: skip
    assert upload(server.url, key, b"tiny").status_code == 201


def test_a_resumable_upload_holds_its_quota_from_creation_to_its_file(
    start_server: Callable[..., Server],
) -> None:
    server = start_server()
    key = tenant_key(server)
    set_quota(server, maxBytes=3 * SIZE)
    tus = {"Tus-Resumable": "1.0.0"}
    data = secrets.token_bytes(2 * SIZE)
    with server.client(headers=key) as client:

        def create(length: int) -> httpx.Response:
            return client.post("/v1/uploads", headers=tus | {"Upload-Length": str(length)})

        # Created, not a byte sent yet: its length is held, and what is left is smaller.
        first = create(len(data))
        assert first.status_code == 201, first.text
        assert usage(server, key)["reserved"] == {"bytes": 2 * SIZE, "files": 1}
        assert_quota_exceeded(create(2 * SIZE), "maxBytes")
        assert_quota_exceeded(upload(server.url, key, secrets.token_bytes(2 * SIZE)), "maxBytes")
        # Terminated: the hold is given back.
        assert client.delete(first.headers["location"], headers=tus).status_code == 204
        assert usage(server, key)["reserved"] == {"bytes": 0, "files": 0}
        # Finished: the hold becomes the File's bytes, no more and no less.
        second = create(len(data))
        assert second.status_code == 201
        patch = tus | {"Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
        done = client.patch(second.headers["location"], content=data, headers=patch)
        assert done.status_code == 204, done.text
        figures = usage(server, key)
        assert (figures["bytes"], figures["files"]) == (2 * SIZE, 1)
        assert figures["reserved"] == {"bytes": 0, "files": 0}
        assert_quota_exceeded(create(2 * SIZE), "maxBytes")
