"""tus-js-client, the tus project's JavaScript client, run by Node (tests/e2e/node), against
a real `chatmedia serve` on SQLite + local disk, and against two nodes on PostgreSQL + S3
(SeaweedFS) behind a round-robin proxy: chunks, a deferred length, a connection cut
mid-PATCH, a client killed and restarted from its stored URL, two clients racing on one
upload, and termination. Every finished upload is checked byte for byte."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import asyncpg
import httpx
import pytest
from tusclient.client import TusClient
from tusclient.exceptions import TusCommunicationError

from chatmedia.storage.s3 import open_s3_store
from tests.e2e.conftest import Server, wait_for
from tests.e2e.test_nodes import RoundRobin, _listed, _parts_under_way, _pipe
from tests.pgserver import PostgresServer, postgres
from tests.s3server import S3Server, s3_server

__all__ = ["postgres", "s3_server"]  # the session's servers, for the two-node deployment
pytestmark = pytest.mark.e2e
CLIENT = Path(__file__).with_name("node") / "tus_upload.mjs"
TUS = {"Tus-Resumable": "1.0.0"}
KiB, MiB = 1024, 1024 * 1024
Event = dict[str, Any]


class CuttingProxy(RoundRobin):
    """test_nodes' round-robin proxy, which also records each connection's backend and can
    cut one connection mid-request, as a dropped network does."""

    def __init__(self) -> None:
        self.connections: list[int] = []  # the backend port of each connection, in order
        self._cut_at: int | None = None
        self.cut: int | None = None  # the index of the connection that was cut
        self.cut_done = threading.Event()  # set once both its ends are closed
        self._lock = threading.Lock()
        super().__init__()

    def cut_after(self, count: int) -> None:
        """Cut the first connection that carries `count` bytes from its client: those go
        through, then both ends are closed half a second later (time for the node to read
        them)."""
        self.cut_done.clear()
        self._cut_at = count

    def _connect(self, client: socket.socket, server: socket.socket, backend: int) -> None:
        self.connections.append(backend)
        index = len(self.connections) - 1
        threading.Thread(target=_pipe, args=(server, client), daemon=True).start()
        threading.Thread(target=self._up, args=(client, server, index), daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket, index: int) -> None:
        sent = 0
        while True:
            try:
                data = client.recv(65536)
            except OSError:
                data = b""
            with self._lock:
                cut_at = self._cut_at
                cutting = cut_at is not None and data != b"" and sent + len(data) >= cut_at
                if cutting:
                    self._cut_at, self.cut = None, index
            try:
                if cutting:
                    assert cut_at is not None
                    server.sendall(data[: cut_at - sent])
                    time.sleep(0.5)
                    data = b""
                if not data:
                    break
                server.sendall(data)
                sent += len(data)
            except OSError:
                break
        for end in (client, server):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()
        if self.cut == index:
            self.cut_done.set()


@dataclass
class Deployment:
    """Servers behind a proxy, and what is left of uploads under way in their database and
    store."""

    servers: list[Server]
    proxy: CuttingProxy
    pieces: Callable[[], list[str]]
    rows: Callable[[], int]
    expire: Callable[[str], None]  # an upload's expiry moved into the past

    @property
    def endpoint(self) -> str:
        return f"{self.proxy.url}/v1/uploads"

    def client(self, node: int = 0) -> httpx.Client:
        server = self.servers[node]
        return server.client(headers=server.auth)


_COUNT = "SELECT (SELECT count(*) FROM uploads) + (SELECT count(*) FROM upload_segments)"
# SQLite holds UTC as naive text (chatmedia.db.schema.UTCDateTime), PostgreSQL a timestamptz.
_EXPIRE = "UPDATE uploads SET expires_at = '2000-01-01 00:00:00.000000' WHERE id = "


@pytest.fixture(scope="module", params=["sqlite", "postgres-s3"])
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    proxy = CuttingProxy()
    settings = {"public_url": proxy.url, "max_upload_size": "64MiB"}
    servers: list[Server] = []
    try:
        if request.param == "sqlite":
            server = Server(tmp_path_factory.mktemp("tus-js"), **settings)
            server.start()
            servers.append(server)
            blobs = server.data_dir / "blobs"

            def local_pieces() -> list[str]:  # pieces, and staged blobs
                return [str(p) for d in (".uploads", ".staging")
                        for p in (blobs / d).rglob("*") if p.is_file()]  # fmt: skip

            def sqlite_rows() -> int:
                db = f"file:{server.data_dir / 'chatmedia.db'}?mode=ro"
                with contextlib.closing(sqlite3.connect(db, uri=True)) as conn:
                    count: int = conn.execute(_COUNT).fetchone()[0]
                return count

            def sqlite_expire(upload_id: str) -> None:
                db = f"file:{server.data_dir / 'chatmedia.db'}"
                with contextlib.closing(sqlite3.connect(db, uri=True)) as conn, conn:
                    conn.execute(_EXPIRE + "?", (upload_id,))

            made = Deployment(servers, proxy, local_pieces, sqlite_rows, sqlite_expire)
        else:
            pg: PostgresServer = request.getfixturevalue("postgres")
            s3: S3Server = request.getfixturevalue("s3_server")
            database = pg.new_database()
            settings |= {
                "database_url": database,
                "storage_url": s3.url(f"tus-js-{secrets.token_hex(4)}"),
            }
            for n in range(2):
                node = Server(tmp_path_factory.mktemp(f"tus-js-node{n}"), **settings)
                if servers:
                    node.key = servers[0].key  # the first node made the first key
                else:
                    node.cli("migrate")
                node.start()
                servers.append(node)
            store = open_s3_store(settings["storage_url"], servers[0].env)

            def s3_pieces() -> list[str]:  # pieces, staged blobs, multipart uploads, parts
                found = [p for d in ("uploads/", "staging/") for p in anyio.run(_listed, store, d)]
                return found + anyio.run(_parts_under_way, store)

            def pg_rows() -> int:
                return anyio.run(_pg_count, database)

            def pg_expire(upload_id: str) -> None:
                anyio.run(_pg_execute, database, _EXPIRE + "$1", upload_id)

            made = Deployment(servers, proxy, s3_pieces, pg_rows, pg_expire)
        proxy.backends = [s.port for s in servers]
        yield made
    finally:
        proxy.close()
        for server in servers:
            server.stop()


async def _pg_execute(url: str, statement: str, *args: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statement, *args)
    finally:
        await conn.close()


async def _pg_count(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        count: int = await conn.fetchval(_COUNT)
    finally:
        await conn.close()
    return count


def node_command(deployment: Deployment, file: Path, **options: Any) -> list[str]:
    node = shutil.which("node")
    assert node, "Node.js runs tus-js-client"
    options = {
        "endpoint": deployment.endpoint,
        "key": deployment.servers[0].key,
        "file": str(file),
    } | options
    return [node, str(CLIENT), json.dumps(options)]


def run_client(deployment: Deployment, file: Path, **options: Any) -> tuple[int, list[Event]]:
    """Run one client to its end: its exit status and what it printed."""
    done = subprocess.run(
        node_command(deployment, file, **options), capture_output=True, text=True, timeout=60
    )
    assert not done.stderr, done.stderr
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()]


def exchanges(events: list[Event]) -> list[tuple[Event, Event]]:
    """Each request with its response (one request at a time: they alternate)."""
    requests = [e for e in events if e["event"] == "request"]
    responses = [e for e in events if e["event"] == "response"]
    return list(zip(requests, responses, strict=False))


def finished(events: list[Event]) -> Event:
    """The client's last word, which must be its success."""
    last = events[-1]
    assert last["event"] == "success", events[-5:]
    return last


