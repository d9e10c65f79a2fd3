"""Signed, expiring file links through a real `chatmedia serve`: loaded with no header
(whole, Range, HEAD, 304), tampered, expired, revoked, after delete and across a rotation
of the signing keys."""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from tests.conftest import png_bytes
from tests.e2e.conftest import Server
from tests.receivers import sse_events

pytestmark = pytest.mark.e2e
PNG = png_bytes(7, 7)
OLD_KEY = "old-signing-key-0123456789"
NEW_KEY = "new-signing-key-9876543210"


def upload(server: Server, data: bytes = PNG) -> dict[str, object]:
    with server.client(headers=server.auth) as client:
        answer = client.post(
            "/v1/files", files={"file": ("a.png", data)}, data={"conversationId": "c"}
        )
    assert answer.status_code == 201, answer.text
    file: dict[str, object] = answer.json()
    return file


def fetch(url: str, **headers: str) -> httpx.Response:
    return httpx.get(url, headers=headers, timeout=10)


def refused(answer: httpx.Response, code: str) -> None:
    assert answer.status_code == 403, answer.text
    assert answer.json()["error"]["code"] == code


def with_param(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()} | changes
    return parts._replace(query=urlencode(query)).geturl()


@pytest.fixture(scope="module")
def server(start_server: Callable[..., Server]) -> Server:
    return start_server()


def test_the_file_url_works_without_any_header(server: Server) -> None:
    file = upload(server)
    url = str(file["url"])
    whole = fetch(url)
    assert whole.status_code == 200
    assert whole.content == PNG
    assert whole.headers["content-disposition"].startswith("inline")
    part = fetch(url, Range="bytes=2-5")
    assert (part.status_code, part.content) == (206, PNG[2:6])
    head = httpx.head(url)
    assert (head.status_code, head.headers["content-length"]) == (200, str(len(PNG)))
    assert fetch(url, **{"If-None-Match": whole.headers["etag"]}).status_code == 304
    # The key-authenticated route keeps working.
    with server.client(headers=server.auth) as client:
        assert client.get(f"/v1/files/{file['id']}/content").content == PNG


@pytest.mark.parametrize(
    "change",
    [
        {"sig": "AAAA"},
        {"exp": str(int(time.time()) + 10**6)},
        {"disp": "attachment"},
        {"g": "1"},
        {"kid": "000000000000"},
    ],
    ids=lambda c: next(iter(c)),
)
def test_a_tampered_link_is_refused(server: Server, change: dict[str, str]) -> None:
    url = str(upload(server)["url"])
    refused(fetch(with_param(url, **change)), "invalid_signature")


def test_a_link_of_another_file_does_not_open_this_one(server: Server) -> None:
    first, second = upload(server), upload(server, png_bytes(3, 3))
    query = urlsplit(str(first["url"])).query
    refused(fetch(f"{server.url}/v1/files/{second['id']}/content?{query}"), "invalid_signature")


def test_links_expire_revoke_and_end_with_their_file(server: Server) -> None:
    file = upload(server)
    with server.client(headers=server.auth) as client:
        made = client.post(
            f"/v1/files/{file['id']}/links", json={"expiresIn": 1, "disposition": "attachment"}
        )
        assert made.status_code == 201, made.text
        short = made.json()["url"]
        assert fetch(short).headers["content-disposition"].startswith("attachment")
        time.sleep(2.1)
        refused(fetch(short), "link_expired")
        # Revoking ends every earlier link; a new one works.
        before = str(client.get(f"/v1/files/{file['id']}").json()["url"])
        assert fetch(before).status_code == 200
        assert client.post(f"/v1/files/{file['id']}/links/revoke").status_code == 204
        refused(fetch(before), "invalid_signature")
        after = str(client.get(f"/v1/files/{file['id']}").json()["url"])
        assert fetch(after).status_code == 200
        # A valid signature never brings back a deleted file.
        assert client.delete(f"/v1/files/{file['id']}").status_code == 204
    gone = fetch(after)
    assert (gone.status_code, gone.json()["error"]["code"]) == (404, "file_not_found")


def test_urls_sent_from_the_event_log_are_signed_when_sent(server: Server) -> None:
    file = upload(server)
    with (
        server.client(headers=server.auth) as client,
        client.stream("GET", "/v1/events", params={"lastEventId": "0"}) as stream,
    ):
        sent = next(e for e in sse_events(stream) if e.data["data"].get("id") == file["id"])
    replayed = str(sent.data["data"]["url"])
    assert "sig=" in replayed
    assert fetch(replayed).content == PNG


def test_signing_keys_rotate(start_server: Callable[..., Server]) -> None:
    server = start_server(url_signing_keys=OLD_KEY)
    url = str(upload(server)["url"])
    assert fetch(url).status_code == 200
    server.stop()
    # The new key signs; the old one is still accepted until its links have expired.
    server.env["CHATMEDIA_URL_SIGNING_KEYS"] = f"{NEW_KEY},{OLD_KEY}"
    server.start()
    assert fetch(url).status_code == 200
    server.stop()
    server.env["CHATMEDIA_URL_SIGNING_KEYS"] = NEW_KEY
    server.start()
    refused(fetch(url), "invalid_signature")
    assert OLD_KEY not in server.log.read_text()
    shown = server.cli("config").stdout
    assert NEW_KEY not in shown
    assert "CHATMEDIA_URL_SIGNING_KEYS=(1 key)" in shown
