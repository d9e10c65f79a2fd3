from collections.abc import AsyncIterator

import anyio
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from chatmedia.errors import ChatMediaError, FieldTooLarge, InvalidMultipart
from chatmedia.http.multipart import MAX_FIELD_LENGTH, MAX_FIELDS, MultipartForm

BOUNDARY = "----chatmediaBoundary7MA4YWxk"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def part(name: str, value: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"


def body(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


async def chunked(data: bytes, sizes: list[int]) -> AsyncIterator[bytes]:
    position = 0
    for size in sizes:
        yield data[position : position + size]
        position += size
    if position < len(data):
        yield data[position:]


def read(data: bytes, sizes: list[int] | None = None) -> tuple[bytes, dict[str, str], str | None]:
    async def run() -> tuple[bytes, dict[str, str], str | None]:
        form = MultipartForm(CONTENT_TYPE, chunked(data, sizes or [7] * (len(data) // 7 + 1)))
        content = b"".join([chunk async for chunk in form.file_chunks()])
        return content, form.fields, form.filename

    return anyio.run(run)


FILE = bytes(range(256)) * 40 + b"\r\n--" + BOUNDARY[:-3].encode() + b"\r\n"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=4000), max_size=40))
def test_any_chunking_gives_the_same_form(sizes: list[int]) -> None:
    data = body(part("a", b"1"), part("file", FILE, "x.bin"), part("conversationId", b"c9"))
    assert read(data, sizes) == (FILE, {"a": "1", "conversationId": "c9"}, "x.bin")


def test_fields_before_and_after_the_file() -> None:
    data = body(part("name", "résumé.pdf".encode()), part("file", b"abc", "up.pdf"))
    assert read(data) == (b"abc", {"name": "résumé.pdf"}, "up.pdf")


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (body(part("a", b"1")), InvalidMultipart, "no 'file' part"),
        (body(part("file", b"1", "a"), part("file", b"2", "b")), InvalidMultipart, "more than one"),
        (body(part("a", b"1"), part("a", b"2"), part("file", b"x", "f")), InvalidMultipart, "more"),
        (body(part("file", b"x", "f"))[:-12], InvalidMultipart, "closing boundary"),
        (part("file", b"x", "f"), InvalidMultipart, "closing boundary"),
        (b"", InvalidMultipart, "closing boundary"),
        (b"garbage " * 100, InvalidMultipart, "malformed"),
        (body(part("a", b"\xff\xfe"), part("file", b"x", "f")), InvalidMultipart, "UTF-8"),
        (
            body(part("file", b"x", "f").replace(b'"f"', '"é.png"'.encode("latin-1"))),
            InvalidMultipart,
            "headers are not UTF-8",
        ),
        (
            body(*(part(f"p{i}", b"") for i in range(MAX_FIELDS + 1)), part("file", b"x", "f")),
            InvalidMultipart,
            "text parts",
        ),
        (body(part("big", b"x" * (MAX_FIELD_LENGTH + 1))), FieldTooLarge, "longer than"),
        (body(part("big", "é".encode() * (MAX_FIELD_LENGTH + 1))), FieldTooLarge, "longer"),
        (body(part("big", b"x" * (4 * MAX_FIELD_LENGTH + 1))), FieldTooLarge, "longer than"),
    ],
)
def test_bad_forms(data: bytes, error: type[ChatMediaError], message: str) -> None:
    with pytest.raises(error, match=message):
        read(data)


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "application/json",
        "multipart/form-data",
        "text/plain; boundary=x",
        "multipart/form-data; 5.s*",
        "multipart/form-data; boundary=\x85",  # not a boundary character (RFC 2046)
        "multipart/form-data; boundary=" + "b" * 71,  # longer than 70
    ],
)
def test_not_multipart(content_type: str | None) -> None:
    with pytest.raises(InvalidMultipart, match="multipart/form-data"):
        MultipartForm(content_type, chunked(b"", []))


def test_thousands_of_empty_parts_stop_early() -> None:
    # The error comes as soon as the limit is passed, not after the whole body.
    consumed = 0

    async def endless_parts() -> AsyncIterator[bytes]:
        nonlocal consumed
        for _ in range(100_000):
            consumed += 1
            yield part("p", b"")

    async def run() -> None:
        form = MultipartForm(CONTENT_TYPE, endless_parts())
        async for _ in form.file_chunks():
            pass

    with pytest.raises(InvalidMultipart):
        anyio.run(run)
    assert consumed < MAX_FIELDS + 5


