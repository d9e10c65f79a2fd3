"""Erasing a conversation through a real `chatmedia serve`: files (with blobs shared by
another conversation), messages, events, pending webhook deliveries and Idempotency-Key
replays all go, live streams are told, and nothing of it can be read afterwards."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest

from chatmedia.storage.s3 import open_s3_store
from tests.conftest import png_bytes
from tests.e2e.conftest import Server, wait_for
from tests.receivers import SseEvent, sse_events

pytestmark = pytest.mark.e2e
# The webhook receiver: a port on this machine where nothing answers.
RECEIVER = {"import_allow_networks": "127.0.0.1/32", "import_ports": "1-65535"}
SHARED = png_bytes(6, 6)  # stored once, used by both conversations
OWN = png_bytes(9, 9)  # only the erased conversation's


def erase_and_check(server: Server, doomed: str = "erase-me", kept: str = "keep-me") -> None:
    """The whole story, on any backend: set up two conversations and a pending webhook,
    follow the doomed one live, erase it, and look everywhere for what is left."""
    with server.client(headers=server.auth) as client:
        # A webhook whose receiver never answers: its deliveries stay pending.
        hook = client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/never"})
        assert hook.status_code == 201, hook.text
        upload = {"file": ("s.png", SHARED)}
        kept_file = client.post("/v1/files", files=upload, data={"conversationId": kept}).json()
        replayed = {"Idempotency-Key": "erase-replay-1"}
        first = client.post(
            "/v1/files", files=upload, data={"conversationId": doomed}, headers=replayed
        ).json()
        own = client.post(
            "/v1/files", files={"file": ("o.png", OWN)}, data={"conversationId": doomed}
        ).json()
        message = client.post(
            f"/v1/conversations/{doomed}/messages", json={"fileId": own["id"], "body": "hi"}
        ).json()
        # Fetched from this node, whatever public address the links name.
        links = [server.url + "/" + u.split("/", 3)[3] for u in (first["url"], own["url"])]
        assert all(httpx.get(u).status_code == 200 for u in links)
        # Their previews made (each file then has its file.updated too).
        for file in (kept_file, first, own):
            wait_for(lambda f=file: _processed(client, f["id"]))
        blobs_before = set(server.stored_blobs())

        # A live reader of the doomed conversation.
        seen: list[SseEvent] = []
        opened = threading.Event()

        def follow() -> None:
            with (
                server.client(headers=server.auth) as reader,
                reader.stream("GET", f"/v1/conversations/{doomed}/events") as stream,
            ):
                opened.set()
                for event in sse_events(stream):
                    seen.append(event)
                    if event.event == "conversation.deleted":
                        return

        thread = threading.Thread(target=follow, daemon=True)
        thread.start()
        assert opened.wait(10)

        erased = client.delete(f"/v1/conversations/{doomed}")
        assert erased.status_code == 200, erased.text
        # Two file.created and the message's, and a file.updated for each image whose
        # previews came after its upload (not made in it: chatmedia.media.inline).
        updated = 2 if server.env.get("CHATMEDIA_STORAGE_URL", "").startswith("s3") else 0
        assert erased.json() == {"files": 2, "messages": 1, "events": 3 + updated}
        thread.join(10)
        assert [e.event for e in seen] == ["conversation.deleted"]
        assert seen[0].data["data"] == {"conversationId": doomed} | erased.json()
        # Idempotent: nothing left, nothing more to tell.
        assert client.delete(f"/v1/conversations/{doomed}").json() == {
            "files": 0, "messages": 0, "events": 0,
        }  # fmt: skip

        # Nothing of it readable by any route, stream or replay.
        for file in (first, own):
            assert client.get(f"/v1/files/{file['id']}").status_code == 404
            assert client.get(f"/v1/files/{file['id']}/content").status_code == 404
        assert all(httpx.get(u).status_code == 404 for u in links)
        name = own["storedName"]
        assert (
            client.get("/file-engine/api/getFileStat", params={"filename": name}).status_code == 404
        )
        assert client.get(f"/v1/files?conversationId={doomed}").json()["items"] == []
        messages = client.get(f"/v1/conversations/{doomed}/messages").json()["items"]
        assert messages == []
        assert client.get(f"/v1/conversations/{doomed}/messages/{message['id']}").status_code == 404
        logged = _events(client)
        assert [e["type"] for e in logged if e["conversationId"] == doomed] == [
            "conversation.deleted"
        ]
        again = client.post(
            "/v1/files", files=upload, data={"conversationId": doomed}, headers=replayed
        )
        assert "idempotent-replayed" not in again.headers  # a new upload, not a replay
        assert again.json()["id"] != first["id"]
        assert client.delete(f"/v1/conversations/{doomed}").json()["files"] == 1

        # Pending deliveries of its events are gone; the other conversation's remain.
        queued = client.get(f"/v1/webhooks/{hook.json()['id']}/deliveries").json()["items"]
        assert {d["conversationId"] for d in queued} - {kept} <= {doomed}
        assert all(d["eventType"] == "conversation.deleted" for d in queued
                   if d["conversationId"] == doomed)  # fmt: skip

        # The shared bytes stay for the other conversation; the erased-only bytes are gone.
        assert client.get(f"/v1/files/{kept_file['id']}/content").content == SHARED
    # In the store: the erased conversation's own bytes are gone, the shared ones kept.
    assert _in_store(server, own["sha256"]) is False
    assert _in_store(server, kept_file["sha256"]) is True
    if server.env.get("CHATMEDIA_STORAGE_URL") is None:  # the bytes and their 2 previews
        assert len(set(server.stored_blobs())) == len(blobs_before) - 3


def _processed(client: httpx.Client, file_id: str) -> bool:
    return bool(client.get(f"/v1/files/{file_id}").json()["media"]["processing"] == "done")


def _in_store(server: Server, sha256: str) -> bool:
    """Whether the server's blob store (local folder or S3 bucket) holds this content."""
    url = server.env.get("CHATMEDIA_STORAGE_URL")
    if url is None:
        return any(p.name == sha256 for p in server.stored_blobs())
    store = open_s3_store(url, server.env)
    return anyio.run(store.stat, sha256) is not None


