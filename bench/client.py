"""A minimal HTTP/1.1 client for large transfers, as cheap as Python allows, so that the client
is not what limits a 256 MiB download or upload.

Request bodies leave with `socket.sendfile()` (the kernel copies the file to the socket;
Python never holds it), and response bodies are read with `recv_into()` into one 1 MiB
buffer, discarded or hashed. One request per connection (`Connection: close`). It speaks
only what the benchmark needs: Content-Length or chunked responses, no redirects, no TLS.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RECV_BUFFER = 1024 * 1024
TIMEOUT = 600.0  # seconds without progress before a transfer is abandoned
MAX_HEAD = 64 * 1024  # response header block
MAX_KEPT_BODY = 1024 * 1024  # bodies up to this size are kept (JSON answers)


@dataclass(frozen=True, slots=True)
class Body:
    """A request body: `prefix`, then the whole of `path` (if any), then `suffix`."""

    prefix: bytes = b""
    path: Path | None = None
    suffix: bytes = b""

    @property
    def length(self) -> int:
        """The Content-Length."""
        size = self.path.stat().st_size if self.path is not None else 0
        return len(self.prefix) + size + len(self.suffix)


@dataclass(slots=True)
class Response:
    """What came back: the status, headers (lower-case names), how many body bytes, the
    body itself when small, and its SHA-256 when asked for."""

    status: int
    headers: dict[str, str]
    received: int = 0
    body: bytes = b""
    sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


def multipart_file(path: Path, boundary: str, filename: str = "upload.bin") -> Body:
    """A multipart/form-data body (RFC 7578) with one `file` part holding `path`."""
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return Body(prefix=head, path=path, suffix=f"\r\n--{boundary}--\r\n".encode())


def request(
    address: tuple[str, int],
    method: str,
    target: str,
    headers: Mapping[str, str] | None = None,
    body: Body | None = None,
    *,
    hash_body: bool = False,
) -> Response:
    """Send one request on a new connection and read the whole response."""
    with socket.create_connection(address, timeout=TIMEOUT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        lines = [f"{method} {target} HTTP/1.1", f"Host: {address[0]}:{address[1]}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        lines.append("Connection: close")
        if body is not None:
            lines.append(f"Content-Length: {body.length}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        # The server may answer (413, 401…) and close before the body is all sent: its
        # answer is what matters, so read it.
        with suppress(BrokenPipeError, ConnectionResetError):
            _send(sock, head, body)
        # When the last byte was handed to the kernel: where an upload ends for its sender.
        sent_at = time.perf_counter()
        response = _read_response(sock, method, hash_body=hash_body)
        response.extra["sent_at"] = sent_at
        return response


def _send(sock: socket.socket, head: bytes, body: Body | None) -> None:
    if body is None:
        sock.sendall(head)
        return
    sock.sendall(head + body.prefix)
    if body.path is not None:
        with body.path.open("rb") as f:
            sock.sendfile(f)
    if body.suffix:
        sock.sendall(body.suffix)


class _Reader:
    """Reads from the socket through one reusable buffer."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray(RECV_BUFFER)
        self.view = memoryview(self.buffer)
        self.pending = b""  # bytes read past what was asked for

    def head(self) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            if len(data) > MAX_HEAD:
                raise RuntimeError("response header block too large")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError(f"connection closed before the response head: {data[:200]!r}")
            data += chunk
        head, _, self.pending = data.partition(b"\r\n\r\n")
        return head

    def line(self) -> bytes:
        while b"\r\n" not in self.pending:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("connection closed inside a chunked body")
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\r\n")
        return line

    def exactly(self, length: int, sink: _Sink) -> None:
        if self.pending:
            taken, self.pending = self.pending[:length], self.pending[length:]
            sink.add(taken)
            length -= len(taken)
        while length > 0:
            n = self.sock.recv_into(self.view, min(length, RECV_BUFFER))
            if n == 0:
                raise RuntimeError(f"connection closed with {length} body bytes to come")
            sink.add(self.view[:n])
            length -= n

    def to_end(self, sink: _Sink) -> None:
        if self.pending:
            sink.add(self.pending)
            self.pending = b""
        while n := self.sock.recv_into(self.view):
            sink.add(self.view[:n])


class _Sink:
    """Counts body bytes; keeps small bodies; hashes when asked."""

    def __init__(self, hash_body: bool) -> None:
        self.received = 0
        self.kept = bytearray()
        self.digest = hashlib.sha256() if hash_body else None

    def add(self, data: bytes | memoryview) -> None:
        self.received += len(data)
        if self.digest is not None:
            self.digest.update(data)
        if len(self.kept) < MAX_KEPT_BODY:
            self.kept += data[: MAX_KEPT_BODY - len(self.kept)]


def _read_response(sock: socket.socket, method: str, *, hash_body: bool) -> Response:
    reader = _Reader(sock)
    status_line, *header_lines = reader.head().decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    sink = _Sink(hash_body)
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        pass
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while size := int(reader.line().split(b";")[0], 16):
            reader.exactly(size, sink)
            reader.line()
    elif "content-length" in headers:
        reader.exactly(int(headers["content-length"]), sink)
    else:
        reader.to_end(sink)
    return Response(
        status=status,
        headers=headers,
        received=sink.received,
        body=bytes(sink.kept),
        sha256=sink.digest.hexdigest() if sink.digest is not None else None,
    )