def source(tmp_path: Path, size: int) -> tuple[Path, bytes]:
    body = secrets.token_bytes(size)
    path = tmp_path / f"{secrets.token_hex(4)}.bin"
    path.write_bytes(body)
    return path, body


def check_file(deployment: Deployment, upload_url: str, body: bytes) -> dict[str, Any]:
    """The upload's File, as every node serves it: its bytes are the body's."""
    file_id = upload_url.rsplit("/", 1)[1]
    for node in range(len(deployment.servers)):
        with deployment.client(node) as http:
            file: dict[str, Any] = http.get(f"/v1/files/{file_id}").json()
            assert file["id"] == file_id, file
            assert file["size"] == len(body)
            assert file["sha256"] == hashlib.sha256(body).hexdigest()
            assert http.get(f"/v1/files/{file_id}/content").content == body
    return file


def assert_nothing_left(deployment: Deployment) -> None:
    """No upload row, no segment row and no piece in the store, and none comes later."""
    wait_for(lambda: deployment.rows() == 0 and deployment.pieces() == [], timeout=15)
    time.sleep(0.5)
    assert (deployment.rows(), deployment.pieces()) == (0, [])


def test_a_chunked_upload_goes_to_whichever_node(deployment: Deployment, tmp_path: Path) -> None:
    file, body = source(tmp_path, 3 * MiB + 5)
    metadata = {"filename": "clip.mp4", "filetype": "video/mp4", "conversationId": "js-1",
                "channel": "web"}  # fmt: skip
    first = len(deployment.proxy.connections)
    status, events = run_client(deployment, file, chunkSize=256 * KiB, metadata=metadata,
                                newConnections=True)  # fmt: skip
    assert status == 0, events[-3:]
    done = finished(events)
    # One PATCH per chunk, each answered with the offset it reached, the last with the File.
    patches = [(q, r) for q, r in exchanges(events) if q["method"] == "PATCH"]
    assert [q["headers"]["Upload-Offset"] for q, _ in patches] == [
        str(n * 256 * KiB) for n in range(13)
    ]
    assert {r["status"] for _, r in patches} == {204}
    assert done["file"] == done["url"].replace("/v1/uploads/", "/v1/files/")
    file_record = check_file(deployment, done["url"], body)
    assert (file_record["name"], file_record["conversationId"]) == ("clip.mp4", "js-1")
    assert file_record["properties"] == {"channel": "web"}
    # Each request on a connection of its own: every node took its turn.
    assert set(deployment.proxy.connections[first:]) == set(deployment.proxy.backends)
    assert_nothing_left(deployment)


