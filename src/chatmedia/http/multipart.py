"""Streaming `multipart/form-data` (RFC 7578) for uploads: the `file` part's bytes flow
straight to the caller as they arrive, never buffered whole; text parts are collected
within limits. Parsing is streaming-form-data's; this module adds the limits and the
checks a public endpoint needs."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

from streaming_form_data import StreamingFormDataParser
from streaming_form_data.parser import ParseFailedException, parse_content_boundary
from streaming_form_data.targets import BaseTarget

from chatmedia.errors import FieldTooLarge, InvalidMultipart

FILE_PART = "file"
MAX_FIELDS = 64
MAX_FIELD_SIZE = 64 * 1024


class _FileTarget(BaseTarget):  # type: ignore[misc]
    """Holds the file part's bytes between two reads of the request body."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[bytes] = []
        self.seen = False
        self.complete = False

    def on_start(self) -> None:
        if self.seen:
            raise InvalidMultipart(f"the form has more than one '{FILE_PART}' part")
        self.seen = True

    def on_data_received(self, chunk: bytes) -> None:
        self.pending.append(chunk)

    def on_finish(self) -> None:
        self.complete = True


class _FieldTarget(BaseTarget):  # type: ignore[misc]
    """Collects every text part, whatever its name, within the size and count limits."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}
        self.parts = 0
        self.open = False
        self._name = ""
        self._value = bytearray()

    def matches(self, _registered: str, name: str) -> bool:
        """Called by the parser for each part the file target did not take."""
        self.parts += 1
        if self.parts > MAX_FIELDS:
            raise InvalidMultipart(f"the form has more than {MAX_FIELDS} text parts")
        self._name = name
        return True

    def on_start(self) -> None:
        self.open = True
        self._value.clear()

    def on_data_received(self, chunk: bytes) -> None:
        if len(self._value) + len(chunk) > MAX_FIELD_SIZE:
            raise FieldTooLarge(f"form field '{self._name}' is larger than {MAX_FIELD_SIZE} bytes")
        self._value += chunk

    def on_finish(self) -> None:
        self.open = False
        if self._name in self.values:
            raise InvalidMultipart(f"the form has more than one '{self._name}' part")
        try:
            self.values[self._name] = self._value.decode()
        except UnicodeDecodeError:
            raise InvalidMultipart(f"form field '{self._name}' is not UTF-8 text") from None


class MultipartForm:
    """One upload form read from a request body.

    Iterate `file_chunks()` to stream the file part; once it is exhausted the whole body has
    been read, and `fields` and `filename` are complete (text parts may follow the file)."""

    def __init__(self, content_type: str | None, body: AsyncIterable[bytes]) -> None:
        headers = {"Content-Type": content_type or ""}
        try:
            self._parser = StreamingFormDataParser(headers)
            self._boundary_end = b"--" + parse_content_boundary(headers) + b"--"
        except (ParseFailedException, IndexError, ValueError):
            # The library's header parsing raises more than its own exception on odd input.
            raise InvalidMultipart("the request body must be multipart/form-data") from None
        self._body = body
        self._file = _FileTarget()
        self._fields = _FieldTarget()
        self._parser.register(FILE_PART, self._file)
        self._parser.register("*", self._fields, self._fields.matches)
        self._done = False

    @property
    def fields(self) -> dict[str, str]:
        """The text parts by name."""
        assert self._done, "read file_chunks() first"
        return self._fields.values

    @property
    def filename(self) -> str | None:
        """The file part's filename parameter, unsanitized."""
        name: str | None = self._file.multipart_filename
        return name

    async def file_chunks(self) -> AsyncIterator[bytes]:
        """The file part's bytes as they arrive; raises InvalidMultipart, FieldTooLarge."""
        tail = b""
        async for chunk in self._body:
            keep = len(self._boundary_end) + 4
            tail = (tail + chunk[-keep:])[-keep:]
            try:
                self._parser.data_received(chunk)
            except ParseFailedException:
                raise InvalidMultipart("the multipart body is malformed") from None
            except UnicodeDecodeError:  # the library decodes part headers as UTF-8
                raise InvalidMultipart("a part's headers are not UTF-8") from None
            if self._file.pending:
                pending, self._file.pending = self._file.pending, []
                for piece in pending:
                    yield piece
        # The closing delimiter, optionally followed by CRLF, must end the body.
        if not tail.rstrip(b"\r\n").endswith(self._boundary_end) or self._fields.open:
            raise InvalidMultipart("the multipart body ends before its closing boundary")
        if not self._file.complete:
            raise InvalidMultipart(f"the form has no '{FILE_PART}' part")
        self._done = True