def file_form(disposition: bytes, headers: bytes = b"") -> bytes:
    return body(
        f"--{BOUNDARY}\r\nContent-Disposition: ".encode()
        + disposition
        + b"\r\n"
        + headers
        + b"\r\nabc\r\n"
    )


@pytest.mark.parametrize(
    ("disposition", "filename"),
    [
        (b'form-data; name="file"; filename="a.png"', "a.png"),
        ('form-data; name="file"; filename="照片 ö.png"'.encode(), "照片 ö.png"),
        (b"form-data; name=\"file\"; filename*=UTF-8''ph%C3%B6to.png", "phöto.png"),
        (b'form-data; name="file"; filename="a\\"b.png"', 'a"b.png'),
        (b"form-data; name=file; filename=a.png", "a.png"),
        (b'FORM-DATA; NAME="file"; FILENAME="a.png"', "a.png"),
        (b'form-data; name="file"', None),
    ],
)
def test_file_names(disposition: bytes, filename: str | None) -> None:
    assert read(file_form(disposition)) == (b"abc", {}, filename)


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=60))
@example("*= ")  # `*=` inside quotes is not an RFC 2231 parameter
@example('a; b*=c "d" ')
def test_any_quoted_file_name_comes_back(name: str) -> None:
    # What a browser sends: UTF-8, with quotes and backslashes escaped (RFC 7578 §4.2).
    quoted = name.replace("\\", "\\\\").replace('"', '\\"')
    disposition = f'form-data; name="file"; filename="{quoted}"'.encode()
    assert read(file_form(disposition))[2] == name


NAMED = b'Content-Disposition: form-data; name="a"\r\n'


def raw_part(headers: bytes, value: bytes = b"x") -> bytes:
    return f"--{BOUNDARY}\r\n".encode() + headers + b"\r\n" + value + b"\r\n"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        # RFC 7578 §4.2: every part has Content-Disposition: form-data and a name.
        (raw_part(b""), "no 'Content-Disposition: form-data' header"),
        (raw_part(b"", b""), "no 'Content-Disposition: form-data' header"),
        (raw_part(b"Content-Type: text/plain\r\n"), "no 'Content-Disposition"),
        (raw_part(b"Content-Disposition: form-data\r\n"), "has no name"),
        (raw_part(b'Content-Disposition: form-data; name=""\r\n'), "has no name"),
        (raw_part(b'Content-Disposition: form-data; filename="a"\r\n'), "has no name"),
        (raw_part(b'Content-Disposition: inline; name="a"\r\n'), "malformed"),
        # The parser's bounds on part headers: 8 lines, 4 KiB each.
        (
            raw_part(b'Content-Disposition: form-data; name="a"\r\n' + b"X-A: 1\r\n" * 8),
            "malformed",
        ),
        (
            raw_part(b'Content-Disposition: form-data; name="a"; x="' + b"y" * 5000 + b'"\r\n'),
            "malformed",
        ),
    ],
)
@pytest.mark.parametrize("file_first", [True, False])
def test_parts_that_are_not_form_fields_are_refused(
    extra: bytes, message: str, file_first: bool
) -> None:
    file = part("file", b"abc", "f")
    with pytest.raises(InvalidMultipart, match=message):
        read(body(file, extra) if file_first else body(extra, file))


def test_thousands_of_parts_without_headers_are_refused_at_once() -> None:
    data = body(*[raw_part(b"", b"")] * 2000, part("file", b"abc", "f"))
    with pytest.raises(InvalidMultipart, match="Content-Disposition"):
        read(data)


def test_a_field_is_limited_in_characters_not_bytes() -> None:
    text = "照" * MAX_FIELD_LENGTH  # three times as many bytes
    assert read(body(part("t", text.encode()), part("file", b"z", "f")))[1] == {"t": text}


def test_as_many_parts_as_allowed() -> None:
    fields = {f"p{i}": str(i) for i in range(MAX_FIELDS)}
    data = body(*(part(k, v.encode()) for k, v in fields.items()), part("file", b"z", "f"))
    assert read(data) == (b"z", fields, "f")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (file_form(b'attachment; name="file"; filename="a"'), "malformed"),
        (file_form(b'form-data; name="file"', b"X-Long: " + b"x" * 20_000 + b"\r\n"), "malformed"),
        (file_form(b'form-data; name="file"').replace(b"\r\n", b"\n"), "malformed"),
        (b"preamble\r\n" + file_form(b'form-data; name="file"'), "malformed"),
        (file_form(b'form-data; name="file"') + b"epilogue", "closing boundary"),
    ],
)
def test_forms_outside_rfc_7578(data: bytes, message: str) -> None:
    with pytest.raises(InvalidMultipart, match=message):
        read(data)
