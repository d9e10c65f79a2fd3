"""Messages delivered live, through a real `chatmedia serve` process: every message shape,
SSE resumed after a dropped connection, and webhooks through failures and a crash."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import png_bytes
from tests.e2e.conftest import Server
from tests.receivers import SseEvent, WebhookReceiver, sse_events

pytestmark = pytest.mark.e2e
PNG = png_bytes()
LIVE_SETTINGS = {
    "webhook_retry_base": "0.2",
    "webhook_timeout": "1",
    "import_allow_networks": "127.0.0.1/32",
    "import_ports": "1-65535",
}


@pytest.fixture(scope="module")
def server(start_server: Callable[..., Server]) -> Server:
    return start_server(**LIVE_SETTINGS)


def post_message(client: httpx.Client, conversation: str, **body: object) -> dict[str, object]:
    response = client.post(f"/v1/conversations/{conversation}/messages", json=body)
    assert response.status_code == 201, response.text
    message: dict[str, object] = response.json()
    return message


def test_every_message_shape(server: Server) -> None:
    with server.client(headers=server.auth) as client:
        text = post_message(client, "shapes", type="TEXT", body="hello")
        file = client.post("/v1/files", files={"file": ("p.png", PNG)}).json()
        stored = post_message(client, "shapes", fileId=file["id"], body="see")
        external = post_message(
            client,
            "shapes",
            file={
                "url": "https://cdn.example.com/a.pdf",
                "name": "a.pdf",
                "contentType": "application/pdf",
                "size": 3,
            },
        )
        ours = post_message(
            client,
            "shapes",
            mediaUrl=f"{server.url}/file-engine/api/downloadFileStream?filename={file['storedName']}",
            caption="c",
        )
        theirs = post_message(
            client, "shapes", mediaUrl="https://lookaside.example.com/x", mimeType="video/mp4"
        )
        uploaded = client.post(
            "/v1/conversations/shapes/messages",
            files={"file": ("v.png", PNG)},
            data={"body": "up", "groupTag": "g"},
        )
        assert uploaded.status_code == 201, uploaded.text
        kinds = [
            (m["type"], (m["file"] or {}).get("type"))
            for m in (text, stored, external, ours, theirs, uploaded.json())
        ]  # type: ignore[union-attr]
        assert kinds == [
            ("TEXT", None),
            ("IMAGE", "HOSTED"),
            ("FILE", "EXTERNAL"),
            ("IMAGE", "HOSTED"),
            ("VIDEO", "EXTERNAL"),
            ("IMAGE", "HOSTED"),
        ]
        listed = client.get("/v1/conversations/shapes/messages", params={"limit": 10}).json()[
            "items"
        ]
        assert len(listed) == 6
        assert client.get(f"/v1/conversations/shapes/messages/{text['id']}").json() == text


def test_sse_resume_misses_and_repeats_nothing(server: Server) -> None:
    conversation, total, drop_after = "sse-resume", 1000, 300
    received: list[SseEvent] = []
    opened = threading.Event()

    def read(headers: dict[str, str], until: int) -> None:
        with (
            httpx.Client(base_url=server.url, timeout=60) as client,
            client.stream(
                "GET", f"/v1/conversations/{conversation}/events", headers=server.auth | headers
            ) as response,
        ):
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            opened.set()
            for event in sse_events(response):
                received.append(event)
                if len(received) >= until:
                    return  # hang up

    first = threading.Thread(target=read, args=({}, drop_after))
    first.start()
    assert opened.wait(10)

    def post_some(worker: int) -> list[str]:
        count = total // 16 + (worker < total % 16)
        with server.client(headers=server.auth) as client:
            return [
                str(post_message(client, conversation, body=f"{worker}-{n}")["id"])
                for n in range(count)
            ]

    with ThreadPoolExecutor(16) as pool:
        posted = [i for ids in pool.map(post_some, range(16)) for i in ids]
    assert len(posted) == total
    first.join(30)
    assert len(received) == drop_after
    # While disconnected the rest were logged; resuming replays them from the log.
    read({"Last-Event-ID": str(received[-1].id)}, len(posted))
    ids = [int(e.id or 0) for e in received]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)  # nothing repeated
    assert {e.event for e in received} == {"message.created"}
    assert {e.data["data"]["id"] for e in received} == set(posted)  # nothing missed


def test_signed_stream_url_needs_no_header(server: Server) -> None:
    with server.client(headers=server.auth) as client:
        url = client.post("/v1/conversations/browser/events/token").json()["url"]
        with httpx.Client(timeout=30) as browser, browser.stream("GET", url) as stream:
            assert stream.status_code == 200
            post_message(client, "browser", body="for the browser")
            event = next(sse_events(stream))
    assert (event.event, event.data["data"]["body"]) == ("message.created", "for the browser")


def verify(secret: str, body: bytes, header: str) -> bool:
    parts = dict(item.split("=", 1) for item in header.split(","))
    expected = hmac.new(
        secret.encode(), parts["t"].encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])


def test_webhooks_deliver_everything_through_failures_and_a_crash(
    start_server: Callable[..., Server],
) -> None:
    secret = "whsec_test_" + "x" * 24
    conversations = ["wa-1", "wa-2", "wa-3"]
    with WebhookReceiver() as receiver:
        server = start_server(**LIVE_SETTINGS)
        with server.client(headers=server.auth) as client:
            hook = client.post(
                "/v1/webhooks",
                json={"url": receiver.url, "secret": secret, "events": ["message.created"]},
            ).json()
            receiver.mode = "fail"
            posted = [post_message(client, conversations[n % 3], body=f"a{n}") for n in range(15)]
        time.sleep(1.5)  # a few failed attempts
        server.kill()  # a crash with deliveries pending and leases held
        server.start()
        receiver.mode = "hang"  # the receiver now times out
        with server.client(headers=server.auth) as client:
            posted += [post_message(client, conversations[n % 3], body=f"b{n}") for n in range(15)]
            time.sleep(2)
            receiver.mode = "ok"
            deadline = time.monotonic() + 90
            while True:
                items = client.get(
                    f"/v1/webhooks/{hook['id']}/deliveries", params={"limit": 100}
                ).json()["items"]
                if len(items) == len(posted) and all(d["status"] == "delivered" for d in items):
                    break
                assert time.monotonic() < deadline, items
                time.sleep(0.5)
        assert any(d["attempts"] > 1 for d in items)
        errors = {d["lastError"] for d in items if d["lastError"]}
        assert any("answered 500" in e for e in errors) or any("no answer" in e for e in errors)
    acknowledged = receiver.acknowledged()
    assert all(verify(secret, r.body, r.headers["chatmedia-signature"]) for r in acknowledged)
    events = [json.loads(r.body) for r in acknowledged]
    assert {e["data"]["id"] for e in events} == {
        m["id"] for m in posted
    }  # every event, at least once
    for conversation in conversations:
        order = [int(e["id"]) for e in events if e["conversationId"] == conversation]
        first_seen = list(dict.fromkeys(order))
        assert first_seen == sorted(first_seen), conversation  # in order per conversation
