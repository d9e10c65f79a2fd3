"""Hostile bodies through a real `chatmedia serve`: malformed forms and URLs get their
documented error, fast, and leave nothing behind."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.conftest import png_bytes
from tests.e2e.conftest import Server

pytestmark = pytest.mark.e2e
BOUNDARY = "hostileBoundary42"
PNG = png_bytes(3, 3)


@dataclass(frozen=True)
class FormRoute:
    """A route that reads a multipart form, and how it answers a refused one."""

    path: str
    refused_status: int
    fields: tuple[tuple[str, str], ...] = ()

    def error_code(self, answer: httpx.Response) -> str:
        code: str = answer.json()["error"]["code"]
        return code


FORM_ROUTES = [
    FormRoute("/v1/files", 400),
    FormRoute("/file-engine/api/uploadFileStream", 404, (("conversationId", "c-hostile"),)),
    FormRoute("/v1/conversations/c-hostile/messages", 400),
]
OK = {"/v1/files": 201, "/file-engine/api/uploadFileStream": 200}


def part(headers: bytes, value: bytes = b"") -> bytes:
    return f"--{BOUNDARY}\r\n".encode() + headers + b"\r\n" + value + b"\r\n"


def named(name: str, value: bytes, filename: str | None = None) -> bytes:
    disposition = f'Content-Disposition: form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    return part(disposition.encode() + b"\r\n", value)


def form(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def post_form(server: Server, route: FormRoute, body: bytes) -> httpx.Response:
    headers = server.auth | {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    with server.client() as client:
        return client.post(route.path, headers=headers, content=body)


def stored(server: Server) -> tuple[int, int]:
    """Files the service lists, and blobs on its disk."""
    with server.client(headers=server.auth) as client:
        files = client.get("/v1/files", params={"limit": 1000}).json()["items"]
    return len(files), len(server.stored_blobs())


def route_fields(route: FormRoute) -> list[bytes]:
    return [named(k, v.encode()) for k, v in route.fields]


@pytest.fixture(scope="module")
def hostile(start_server: Callable[..., Server]) -> Server:
    # No media work: its previews would add blobs while the tests count what is stored.
    return start_server(media_processing="false")


# Each body carries a valid `file` part besides the fault, so the fault alone refuses it.
FAULTS = {
    "2000 parts without headers": [part(b"")] * 2000,
    "a part without Content-Disposition": [part(b"Content-Type: text/plain\r\n", b"x")],
    "a part without a name": [part(b"Content-Disposition: form-data\r\n", b"x")],
    "an empty name": [part(b'Content-Disposition: form-data; name=""\r\n', b"x")],
    "not form-data": [part(b'Content-Disposition: attachment; name="a"\r\n', b"x")],
    "a header over 4 KiB": [
        part(b'Content-Disposition: form-data; name="a"\r\nX-Big: ' + b"y" * 5000 + b"\r\n")
    ],
    "nine header lines": [
        part(b'Content-Disposition: form-data; name="a"\r\n' + b"X-N: 1\r\n" * 8, b"x")
    ],
    "65 text parts": [named(f"p{i}", b"v") for i in range(65)],
    "a name with a quote": [part(b'Content-Disposition: form-data; name="a\\"b"\r\n', b"x")],
}


@pytest.mark.parametrize("route", FORM_ROUTES, ids=lambda r: r.path)
@pytest.mark.parametrize("fault", FAULTS, ids=str)
def test_malformed_forms_are_refused_at_once(hostile: Server, route: FormRoute, fault: str) -> None:
    before = stored(hostile)
    body = form(*route_fields(route), *FAULTS[fault], named("file", PNG, "a.png"))
    started = time.monotonic()
    answer = post_form(hostile, route, body)
    assert time.monotonic() - started < 1.0
    assert answer.status_code == route.refused_status, answer.text
    assert route.error_code(answer) == "invalid_multipart"
    assert stored(hostile) == before


@dataclass(frozen=True)
class UrlField:
    """A JSON route with a URL field whose own error is invalid_source_url."""

    path: str
    body: Callable[[object], dict[str, object]]
    refused_status: int = 400


URL_FIELDS = [
    UrlField("/v1/files/import", lambda u: {"sourceUrl": u}),
    UrlField("/file-engine/api/uploadFileFromUrl", lambda u: {"sourceUrl": u, "channel": "c"}, 404),
    UrlField("/v1/files/external", lambda u: {"url": u, "contentType": "image/png", "size": 1}),
    UrlField("/v1/webhooks", lambda u: {"url": u}),
    UrlField("/v1/conversations/c-url/messages", lambda u: {"mediaUrl": u}),
    UrlField(
        "/v1/conversations/c-url/messages",
        lambda u: {"file": {"url": u, "contentType": "image/png", "size": 1}},
    ),
]
MISSING = object()


@pytest.mark.parametrize("field", URL_FIELDS, ids=lambda f: f"{f.path}:{f.body('u')}")
@pytest.mark.parametrize(
    "value",
    ["", "   ", "\t", 5, None, [], {}, True, "ftp://example.com/x", "http://a@b.example/", "x"],
    ids=repr,
)
def test_malformed_urls_are_invalid_source_url(
    hostile: Server, field: UrlField, value: object
) -> None:
    body = field.body(value)
    if value is None and field.path.endswith("/messages") and "mediaUrl" in body:
        body = {"mediaUrl": None, "fileId": None}  # null is "no mediaUrl": then no body either
        expected_code = "invalid_request"
    else:
        expected_code = "invalid_source_url"
    with hostile.client(headers=hostile.auth) as client:
        answer = client.post(field.path, json=body)
    assert answer.status_code == field.refused_status, answer.text
    assert answer.json()["error"]["code"] == expected_code, answer.text


@pytest.mark.parametrize("field", URL_FIELDS[:2], ids=lambda f: f.path)
def test_a_missing_source_url_is_invalid_source_url(hostile: Server, field: UrlField) -> None:
    body = {k: v for k, v in field.body("x").items() if k != "sourceUrl"}
    with hostile.client(headers=hostile.auth) as client:
        answer = client.post(field.path, json=body)
    assert answer.status_code == field.refused_status
    assert answer.json()["error"]["code"] == "invalid_source_url"


# Random form structures: parts with missing, odd or proper headers, names or none, the
# file part anywhere or nowhere, few or many parts.
_HEADERS = st.sampled_from(
    [
        b"",
        b"Content-Type: text/plain\r\n",
        b"Content-Disposition: form-data\r\n",
        b'Content-Disposition: inline; name="x"\r\n',
        b'Content-Disposition: form-data; name=""\r\n',
        b'content-disposition: FORM-DATA; name="k"\r\n',
        b'Content-Disposition: form-data; name="k"\r\nContent-Type: text/plain\r\n',
        b'Content-Disposition: form-data; name="file"\r\n',  # a second file part
        b'Content-Disposition: form-data; name="%"\r\n',
    ]
)
_PROPER_PART = st.builds(
    lambda name, value: named(name, value.encode()),
    st.text("abcdefghij", min_size=1, max_size=8),
    st.text(max_size=10),
)
_ODD_PART = st.builds(part, _HEADERS, st.binary(max_size=20))
_TEXT_PART = st.one_of(*[_PROPER_PART] * 7, _ODD_PART)


@st.composite
def forms(draw: st.DrawFn) -> list[bytes]:
    """The parts of a body: text parts proper and odd, maybe a file, maybe a preamble."""
    parts = draw(st.lists(_TEXT_PART, max_size=80))
    content = draw(st.sampled_from([PNG, b"", b"plain words"]))
    with_file = draw(st.integers(0, 3)) > 0
    if with_file:
        parts.insert(draw(st.integers(0, len(parts))), named("file", content, "f.bin"))
    if draw(st.integers(0, 7)) == 0:
        parts.insert(0, b"preamble\r\n")
    return parts


def _file_of(body: bytes) -> bytes | None:
    """The file a body carries when RFC 7578 and the documented limits allow it, judged
    apart from the server (the bytes of its one `file` part); None for a body to refuse."""
    sections = body.split(f"--{BOUNDARY}".encode())
    if sections[0] != b"":
        return None
    names: list[str] = []
    content = b""
    for section in sections[1:-1]:
        head, _, value = section.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        lines = [h for h in head.split(b"\r\n") if h]
        dispositions = [h for h in lines if h.lower().startswith(b"content-disposition:")]
        if len(dispositions) != 1:
            return None
        disposition = dispositions[0].split(b":", 1)[1].strip()
        if not disposition.lower().startswith(b"form-data;") or b' name="' not in disposition:
            return None
        name = disposition.split(b' name="', 1)[1].split(b'"', 1)[0].decode()
        if not name or "%" in name:
            return None
        value = value.removesuffix(b"\r\n")  # the line end before the next boundary
        if name == "file":
            content = value
        elif not _utf8(value):
            return None
        names.append(name)
    texts = [n for n in names if n != "file"]
    valid = names.count("file") == 1 and len(texts) <= 64 and len(set(texts)) == len(texts)
    return content if valid else None


def _utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(parts=forms(), route=st.sampled_from(FORM_ROUTES[:2]))
def test_any_form_is_stored_exactly_or_refused_with_nothing_kept(
    hostile: Server, parts: list[bytes], route: FormRoute
) -> None:
    body = form(*route_fields(route), *parts)
    expected = _file_of(body)
    valid = expected is not None
    before = stored(hostile)
    answer = post_form(hostile, route, body)
    event(f"answered {answer.status_code}")
    if answer.status_code == OK[route.path]:
        assert expected is not None
        with hostile.client(headers=hostile.auth) as client:
            newest = client.get("/v1/files", params={"limit": 1}).json()["items"][0]
            assert newest["sha256"] == hashlib.sha256(expected).hexdigest()
            assert client.get(newest["url"]).content == expected
            assert client.delete(f"/v1/files/{newest['id']}").status_code == 204
        return
    # Refused: a documented code, nothing kept, and never a valid form for its structure.
    code = route.error_code(answer)
    assert code in ("invalid_multipart", "unsupported_media_type"), answer.text
    assert answer.status_code == (415 if code == "unsupported_media_type" else 400) or (
        answer.status_code == route.refused_status == 404
    ), answer.text
    assert valid == (code == "unsupported_media_type"), answer.text
    assert stored(hostile) == before
