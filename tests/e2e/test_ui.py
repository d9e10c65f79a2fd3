"""The agent's media page in a real browser (tests/e2e/ui_browser.py), against a real
`chatmedia serve` with a real clamd: uploads by picker, drop and paste seen live by another
page, refusals explained, deletions and quarantines gone live, tokens refused by the
server, accessibility and small screens. Resumption, cancel and retry, and embedding are in
test_ui_uploads.py.

Screenshots at 360 and 1280 px are kept in test-artifacts/ (git-ignored)."""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from tests.clamdserver import EICAR, ClamdServer, running_clamd
from tests.conftest import png_bytes
from tests.e2e.conftest import Server
from tests.e2e.ui_browser import (
    ARTIFACTS,
    AXE,
    ROOT,
    Watched,
    api_upload,
    browser,
    contexts,
    file_transfer,
    id_of,
    link,
    opened,
    pick,
    tile,
    token_of,
    upload_state,
)
from tests.media_files import MediaFiles, shared_media

pytestmark = pytest.mark.e2e
__all__ = ["browser", "contexts"]  # fixtures

LIMIT = 12 * 1024 * 1024
HTML = b"<!doctype html><html><body>x</body></html>"  # a type the server refuses


@pytest.fixture(scope="module")
def clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClamdServer]:
    with running_clamd(tmp_path_factory.mktemp("clamd")) as server:
        yield server


@pytest.fixture(scope="module")
def server(start_server: Callable[..., Server], clamd: ClamdServer) -> Server:
    return start_server(
        clamav_url=clamd.tcp_url, max_upload_size=str(LIMIT), blocked_types="text/html",
        rescan_check_interval="1s", auth_failure_limit="off",
    )  # fmt: skip


def test_picker_drop_and_paste_uploads_reach_another_page_live(
    server: Server, contexts: Callable[..., Watched]
) -> None:
    conversation = "ui-live-" + secrets.token_hex(3)
    agent = contexts()
    page = opened(agent, link(server, conversation, canUpload=True, canSend=True))
    viewer = contexts()
    other = opened(viewer, link(server, conversation))
    expect(other.locator(".add")).to_be_hidden()  # a read-only page offers no uploads
    # Through the picker.
    pick(page, [{"name": "picked.png", "mimeType": "image/png", "buffer": png_bytes(8, 6)}])
    expect(upload_state(page, "picked.png")).to_have_text("Uploaded", timeout=10_000)
    picked = id_of(page, "picked.png")
    start = time.monotonic()
    expect(tile(other, picked)).to_be_visible(timeout=2_000)
    assert time.monotonic() - start < 2.0
    # Its preview arrives with file.updated once processed, in place.
    expect(tile(other, picked).locator(".preview.loaded")).to_be_visible(timeout=10_000)
    # By drop, anywhere on the page.
    dropped = file_transfer(page, "dropped.png", png_bytes(9, 7), "image/png")
    page.dispatch_event("main", "dragenter", {"dataTransfer": dropped})
    expect(page.locator("#dropzone")).to_be_visible()
    page.dispatch_event("main", "drop", {"dataTransfer": dropped})
    expect(upload_state(page, "dropped.png")).to_have_text("Uploaded", timeout=10_000)
    expect(tile(other, id_of(page, "dropped.png"))).to_be_visible(timeout=2_000)
    # By paste.
    pasted = file_transfer(
        page, "pasted.pdf", b"%PDF-1.4\n%\xe2\xe3\n1 0 obj<<>>endobj\n", "application/pdf"
    )
    page.evaluate(
        "(t) => document.dispatchEvent(new ClipboardEvent('paste', {clipboardData: t}))", pasted
    )
    expect(upload_state(page, "pasted.pdf")).to_have_text("Uploaded", timeout=10_000)
    expect(tile(other, id_of(page, "pasted.pdf"))).to_be_visible(timeout=2_000)
    # Posted as a media message with a caption; the framing page would hear of it.
    page.get_by_label("Caption for picked.png").fill("<b>look</b>")
    page.get_by_role("button", name="Send picked.png to the conversation").click()
    expect(upload_state(page, "picked.png")).to_have_text("Sent")
    with server.client(headers=server.auth) as client:
        messages = client.get(f"/v1/conversations/{conversation}/messages").json()["items"]
    assert [(m["body"], m["file"]["id"]) for m in messages] == [("<b>look</b>", picked)]
    # Documents go in the list, photos in the grid; newest first.
    assert other.locator("#document-list [data-file-id]").count() == 1
    assert other.locator("#grid [data-file-id]").evaluate_all(
        "nodes => nodes.map(n => n.dataset.fileId)"
    ) == [id_of(page, "dropped.png"), picked]
    assert agent.errors == []
    assert viewer.errors == []


