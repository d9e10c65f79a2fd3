"""The main flows through a real `chatmedia serve` process over HTTP."""

from __future__ import annotations

import hashlib
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import PDF_BYTES, png_bytes, unsigned
from tests.e2e.conftest import Server

pytestmark = pytest.mark.e2e
PNG = png_bytes()
MIB = 1024 * 1024
# Peak RSS may move this much once a server has warmed up (buffers, caches), whatever the
# body size; holding a body in memory would move it by the body's size.
MEMORY_SLACK_MIB = 12


def warm_up(server: Server) -> None:
    """One upload and download of 1 MiB, so first-use caches and buffers are in place."""
    file = upload(server, bytes(MIB), "warm.bin").json()
    with server.client(headers=server.auth) as client:
        assert len(client.get(file["url"]).content) == MIB
        assert client.delete(f"/v1/files/{file['id']}").status_code == 204


def upload(server: Server, data: bytes, name: str = "a.png", **fields: str) -> httpx.Response:
    with server.client(headers=server.auth) as client:
        return client.post("/v1/files", files={"file": (name, data)}, data=fields)


def test_first_start_prints_one_key(server: Server) -> None:
    assert len(re.findall(r"^cm_\S+$", server.log.read_text(), re.MULTILINE)) == 1
    with server.client() as client:
        assert client.get("/v1/files").status_code == 401
        assert (
            client.get("/v1/files", headers={"Authorization": "Bearer cm_wrong"}).status_code == 401
        )
        assert client.get("/v1/files", headers=server.auth).status_code == 200
        assert client.get("/healthz").status_code == 200
        assert "chatmedia_http_requests_total" in client.get("/metrics").text
        assert client.get("/openapi.json").status_code == 200


def test_keys_cli(server: Server) -> None:
    created = server.cli("keys", "create", "--name", "connector")
    secret = created.stdout.strip().splitlines()[-1]
    key_id = re.search(r"created key (key_\w+)", created.stdout).group(1)  # type: ignore[union-attr]
    headers = {"Authorization": f"Bearer {secret}"}
    with server.client() as client:
        assert client.get("/v1/files", headers=headers).status_code == 200
        assert "connector" in server.cli("keys", "list").stdout
        server.cli("keys", "revoke", key_id)
        assert client.get("/v1/files", headers=headers).status_code == 401
        assert client.get("/v1/files", headers=server.auth).status_code == 200
    assert server.cli("keys", "revoke", key_id, check=False).returncode == 1


def test_native_flow(server: Server) -> None:
    response = upload(server, PNG, "photo.png", conversationId="conv1", channel="web")
    assert response.status_code == 201
    file = response.json()
    assert file["storedName"] == "conv1_photo.png"
    assert file["properties"] == {"channel": "web"}
    assert file["url"].startswith(f"{server.url}/v1/files/{file['id']}/content?exp=")
    with server.client(headers=server.auth) as client:
        assert unsigned(client.get(f"/v1/files/{file['id']}").json()) == unsigned(file)
        listed = client.get("/v1/files", params={"conversationId": "conv1"}).json()
        assert [f["id"] for f in listed["items"]] == [file["id"]]
        content = client.get(file["url"])
        assert content.content == PNG
        assert content.headers["content-disposition"] == 'inline; filename="photo.png"'
        ranged = client.get(file["url"], headers={"Range": "bytes=1-3"})
        assert (ranged.status_code, ranged.content) == (206, PNG[1:4])
        head = client.head(file["url"])
        assert (head.status_code, head.headers["content-length"]) == (200, str(len(PNG)))
        assert (
            client.get(file["url"], headers={"If-None-Match": content.headers["etag"]}).status_code
            == 304
        )
        assert client.get(file["url"], headers={"Range": "bytes=999999-"}).status_code == 416
        assert client.delete(f"/v1/files/{file['id']}").status_code == 204
        assert client.get(file["url"]).status_code == 404


def test_file_engine_flow(server: Server) -> None:
    with server.client(headers=server.auth) as client:
        response = client.post(
            "/file-engine/api/uploadFileStream",
            files={"file": ("voice.ogg", PDF_BYTES)},
            data={"conversationId": "wa-42"},
        )
        assert response.status_code == 200
        body = response.json()
        assert body["message"] == "File uploaded successfully."
        assert body["name"] == "wa-42_voice.ogg"
        assert body["type"] == "application/pdf"
        stat = client.get("/file-engine/api/getFileStat", params={"filename": body["name"]}).json()
        assert stat["etag"] == body["etag"]
        [file] = client.get("/v1/files", params={"conversationId": "wa-42"}).json()["items"]
        assert file["storedName"] == body["name"]
    with server.client() as anonymous:  # what a provider fetching mediaUrl does
        download = anonymous.get(
            "/file-engine/api/downloadFileStream", params={"filename": body["name"]}
        )
        assert download.content == PDF_BYTES
        assert download.headers["content-disposition"].startswith("attachment;")


