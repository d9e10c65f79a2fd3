"""The ASGI apps bench/ceilings.py serves with granian (from this folder, by name).

- `bare_64k`: answers every request with the same 64 KiB from memory: what one granian
  worker can serve with no application work at all.
- `read_form_app`: chatmedia's own app with one more route, `POST /bench/read-form`, that
  does what `POST /v1/files` does up to storing (the key check, every middleware, the
  multipart form read to its end) and then answers 201: the cost of the HTTP layer of an
  upload, without the staging, the type check, the fsyncs and the transaction.
"""

# No `from __future__ import annotations`: FastAPI reads the route's annotations, which
# name classes imported inside `read_form_app`.
from typing import Any

SMALL_BODY = b"\xa5" * (64 * 1024)
_HEADERS = [
    (b"content-type", b"application/octet-stream"),
    (b"content-length", str(len(SMALL_BODY)).encode()),
]


async def bare_64k(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """64 KiB from memory for every request; lifespan messages acknowledged."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": SMALL_BODY})


def read_form_app() -> Any:
    """chatmedia's app (settings from the environment) plus `POST /bench/read-form`."""
    from fastapi import Request
    from fastapi.responses import JSONResponse

    from chatmedia.http.app import create_app
    from chatmedia.http.deps import authorized
    from chatmedia.http.forms import native_info, read_form

    async def read_form_only(request: Request) -> JSONResponse:
        form = read_form(request)
        size = 0
        async for chunk in form.file_chunks():
            size += len(chunk)
        info = native_info(form)
        return JSONResponse({"name": info.name, "size": size}, status_code=201)

    app = create_app()
    app.add_api_route(
        "/bench/read-form",
        read_form_only,
        methods=["POST"],
        status_code=201,
        dependencies=[authorized("files:write")],
    )
    return app