def test_refusals_are_explained_in_plain_words(
    server: Server, contexts: Callable[..., Watched]
) -> None:
    watched = contexts()
    page = opened(watched, link(server, "ui-refused", canUpload=True))
    files = [
        {"name": "page.html", "mimeType": "text/html", "buffer": HTML},
        {"name": "huge.bin", "mimeType": "application/octet-stream", "buffer": b"\0" * (LIMIT + 1)},
        {"name": "eicar.txt", "mimeType": "text/plain", "buffer": EICAR},
    ]  # fmt: skip
    pick(page, files)
    expect(upload_state(page, "page.html")).to_contain_text(
        "type of file is not allowed", timeout=15_000
    )
    expect(upload_state(page, "huge.bin")).to_contain_text("at most 12 MiB", timeout=15_000)
    expect(upload_state(page, "eicar.txt")).to_contain_text("malware", timeout=15_000)
    assert page.locator("[data-file-id]").count() == 0
    assert watched.script_errors() == []


def test_deletions_and_quarantines_vanish_live(
    server: Server, clamd: ClamdServer, contexts: Callable[..., Watched]
) -> None:
    conversation = "ui-vanish-" + secrets.token_hex(3)
    marker = b"CHATMEDIA-UI-" + secrets.token_hex(8).encode()
    doomed = api_upload(server, conversation, "doomed.png", png_bytes(5, 3))
    suspect = api_upload(server, conversation, "notes.txt", b"notes " + marker)
    kept = api_upload(server, conversation, "kept.png", png_bytes(3, 5))
    watched = contexts()
    page = opened(watched, link(server, conversation, canDelete=True))
    for file in (doomed, suspect, kept):
        expect(tile(page, file["id"])).to_be_visible()
    with server.client(headers=server.auth) as client:
        assert client.delete(f"/v1/files/{doomed['id']}").status_code == 204
    expect(tile(page, doomed["id"])).to_have_count(0, timeout=2_000)
    clamd.add_signature("Chatmedia-Ui-Later", marker)
    clamd.reload()
    expect(tile(page, suspect["id"])).to_have_count(0, timeout=15_000)
    # Deleting from the page itself.
    page.get_by_role("button", name="Open kept.png").click()
    page.get_by_role("button", name="Delete").click()
    expect(tile(page, kept["id"])).to_have_count(0)
    with server.client(headers=server.auth) as client:
        assert client.get(f"/v1/files/{kept['id']}").status_code == 404
    assert watched.errors == []


