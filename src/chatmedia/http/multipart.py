"""Streaming `multipart/form-data` (RFC 7578) for uploads: the `file` part's bytes flow
straight to the caller as they arrive, never buffered whole; text parts are collected
within limits. Parsing is python-multipart's (its callback parser, which keeps nothing);
this module adds the limits and the checks a public endpoint needs.

python-multipart replaced streaming-form-data, which parsed the boundary and every part's
headers through `email`: 506 µs for a 100 KB form against 50 µs, and the same 5 GB/s for
large bodies (docs/benchmarks.md, "Group commit").
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator
from email.message import EmailMessage
from email.utils import collapse_rfc2231_value
from typing import NoReturn

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from chatmedia.errors import FieldTooLarge, InvalidMultipart

FILE_PART = "file"
MAX_FIELDS = 64
MAX_FIELD_LENGTH = 64 * 1024  # characters, as the OpenAPI document's maxLength counts
MAX_FIELD_BYTES = 4 * MAX_FIELD_LENGTH  # the most UTF-8 those characters take
# Every part counts, whatever its headers: the text parts and the file.
MAX_PARTS = MAX_FIELDS + 1
# A part's name: no control character, quote, percent sign or backslash, which clients
# escape in different ways (RFC 7578 §2, the HTML standard's %22, %0A…), so that the name
# received is the name sent. Published as the document's propertyNames of a form.
PART_NAME_PATTERN = r'^[^\x00-\x1f\x7f"%\\]+$'
_PART_NAME = re.compile(PART_NAME_PATTERN)
_BOUNDARY = re.compile(rb"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")


class _Part:
    """The part being read: its headers, then where its bytes go."""

    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.field = bytearray()
        self.value = bytearray()
        self.name: str | None = None  # a text part's name; None for the file or a skipped part
        self.is_file = False
        self.text = bytearray()


class MultipartForm:
    """One upload form read from a request body.

    Iterate `file_chunks()` to stream the file part; once it is exhausted the whole body has
    been read, and `fields` and `filename` are complete (text parts may follow the file)."""

    def __init__(self, content_type: str | None, body: AsyncIterable[bytes]) -> None:
        boundary = multipart_boundary(content_type)
        if boundary is None:
            raise InvalidMultipart("the request body must be multipart/form-data")
        self._parser = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
            },
        )
        self._boundary_end = b"--" + boundary + b"--"
        self._body = body
        self._part = _Part()
        self._pending: list[bytes] = []
        self._file_seen = False
        self._file_complete = False
        self._filename: str | None = None
        self._fields: dict[str, str] = {}
        self._parts = 0
        self._done = False

    @property
    def fields(self) -> dict[str, str]:
        """The text parts by name."""
        assert self._done, "read file_chunks() first"
        return self._fields

    @property
    def filename(self) -> str | None:
        """The file part's filename parameter, unsanitized."""
        return self._filename

    async def file_chunks(self) -> AsyncIterator[bytes]:
        """The file part's bytes as they arrive; raises InvalidMultipart, FieldTooLarge."""
        tail = b""
        async for chunk in self._body:
            keep = len(self._boundary_end) + 4
            tail = (tail + chunk[-keep:])[-keep:]
            try:
                self._parser.write(chunk)
            except FormParserError:
                raise InvalidMultipart("the multipart body is malformed") from None
            if self._pending:
                pending, self._pending = self._pending, []
                for piece in pending:
                    yield piece
        # The closing delimiter, optionally followed by CRLF, must end the body.
        if not tail.rstrip(b"\r\n").endswith(self._boundary_end) or self._part.name:
            raise InvalidMultipart("the multipart body ends before its closing boundary")
        if not self._file_complete:
            raise InvalidMultipart(f"the form has no '{FILE_PART}' part")
        self._done = True

    # python-multipart's callbacks, in the order it calls them for each part.

    def _on_part_begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise InvalidMultipart(f"the form has more than {MAX_FIELDS} text parts")
        self._part = _Part()

    # The parser bounds the headers: 8 per part, 4 KiB each (its defaults); past either
    # it raises, and the body is refused as malformed.
    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._part.field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._part.value += data[start:end]

    def _on_header_end(self) -> None:
        part = self._part
        part.headers[bytes(part.field).lower()] = bytes(part.value)
        part.field.clear()
        part.value = bytearray()

    def _on_headers_finished(self) -> None:
        # RFC 7578 §4.2: every part of a form has `Content-Disposition: form-data` with a name.
        disposition = self._part.headers.get(b"content-disposition")
        if disposition is None:
            raise InvalidMultipart("a part has no 'Content-Disposition: form-data' header")
        kind, name, filename = _disposition(disposition)
        if kind != "form-data":
            raise InvalidMultipart("the multipart body is malformed")
        if not name:
            raise InvalidMultipart("a part's Content-Disposition has no name")
        if not _PART_NAME.fullmatch(name):
            message = "a part's name has a control character, a quote, a % or a backslash"
            raise InvalidMultipart(message)
        if name == FILE_PART:
            if self._file_seen:
                raise InvalidMultipart(f"the form has more than one '{FILE_PART}' part")
            self._file_seen = True
            self._part.is_file = True
            self._filename = filename
        else:
            self._part.name = name

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        if part.is_file:
            self._pending.append(data[start:end])
        elif part.name is not None:
            if len(part.text) + end - start > MAX_FIELD_BYTES:
                _too_long(part.name)
            part.text += data[start:end]

    def _on_part_end(self) -> None:
        part = self._part
        if part.is_file:
            self._file_complete = True
        elif part.name is not None:
            if part.name in self._fields:
                raise InvalidMultipart(f"the form has more than one '{part.name}' part")
            try:
                text = part.text.decode()
            except UnicodeDecodeError:
                raise InvalidMultipart(f"form field '{part.name}' is not UTF-8 text") from None
            if len(text) > MAX_FIELD_LENGTH:
                _too_long(part.name)
            self._fields[part.name] = text
        part.name = None