def _events(client: httpx.Client) -> list[dict[str, Any]]:
    """Every event in the log, read from the start until the stream goes quiet."""
    found: list[dict[str, Any]] = []
    try:
        with client.stream(
            "GET", "/v1/events", params={"lastEventId": "0"}, timeout=httpx.Timeout(10, read=2)
        ) as stream:
            found.extend(event.data for event in sse_events(stream))
    except httpx.ReadTimeout:
        pass
    return found


def test_erasure_on_sqlite_and_local_disk(start_server: Callable[..., Server]) -> None:
    erase_and_check(start_server(**RECEIVER))


def test_erasure_needs_its_scopes_and_stays_in_the_tenant(
    start_server: Callable[..., Server],
) -> None:
    server = start_server()
    with server.client(headers=server.auth) as client:
        client.post("/v1/conversations/c9/messages", json={"body": "x"})
        make = lambda **body: client.post("/v1/keys", json={"name": "k"} | body).json()["key"]  # noqa: E731
        reader = make(scopes=["files:delete"])
        other_tenant = make(scopes=["admin"], tenant="t2")
        elsewhere = make(scopes=["files:delete", "messages:write"], conversations=["d-*"])
    with server.client(headers={"Authorization": f"Bearer {reader}"}) as client:
        assert client.delete("/v1/conversations/c9").json()["error"]["code"] == "missing_scope"
    with server.client(headers={"Authorization": f"Bearer {other_tenant}"}) as client:
        assert client.delete("/v1/conversations/c9").json()["files"] == 0
    with server.client(headers={"Authorization": f"Bearer {elsewhere}"}) as client:
        assert client.delete("/v1/conversations/c9").status_code == 404
    with server.client(headers=server.auth) as client:
        assert len(client.get("/v1/conversations/c9/messages").json()["items"]) == 1
    purged = server.cli("purge", "--conversation", "c9")
    assert "1 messages" in purged.stdout
    assert '"action":"conversation.erased"' in server.log.read_text()