def test_a_deferred_length_is_said_with_the_last_chunk(
    deployment: Deployment, tmp_path: Path
) -> None:
    file, body = source(tmp_path, MiB + 5000)
    status, events = run_client(deployment, file, chunkSize=256 * KiB, deferred=True)
    assert status == 0, events[-3:]
    sent = exchanges(events)
    post, created = sent[0]
    assert post["method"] == "POST"
    assert (post["headers"]["Upload-Defer-Length"], post["headers"]["Upload-Length"]) == ("1", None)
    assert (created["status"], created["headers"]["Upload-Defer-Length"]) == (201, "1")
    patches = [q for q, _ in sent if q["method"] == "PATCH"]
    assert [q["headers"]["Upload-Length"] for q in patches[:-1]] == [None] * (len(patches) - 1)
    assert patches[-1]["headers"]["Upload-Length"] == str(len(body))
    check_file(deployment, finished(events)["url"], body)
    assert_nothing_left(deployment)


def test_a_connection_cut_mid_patch_resumes_on_the_other_node(
    deployment: Deployment, tmp_path: Path
) -> None:
    file, body = source(tmp_path, 3 * MiB + 3)
    first = len(deployment.proxy.connections)
    deployment.proxy.cut_after(MiB + 300 * KiB)  # into the third 512 KiB chunk
    status, events = run_client(deployment, file, chunkSize=512 * KiB)
    assert status == 0, events[-3:]
    # The client saw the cut (no answer: a network error) and went on by itself.
    assert [e["status"] for e in events if e["event"] == "retry"][:1] == [0]
    cut = events.index(next(e for e in events if e["event"] == "retry"))
    before, after = exchanges(events[:cut]), exchanges(events[cut:])
    acknowledged = max(int(r["headers"]["Upload-Offset"]) for _, r in before)
    assert acknowledged == MiB
    # The bytes of the cut PATCH that arrived were kept: the client resumed past them.
    resumed = next(q for q, r in after if q["method"] == "PATCH" and r["status"] == 204)
    assert acknowledged < int(resumed["headers"]["Upload-Offset"]) <= acknowledged + 512 * KiB
    # With keep-alive, the client's one connection went to one node until the cut; the
    # next connection went to the other.
    cut_connection = deployment.proxy.cut
    assert cut_connection is not None
    assert cut_connection >= first
    assert len(deployment.proxy.connections) > cut_connection + 1
    if len(deployment.servers) == 2:
        after_cut = deployment.proxy.connections[cut_connection + 1]
        assert after_cut != deployment.proxy.connections[cut_connection]
    check_file(deployment, finished(events)["url"], body)
    assert_nothing_left(deployment)


