"""The gallery of the agent's media page in a real browser (tests/e2e/ui_browser.py),
against a real `chatmedia serve` with a real clamd: what a voice note and a video show from
their File's media fields, more files on scroll, tiles holding their space before their
previews arrive, a file being checked changing in place once ready, and the filter by kind.
Uploads, live updates and refusals are in test_ui.py and test_ui_uploads.py."""

from __future__ import annotations

import io
import math
import secrets
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from PIL import Image
from playwright.sync_api import Page, Request, Route, expect

from tests.clamdserver import ClamdServer, running_clamd
from tests.e2e.conftest import Server, wait_for
from tests.e2e.ui_browser import (
    Watched,
    api_upload,
    browser,
    contexts,
    link,
    opened,
    tile,
    until,
)
from tests.media_files import VOICE_SECONDS, shared_media

pytestmark = pytest.mark.e2e
__all__ = ["browser", "contexts"]  # fixtures

PAGE = 40  # the files a page of the gallery's listing asks for (app.js)
MANY = PAGE + 5
SAMPLES = ("photo-1.jpg", "phone.mp4", "voice.ogg", "document.pdf")  # oldest first
PDF = b"%PDF-1.4\n%\xe2\xe3\n1 0 obj<<>>endobj\n"


@pytest.fixture(scope="module")
def clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClamdServer]:
    with running_clamd(tmp_path_factory.mktemp("clamd")) as server:
        yield server


@pytest.fixture(scope="module")
def server(start_server: Callable[..., Server], clamd: ClamdServer) -> Server:
    # An upload waits at most a second for its scan: past that it is answered pending.
    return start_server(clamav_url=clamd.tcp_url, scan_inline_timeout="1", auth_failure_limit="off")


def picture(size: tuple[int, int] = (8, 8)) -> bytes:
    """A PNG of one colour no other file has (its scan verdict is not known yet)."""
    colour = tuple(secrets.token_bytes(3))
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


def processed(server: Server, file_id: str) -> dict[str, Any]:
    """The File once its scan and media processing are over."""

    def settled() -> dict[str, Any] | None:
        with server.client(headers=server.auth) as client:
            file: dict[str, Any] = client.get(f"/v1/files/{file_id}").json()
        pending = file["scan"]["status"] == "pending" or file["media"]["processing"] == "pending"
        return None if pending else file

    file: dict[str, Any] = wait_for(settled, timeout=30)
    return file