def test_foreign_expired_and_read_only_tokens_are_refused_by_the_server(
    server: Server, contexts: Callable[..., Watched]
) -> None:
    mine = api_upload(server, "ui-mine", "mine.png", png_bytes(4, 4))
    theirs = api_upload(server, "ui-theirs", "theirs.png", png_bytes(6, 4))
    reader = {"Authorization": "Bearer " + token_of(link(server, "ui-mine"))}
    tus = {"Tus-Resumable": "1.0.0", "Upload-Length": "4"}
    with server.client(headers=reader) as client:
        assert client.get(f"/v1/files/{mine['id']}").status_code == 200
        assert client.get(f"/v1/files/{theirs['id']}").status_code == 404
        listed = client.get("/v1/files", params={"conversationId": "ui-theirs"}).json()["items"]
        assert listed == []
        other_stream = client.get("/v1/conversations/ui-theirs/events")
        assert other_stream.status_code == 404
        refused = client.post("/v1/uploads", headers=tus | _metadata("ui-mine"))
        assert (refused.status_code, refused.json()["error"]["code"]) == (403, "missing_scope")
    writer = {"Authorization": "Bearer " + token_of(link(server, "ui-mine", canUpload=True))}
    with server.client(headers=writer) as client:
        elsewhere = client.post("/v1/uploads", headers=tus | _metadata("ui-theirs"))
        assert elsewhere.json()["error"]["code"] == "conversation_not_allowed"
    expired_url = link(server, "ui-mine", expiresIn=1)
    time.sleep(2.1)  # a lifetime is rounded up to the next whole second
    answer = httpx.get(
        f"{server.url}/v1/files", headers={"Authorization": "Bearer " + token_of(expired_url)}
    )
    assert (answer.status_code, answer.json()["error"]["code"]) == (401, "unauthorized")
    page = opened(contexts(), expired_url)
    expect(page.locator("#problem")).to_contain_text("expired")
    # The operator's link (from the command line) rests on a key of its own.
    printed = server.cli("ui-link", "--conversation", "ui-mine").stdout.strip()
    assert printed.startswith(f"{server.url}/ui/conversations/ui-mine#token=cmpage_")
    page = opened(contexts(), printed)
    expect(tile(page, mine["id"])).to_be_visible()


def _metadata(conversation: str) -> dict[str, str]:
    encoded = base64.b64encode(conversation.encode()).decode()
    return {"Upload-Metadata": f"filename YS5wbmc=,conversationId {encoded}"}


def test_accessible_and_usable_from_360_px(
    server: Server, contexts: Callable[..., Watched], tmp_path_factory: pytest.TempPathFactory
) -> None:
    media = shared_media(tmp_path_factory)
    conversation = "ui-look"
    for path in _sample(media):
        api_upload(server, conversation, path.name, path.read_bytes())
    url = link(server, conversation, canUpload=True, canDelete=True, canSend=True)
    ARTIFACTS.mkdir(exist_ok=True)
    for width in (360, 1280):
        # The axe script is the test's, not the page's: only this context lifts the CSP.
        watched = contexts(viewport={"width": width, "height": 800}, bypass_csp=True)
        page = opened(watched, url)
        expect(page.locator("#grid [data-file-id]")).to_have_count(2, timeout=10_000)
        expect(page.locator(".preview.loaded")).to_have_count(2, timeout=20_000)
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        page.screenshot(path=str(ARTIFACTS / f"ui-{width}.png"), full_page=True)
        page.add_script_tag(path=str(AXE))
        result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
        serious = [
            (v["id"], v["impact"], [n["target"] for n in v["nodes"]])
            for v in result["violations"]
            if v["impact"] in ("serious", "critical")
        ]
        assert serious == []
        assert watched.errors == []
    # Keyboard: the filters and a tile are reachable and work without a mouse.
    page.keyboard.press("Tab")
    page.get_by_role("button", name="Documents").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#visual")).to_be_hidden()
    page.get_by_role("button", name="All").focus()
    page.keyboard.press("Enter")
    page.locator("#grid .tile-button").first.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#viewer")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#viewer")).to_be_hidden()
    # A video plays from its signed URL, which answers the player's Range requests.
    # (Playwright does not report a player's requests: what they get is checked here.)
    page.get_by_role("button", name="Open clip.webm").click()
    video = page.locator("#viewer video")
    expect(video).to_be_visible()
    page.wait_for_function("document.querySelector('#viewer video').readyState >= 1")
    seekable, source = video.evaluate(
        "v => [v.seekable.length && v.seekable.end(0) >= v.duration - 0.05, v.currentSrc]"
    )
    assert seekable
    part = httpx.get(source, headers={"Range": "bytes=100-199"})
    assert (part.status_code, len(part.content)) == (206, 100)
    if os.environ.get("CHATMEDIA_UI_SCREENSHOT"):  # refresh the README's picture
        shutil.copy(ARTIFACTS / "ui-1280.png", ROOT / "docs" / "ui.png")


def _sample(media: MediaFiles) -> list[Path]:
    return [media.photo(1), media.voice_note, media.pdf, media.webm_video]