def test_a_killed_client_resumes_from_its_stored_url(
    deployment: Deployment, tmp_path: Path
) -> None:
    file, body = source(tmp_path, 4 * MiB + 1)
    storage = tmp_path / "tus-urls.json"
    command = node_command(deployment, file, chunkSize=256 * KiB, storage=str(storage))
    # Killed once a megabyte is in, as the next PATCH goes.
    killed = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert killed.stdout is not None
    seen: list[Event] = []
    for line in killed.stdout:
        seen.append(json.loads(line))
        if seen[-1]["event"] == "chunk" and seen[-1]["accepted"] >= MiB:
            os.kill(killed.pid, signal.SIGKILL)
            break
    assert killed.wait(10) == -signal.SIGKILL, seen[-3:]
    killed.communicate()
    created = next(r for q, r in exchanges(seen) if q["method"] == "POST")
    url = created["headers"]["Location"]
    stored = json.loads(storage.read_text())
    assert [entry["uploadUrl"] for entry in stored.values()] == [url]
    # The server kept what came: the offset settles past the first megabyte.
    with deployment.client() as http:
        path = "/" + url.split("/", 3)[3]

        def settled() -> int:
            head = http.head(path, headers=TUS)
            assert head.status_code == 200, head.text
            offset = int(head.headers["upload-offset"])
            return offset if offset >= MiB else 0

        kept = wait_for(settled)
    assert kept < len(body)
    assert deployment.rows() > 0
    assert deployment.pieces() != []  # what the check of nothing left looks at is there
    # Started again: it finds its URL, asks where the upload is, and goes on from there.
    status, events = run_client(deployment, file, chunkSize=256 * KiB, storage=str(storage))
    assert status == 0, events[-3:]
    assert events[0] == {"event": "resuming", "url": url}
    sent = exchanges(events)
    assert "POST" not in {q["method"] for q, _ in sent}
    head, answer = sent[0]
    assert (head["method"], answer["status"]) == ("HEAD", 200)
    assert int(answer["headers"]["Upload-Offset"]) >= kept
    patches = [q for q, _ in sent if q["method"] == "PATCH"]
    assert int(patches[0]["headers"]["Upload-Offset"]) >= kept
    progress = [e["sent"] for e in events if e["event"] == "progress"]
    assert progress[0] >= kept
    check_file(deployment, finished(events)["url"], body)
    assert not [k for k in json.loads(storage.read_text()) if k.startswith("tus::")]
    assert_nothing_left(deployment)


def test_two_clients_racing_on_one_upload(deployment: Deployment, tmp_path: Path) -> None:
    file, body = source(tmp_path, 2 * MiB + 9)
    with deployment.client() as http:
        made = http.post("/v1/uploads", headers=TUS | {"Upload-Length": str(len(body))})
        assert made.status_code == 201, made.text
    url = made.headers["location"]
    command = node_command(deployment, file, chunkSize=128 * KiB, uploadUrl=url, waitForGo=True)
    racers = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # fmt: skip
    for racer in racers:  # both loaded, then off at the same moment
        assert racer.stdout is not None
        assert json.loads(racer.stdout.readline()) == {"event": "ready"}
    for racer in racers:
        assert racer.stdin is not None
        racer.stdin.write("go\n")
        racer.stdin.flush()
    outcomes = [(r.wait(60), r.communicate()) for r in racers]
    runs = [[json.loads(line) for line in out.splitlines()] for _, (out, _) in outcomes]
    assert [err for _, (_, err) in outcomes] == ["", ""]
    # One wrote the last byte and got the File; the other also ends well, seeing it done.
    assert [status for status, _ in outcomes] == [0, 0], [run[-3:] for run in runs]
    assert {finished(run)["url"] for run in runs} == {url}
    assert sorted(finished(run)["file"] is not None for run in runs) == [False, True]
    # They did race: one was refused (423 while the other wrote, 409 once it moved on).
    answers = {r["status"] for run in runs for q, r in exchanges(run) if q["method"] == "PATCH"}
    assert answers & {409, 423}, answers
    check_file(deployment, url, body)
    assert_nothing_left(deployment)


