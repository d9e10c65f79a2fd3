"""Error bodies, and the handlers that render every error as JSON."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route

from chatmedia.errors import BackendUnavailable, ChatMediaError, RateLimited
from chatmedia.http.openapi import FILE_ENGINE_PREFIX
from chatmedia.services import BACKEND_OUTAGES

log = logging.getLogger("chatmedia")

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}
CLIENT_CLOSED_REQUEST = 499
TOO_MANY_REQUESTS = "Too many requests."


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """`{"error": {"code", "message"}}` with the given status."""
    body = {"error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


def render_error(exc: Exception, path: str = "") -> JSONResponse:
    """The answer to one of our errors, or to a backend outage (BACKEND_OUTAGES), to a
    request for `path`."""
    if not isinstance(exc, ChatMediaError):
        exc = unavailable(exc)
    elif exc.status >= 500:
        log.error("%s: %s", exc.code, exc.message)
    if isinstance(exc, RateLimited) and path.startswith(FILE_ENGINE_PREFIX):
        # The file-engine's shape ({"message", "error"}), which holds the native one.
        body = {"message": TOO_MANY_REQUESTS, "error": {"code": exc.code, "message": exc.message}}
        return JSONResponse(body, status_code=exc.status, headers=exc.headers)
    return error_response(exc.status, exc.code, exc.message, exc.headers)


async def _our_error(request: Request, exc: Exception) -> JSONResponse:
    return render_error(exc, request.scope["path"])


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
    return error_response(exc.status_code, code, str(exc.detail), headers)


def _allowed_methods(request: Request) -> str:
    """RFC 9110 §15.5.6: every method the path takes. Starlette names only those of the
    first route that matches the path, and a path often has one route per method."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.matches(request.scope)[0] is not Match.NONE:
            methods |= route.methods or set()
    return ", ".join(sorted(methods))


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e['loc'][1:]) or 'request'}: {e['msg']}" for e in exc.errors()
    )
    return error_response(400, "invalid_request", problems or "the request is not valid")


def client_disconnected() -> Response:
    """The answer to a client that hung up mid-body: nobody reads it; 499 ("client closed
    request") keeps it apart in metrics."""
    log.info("client disconnected before its request body ended")
    return Response(status_code=CLIENT_CLOSED_REQUEST)


async def _client_disconnect(_request: Request, _exc: Exception) -> Response:
    return client_disconnected()


def unavailable(exc: Exception) -> BackendUnavailable:
    """The 503 for a database or store that does not answer, logged without a traceback:
    an outage is expected to end, and every request meanwhile would repeat it."""
    log.warning("%s", exc)
    return BackendUnavailable(str(exc))


def unexpected_error(exc: Exception) -> JSONResponse:
    """A logged 500 without internals, for an error nobody expected."""
    log.error("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", "the server failed to handle the request")


async def _unexpected_error(_request: Request, exc: Exception) -> JSONResponse:
    return unexpected_error(exc)


def install_error_handlers(app: FastAPI) -> None:
    """Render every error as JSON: ours by their code, FastAPI's validation errors as 400,
    routing errors by status, a client that hung up as 499, a backend outage as 503, and
    anything unexpected as a logged 500 without internals."""
    app.add_exception_handler(ChatMediaError, _our_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ClientDisconnect, _client_disconnect)
    for outage in BACKEND_OUTAGES:
        app.add_exception_handler(outage, _our_error)
    app.add_exception_handler(Exception, _unexpected_error)
