"""Resumable uploads (tus 1.0) through a real `chatmedia serve`: a real client (tuspy),
and the protocol's edges by hand — versions, offsets, checksums, deferred lengths,
termination, expiry, a refused type, a cut connection resumed, two writers at once."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import secrets
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image
from tusclient.client import TusClient

from tests.conftest import png_bytes
from tests.e2e.conftest import CHATMEDIA, Server, wait_for
from tests.media_files import shared_media

pytestmark = pytest.mark.e2e
TUS = {"Tus-Resumable": "1.0.0"}
PATCH = TUS | {"Content-Type": "application/offset+octet-stream"}
# What the workers' peak may grow by while larger uploads stream through.
MEMORY_SLACK_MIB = 12


@pytest.fixture(scope="module")
def server(start_server: Callable[..., Server]) -> Server:
    return start_server(max_upload_size="64MiB", upload_expiry="3s")


def metadata(**pairs: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in pairs.items())


def create(client: httpx.Client, length: int | None, **pairs: str) -> str:
    headers = TUS | ({"Upload-Length": str(length)} if length is not None
                     else {"Upload-Defer-Length": "1"})  # fmt: skip
    answer = client.post("/v1/uploads", headers=headers | {"Upload-Metadata": metadata(**pairs)})
    assert answer.status_code == 201, answer.text
    return str(answer.headers["location"])


def parts(server: Server) -> list[Path]:
    """The pieces of uploads under way in the server's store."""
    folder = server.data_dir / "blobs" / ".uploads"
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def test_a_real_client_uploads_in_chunks(server: Server, tmp_path: Path) -> None:
    body = secrets.token_bytes(3 * 1024 * 1024 + 7)
    source = tmp_path / "big.bin"
    source.write_bytes(body)
    client = TusClient(f"{server.url}/v1/uploads", headers=server.auth)
    with source.open("rb") as stream:
        uploader = client.uploader(
            file_stream=stream, chunk_size=1024 * 1024,
            metadata={"filename": "big.bin", "conversationId": "tus-1", "channel": "web"},
        )  # fmt: skip
        uploader.upload()
    file_id = uploader.url.rsplit("/", 1)[1]
    with server.client(headers=server.auth) as http:
        file = http.get(f"/v1/files/{file_id}").json()
        assert file["sha256"] == hashlib.sha256(body).hexdigest()
        assert file["name"] == "big.bin"
        assert file["conversationId"] == "tus-1"
        assert file["properties"] == {"channel": "web"}
        assert http.get(f"/v1/files/{file_id}/content").content == body
        # Finished: HEAD shows it complete; nothing is left of the upload itself.
        head = http.head(f"/v1/uploads/{file_id}", headers=TUS)
        assert head.headers["upload-offset"] == head.headers["upload-length"] == str(len(body))
    assert parts(server) == []