def test_termination_mid_patch_leaves_nothing_behind(
    deployment: Deployment, tmp_path: Path
) -> None:
    file, _ = source(tmp_path, 3 * MiB)
    storage = tmp_path / "tus-urls.json"
    # The second PATCH stalls halfway for half a second (then its connection is cut);
    # 200 ms into it the client aborts and terminates: the DELETE reaches a node while
    # the writer still holds the upload.
    deployment.proxy.cut_after(MiB + 512 * KiB)
    status, events = run_client(deployment, file, chunkSize=MiB, abortAt=MiB, storage=str(storage))
    assert status == 0, events[-3:]
    assert events[-1]["event"] == "terminated"
    url = events[-1]["url"]
    calls = [
        (e["method"], e.get("status")) for e in events if e["event"] in ("request", "response")
    ]
    assert calls[-5:] == [("PATCH", None), ("PATCH", 204), ("PATCH", None),
                          ("DELETE", None), ("DELETE", 204)]  # fmt: skip
    assert not [k for k in json.loads(storage.read_text()) if k.startswith("tus::")]
    path = "/" + url.split("/", 3)[3]
    for node in range(len(deployment.servers)):
        with deployment.client(node) as http:
            assert http.head(path, headers=TUS).status_code == 404
            assert http.get(f"/v1/files/{url.rsplit('/', 1)[1]}").status_code == 404
    assert deployment.proxy.cut_done.wait(5)  # the writer's connection has ended: it is done
    assert_nothing_left(deployment)


def test_tuspy_with_checksums_and_a_corrupted_chunk(deployment: Deployment, tmp_path: Path) -> None:
    """tuspy sends every chunk with its SHA-1 (Upload-Checksum), node after node; a chunk
    whose bytes do not match theirs is refused with 460 and leaves nothing (no piece, no
    part), and the upload goes on from where it was."""
    file, body = source(tmp_path, 3 * MiB + 17)
    auth = deployment.servers[0].auth
    with file.open("rb") as stream:  # tuspy leaves a file it opened itself open
        uploader = TusClient(deployment.endpoint, headers=auth).uploader(
            file_stream=stream, chunk_size=MiB, upload_checksum=True
        )
        uploader.upload()
    check_file(deployment, str(uploader.url), body)
    assert_nothing_left(deployment)
    # By hand, through the proxy: 6 MiB, the last 5 MiB (an S3 part) sent corrupted.
    body = secrets.token_bytes(6 * MiB)
    patch = TUS | {"Content-Type": "application/offset+octet-stream"}
    with httpx.Client(base_url=deployment.proxy.url, headers=auth, timeout=30) as http:
        made = http.post("/v1/uploads", headers=TUS | {"Upload-Length": str(len(body))})
        path = urlsplit(made.headers["location"]).path
        first = patch | {"Upload-Offset": "0", "Upload-Checksum": _sha1(body[:MiB])}
        assert http.patch(path, content=body[:MiB], headers=first).status_code == 204
        kept = sorted(deployment.pieces())
        rest = body[MiB:]
        corrupted = rest[:-1] + bytes([rest[-1] ^ 1])
        bad = patch | {"Upload-Offset": str(MiB), "Upload-Checksum": _sha1(rest)}
        refused = http.patch(path, content=corrupted, headers=bad)
        assert refused.status_code == 460
        assert refused.json()["error"]["code"] == "checksum_mismatch"
        assert sorted(deployment.pieces()) == kept
        assert http.head(path, headers=TUS).headers["upload-offset"] == str(MiB)
        good = http.patch(path, content=rest, headers=bad)
        assert good.status_code == 204, good.text
    check_file(deployment, path, body)
    assert_nothing_left(deployment)


def test_tuspy_finds_an_upload_left_untouched_expired(
    deployment: Deployment, tmp_path: Path
) -> None:
    """An upload untouched past its expiry (moved into the past in the database, as the
    hours would) is 410 to the client coming back, and nothing of it is left."""
    file, _ = source(tmp_path, 2 * MiB)
    with file.open("rb") as stream:
        uploader = TusClient(deployment.endpoint, headers=deployment.servers[0].auth).uploader(
            file_stream=stream, chunk_size=MiB
        )
        uploader.upload_chunk()
        assert uploader.offset == MiB
        deployment.expire(urlsplit(str(uploader.url)).path.rsplit("/", 1)[1])
        with pytest.raises(TusCommunicationError) as refused:
            uploader.upload_chunk()
    assert refused.value.status_code == 410
    assert_nothing_left(deployment)


def _sha1(data: bytes) -> str:
    return "sha1 " + base64.b64encode(hashlib.sha1(data).digest()).decode()  # noqa: S324
