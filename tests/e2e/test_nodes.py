"""Two `chatmedia serve` nodes over one PostgreSQL and one S3 store: every node serves
every file, message and event; webhooks go out once each while both run; and a node
killed mid-flight loses nothing."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import httpx
import obstore
import pytest
from tusclient.client import TusClient

from chatmedia.storage.s3 import open_s3_store
from chatmedia.storage.s3parts import MultipartParts
from tests.clamdserver import running_clamd
from tests.conftest import png_bytes, unsigned
from tests.e2e.conftest import Server, assert_unavailable
from tests.e2e.test_erasure import erase_and_check
from tests.e2e.test_uploads import assert_flat_memory
from tests.pgserver import PostgresServer, postgres
from tests.receivers import SseEvent, WebhookReceiver, sse_events
from tests.s3server import S3Server, s3_server, start_s3_server, stop_s3_server

__all__ = ["postgres", "s3_server"]  # the session's servers, for the fixtures below
pytestmark = pytest.mark.e2e
SETTINGS = {
    "webhook_retry_base": "0.2",
    "webhook_timeout": "1",
    "import_allow_networks": "127.0.0.1/32",  # the webhook receiver is on this machine
    "import_ports": "1-65535",
}
BIG = secrets.token_bytes(3 * 1024 * 1024 + 17)  # several S3 parts' worth of reads


@pytest.fixture
def nodes(
    postgres: PostgresServer, s3_server: S3Server, tmp_path: Path
) -> Iterator[Callable[..., Server]]:
    """Starts nodes over one fresh database and one fresh bucket prefix, behind one public
    address (as behind a load balancer); keyword arguments are more settings."""
    shared = {
        "database_url": postgres.new_database(),
        "storage_url": s3_server.url("nodes-" + secrets.token_hex(4)),
        "public_url": "https://media.example.test",
        "max_upload_size": "16MiB",
    } | SETTINGS
    started: list[Server] = []

    def start(**settings: str) -> Server:
        server = Server(tmp_path / f"node{len(started)}", **shared | settings)
        server.root.mkdir()
        if started:
            server.key = started[0].key  # the first node made the first key
        else:
            server.cli("migrate")
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def test_files_uploaded_on_one_node_are_served_by_the_other(
    nodes: Callable[..., Server],
) -> None:
    a, b = nodes(), nodes()
    with a.client(headers=a.auth) as on_a, b.client(headers=b.auth) as on_b:
        native = on_a.post(
            "/v1/files", files={"file": ("big.bin", BIG)}, data={"conversationId": "c1"}
        )
        assert native.status_code == 201, native.text
        compat = on_b.post(
            "/file-engine/api/uploadFileStream",
            files={"file": ("p.png", png_bytes())},
            data={"conversationId": "c1"},
        )
        assert compat.status_code == 200, compat.text
        file = native.json()
        assert unsigned(on_b.get(f"/v1/files/{file['id']}").json()) == unsigned(file)
        assert on_b.get(f"/v1/files/{file['id']}/content").content == BIG
        part = on_b.get(f"/v1/files/{file['id']}/content", headers={"Range": "bytes=1000-1999"})
        assert part.status_code == 206
        assert part.content == BIG[1000:2000]
        stat = on_a.get(
            "/file-engine/api/getFileStat", params={"filename": compat.json()["name"]}
        ).json()
        assert stat["size"] == len(png_bytes())
        # The same bytes through both nodes at once: each upload gets its file, the
        # content is stored once, and stays until the last file using it is deleted.
        with ThreadPoolExecutor(8) as pool:
            again = list(pool.map(lambda n: upload((n % 2 and b) or a, BIG), range(8)))
        assert {f["sha256"] for f in again} == {file["sha256"]}
        for f in [file, *again[:-1]]:
            assert on_a.delete(f"/v1/files/{f['id']}").status_code == 204
        assert on_b.get(f"/v1/files/{again[-1]['id']}/content").content == BIG
        assert on_b.delete(f"/v1/files/{again[-1]['id']}").status_code == 204
        assert on_a.get(f"/v1/files/{file['id']}/content").status_code == 404
        assert on_b.get("/readyz").json() == {"status": "ok"}


def test_a_stream_on_one_node_sees_messages_posted_on_the_other(
    nodes: Callable[..., Server],
) -> None:
    a, b = nodes(), nodes()
    seen: list[SseEvent] = []
    arrived: list[float] = []
    listening = threading.Event()

    def follow() -> None:
        with (
            httpx.Client(base_url=b.url, headers=b.auth, timeout=30) as client,
            client.stream("GET", "/v1/conversations/live/events") as response,
        ):
            listening.set()
            for event in sse_events(response):
                seen.append(event)
                arrived.append(time.monotonic())
                if len(seen) == 20:
                    return

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    assert listening.wait(10)
    time.sleep(0.3)  # the stream is registered before the first post
    posted, sent = [], []
    with a.client(headers=a.auth) as on_a:
        for n in range(20):
            sent.append(time.monotonic())
            posted.append(on_a.post("/v1/conversations/live/messages", json={"body": f"m{n}"}))
            time.sleep(0.05)
    reader.join(20)
    assert [e.data["data"]["id"] for e in seen] == [m.json()["id"] for m in posted]
    # Woken by NOTIFY, not found by the 1 s poll (which alone would make this ~0.5 s).
    delays = sorted(t - s for t, s in zip(arrived, sent, strict=True))
    assert delays[len(delays) // 2] < 0.25, delays


def test_webhooks_go_out_once_while_both_run_and_nothing_is_lost_to_a_kill(
    nodes: Callable[..., Server],
) -> None:
    a, b = nodes(), nodes()
    secret = "whsec_nodes_" + "x" * 24
    with (
        WebhookReceiver() as receiver,
        a.client(headers=a.auth) as on_a,
        b.client(headers=b.auth) as on_b,
    ):
        hook = on_a.post("/v1/webhooks", json={"url": receiver.url, "secret": secret})
        assert hook.status_code == 201, hook.text
        posted = [
            (on_a, on_b)[n % 2]
            .post(f"/v1/conversations/c{n % 5}/messages", json={"body": f"m{n}"})
            .json()
            for n in range(60)
        ]
        wait_for(lambda: len(receiver.acknowledged()) >= 60, "deliveries")
        time.sleep(1)  # time for any duplicate to show up
        once = [json.loads(r.body)["data"]["id"] for r in receiver.acknowledged()]
        assert sorted(once) == sorted(m["id"] for m in posted)  # each exactly once
        # Now a node dies mid-flight, with uploads and messages acknowledged by it.
        receiver.mode = "fail"
        acknowledged = [
            on_a.post("/v1/conversations/k/messages", json={"body": f"k{n}"}).json()
            for n in range(10)
        ]
        stored = on_a.post("/v1/files", files={"file": ("k.bin", BIG)}).json()
        time.sleep(0.5)  # attempts under way on both nodes
        a.kill()
        receiver.mode = "ok"
        acknowledged += [
            on_b.post("/v1/conversations/k/messages", json={"body": f"k{n}"}).json()
            for n in range(10, 15)
        ]
        listed = on_b.get("/v1/conversations/k/messages", params={"limit": 100}).json()
        assert {m["id"] for m in listed["items"]} == {m["id"] for m in acknowledged}
        assert on_b.get(f"/v1/files/{stored['id']}/content").content == BIG
        wanted = {m["id"] for m in posted + acknowledged} | {stored["id"]}
        wait_for(
            lambda: wanted <= {json.loads(r.body)["data"]["id"] for r in receiver.acknowledged()},
            "deliveries after the kill",
        )


def test_downloads_can_redirect_to_the_store(nodes: Callable[..., Server]) -> None:
    node = nodes(s3_redirect_downloads="true")
    with node.client(headers=node.auth) as client:
        file = client.post("/v1/files", files={"file": ("big.bin", BIG)}).json()
        for path in (
            f"/v1/files/{file['id']}/content",
            f"/file-engine/api/downloadFileStream?filename={file['storedName']}",
        ):
            answer = client.get(path)
            assert answer.status_code == 307
            assert answer.headers["cache-control"] == "no-store"
            target = answer.headers["location"]
            assert target.startswith(s3_endpoint(node))
            assert httpx.get(target).content == BIG
            part = httpx.get(target, headers={"Range": "bytes=5-9"})
            assert (part.status_code, part.content) == (206, BIG[5:10])
        # A client that has it already gets 304 without a trip to the store.
        etag = {"If-None-Match": f'"{file["sha256"]}"'}
        assert client.get(f"/v1/files/{file['id']}/content", headers=etag).status_code == 304


def test_a_store_outage_is_503_quickly_and_the_node_recovers(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    process, s3 = start_s3_server(tmp_path / "s3")  # a store of this test's own, to stop
    node = Server(
        tmp_path / "node", database_url=postgres.new_database(), storage_url=s3.url("outage")
    )
    node.root.mkdir()
    node.cli("migrate")
    node.start()
    try:
        with node.client(headers=node.auth) as client:
            file = client.post("/v1/files", files={"file": ("a.png", png_bytes())}).json()
            stop_s3_server(process)
            try:
                needing_the_store = [
                    ("GET", "/readyz"),
                    ("GET", f"/v1/files/{file['id']}/content"),
                    ("POST", "/v1/files"),
                ]
                # No credential shown.
                assert_unavailable(client, needing_the_store, s3.secret_access_key)
                # What needs only the database still works.
                assert client.get(f"/v1/files/{file['id']}").status_code == 200
            finally:
                process, _ = start_s3_server(tmp_path / "s3", ports=s3.ports)
            wait_for(lambda: client.get("/readyz").status_code == 200, "recovery", 15)
            # A restarted SeaweedFS answers S3 requests a moment before its volume server
            # is back: the bytes come once it is (503 meanwhile, never anything else).
            content = f"/v1/files/{file['id']}/content"
            wait_for(lambda: client.get(content).status_code in (200, 503), "an answer", 15)
            wait_for(lambda: client.get(content).status_code == 200, "the store's volumes", 30)
            assert client.get(content).content == png_bytes()
            listed = client.get("/v1/files").json()["items"]
            assert [f["id"] for f in listed] == [file["id"]]  # the refused upload left no row
    finally:
        node.stop()
        stop_s3_server(process)
    assert "Traceback" not in node.log.read_text()
    assert s3.secret_access_key not in node.log.read_text()


def s3_endpoint(node: Server) -> str:
    return node.env["CHATMEDIA_STORAGE_URL"].split("endpoint=")[1].split("&")[0]


def upload(node: Server, data: bytes) -> dict[str, str]:
    with node.client(headers=node.auth) as client:
        answer = client.post("/v1/files", files={"file": ("same.bin", data)})
    assert answer.status_code == 201, answer.text
    file: dict[str, str] = answer.json()
    return file


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_key_revoked_on_one_node_is_refused_by_the_other_within_a_second(
    nodes: Callable[..., Server],
) -> None:
    first, second = nodes(), nodes()
    with first.client(headers=first.auth) as admin:
        created = admin.post("/v1/keys", json={"name": "n", "scopes": ["files:read"]}).json()
    headers = {"Authorization": f"Bearer {created['key']}"}
    with second.client(headers=headers) as client:
        assert client.get("/v1/files").status_code == 200
        with first.client(headers=first.auth) as admin:
            assert admin.delete(f"/v1/keys/{created['id']}").status_code == 204
        revoked_at = time.monotonic()
        while client.get("/v1/files").status_code != 401:
            assert time.monotonic() - revoked_at < 1.0
            time.sleep(0.05)


def test_erasing_a_conversation_on_postgresql_and_s3(nodes: Callable[..., Server]) -> None:
    erase_and_check(nodes())


def _until(expected: int, url: str, headers: dict[str, str] | None = None) -> float:
    """Seconds until `url` answers `expected`, asking every 20 ms (at most 5 s)."""
    started = time.monotonic()
    while time.monotonic() - started < 5:
        if httpx.get(url, headers=headers, timeout=5).status_code == expected:
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"{url} never answered {expected}")


def test_changes_on_one_node_reach_the_others_cache_within_a_second(
    nodes: Callable[..., Server],
) -> None:
    a, b = nodes(auth_failure_limit="off"), nodes(auth_failure_limit="off")
    with a.client(headers=a.auth) as on_a:
        file = on_a.post("/v1/files", files={"file": ("p.png", png_bytes(6, 6))}).json()
        made = on_a.post("/v1/keys", json={"name": "reader", "scopes": ["files:read"]}).json()
        reader = {"Authorization": f"Bearer {made['key']}"}
        content = f"{b.url}/v1/files/{file['id']}/content"
        signed = b.url + "/" + str(file["url"]).split("/", 3)[3]
        for _ in range(20):  # b serves them from its cache from now on
            assert httpx.get(content, headers=reader).status_code == 200
            assert httpx.get(signed).status_code == 200
        # Each change is made on a; b must refuse within a second of a's answer.
        assert on_a.post(f"/v1/files/{file['id']}/links/revoke").status_code == 204
        assert _until(403, signed) < 1.0
        assert on_a.delete(f"/v1/keys/{made['id']}").status_code == 204
        assert _until(401, content, reader) < 1.0
        assert on_a.delete(f"/v1/files/{file['id']}").status_code == 204
        assert _until(404, content, b.auth) < 1.0


def test_a_file_quarantined_by_new_signatures_vanishes_from_both_nodes_within_a_second(
    nodes: Callable[..., Server], tmp_path: Path
) -> None:
    with running_clamd(tmp_path / "clamd") as clamd:
        scanning = {"clamav_url": clamd.tcp_url, "rescan_check_interval": "1s"}
        a, b = nodes(**scanning), nodes(**scanning)
        marker = b"CHATMEDIA-NODES-" + secrets.token_hex(8).encode()
        with a.client(headers=a.auth) as on_a:
            file = on_a.post("/v1/files", files={"file": ("n.txt", b"notes " + marker)}).json()
            assert file["scan"]["status"] == "clean"
            made = on_a.post("/v1/keys", json={"name": "r", "scopes": ["files:read"]}).json()
        reader = {"Authorization": f"Bearer {made['key']}"}
        urls = [f"{node.url}/v1/files/{file['id']}/content" for node in (a, b)]
        for _ in range(10):  # both serve it from their caches from now on
            assert {httpx.get(url, headers=reader).status_code for url in urls} == {200}
        clamd.add_signature("Chatmedia-Test-Nodes", marker)
        clamd.reload()
        # Whichever node scans it again, the other refuses it within a second.
        gone: dict[str, float] = {}
        deadline = time.monotonic() + 30
        while len(gone) < 2 and time.monotonic() < deadline:
            for url in urls:
                if url not in gone and httpx.get(url, headers=reader).status_code == 404:
                    gone[url] = time.monotonic()
        assert len(gone) == 2, "not quarantined on both nodes"
        assert abs(gone[urls[0]] - gone[urls[1]]) < 1.0


class RoundRobin:
    """A TCP proxy on 127.0.0.1 that sends each new connection to the next backend."""

    def __init__(self) -> None:
        self.backends: list[int] = []
        self.turn = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            backend = self.backends[self.turn % len(self.backends)]
            self.turn += 1
            server = socket.create_connection(("127.0.0.1", backend))
            self._connect(client, server, backend)

    def _connect(self, client: socket.socket, server: socket.socket, backend: int) -> None:
        """Carry a new connection's bytes both ways."""
        for source, sink in ((client, server), (server, client)):
            threading.Thread(target=_pipe, args=(source, sink), daemon=True).start()

    def close(self) -> None:
        self.listener.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()