def test_size_limit_is_exact_and_leaves_nothing(server: Server) -> None:
    blobs_before = server.stored_blobs()
    at_limit = bytes(5 * MIB)
    assert upload(server, at_limit, "limit.bin").status_code == 201
    blobs_after = server.stored_blobs()
    assert len(blobs_after) == len(blobs_before) + 1
    with server.client(headers=server.auth) as client:
        count = len(client.get("/v1/files", params={"limit": 1000}).json()["items"])
        over = upload(server, at_limit + b"x", "over.bin")
        assert over.status_code == 413
        assert over.json()["error"]["code"] == "file_too_large"
        assert len(client.get("/v1/files", params={"limit": 1000}).json()["items"]) == count
    assert server.stored_blobs() == blobs_after


def raw_request(server: Server, head: bytes, body: bytes, *, shutdown: bool = True) -> bytes:
    """Send bytes as they are (lying lengths and all) and read whatever comes back."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head + body)
        if shutdown:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def multipart_head(server: Server, length: int | None, boundary: str = "B") -> bytes:
    lines = [
        "POST /v1/files HTTP/1.1",
        f"Host: 127.0.0.1:{server.port}",
        f"Authorization: Bearer {server.key}",
        f"Content-Type: multipart/form-data; boundary={boundary}",
        "Connection: close",
    ]
    lines.append(
        f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    )
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def file_part(data: bytes) -> bytes:
    return (
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="x.bin"\r\n\r\n'
        + data
        + b"\r\n--B--\r\n"
    )


def test_hostile_bodies_get_fast_4xx_with_bounded_memory(server: Server) -> None:
    blobs_before = server.stored_blobs()
    warm_up(server)
    peak_before = server.peak_rss_mib()

    def timed(call: Callable[[], int]) -> tuple[int, float]:
        started = time.monotonic()
        status = call()
        return status, time.monotonic() - started

    def post(content: bytes | Iterator[bytes], boundary: str = "B") -> int:
        headers = server.auth | {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        with server.client() as client:
            return client.post("/v1/files", headers=headers, content=content).status_code

    def huge_text_part() -> Iterator[bytes]:
        yield b'--B\r\nContent-Disposition: form-data; name="note"\r\n\r\n'
        for _ in range(200):
            yield b"x" * MIB

    def empty_parts() -> Iterator[bytes]:
        for _ in range(100_000):
            yield b'--B\r\nContent-Disposition: form-data; name="p"\r\n\r\n\r\n'

    assert timed(lambda: post(huge_text_part()))[0] == 413
    status, seconds = timed(lambda: post(empty_parts()))
    assert status == 400
    assert seconds < 5
    assert post(file_part(b"abc")[:-8]) == 400  # unterminated
    assert post(b"\x00garbage" * 10_000) == 400
    two_files = file_part(b"one")[: -len(b"--B--\r\n")] + file_part(b"two")
    assert post(two_files) == 400
    # No Content-Length at all: a chunked body streams like any other.
    assert post(iter([file_part(b"chunked body")])) == 201

    # A Content-Length shorter than the body: what follows is not read as this upload.
    answer = raw_request(server, multipart_head(server, 20), file_part(b"hello"))
    assert answer.startswith(b"HTTP/1.1 400")
    # A Content-Length longer than the body, then the client gives up: nothing stays.
    raw_request(server, multipart_head(server, 10 * MIB), file_part(b"short")[:-8])
    time.sleep(0.5)
    log = server.log.read_text()
    assert "client disconnected before its request body ended" in log
    assert "Traceback" not in log
    new_blobs = set(server.stored_blobs()) - set(blobs_before)
    assert [p.read_bytes() for p in new_blobs] == [b"chunked body"]  # the one accepted upload
    assert list((server.data_dir / "blobs" / ".staging").iterdir()) == []
    # 200 MiB of text part and 100,000 parts went by; memory must not have followed them.
    assert server.peak_rss_mib() - peak_before < MEMORY_SLACK_MIB


def test_type_policy(start_server: Callable[..., Server]) -> None:
    server = start_server(allowed_types="image/*")
    refused = upload(server, PDF_BYTES, "looks-like.png")
    assert refused.status_code == 415
    assert refused.json()["error"]["code"] == "unsupported_media_type"
    assert upload(server, PNG).status_code == 201
    with server.client(headers=server.auth) as client:
        compat = client.post(
            "/file-engine/api/uploadFileStream",
            files={"file": ("a.png", PDF_BYTES)},
            data={"conversationId": "c"},
        )
    assert compat.status_code == 404
    assert compat.json()["error"]["code"] == "unsupported_media_type"


def test_large_file_round_trip_with_bounded_memory(start_server: Callable[..., Server]) -> None:
    server = start_server(max_upload_size="64MiB")
    warm_up(server)
    peak_before = server.peak_rss_mib()
    size = 50 * MIB
    digest = hashlib.sha256()

    def body() -> Iterator[bytes]:
        yield b'--B\r\nContent-Disposition: form-data; name="file"; filename="video.mp4"\r\n\r\n'
        block = bytes(range(256)) * 4096  # 1 MiB
        for i in range(size // MIB):
            piece = i.to_bytes(4, "big") + block[4:]
            digest.update(piece)
            yield piece
        yield b"\r\n--B--\r\n"

    headers = server.auth | {"Content-Type": "multipart/form-data; boundary=B"}
    with server.client(headers=headers) as client:
        response = client.post("/v1/files", content=body())
        assert response.status_code == 201, response.text
        file = response.json()
        assert file["size"] == size
        assert file["sha256"] == digest.hexdigest()
        received = hashlib.sha256()
        with client.stream("GET", file["url"]) as download:
            assert download.headers["content-length"] == str(size)
            for chunk in download.iter_bytes():
                received.update(chunk)
        assert received.hexdigest() == digest.hexdigest()
        middle = client.get(file["url"], headers={"Range": f"bytes={20 * MIB}-{20 * MIB + 9}"})
        assert middle.status_code == 206
        assert middle.content == (20).to_bytes(4, "big") + bytes(range(4, 10))
    with (
        server.client() as anonymous,
        anonymous.stream(
            "GET", "/file-engine/api/downloadFileStream", params={"filename": file["storedName"]}
        ) as download,
    ):
        assert sum(len(c) for c in download.iter_bytes()) == size
    # Bodies stream: a 50 MiB upload and two downloads leave the peak where it was.
    assert server.peak_rss_mib() - peak_before < MEMORY_SLACK_MIB


def test_cli_upload_and_download(server: Server, tmp_path: Path) -> None:
    source = tmp_path / "report.pdf"
    source.write_bytes(PDF_BYTES * 1000)
    client_args = ["--server", server.url, "--key", server.key]
    uploaded = server.cli("upload", str(source), "--conversation", "c-cli", *client_args)
    file_id = re.search(r'"id": "([^"]+)"', uploaded.stdout).group(1)  # type: ignore[union-attr]
    target = tmp_path / "copy.pdf"
    server.cli("download", file_id, "-o", str(target), *client_args)
    assert target.read_bytes() == source.read_bytes()
    failed = server.cli("download", "nope", "--server", server.url, "--key", "bad", check=False)
    assert failed.returncode == 1
    assert "401" in failed.stderr


def test_config_cli(server: Server) -> None:
    shown = server.cli("config").stdout
    assert re.search(r"^CHATMEDIA_MAX_UPLOAD_SIZE=5242880 +# default$", shown, re.MULTILINE)
    assert re.search(rf"^CHATMEDIA_PORT={server.port} +# env CHATMEDIA_PORT$", shown, re.MULTILINE)
    server.env["CHATMEDIA_MAX_UPLOAD_SIZE"] = "5XB"
    try:
        broken = server.cli("config", check=False)
    finally:
        del server.env["CHATMEDIA_MAX_UPLOAD_SIZE"]
    assert broken.returncode == 2
    assert "CHATMEDIA_MAX_UPLOAD_SIZE has value '5XB': not a size" in broken.stderr


def test_retention_sweeper_and_gc(start_server: Callable[..., Server]) -> None:
    swept = start_server(retention="1s", retention_interval="1s")
    file = upload(swept, PNG).json()
    with swept.client(headers=swept.auth) as client:
        deadline = time.monotonic() + 15
        while client.get(f"/v1/files/{file['id']}").status_code != 404:
            assert time.monotonic() < deadline, "the sweeper did not delete the expired file"
            time.sleep(0.2)
    assert swept.stored_blobs() == []

    manual = start_server(retention="1s", retention_interval="1h")
    file = upload(manual, PNG).json()
    time.sleep(1.5)
    assert "deleted 1 expired files" in manual.cli("gc").stdout
    with manual.client(headers=manual.auth) as client:
        assert client.get(f"/v1/files/{file['id']}").status_code == 404


def test_restart_keeps_files_and_keys(start_server: Callable[..., Server]) -> None:
    server = start_server()
    file = upload(server, PNG).json()
    server.stop()
    server.start()
    assert len(re.findall(r"^cm_\S+$", server.log.read_text(), re.MULTILINE)) == 1
    with server.client(headers=server.auth) as client:
        assert client.get(file["url"]).content == PNG