def test_a_photo_sent_in_patches_loses_its_location_as_in_one_request(
    server: Server, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Its bytes change on the way to their blob, so they are written anew, not staged as
    # the upload's piece.
    photo = shared_media(tmp_path_factory).photo(6).read_bytes()
    half = len(photo) // 2
    with server.client(headers=server.auth) as http:
        url = create(http, len(photo), filename="photo.jpg")
        for offset, part in ((0, photo[:half]), (half, photo[half:])):
            done = http.patch(url, content=part, headers=PATCH | {"Upload-Offset": str(offset)})
            assert done.status_code == 204, done.text
        file = http.get(urlsplit(done.headers["location"]).path).json()
        stored = http.get(f"/v1/files/{file['id']}/content").content
    assert file["metadataStripped"] is True
    assert stored != photo
    assert file["sha256"] == hashlib.sha256(stored).hexdigest()
    with Image.open(io.BytesIO(stored)) as kept:
        assert not kept.getexif().get_ifd(0x8825)  # no GPS
    assert parts(server) == []


def test_the_protocol_edges(server: Server) -> None:
    with server.client(headers=server.auth) as http:
        options = http.options("/v1/uploads")
        assert options.status_code == 204
        assert options.headers["tus-version"] == "1.0.0"
        assert set(options.headers["tus-extension"].split(",")) == {
            "creation", "creation-with-upload", "creation-defer-length", "expiration",
            "checksum", "termination",
        }  # fmt: skip
        assert options.headers["tus-checksum-algorithm"] == "sha1,sha256,md5"
        assert http.post("/v1/uploads", headers={"Upload-Length": "3"}).status_code == 412
        too_big = http.post("/v1/uploads", headers=TUS | {"Upload-Length": str(65 * 2**20)})
        assert too_big.status_code == 413
        # creation-with-upload, then HEAD, a wrong offset, a wrong type, a bad checksum.
        first = b"hello, "
        made = http.post("/v1/uploads", content=first,
                         headers=PATCH | {"Upload-Length": "12"})  # fmt: skip
        assert made.status_code == 201
        assert made.headers["upload-offset"] == "7"
        assert "upload-expires" in made.headers
        url = made.headers["location"]
        assert http.head(url, headers=TUS).headers["upload-offset"] == "7"
        assert (
            http.patch(url, content=b"x", headers=PATCH | {"Upload-Offset": "3"}).status_code == 409
        )
        wrong_type = TUS | {"Content-Type": "text/plain", "Upload-Offset": "7"}
        assert http.patch(url, content=b"x", headers=wrong_type).status_code == 415
        bad = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
        checked = PATCH | {"Upload-Offset": "7", "Upload-Checksum": f"sha256 {bad}"}
        assert http.patch(url, content=b"world", headers=checked).status_code == 460
        assert http.head(url, headers=TUS).headers["upload-offset"] == "7"  # dropped whole
        good = base64.b64encode(hashlib.sha1(b"world", usedforsecurity=False).digest()).decode()
        checked["Upload-Checksum"] = f"sha1 {good}"
        done = http.patch(url, content=b"world", headers=checked)
        assert done.status_code == 204
        assert done.headers["upload-offset"] == "12"
        assert done.headers["location"].endswith(url.rsplit("/", 1)[1])  # the File
        assert (
            http.get(urlsplit(done.headers["location"]).path + "/content").content
            == b"hello, world"
        )


def test_a_deferred_length_and_termination(server: Server) -> None:
    with server.client(headers=server.auth) as http:
        url = create(http, None, filename="notes.txt")
        assert http.head(url, headers=TUS).headers["upload-defer-length"] == "1"
        part = http.patch(url, content=b"first ", headers=PATCH | {"Upload-Offset": "0"})
        assert part.status_code == 204
        last = PATCH | {"Upload-Offset": "6", "Upload-Length": "11"}
        assert http.patch(url, content=b"last.", headers=last).status_code == 204
        other = create(http, 10)
        assert (
            http.patch(other, content=b"12345", headers=PATCH | {"Upload-Offset": "0"}).status_code
            == 204
        )
        assert http.delete(other, headers=TUS).status_code == 204
        assert http.head(other, headers=TUS).status_code == 404
    assert parts(server) == []


def test_a_refused_type_ends_the_upload_at_its_first_bytes(server: Server) -> None:
    html = b"<!DOCTYPE html><html><body>" + b"x" * 70_000
    node = server
    with node.client(headers=node.auth) as http:
        url = create(http, len(html))
        answer = http.patch(url, content=html[:65_536], headers=PATCH | {"Upload-Offset": "0"})
        assert answer.status_code == 204  # a policy that allows everything: it goes on
        assert http.delete(url, headers=TUS).status_code == 204
    policy = Server(server.root.parent / "policy", allowed_types="image/*")
    policy.root.mkdir()
    policy.start()
    try:
        with policy.client(headers=policy.auth) as http:
            url = create(http, len(html))
            answer = http.patch(url, content=html[:65_536], headers=PATCH | {"Upload-Offset": "0"})
            assert answer.status_code == 415
            assert http.head(url, headers=TUS).status_code == 404
        assert parts(policy) == []
    finally:
        policy.stop()


def test_an_untouched_upload_expires(server: Server) -> None:
    with server.client(headers=server.auth) as http:
        url = create(http, 100)
        assert (
            http.patch(url, content=b"abc", headers=PATCH | {"Upload-Offset": "0"}).status_code
            == 204
        )
        time.sleep(3.5)
        assert http.head(url, headers=TUS).status_code == 410
        assert http.head(url, headers=TUS).status_code == 404
    assert url.rsplit("/", 1)[1] not in {path.parent.name for path in parts(server)}


def test_a_cut_connection_keeps_its_bytes_and_resumes(server: Server) -> None:
    body = secrets.token_bytes(2 * 1024 * 1024)
    with server.client(headers=server.auth) as http:
        url = create(http, len(body), filename="cut.bin")
    sent = _send_then_cut(server, url, body, 1_500_000)
    with server.client(headers=server.auth) as http:
        offset = _settled_offset(http, url)
        assert 0 < offset <= sent
        rest = http.patch(
            url, content=body[offset:], headers=PATCH | {"Upload-Offset": str(offset)}
        )
        assert rest.status_code == 204, rest.text
        file_id = url.rsplit("/", 1)[1]
        assert http.get(f"/v1/files/{file_id}").json()["sha256"] == hashlib.sha256(body).hexdigest()
        done = http.head(url, headers=TUS)  # complete, and no longer expiring
        assert done.status_code == 200
        assert done.headers["upload-offset"] == str(len(body))
        assert "upload-expires" not in done.headers


def test_a_second_writer_waits_while_the_first_sends_then_takes_over(server: Server) -> None:
    body = secrets.token_bytes(64 * 1024)
    with server.client(headers=server.auth) as http:
        url = create(http, len(body))
    hanging = _open_patch(server, url, len(body), body[:1000])  # sends, then hangs
    try:
        with server.client(headers=server.auth) as http:
            time.sleep(0.5)
            locked = http.patch(url, content=body, headers=PATCH | {"Upload-Offset": "0"})
            assert locked.status_code == 423
            assert int(locked.headers["retry-after"]) >= 1
            # The hanging writer sends nothing more: its lease runs out and it is taken over.
            deadline = time.monotonic() + 20
            while True:
                answer = http.patch(url, content=body, headers=PATCH | {"Upload-Offset": "0"})
                if answer.status_code != 423:
                    break
                assert time.monotonic() < deadline
                time.sleep(1)
            assert answer.status_code == 204, answer.text
    finally:
        hanging.close()


def test_a_patch_still_sending_when_its_upload_is_terminated_is_refused_cleanly(
    server: Server,
) -> None:
    body = secrets.token_bytes(2_000_000)
    with server.client(headers=server.auth) as http:
        url = create(http, len(body))
        patch = _open_patch(server, url, len(body), body[:100_000])
        try:
            time.sleep(0.5)
            assert http.delete(url, headers=TUS).status_code == 204
            patch.sendall(body[100_000:])
            answer = patch.recv(65536).decode(errors="replace")
        finally:
            patch.close()
        assert answer.startswith("HTTP/1.1 409"), answer
        assert http.head(url, headers=TUS).status_code == 404
    assert "Traceback" not in server.log.read_text()
    assert not list((server.data_dir / "blobs" / ".uploads").glob("*/*"))


def test_a_message_names_an_upload_only_once_it_is_a_file(server: Server) -> None:
    with server.client(headers=server.auth) as http:
        url = create(http, 10, conversationId="tus-msg")
        file_id = url.rsplit("/", 1)[1]
        early = http.post("/v1/conversations/tus-msg/messages", json={"fileId": file_id})
        assert early.status_code == 409
        assert early.json()["error"]["code"] == "file_not_ready"
        http.patch(
            url, content=png_bytes()[:10].ljust(10, b"\0"), headers=PATCH | {"Upload-Offset": "0"}
        )
        assert (
            http.post("/v1/conversations/tus-msg/messages", json={"fileId": file_id}).status_code
            == 201
        )


def _open_patch(server: Server, url: str, length: int, first: bytes) -> socket.socket:
    """A PATCH announcing `length` bytes that sends `first` and then nothing."""
    path = urlsplit(url).path
    connection = socket.create_connection(("127.0.0.1", server.port))
    head = (
        f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {server.key}\r\n"
        f"Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n"
        f"Upload-Offset: 0\r\nContent-Length: {length}\r\n\r\n"
    )
    connection.sendall(head.encode() + first)
    return connection


def _send_then_cut(server: Server, url: str, body: bytes, cut_at: int) -> int:
    connection = _open_patch(server, url, len(body), body[:cut_at])
    time.sleep(0.5)
    connection.close()
    return cut_at


def _settled_offset(http: httpx.Client, url: str) -> int:
    """The upload's offset once the cut request has been seen to end."""
    deadline = time.monotonic() + 15
    while True:
        head = http.head(url, headers=TUS)
        offset = int(head.headers["upload-offset"])
        if offset > 0:
            return offset
        assert time.monotonic() < deadline, "the cut request's bytes were not kept"
        time.sleep(0.2)


def test_the_command_line_resumes_an_interrupted_upload(server: Server, tmp_path: Path) -> None:
    body = secrets.token_bytes(40 * 1024 * 1024 + 5)
    source = tmp_path / "video.bin"
    source.write_bytes(body)
    env = server.env | {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    command = [CHATMEDIA, "upload", str(source), "--server", server.url, "--key", server.key]
    state = tmp_path / "cache" / "chatmedia" / "uploads.json"
    # Interrupted once a first chunk is in.
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with server.client(headers=server.auth) as http:

        def under_way() -> str | None:
            if not state.exists():
                return None
            [url] = json.loads(state.read_text()).values()
            offset = int(http.head(url, headers=TUS).headers["upload-offset"])
            return url if offset > 0 else None

        url = wait_for(under_way)
    first.kill()
    first.communicate()
    # Run again: it goes on from there.
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    file = json.loads(again.stdout)
    assert file["id"] == url.rsplit("/", 1)[1]
    assert file["sha256"] == hashlib.sha256(body).hexdigest()
    assert json.loads(state.read_text()) == {}


def send_in_patches(server: Server, size: int, chunk: int | None) -> str:
    """Upload `size` generated bytes through tus in PATCHes of `chunk` bytes (None: one
    PATCH, streamed without a length, as an unbounded client sends); the File's SHA-256
    once checked against the bytes sent."""
    block = secrets.token_bytes(1024 * 1024)
    digest = hashlib.sha256()

    def body(start: int, end: int) -> Iterator[bytes]:
        for at in range(start, end, len(block)):
            piece = at.to_bytes(8, "big") + block[8 : min(len(block), end - at)]
            digest.update(piece)
            yield piece

    with server.client(headers=server.auth) as client:
        path = urlsplit(create(client, size, filename="big.bin")).path
        offset, step = 0, chunk or size
        while offset < size:
            end = min(size, offset + step)
            headers = PATCH | {"Upload-Offset": str(offset)}
            answer = client.patch(path, content=body(offset, end), headers=headers)
            assert answer.status_code == 204, answer.text
            offset = end
        file = client.get(f"/v1/files/{path.rsplit('/', 1)[1]}").json()
    assert file["sha256"] == digest.hexdigest()
    return str(file["sha256"])


def test_memory_is_the_same_whatever_the_size_and_the_chunks(
    start_server: Callable[..., Server],
) -> None:
    """48 MiB in 1 MiB PATCHes, then in one PATCH of no stated length, leave the workers'
    peak where 4 MiB uploads put it."""
    server = start_server(max_upload_size="64MiB")
    assert_flat_memory(server)


def assert_flat_memory(server: Server) -> None:
    for chunk in (1024 * 1024, None):
        send_in_patches(server, 4 * 1024 * 1024, chunk)  # first-use caches and buffers
    before = server.peak_rss_mib()
    for chunk in (1024 * 1024, None):
        send_in_patches(server, 48 * 1024 * 1024, chunk)
    assert server.peak_rss_mib() - before < MEMORY_SLACK_MIB
