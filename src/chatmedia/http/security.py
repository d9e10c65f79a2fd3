"""Headers every response carries, and those its request's rate limit adds."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatmedia.fairuse.limiter import SCOPE_KEY as RATE_LIMIT_HEADERS


class SecurityHeadersMiddleware:
    """`X-Content-Type-Options: nosniff` on every response: browsers never guess a type;
    and the `RateLimit-Policy` and `RateLimit` of a request a limit admitted."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                headers.append((b"x-content-type-options", b"nosniff"))
                headers.extend(scope.get(RATE_LIMIT_HEADERS, ()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