def _too_long(name: str) -> NoReturn:
    raise FieldTooLarge(f"form field '{name}' is longer than {MAX_FIELD_LENGTH} characters")


def multipart_boundary(content_type: str | None) -> bytes | None:
    """The boundary of a `multipart/form-data` content type; None for another type, or
    without a boundary RFC 2046 §5.1.1 allows (1-70 of its characters, no space last)."""
    kind, params = parse_options_header(content_type or "")
    boundary = params.get(b"boundary", b"")
    valid = kind == b"multipart/form-data" and _BOUNDARY.fullmatch(boundary)
    return boundary if valid else None


# A quoted string, and a parameter in RFC 2231's form (`filename*=`) outside of one.
_QUOTED = re.compile(rb'"(?:[^"\\]|\\.)*"')
_RFC2231_PARAMETER = re.compile(rb";\s*[!#$%&'+.^_`|~0-9A-Za-z-]+\*=")


def _disposition(raw: bytes) -> tuple[str, str | None, str | None]:
    """A Content-Disposition's type, `name` and `filename`. Header values are UTF-8, as
    browsers send them. RFC 7578 §4.2 forbids `filename*=`, but some clients send it: a
    header with RFC 2231 parameters is read by the standard library's parser instead."""
    try:
        if _RFC2231_PARAMETER.search(_QUOTED.sub(b'""', raw)):
            message = EmailMessage()
            message["content-disposition"] = raw.decode()
            field = message.get_param("name", header="content-disposition")
            return (
                message.get_content_disposition() or "",
                None if field is None else collapse_rfc2231_value(field),
                message.get_filename(),
            )
        # Bytes are read as Latin-1, and the parameters handed back as such: undone here.
        kind, params = parse_options_header(raw)
        name, filename = params.get(b"name"), params.get(b"filename")
        return (
            kind.decode("latin-1"),
            None if name is None else name.decode(),
            None if filename is None else filename.decode(),
        )
    except UnicodeDecodeError:
        raise InvalidMultipart("a part's headers are not UTF-8") from None
