"""How a file's bytes leave: a whole local blob through the server's `pathsend`, anything
else (a range, a store whose blobs are not files here, a server without the extension)
as body messages."""

from typing import Any

import pytest
from starlette.requests import Request

from chatmedia.access.principal import operator
from chatmedia.http.content import content_response
from chatmedia.pipelines.upload import UploadInfo, store_file
from chatmedia.services import Services
from chatmedia.storage.local import LocalBlobStore
from tests.conftest import png_bytes
from tests.contract.test_blob_store import stream

pytestmark = pytest.mark.anyio

PATHSEND = {"http.response.pathsend": {}}


def request(headers: dict[str, str], extensions: dict[str, Any]) -> Request:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "extensions": extensions,
    }
    return Request(scope)


async def answer(services: Services, data: bytes, **kwargs: Any) -> list[dict[str, Any]]:
    """The ASGI messages of a GET of a stored file's content."""
    record = await store_file(services, operator(), stream(data), lambda: UploadInfo(name="a.png"))
    req = request(kwargs.get("headers", {}), kwargs.get("extensions", PATHSEND))
    response = await content_response(req, record, services)
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await response(req.scope, req.receive, send)
    return sent


def body(messages: list[dict[str, Any]]) -> bytes:
    assert all(m["type"] == "http.response.body" for m in messages[1:])
    return b"".join(m["body"] for m in messages[1:])


async def test_whole_file_goes_by_path_only_from_local_storage(services: Services) -> None:
    data = png_bytes(40, 40)
    messages = await answer(services, data)
    assert messages[0]["status"] == 200
    if isinstance(services.store, LocalBlobStore):
        assert services.local_paths is services.store
        assert [m["type"] for m in messages[1:]] == ["http.response.pathsend"]
        with open(messages[1]["path"], "rb") as sent_file:
            assert sent_file.read() == data
    else:
        assert services.local_paths is None
        assert body(messages) == data


async def test_a_range_is_read_and_sent_as_body(services: Services) -> None:
    data = png_bytes(40, 40)
    messages = await answer(services, data, headers={"Range": "bytes=10-29"})
    assert messages[0]["status"] == 206
    assert body(messages) == data[10:30]


async def test_without_the_extension_the_bytes_are_sent(services: Services) -> None:
    data = png_bytes(40, 40)
    messages = await answer(services, data, extensions={})
    assert body(messages) == data