def test_resumable_uploads_hop_between_nodes(
    nodes: Callable[..., Server], s3_server: S3Server
) -> None:
    proxy = RoundRobin()
    try:
        a, b = nodes(public_url=proxy.url), nodes(public_url=proxy.url)
        proxy.backends = [a.port, b.port]
        # On S3, chunks under 5 MiB are tails that the next PATCH (on either node) takes
        # along until they make a part.
        body = secrets.token_bytes(13 * 1024 * 1024 + 11)
        client = TusClient(f"{proxy.url}/v1/uploads", headers=a.auth)
        with io.BytesIO(body) as stream:
            uploader = client.uploader(file_stream=stream, chunk_size=2 * 1024 * 1024,
                                       metadata={"filename": "hop.bin"})  # fmt: skip
            uploader.upload()
        file_id = uploader.url.rsplit("/", 1)[1]
        for node in (a, b):
            with node.client(headers=node.auth) as http:
                file = http.get(f"/v1/files/{file_id}").json()
                assert file["sha256"] == hashlib.sha256(body).hexdigest()
        # Started on a, half sent there and cut, finished on b.
        tus = {"Tus-Resumable": "1.0.0"}
        patch = tus | {"Content-Type": "application/offset+octet-stream"}
        with a.client(headers=a.auth) as on_a, b.client(headers=b.auth) as on_b:
            made = on_a.post("/v1/uploads", headers=tus | {"Upload-Length": str(len(body))})
            path = "/" + made.headers["location"].split("/", 3)[3]
            first = on_a.patch(
                path, content=body[:6_000_000], headers=patch | {"Upload-Offset": "0"}
            )
            assert first.status_code == 204
            offset = int(on_b.head(path, headers=tus).headers["upload-offset"])
            assert offset == 6_000_000
            rest = on_b.patch(
                path, content=body[offset:], headers=patch | {"Upload-Offset": str(offset)}
            )
            assert rest.status_code == 204, rest.text
            done = on_a.get(f"/v1/files/{path.rsplit('/', 1)[1]}").json()
            assert done["sha256"] == hashlib.sha256(body).hexdigest()
            # A terminated upload leaves no piece in the bucket.
            other = on_b.post("/v1/uploads", headers=tus | {"Upload-Length": "100"})
            other_path = "/" + other.headers["location"].split("/", 3)[3]
            on_a.patch(other_path, content=b"x" * 40, headers=patch | {"Upload-Offset": "0"})
            assert on_a.delete(other_path, headers=tus).status_code == 204
        store = open_s3_store(a.env["CHATMEDIA_STORAGE_URL"], a.env)
        pieces = anyio.run(_listed, store, "uploads/")
        assert pieces == []
        # Nor a multipart upload under way, nor a staged blob.
        assert anyio.run(_multipart_uploads, store) == []
        assert anyio.run(_listed, store, "staging/") == []
    finally:
        proxy.close()


async def _multipart_uploads(store: Any) -> list[tuple[str, str]]:
    parts = MultipartParts(store.location)
    try:
        return await parts.uploads("")
    finally:
        await parts.aclose()


async def _parts_under_way(store: Any) -> list[str]:
    """Every multipart upload under way, and each of its parts, as `key` and `key#number`."""
    parts = MultipartParts(store.location)
    try:
        found = []
        for key, upload in await parts.uploads(""):
            found += [key, *(f"{key}#{n}" for n in await parts.parts(key, upload))]
        return found
    finally:
        await parts.aclose()


async def _listed(store: Any, prefix: str) -> list[str]:
    names: list[str] = []
    async for batch in obstore.list(store._store, prefix):
        names += [meta["path"] for meta in batch]
    return names


def test_resumable_uploads_on_s3_hold_no_more_memory_for_more_bytes(
    nodes: Callable[..., Server],
) -> None:
    """PATCHes are spooled to disk and sent to S3 as parts in pieces: 48 MiB in 1 MiB
    PATCHes (tails, then parts) or in one PATCH cost what 4 MiB cost."""
    assert_flat_memory(nodes(max_upload_size="64MiB"))
