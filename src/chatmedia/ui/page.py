"""Serving the agent's media page: `GET /ui/conversations/{id}` (an HTML shell) and its
static assets under `/ui/static/`, every answer with a strict Content-Security-Policy and
`Referrer-Policy: no-referrer`.

The shell holds no data and no token: the script reads the token from the URL's fragment
(chatmedia.pipelines.tokens.ui_link), and everything else comes from the public API."""

from __future__ import annotations

import html
from pathlib import Path
from string import Template

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import chatmedia

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
NO_SOURCE = "'none'"


def content_security_policy(frame_ancestors: tuple[str, ...]) -> str:
    """The page's policy: only our own scripts, styles and connections; images and media
    from us or made in the page (blob:, and data: for blurhash placeholders); framed only by
    `frame_ancestors` (none when empty)."""
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' blob: data:",
            "media-src 'self' blob:",
            "connect-src 'self'",
            f"frame-ancestors {' '.join(frame_ancestors) or NO_SOURCE}",
            "base-uri 'none'",
            "form-action 'none'",
        )
    )


class PageHeaders:
    """Adds the page's security headers to every answer of the wrapped app."""

    def __init__(self, app: ASGIApp, frame_ancestors: tuple[str, ...]) -> None:
        self.app = app
        self.headers = [
            (b"content-security-policy", content_security_policy(frame_ancestors).encode()),
            (b"referrer-policy", b"no-referrer"),
            (b"cross-origin-opener-policy", b"same-origin"),
            (b"cache-control", b"no-cache"),  # revalidated (ETag): a new version shows at once
        ]
        if not frame_ancestors:  # for browsers that predate frame-ancestors
            self.headers.append((b"x-frame-options", b"DENY"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *self.headers]}
            await send(message)

        await self.app(scope, receive, with_headers)


def render_page(template: Template, conversation_id: str, parents: tuple[str, ...]) -> str:
    """The page's HTML: the conversation id escaped, the origins it may tell about uploads
    (its frame ancestors), assets versioned against caches."""
    return template.substitute(
        conversation=html.escape(conversation_id, quote=True),
        parents=html.escape(" ".join(parents), quote=True),
        version=html.escape(chatmedia.__version__, quote=True),
    )


def ui_app(frame_ancestors: tuple[str, ...]) -> ASGIApp:
    """The app mounted at /ui (its template read once, here)."""
    template = Template((HERE / "page.html").read_text(encoding="utf-8"))

    async def page(request: Request) -> HTMLResponse:
        conversation_id = request.path_params["conversation_id"]
        return HTMLResponse(render_page(template, conversation_id, frame_ancestors))

    app = Starlette(
        routes=[
            Route("/conversations/{conversation_id}", page, methods=["GET", "HEAD"]),
            Mount("/static", StaticFiles(directory=STATIC_DIR, follow_symlink=False)),
        ]
    )
    return PageHeaders(app, frame_ancestors)
