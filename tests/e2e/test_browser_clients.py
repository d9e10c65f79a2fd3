"""Browser clients through a real `chatmedia serve`: CORS for pages on allowed origins,
the three file-engine download modes, and Hybrid Chat's customer widget uploading without
a key, played by Node's fetch and FormData exactly as the widget's SDK sends them."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import png_bytes
from tests.e2e.conftest import Server

pytestmark = pytest.mark.e2e
DESK = "https://desk.example.com"
WIDGET = Path(__file__).with_name("node") / "widget_upload.mjs"
PNG = png_bytes(5, 5)


def upload_compat(server: Server, conversation: str = "wa-1") -> httpx.Response:
    with server.client(headers=server.auth) as client:
        return client.post(
            "/file-engine/api/uploadFileStream",
            files={"file": ("v.png", PNG)},
            data={"conversationId": conversation},
        )


def test_cors_answers_allowed_origins_only(start_server: Callable[..., Server]) -> None:
    server = start_server(cors_origins=DESK)
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
    }
    with server.client() as client:
        allowed = client.options("/v1/files", headers={"Origin": DESK} | preflight)
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == DESK
        granted = allowed.headers["access-control-allow-headers"].lower()
        assert {"authorization", "content-type", "idempotency-key"} <= set(granted.split(", "))
        # A browser's tus client (Uppy, tus-js-client) on the desk's origin.
        tus = client.options(
            "/v1/uploads",
            headers={
                "Origin": DESK,
                "Access-Control-Request-Method": "PATCH",
                "Access-Control-Request-Headers": "authorization, tus-resumable, upload-offset, "
                "upload-length, upload-metadata, upload-checksum, content-type",
            },
        )
        assert tus.status_code == 200, tus.text
        made = client.post(
            "/v1/uploads",
            headers=server.auth | {"Origin": DESK, "Tus-Resumable": "1.0.0", "Upload-Length": "3"},
        )
        exposed = made.headers["access-control-expose-headers"].lower()
        assert {"location", "upload-offset", "upload-expires", "tus-resumable"} <= set(
            exposed.split(", ")
        )
        other = client.options("/v1/files", headers={"Origin": "https://evil.example"} | preflight)
        assert "access-control-allow-origin" not in other.headers
        file = upload_compat(server).json()
        # Actual requests, the download shortcut's too: headers a page may read.
        path = f"/file-engine/api/downloadFileStream?filename={file['name']}"
        for headers in (server.auth, {}):
            answer = client.get(path, headers=headers | {"Origin": DESK})
            assert answer.headers["access-control-allow-origin"] == DESK
            assert "etag" in answer.headers["access-control-expose-headers"].lower()
        listed = client.get("/v1/files", headers=server.auth | {"Origin": "https://evil.example"})
        assert listed.status_code == 200
        assert "access-control-allow-origin" not in listed.headers


def test_open_downloads_warn_at_start(start_server: Callable[..., Server]) -> None:
    server = start_server()
    assert "CHATMEDIA_COMPAT_DOWNLOAD=open" in server.log.read_text()
    name = upload_compat(server).json()["name"]
    answer = httpx.get(f"{server.url}/file-engine/api/downloadFileStream?filename={name}")
    assert answer.content == PNG


def test_signed_downloads_need_the_url_the_uploads_answer_with(
    start_server: Callable[..., Server],
) -> None:
    server = start_server(compat_download="signed")
    assert "CHATMEDIA_COMPAT_DOWNLOAD=open" not in server.log.read_text()
    uploaded = upload_compat(server).json()
    by_name = f"{server.url}/file-engine/api/downloadFileStream?filename={uploaded['name']}"
    refused = httpx.get(by_name)
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "invalid_signature")
    assert httpx.get(uploaded["url"]).content == PNG
    assert httpx.get(uploaded["url"] + "x").status_code == 403
    with server.client(headers=server.auth) as client:
        stat = client.get("/file-engine/api/getFileStat", params={"filename": uploaded["name"]})
    assert httpx.get(stat.json()["url"]).content == PNG


def test_keyed_downloads_need_a_key_of_the_tenant(start_server: Callable[..., Server]) -> None:
    server = start_server(compat_download="key")
    name = upload_compat(server).json()["name"]
    path = f"/file-engine/api/downloadFileStream?filename={name}"
    with server.client() as client:
        assert client.get(path).status_code == 401
        assert client.get(path, headers=server.auth).content == PNG
        with server.client(headers=server.auth) as admin:
            other = admin.post(
                "/v1/keys", json={"name": "o", "scopes": ["files:read"], "tenant": "t2"}
            )
        assert (
            client.get(path, headers={"Authorization": f"Bearer {other.json()['key']}"}).status_code
            == 404
        )


def widget_upload(server: Server, origin: str | None = None) -> tuple[int, dict[str, object]]:
    node = shutil.which("node")
    assert node, "Node.js is needed to play the customer widget"
    args = [node, str(WIDGET), f"{server.url}/file-engine", "web-7", *([origin] if origin else [])]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    return answer["status"], json.loads(answer["body"])


def test_the_widget_needs_a_key_by_default(start_server: Callable[..., Server]) -> None:
    server = start_server(cors_origins=DESK)
    status, body = widget_upload(server)
    assert (status, body["error"]["code"]) == (401, "unauthorized")


def test_open_uploads_take_the_widget_from_allowed_origins(
    start_server: Callable[..., Server],
) -> None:
    server = start_server(
        compat_upload="open", compat_upload_tenant="web", cors_origins=DESK, max_upload_size="1KiB"
    )
    status, body = widget_upload(server)
    assert status == 200, body
    assert body["name"] == "web-7_photo.png"
    status, body = widget_upload(server, DESK)
    assert status == 200, body
    status, body = widget_upload(server, "https://evil.example")
    assert (status, body["error"]["code"]) == (403, "origin_not_allowed")
    # The uploads went to the widget's tenant, and obey every limit.
    with server.client(headers=server.auth) as client:
        assert client.get("/v1/files").json()["items"] == []
        in_web = client.get("/v1/files", params={"tenant": "web"}).json()["items"]
        assert [f["conversationId"] for f in in_web] == ["web-7", "web-7"]
    with httpx.Client(base_url=server.url) as anonymous:
        too_big = anonymous.post(
            "/file-engine/api/uploadFileStream",
            files={"file": ("big.bin", bytes(4096))},
            data={"conversationId": "web-7"},
        )
        assert (too_big.status_code, too_big.json()["error"]["code"]) == (404, "file_too_large")
        # A key-less request reaches nothing else.
        assert anonymous.get("/v1/files").status_code == 401
        assert anonymous.post("/v1/files", files={"file": ("a.png", PNG)}).status_code == 401
