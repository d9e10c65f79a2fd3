"""Downloads and uploads, answered without FastAPI's routing and dependency resolution.

Fetching and storing files is most of what a chat media server is asked, and for a small
file FastAPI's machinery costs more than the work itself: the routing, the dependency
resolution and the middleware between them took about as long as authenticating, looking
the file up and reading it (docs/benchmarks.md, "Downloads skip FastAPI"). This middleware
recognises the content and upload routes by their path and calls the very endpoint
functions FastAPI would, with the same key and scope checks, and answers errors as the
app's handlers do; a request it does not fully recognise (another route, a missing query
parameter) goes on to the app, so both ways answer alike. It sits inside the idempotency
middleware, which sees every upload first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.datastructures import QueryParams
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatmedia.access.links import is_signed, preview_resource
from chatmedia.errors import ChatMediaError
from chatmedia.http.content import content_response
from chatmedia.http.deps import credential_check, request_principal, widget_or_principal
from chatmedia.http.responses import client_disconnected, render_error, unexpected_error
from chatmedia.http.routes import compat, files
from chatmedia.media.previews import preview_file
from chatmedia.pipelines.files import linked_file
from chatmedia.services import BACKEND_OUTAGES, Services

_HANDLED: tuple[type[Exception], ...] = (ChatMediaError, *BACKEND_OUTAGES)

Answer = Callable[[Request, Services], Awaitable[Response | None]]
# The largest preview size a request may name (it is served the largest made).
PREVIEW_SIZE_LIMIT = 100_000


class Shortcut:
    """GET and HEAD of `/v1/files/{file_id}/content`, of its `preview` and of the
    file-engine's `downloadFileStream`, and POST of `/v1/files` and of `uploadFileStream`,
    straight to their endpoints; everything else to `app`."""

    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.services = services
        # Matched as the app's router would, and put in the scope as it would (metrics
        # label requests by the route's template).
        self.routes = (
            Route("/v1/files/{file_id}/content", _native, methods=["GET", "HEAD"]),
            Route("/v1/files/{file_id}/preview", _preview, methods=["GET", "HEAD"]),
            Route("/file-engine/api/downloadFileStream", _file_engine, methods=["GET", "HEAD"]),
            Route("/v1/files", _native_upload, methods=["POST"]),
            Route("/file-engine/api/uploadFileStream", _file_engine_upload, methods=["POST"]),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for route in self.routes:
                matched, child_scope = route.matches(scope)
                if matched is Match.FULL:
                    # As FastAPI's router does: metrics label requests by scope["route"].
                    scope.update(child_scope, route=route)
                    if await self._answer(route, scope, receive, send):
                        return
                    break
        await self.app(scope, receive, send)

    async def _answer(self, route: Route, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer the request; False, having sent nothing, to leave it to the app."""
        answer: Answer = route.endpoint
        started = False

        async def send_once_started(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            response = await answer(Request(scope, receive), self.services)
            if response is None:
                return False
            # A response may still fail before it starts (the store refusing to open).
            await response(scope, receive, send_once_started)
        except Exception as exc:
            if started:
                raise
            await _error_answer(exc, scope)(scope, receive, send)
        return True


def _error_answer(exc: Exception, scope: Scope) -> Response:
    """What the app's exception handlers answer (chatmedia.http.responses)."""
    if isinstance(exc, _HANDLED):
        return render_error(exc, scope["path"])
    if isinstance(exc, ClientDisconnect):
        return client_disconnected()
    return unexpected_error(exc)


async def _native(request: Request, services: Services) -> Response:
    query = request.scope["query_string"]
    params = QueryParams(query) if query else None
    if params is not None and is_signed(params):  # a link: its signature stands for a key
        with credential_check(services, request):
            grant = services.links.check(request.scope["path"], params)
            record = await linked_file(services, grant, file_id=request.path_params["file_id"])
        attachment = grant.disposition == "attachment"
        return await content_response(request, record, services, attachment=attachment)
    principal = await request_principal(request)
    principal.require("files:read")
    return await files.get_content(request.path_params["file_id"], request, services, principal)


async def _preview(request: Request, services: Services) -> Response | None:
    params = QueryParams(request.scope["query_string"])
    size = params.get("size", "320")
    if not size.isdigit() or not 1 <= int(size) <= PREVIEW_SIZE_LIMIT:
        return None  # the app answers the bad parameter
    file_id = request.path_params["file_id"]
    if not is_signed(params):
        principal = await request_principal(request)
        principal.require("files:read")
        return await files.get_preview(file_id, request, services, principal, int(size))
    with credential_check(services, request):
        grant = services.links.check(preview_resource(file_id, int(size)), params)
        record = await linked_file(services, grant, file_id=file_id)
    return await content_response(
        request, await preview_file(services, record, int(size)), services
    )


async def _native_upload(request: Request, services: Services) -> Response:
    principal = await request_principal(request)
    principal.require("files:write")
    return await files.upload_file(request, services, principal)


async def _file_engine_upload(request: Request, services: Services) -> Response:
    principal = await widget_or_principal(request, "files:write")
    return await compat.upload_file_stream(request, services, principal)


async def _file_engine(request: Request, services: Services) -> Response | None:
    filename = QueryParams(request.scope["query_string"]).get("filename")
    if not filename:
        return None  # the app answers the missing parameter
    return await compat.download_file_stream(request, services, filename)
