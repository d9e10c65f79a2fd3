"""Uploads from the agent's media page in a real browser (tests/e2e/ui_browser.py): a large
upload cut off and resumed where it stopped, cancel and retry, and the page framed by an
agent desk, telling it of uploads and sent messages."""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from playwright.sync_api import Route, expect

from tests.conftest import png_bytes
from tests.e2e.conftest import Server, wait_for
from tests.e2e.ui_browser import (
    Watched,
    browser,
    contexts,
    id_of,
    link,
    opened,
    pick,
    until,
    upload_state,
)

pytestmark = pytest.mark.e2e
__all__ = ["browser", "contexts"]  # fixtures

CHUNK = 8 * 1024 * 1024  # the page's tus chunk size (static/uploads.js)


class _Desk(BaseHTTPRequestHandler):
    """An agent desk's page: it frames the URL in its `src` parameter and keeps what the
    frame tells it in window.heard."""

    def do_GET(self) -> None:
        src = parse_qs(urlsplit(self.path).query).get("src", [""])[0]
        body = (
            "<!doctype html><title>desk</title><script>window.heard = [];"
            "addEventListener('message', (e) => heard.push({origin: e.origin, data: e.data}));"
            f"</script><iframe title=media width=800 height=600 src='{escape(src)}'></iframe>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def desk_server() -> Iterator[str]:
    """A desk on 127.0.0.1 (a local page may frame a local server; Chromium's local
    network checks refuse a public one), on a port of its own: another origin."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Desk)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def desks() -> Iterator[tuple[str, str]]:
    """Two desks: the one allowed to frame the page, and another."""
    with desk_server() as allowed, desk_server() as other:
        yield allowed, other


@pytest.fixture(scope="module")
def server(start_server: Callable[..., Server], desks: tuple[str, str]) -> Server:
    return start_server(max_upload_size="32MiB", ui_frame_ancestors=desks[0])


def sha256_of(server: Server, file_id: str) -> str:
    with server.client(headers=server.auth) as client:
        digest: str = client.get(f"/v1/files/{file_id}").json()["sha256"]
    return digest


def test_a_large_upload_cut_off_resumes_where_it_stopped(
    server: Server, contexts: Callable[..., Watched]
) -> None:
    conversation = "ui-resume-" + secrets.token_hex(3)
    watched = contexts()
    page = opened(watched, link(server, conversation, canUpload=True))
    body = secrets.token_bytes(CHUNK + 2 * 1024 * 1024)
    seen: list[tuple[str, str | None]] = []
    cut = {"done": False}

    def on_upload(route: Route) -> None:
        request = route.request
        seen.append((request.method, request.headers.get("upload-offset")))
        if (
            request.method == "PATCH"
            and request.headers.get("upload-offset") != "0"
            and not cut["done"]
        ):
            cut["done"] = True
            route.abort("connectionreset")  # the connection drops mid-upload
            return
        route.continue_()

    page.route("**/v1/uploads**", on_upload)
    page.evaluate(
        """() => { window.__progress = [];
        new MutationObserver(() => document.querySelectorAll('.upload .state')
            .forEach((s) => window.__progress.push(s.textContent)))
          .observe(document.getElementById('upload-list'),
                   {subtree: true, childList: true, characterData: true}); }"""
    )
    pick(page, [{"name": "long.bin", "mimeType": "application/octet-stream", "buffer": body}])
    expect(upload_state(page, "long.bin")).to_have_text("Uploaded", timeout=60_000)
    methods = [m for m, _ in seen]
    assert methods.count("POST") == 1, seen  # one upload, never started over
    assert ("PATCH", str(CHUNK)) in seen, seen
    assert methods.count("PATCH") == 3, seen
    assert "HEAD" in methods[methods.index("PATCH") + 1 :], seen  # asked where it got to
    progress = [t for t in page.evaluate("window.__progress") if t.endswith("%")]
    assert any(0 < int(t.split()[0]) < 100 for t in progress), progress
    file_id = id_of(page, "long.bin")
    with server.client(headers=server.auth) as client:
        assert (
            client.get(f"/v1/files/{file_id}").json()["sha256"] == hashlib.sha256(body).hexdigest()
        )
    assert watched.script_errors() == []


def test_a_page_reloaded_mid_upload_resumes_the_same_file(
    server: Server, contexts: Callable[..., Watched], tmp_path: Path
) -> None:
    conversation = "ui-reload-" + secrets.token_hex(3)
    watched = contexts()
    page = opened(watched, link(server, conversation, canUpload=True))
    body = secrets.token_bytes(CHUNK + 2 * 1024 * 1024)
    source = tmp_path / "reload.bin"  # a file on disk: the same one, picked again
    source.write_bytes(body)
    seen: list[tuple[str, str | None]] = []
    reloaded = {"done": False}

    def on_upload(route: Route) -> None:
        request = route.request
        seen.append((request.method, request.headers.get("upload-offset")))
        offset = request.headers.get("upload-offset")
        if request.method == "PATCH" and offset != "0" and not reloaded["done"]:
            return  # held: the page goes away with its second chunk unsent
        route.continue_()

    page.route("**/v1/uploads**", on_upload)
    pick(page, [str(source)])
    # (Waiting through the page: route handlers run only while Playwright is called.)
    until(page, lambda: ("PATCH", str(CHUNK)) in seen, timeout=20)
    before = len(seen)
    reloaded["done"] = True
    page.reload()  # the token is kept for the tab; the upload's URL by tus-js-client
    pick(page, [str(source)])
    expect(upload_state(page, "reload.bin")).to_have_text("Uploaded", timeout=60_000)
    after = seen[before:]
    assert [m for m, _ in seen].count("POST") == 1, seen  # never started over
    assert after[0][0] == "HEAD", after  # it asked where the upload got to
    assert ("PATCH", str(CHUNK)) in after, after  # and went on from there
    assert sha256_of(server, id_of(page, "reload.bin")) == hashlib.sha256(body).hexdigest()
    assert watched.script_errors() == []


def test_an_upload_cancelled_is_dropped_and_a_retry_completes_it(
    server: Server, contexts: Callable[..., Watched]
) -> None:
    watched = contexts()
    page = opened(watched, link(server, "ui-cancel-" + secrets.token_hex(3), canUpload=True))
    body = secrets.token_bytes(3 * 1024 * 1024)
    seen: list[str] = []
    offline = {"on": True}

    def on_upload(route: Route) -> None:
        seen.append(route.request.method)
        if route.request.method == "PATCH" and offline["on"]:
            route.abort("connectionreset")  # it keeps retrying meanwhile
            return
        route.continue_()

    page.route("**/v1/uploads**", on_upload)
    pick(page, [{"name": "stuck.bin", "mimeType": "application/octet-stream", "buffer": body}])
    until(page, lambda: "PATCH" in seen)  # created, and its bytes refused
    page.get_by_role("button", name="Cancel the upload of stuck.bin").click()
    expect(upload_state(page, "stuck.bin")).to_have_text("Cancelled")
    until(page, lambda: "DELETE" in seen)  # the server drops what it had
    assert seen.count("POST") == 1
    offline["on"] = False
    page.get_by_role("button", name="Retry the upload of stuck.bin").click()
    expect(upload_state(page, "stuck.bin")).to_have_text("Uploaded", timeout=30_000)
    assert seen.count("POST") == 2  # a new upload: the cancelled one is gone
    assert sha256_of(server, id_of(page, "stuck.bin")) == hashlib.sha256(body).hexdigest()
    assert watched.script_errors() == []


def test_a_framed_page_tells_the_desk_of_uploads_and_sent_messages(
    server: Server, contexts: Callable[..., Watched], desks: tuple[str, str]
) -> None:
    conversation = "ui-framed-" + secrets.token_hex(3)
    url = link(server, conversation, canUpload=True, canSend=True)
    watched = contexts()
    desk = watched.page
    desk.goto(f"{desks[0]}/?{urlencode({'src': url})}")
    frame = desk.frame_locator("iframe")
    pick(frame, [{"name": "framed.png", "mimeType": "image/png", "buffer": png_bytes(7, 7)}])
    expect(frame.locator(".upload .state")).to_have_text("Uploaded", timeout=10_000)
    frame.get_by_label("Caption for framed.png").fill("from the desk")
    frame.get_by_role("button", name="Send framed.png to the conversation").click()
    expect(frame.locator(".upload .state")).to_have_text("Sent")
    heard: list[dict[str, Any]] = wait_for(
        lambda: (h := desk.evaluate("window.heard")) and len(h) == 2 and h, timeout=5
    )
    origin = server.url
    assert [(h["origin"], h["data"]["source"], h["data"]["type"]) for h in heard] == [
        (origin, "chatmedia", "upload.completed"),
        (origin, "chatmedia", "message.sent"),
    ]
    assert heard[0]["data"]["conversationId"] == conversation
    assert heard[0]["data"]["file"]["name"] == "framed.png"
    assert heard[1]["data"]["message"]["body"] == "from the desk"
    assert heard[1]["data"]["message"]["file"]["id"] == heard[0]["data"]["file"]["id"]
    assert watched.errors == []


def test_a_page_framed_by_another_site_is_refused(
    server: Server, contexts: Callable[..., Watched], desks: tuple[str, str]
) -> None:
    url = link(server, "ui-framed-elsewhere")
    page = contexts().page
    refusals: list[str] = []
    page.on("console", lambda m: refusals.append(m.text) if "frame-ancestors" in m.text else None)
    page.goto(f"{desks[1]}/?{urlencode({'src': url})}")
    until(page, lambda: refusals)
    assert page.frames[1].evaluate("document.body.dataset.conversation") is None
