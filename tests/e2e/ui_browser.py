"""What the browser tests of the agent's media page share (tests/e2e/test_ui*.py): Debian's
Chromium driven by Playwright (from PyPI, pointed at /usr/bin/chromium, since no browser
can be downloaded here), pages watched for console errors, and links to pages."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    FrameLocator,
    Page,
    expect,
    sync_playwright,
)

from tests.e2e.conftest import Server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
AXE = ROOT / "tests" / "vendor" / "axe-core" / "axe.min.js"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


class Watched:
    """A page and what went wrong in it: console errors and uncaught exceptions."""

    def __init__(self, context: BrowserContext) -> None:
        self.page = context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def script_errors(self) -> list[str]:
        """Errors but the browser's own line for each refused request (4xx answers that a
        refusal test asks for)."""
        return [e for e in self.errors if not e.startswith("Failed to load resource")]


@pytest.fixture
def contexts(browser: Browser) -> Iterator[Callable[..., Watched]]:
    opened: list[BrowserContext] = []

    def open_page(**options: Any) -> Watched:
        context = browser.new_context(**options)
        opened.append(context)
        return Watched(context)

    yield open_page
    for context in opened:
        context.close()


def link(server: Server, conversation: str, **body: Any) -> str:
    with server.client(headers=server.auth) as client:
        answer = client.post(f"/v1/conversations/{conversation}/ui-links", json=body)
    assert answer.status_code == 201, answer.text
    url: str = answer.json()["url"]
    return url


def token_of(url: str) -> str:
    return url.split("#token=")[1]


def opened(watched: Watched, url: str) -> Page:
    page = watched.page
    page.goto(url)
    # The token is out of the address bar at once.
    until(page, lambda: "#token" not in page.url, timeout=5)
    return page


def pick(where: Page | FrameLocator, files: Any) -> None:
    """Choose `files` in the page's picker, once the page has set up its uploads (the
    picker is in the page before its script listens to it)."""
    expect(where.locator(".add")).to_be_visible()
    where.locator("#picker").set_input_files(files)


def upload_state(page: Page, name: str) -> Any:
    return page.locator(".upload", has=page.locator(".name", has_text=name)).locator(".state")


def tile(page: Page, file_id: str) -> Any:
    return page.locator(f'[data-file-id="{file_id}"]')


def file_transfer(page: Page, name: str, data: bytes, mime: str) -> Any:
    """A DataTransfer holding one file, made in the page (as a drop or a paste brings)."""
    return page.evaluate_handle(
        """([name, data, mime]) => {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: mime }));
            return transfer;
        }""",
        [name, base64.b64encode(data).decode(), mime],
    )


def api_upload(server: Server, conversation: str, name: str, data: bytes) -> dict[str, Any]:
    with server.client(headers=server.auth) as client:
        answer = client.post(
            "/v1/files", files={"file": (name, data)}, data={"conversationId": conversation}
        )
    assert answer.status_code == 201, answer.text
    result: dict[str, Any] = answer.json()
    return result


def id_of(page: Page, name: str) -> str:
    """The id of the file the page uploaded under `name` (the gallery shows it)."""
    # The item, not its button: an update replaces the item's contents (the button too)
    # but keeps the item, so its id is read in one step that no update can race.
    item = page.locator("[data-file-id]", has=page.get_by_role("button", name=f"Open {name}"))
    expect(item.first).to_be_visible(timeout=5_000)
    file_id = item.first.get_attribute("data-file-id")
    assert file_id, f"no file id for {name}"
    return file_id


def until(page: Page, check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Wait for `check` while the browser's events are handled (a plain sleep would hold
    back Playwright's event handlers, which run only inside its calls)."""
    for _ in range(int(timeout * 10)):
        result = check()
        if result:
            return result
        page.wait_for_timeout(100)
    raise AssertionError("timed out")
