"""A real `chatmedia serve` with two workers. The download path's record cache: every
change that hides a file or ends a credential holds at once on both workers — from the
very next request, whichever worker takes it — after both have served (and cached) the
file and the key many times (two nodes over PostgreSQL: tests/e2e/test_nodes.py). And the
writers of both workers queue on the node's lock: concurrent uploads all succeed."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import png_bytes
from tests.e2e.conftest import Server

pytestmark = pytest.mark.e2e
# Requests per connection, each worker holding three connections.
ROUNDS = 4


def statuses(
    clients: list[httpx.Client], url: str, headers: dict[str, str] | None = None,
    method: str = "GET",
) -> set[int]:  # fmt: skip
    """The statuses of ROUNDS requests on each of `clients`, all sent at once."""

    def one(client: httpx.Client) -> set[int]:
        return {client.request(method, url, headers=headers).status_code for _ in range(ROUNDS)}

    with ThreadPoolExecutor(len(clients)) as pool:
        return set().union(*pool.map(one, clients))


def upload(client: httpx.Client, conversation: str, size: int) -> dict[str, str]:
    answer = client.post(
        "/v1/files", files={"file": ("a.png", png_bytes(size, size))},
        data={"conversationId": conversation},
    )  # fmt: skip
    assert answer.status_code == 201, answer.text
    return {k: str(v) for k, v in answer.json().items()}


def new_key(client: httpx.Client) -> tuple[str, dict[str, str]]:
    made = client.post("/v1/keys", json={"name": "reader", "scopes": ["files:read"]})
    assert made.status_code == 201, made.text
    return made.json()["id"], {"Authorization": f"Bearer {made.json()['key']}"}


@pytest.fixture(scope="module")
def server(start_server: Callable[..., Server]) -> Server:
    # Many refused requests from one address in a row: no lockout here.
    return start_server(workers="2", auth_failure_limit="off")


def test_a_deleted_file_is_gone_from_every_worker_at_once(
    server: Server, worker_clients: list[httpx.Client]
) -> None:
    with server.client(headers=server.auth) as admin:
        file = upload(admin, "cache-1", 5)
        content = f"{server.url}/v1/files/{file['id']}/content"
        by_name = f"{server.url}/file-engine/api/downloadFileStream?filename={file['storedName']}"
        signed = server.url + "/" + file["url"].split("/", 3)[3]
        for url, headers in ((content, server.auth), (by_name, None), (signed, None)):
            assert statuses(worker_clients, url, headers) == {200}
        assert admin.delete(f"/v1/files/{file['id']}").status_code == 204
    for url, headers in ((content, server.auth), (by_name, None), (signed, None)):
        assert statuses(worker_clients, url, headers) == {404}
        assert statuses(worker_clients, url, headers, "HEAD") == {404}


def test_revoked_keys_and_links_end_on_every_worker_at_once(
    server: Server, worker_clients: list[httpx.Client]
) -> None:
    with server.client(headers=server.auth) as admin:
        file = upload(admin, "cache-2", 6)
        content = f"{server.url}/v1/files/{file['id']}/content"
        signed = server.url + "/" + file["url"].split("/", 3)[3]
        by_api, api_headers = new_key(admin)
        by_cli, cli_headers = new_key(admin)
        for headers in (api_headers, cli_headers):
            assert statuses(worker_clients, content, headers) == {200}
        assert statuses(worker_clients, signed) == {200}
        # A link revocation, a key revoked over HTTP, and one revoked from the command line.
        assert admin.post(f"/v1/files/{file['id']}/links/revoke").status_code == 204
        assert statuses(worker_clients, signed) == {403}
        assert admin.delete(f"/v1/keys/{by_api}").status_code == 204
        assert statuses(worker_clients, content, api_headers) == {401}
    server.cli("keys", "revoke", by_cli)
    assert statuses(worker_clients, content, cli_headers) == {401}
    assert statuses(worker_clients, content, server.auth) == {200}  # the file itself is still there


def test_an_erased_conversation_is_gone_from_every_worker_at_once(
    server: Server, worker_clients: list[httpx.Client]
) -> None:
    with server.client(headers=server.auth) as admin:
        files = [upload(admin, "cache-3", size) for size in (7, 8)]
        # Its content, and its metadata (which the cache serves too, blob or no blob).
        urls = [f"{server.url}/v1/files/{f['id']}{end}" for f in files for end in ("/content", "")]
        for url in urls:
            assert statuses(worker_clients, url, server.auth) == {200}
        assert admin.delete("/v1/conversations/cache-3").status_code == 200
    for url in urls:
        assert statuses(worker_clients, url, server.auth) == {404}


def test_both_workers_take_concurrent_uploads(server: Server) -> None:
    def one(n: int) -> int:
        with server.client(headers=server.auth) as client:
            answer = client.post(
                "/v1/files", files={"file": (f"{n}.bin", secrets.token_bytes(2048 + n))},
                data={"conversationId": "cache-uploads"},
            )  # fmt: skip
        return answer.status_code

    with ThreadPoolExecutor(16) as pool:
        assert set(pool.map(one, range(64))) == {201}
    with server.client(headers=server.auth) as client:
        page = client.get("/v1/files", params={"conversationId": "cache-uploads", "limit": 100})
    assert len(page.json()["items"]) == 64
    assert (server.data_dir / "chatmedia.db-writers").exists()  # the node's writer lock