@pytest.fixture(scope="module")
def samples(server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A conversation holding a photo, a phone video (turned by its display matrix), an
    Opus voice note and a PDF, all processed: {"conversation", name: File}."""
    media = shared_media(tmp_path_factory)
    paths = (media.photo(1), media.phone_video, media.voice_note, media.pdf)
    conversation = "gallery-" + secrets.token_hex(3)
    files: dict[str, Any] = {"conversation": conversation}
    for name, path in zip(SAMPLES, paths, strict=True):
        uploaded = api_upload(server, conversation, name, path.read_bytes())
        files[name] = processed(server, uploaded["id"])
        assert files[name]["media"]["processing"] == "done", files[name]
    return files


def clock(ms: int) -> str:
    """A duration as people read it (m:ss), rounded to the second."""
    seconds = math.floor(ms / 1000 + 0.5)
    return f"{seconds // 60}:{seconds % 60:02}"


GRID = "#grid [data-file-id]"


def shown_ids(page: Page, selector: str = "[data-file-id]") -> list[str]:
    ids: list[str] = page.locator(selector).evaluate_all("ns => ns.map(n => n.dataset.fileId)")
    return ids


# The bars of a waveform canvas as drawn: runs of painted columns, each bar's painted
# height in pixels (read from the bitmap, whatever the bars' width and spacing).
DRAWN_BARS = """canvas => {
    const { width, height } = canvas;
    const data = canvas.getContext("2d").getImageData(0, 0, width, height).data;
    const bars = [];
    let previous = 0;
    for (let x = 0; x < width; x++) {
        let painted = 0;
        for (let y = 0; y < height; y++) if (data[4 * (y * width + x) + 3] > 0) painted++;
        if (painted && !previous) bars.push(painted);
        else if (painted) bars[bars.length - 1] = Math.max(bars[bars.length - 1], painted);
        previous = painted;
    }
    return { bars, height };
}"""

# The colour of a placeholder canvas at a fraction of its width and height.
COLOUR_AT = """(canvas, [x, y]) => {
    const at = [Math.floor(x * (canvas.width - 1)), Math.floor(y * (canvas.height - 1))];
    return [...canvas.getContext("2d").getImageData(at[0], at[1], 1, 1).data];
}"""


def test_a_voice_note_shows_its_waveform_and_duration_and_a_video_its_length(
    server: Server, samples: dict[str, Any], contexts: Callable[..., Watched]
) -> None:
    voice, video, photo = samples["voice.ogg"], samples["phone.mp4"], samples["photo-1.jpg"]
    levels = voice["media"]["waveform"]
    # The note grows louder: a flat or reversed drawing could not pass for it.
    assert levels[-1] - levels[0] > 30, levels
    watched = contexts(viewport={"width": 1280, "height": 800})
    page = opened(watched, link(server, samples["conversation"]))
    row = tile(page, voice["id"])
    expect(row).to_be_visible()
    assert row.evaluate("n => n.parentElement.id") == "audio-list"
    # The duration, from media.durationMs, leads the row's details.
    assert clock(voice["media"]["durationMs"]) == f"0:{VOICE_SECONDS:02}"
    expect(row.locator(".details")).to_contain_text(clock(voice["media"]["durationMs"]) + " · ")
    # The waveform: one bar per level of media.waveform, in order, each as tall as its level.
    canvas = row.locator("canvas.waveform")
    expect(canvas).to_be_visible()
    drawn = canvas.evaluate(DRAWN_BARS)
    assert len(drawn["bars"]) == len(levels) == 64
    for level, bar in zip(levels, drawn["bars"], strict=True):
        assert abs(bar - level / 100 * drawn["height"]) <= 2, (levels, drawn["bars"])
    # A video's tile shows its length; a photo's none.
    assert clock(video["media"]["durationMs"]) == "0:02"
    expect(tile(page, video["id"]).locator(".badge")).to_have_text(
        clock(video["media"]["durationMs"])
    )
    expect(tile(page, photo["id"]).locator(".tile-button")).to_be_visible()
    expect(tile(page, photo["id"]).locator(".badge")).to_have_count(0)
    assert watched.errors == []


def test_tiles_hold_their_shape_and_placeholder_before_their_previews_arrive(
    server: Server, samples: dict[str, Any], contexts: Callable[..., Watched]
) -> None:
    photo, video = samples["photo-1.jpg"], samples["phone.mp4"]
    # As displayed: the photo 120x80, the phone's portrait video 180x320.
    assert (photo["media"]["width"], photo["media"]["height"]) == (120, 80)
    assert (video["media"]["width"], video["media"]["height"]) == (180, 320)
    watched = contexts(viewport={"width": 1280, "height": 800})
    held: list[Route] = []
    released = False

    def hold(route: Route) -> None:
        if released:
            route.continue_()
        else:
            held.append(route)

    watched.page.route(lambda url: "/preview" in urlsplit(url).path, hold)
    page = opened(watched, link(server, samples["conversation"]))
    until(page, lambda: len(held) >= 2)
    boxes = {}
    for file in (photo, video):
        button = tile(page, file["id"]).locator(".tile-button")
        box = button.bounding_box()
        assert box is not None
        ratio = file["media"]["width"] / file["media"]["height"]
        assert box["width"] / box["height"] == pytest.approx(ratio, abs=0.02)
        # The placeholder covers the tile, painted from the blurhash: the red mark at the
        # top left (both: the video's red left half is on top once turned), blue below.
        placeholder = button.locator("canvas.placeholder")
        expect(placeholder).to_be_visible()
        assert placeholder.bounding_box() == box
        red = placeholder.evaluate(COLOUR_AT, [0.05, 0.05])
        blue = placeholder.evaluate(COLOUR_AT, [0.95, 0.95])
        assert red[0] > red[2] + 60, red
        assert blue[2] > blue[0] + 60, blue
        assert red[3] == blue[3] == 255  # opaque: painted
        assert not button.locator("img.preview").evaluate("i => i.naturalWidth > 0")
        boxes[file["id"]] = box
    # The previews arrive: shown, and nothing moved.
    released = True
    for route in held:
        route.continue_()
    for file_id, box in boxes.items():
        button = tile(page, file_id).locator(".tile-button")
        expect(button.locator("img.preview.loaded")).to_be_visible(timeout=10_000)
        assert button.bounding_box() == box
    assert watched.errors == []


def crowd(server: Server, count: int) -> tuple[str, list[str]]:
    """A new conversation of a PDF then `count` small square pictures: (its id, the
    pictures' ids oldest first)."""
    conversation = "gallery-many-" + secrets.token_hex(3)
    ids = []
    api_upload(server, conversation, "old.pdf", PDF)
    with server.client(headers=server.auth) as client:
        for index in range(count):
            answer = client.post(
                "/v1/files",
                files={"file": (f"p{index:02}.png", picture())},
                data={"conversationId": conversation},
            )
            assert answer.status_code == 201, answer.text
            ids.append(answer.json()["id"])
    return conversation, ids


@pytest.fixture(scope="module")
def crowded(server: Server) -> tuple[str, list[str]]:
    return crowd(server, MANY)


def _listings(watched: Watched) -> list[dict[str, list[str]]]:
    """The queries of the gallery's listing requests, as they are made."""
    queries: list[dict[str, list[str]]] = []

    def seen(request: Request) -> None:
        url = urlsplit(request.url)
        if url.path.endswith("/v1/files") and request.method == "GET":
            queries.append(parse_qs(url.query))

    watched.page.on("request", seen)
    return queries


def test_more_files_load_on_scroll_newest_first_without_duplicates(
    server: Server, crowded: tuple[str, list[str]], contexts: Callable[..., Watched]
) -> None:
    conversation, ids = crowded
    newest_first = ids[::-1]
    url = link(server, conversation)
    watched = contexts(viewport={"width": 1280, "height": 800})
    listings = _listings(watched)
    page = opened(watched, url)
    tiles = page.locator(GRID)
    until(page, lambda: listings)
    assert int(listings[0]["limit"][0]) == PAGE
    expect(tiles).to_have_count(PAGE)
    page.wait_for_timeout(500)  # the end of the list is out of sight: nothing more comes
    assert tiles.count() == PAGE
    assert shown_ids(page, GRID) == newest_first[:PAGE]
    assert all("cursor" not in query for query in listings)
    page.mouse.wheel(0, 20_000)
    expect(tiles).to_have_count(MANY)
    assert shown_ids(page, GRID) == newest_first
    assert any("cursor" in query for query in listings)
    assert watched.errors == []
    # A screen tall enough for the first page: the next comes without any scrolling (there
    # is nothing to scroll), until the end of the list is out of sight or reached.
    tall = contexts(viewport={"width": 1280, "height": 1600})
    page = opened(tall, url)
    expect(page.locator(GRID)).to_have_count(MANY)
    assert page.evaluate("document.documentElement.scrollHeight <= innerHeight")
    assert shown_ids(page, GRID) == newest_first
    assert tall.errors == []


def test_a_file_being_checked_says_so_then_changes_in_place_when_ready(
    server: Server, clamd: ClamdServer, contexts: Callable[..., Watched]
) -> None:
    conversation = "gallery-pending-" + secrets.token_hex(3)
    before = api_upload(server, conversation, "before.png", picture((30, 20)))
    processed(server, before["id"])
    watched = contexts(viewport={"width": 1280, "height": 800})
    page = opened(watched, link(server, conversation))
    expect(tile(page, before["id"]).locator("img.preview.loaded")).to_be_visible()
    # clamd takes the scan and does not answer: the upload is stored, its scan pending.
    clamd.pause()
    try:
        pending = api_upload(server, conversation, "pending.png", picture((40, 20)))
        assert pending["scan"]["status"] == "pending"
        item = tile(page, pending["id"])
        expect(item.locator(".state")).to_have_text("Being checked for malware…")
        assert item.locator("img.preview").count() == 0
        assert shown_ids(page) == [pending["id"], before["id"]]
        # On another page, the file is open in the viewer, which can only say so.
        viewing = opened(
            contexts(viewport={"width": 1280, "height": 800}), link(server, conversation)
        )
        tile(viewing, pending["id"]).locator(".tile-button").click()
        expect(viewing.locator("#viewer-body .state")).to_have_text("Being checked for malware…")
        expect(viewing.locator("#viewer-download")).to_be_hidden()
        # Someone at the keyboard is on the tile when it changes.
        item.locator(".tile-button").focus()
        box = item.bounding_box()
        node = item.element_handle()
    finally:
        clamd.resume()
    expect(item.locator("img.preview.loaded")).to_be_visible(timeout=30_000)
    expect(item.locator(".state")).to_have_count(0)
    # The open viewer shows the file now, with its download.
    expect(viewing.locator("#viewer-body img.full")).to_be_visible()
    expect(viewing.locator("#viewer-download")).to_be_visible()
    # In place: the same element where it was, nothing added, the keyboard still on it.
    assert node.evaluate("n => n.isConnected && n.contains(document.activeElement)")
    assert shown_ids(page) == [pending["id"], before["id"]]
    after = item.bounding_box()
    assert box is not None
    assert after is not None
    assert (after["x"], after["y"]) == (box["x"], box["y"])
    assert watched.errors == []


def test_the_filter_shows_only_the_kind_asked_for(
    server: Server, samples: dict[str, Any], contexts: Callable[..., Watched]
) -> None:
    ids = {name: samples[name]["id"] for name in SAMPLES}
    watched = contexts(viewport={"width": 1280, "height": 800})
    page = opened(watched, link(server, samples["conversation"]))
    for file_id in ids.values():
        expect(tile(page, file_id)).to_be_visible()
    kinds = {
        "Photos & videos": {ids["photo-1.jpg"], ids["phone.mp4"]},
        "Audio": {ids["voice.ogg"]},
        "Documents": {ids["document.pdf"]},
        "All": set(ids.values()),
    }
    for label, expected in kinds.items():
        button = page.get_by_role("button", name=label, exact=True)
        button.click()
        expect(button).to_have_attribute("aria-pressed", "true")
        assert set(shown_ids(page, "[data-file-id]:visible")) == expected, label
        expect(page.locator(".filter[aria-pressed='true']")).to_have_count(1)
    assert watched.errors == []


def test_the_filter_brings_files_of_its_kind_from_pages_beyond_the_first(
    server: Server, contexts: Callable[..., Watched]
) -> None:
    # The PDF is on the third page: once the pictures are hidden, the end of the list
    # stays in sight while the second page (pictures only) comes, and the third must follow.
    conversation, _ = crowd(server, 2 * PAGE + 5)
    watched = contexts(viewport={"width": 1280, "height": 800})
    page = opened(watched, link(server, conversation))
    expect(page.locator(GRID)).to_have_count(PAGE)
    assert page.locator("#document-list [data-file-id]").count() == 0
    page.get_by_role("button", name="Documents", exact=True).click()
    expect(page.locator("#document-list [data-file-id]:visible")).to_have_count(1)
    assert page.locator("#grid").is_hidden()
    assert watched.errors == []
