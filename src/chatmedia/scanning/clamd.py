"""A small async client of clamd, ClamAV's scanning daemon, over TCP or a Unix socket.

It speaks the protocol of clamd(8): each command is sent as ``z<COMMAND>\\0`` and answered
by one reply ending in a NUL byte, on a connection of its own. Content is scanned with
INSTREAM: the bytes follow the command in chunks, each behind its length as 4 bytes
big-endian, and a zero length ends them; clamd then answers ``stream: OK``,
``stream: <signature> FOUND`` or an error ending in ``ERROR``.

Two errors, and a reply that is neither never counts as clean::

    ScannerUnavailable   clamd unreachable, too slow, or not speaking the protocol:
                         nothing is known about the content; try again later
    ScanFailed           clamd answered with an error for this content (larger than its
                         StreamMaxLength, a file it cannot parse): never clean

Written here rather than taken from PyPI: clamd and clamdpy block; the asyncio clients
(aioclamd, pyvalve) read the content from a file-like buffer rather than a stream, and
hand back reply strings or dicts that leave "is it clean" to the caller. The protocol is
a page long.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import AsyncIterable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import anyio
import anyio.lowlevel

# The largest piece of content sent as one INSTREAM chunk; a larger chunk from the caller
# is split. clamd takes any chunk up to its StreamMaxLength, so this bounds only our own
# copies: each frame is its length and a copy of at most this many bytes.
MAX_CHUNK = 256 * 1024
# A zero-length chunk: the end of the content.
END_OF_STREAM = bytes(4)
# clamd's replies are one short line: a longer one is not clamd speaking the protocol.
_MAX_REPLY = 64 * 1024
_RECEIVE_SIZE = 4096
# sockaddr_un's sun_path holds 108 bytes on Linux, the closing NUL included.
_MAX_SOCKET_PATH = 107
# A send to a connection clamd closed fails with EPIPE rather than raising SIGPIPE, even
# in a process that has not set SIGPIPE aside as Python does.
_SEND_FLAGS = getattr(socket, "MSG_NOSIGNAL", 0)
_STREAM = "stream: "
_FOUND = " FOUND"


class ScannerUnavailable(Exception):
    """clamd could not be reached, timed out, or broke the protocol: try again later."""


class ScanFailed(Exception):
    """clamd answered with an error for this content (e.g. "INSTREAM size limit exceeded", a
    file it cannot parse): never clean. `str(e)` is clamd's reply text."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What clamd found in some content."""

    signature: str | None  # None: clean; else the signature name clamd reported

    @property
    def infected(self) -> bool:
        """Whether clamd reported a signature."""
        return self.signature is not None


CLEAN = Verdict(None)


@dataclass(frozen=True, slots=True)
class TcpAddress:
    """clamd's TCPSocket: a host name or IP address, and a port."""

    host: str
    port: int


@dataclass(frozen=True, slots=True)
class UnixAddress:
    """clamd's LocalSocket: the absolute path of a Unix socket."""

    path: str


def parse_url(url: str) -> TcpAddress | UnixAddress:
    """The address in a clamd URL: ``tcp://HOST:PORT`` (an IPv6 address in brackets) or
    ``unix:///ABSOLUTE/PATH``. Raises ValueError saying what is wrong otherwise."""

    def bad(why: str) -> ValueError:
        return ValueError(
            f"clamd URL {url!r}: {why}; expected tcp://HOST:PORT or unix:///ABSOLUTE/PATH"
        )

    if any(c.isspace() or not c.isprintable() for c in url):
        raise bad("it contains white space or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise bad(str(exc)) from None
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise bad("a query or fragment has no meaning here")
    if url.startswith("tcp://"):
        if parts.username is not None or parts.password is not None:
            raise bad("clamd takes no user name or password")
        if not parts.hostname:
            raise bad("the host is missing")
        if port is None or port == 0:
            raise bad("the port is missing")
        if parts.path not in ("", "/"):
            raise bad("a TCP address has no path")
        return TcpAddress(parts.hostname, port)
    if url.startswith("unix://"):
        if parts.netloc:
            raise bad("the path must be absolute, as in unix:///run/clamav/clamd.ctl")
        if parts.path in ("", "/") or parts.path.endswith("/"):
            raise bad("the path of the socket is missing")
        if len(os.fsencode(parts.path)) > _MAX_SOCKET_PATH:
            raise bad(f"a Unix socket's path is at most {_MAX_SOCKET_PATH} bytes")
        return UnixAddress(parts.path)
    raise bad("the scheme must be tcp:// or unix://")


def parse_reply(text: str) -> Verdict:
    """The verdict in clamd's reply to INSTREAM, given without its closing NUL.

    ``stream: OK`` is clean; ``stream: NAME FOUND`` is infected by NAME, which is all the
    text between that prefix and suffix (so spaces and colons in a name are kept). A reply
    ending in ``ERROR`` raises ScanFailed with the reply as its message; anything else
    (an empty reply included) raises ScannerUnavailable."""
    if text.endswith("ERROR"):
        raise ScanFailed(text)
    if text == _STREAM + "OK":
        return CLEAN
    if text.startswith(_STREAM) and text.endswith(_FOUND):
        name = text[len(_STREAM) : -len(_FOUND)]
        if name.strip():
            return Verdict(name)
    raise ScannerUnavailable(f"clamd's reply to INSTREAM is not a verdict: {text[:200]!r}")


def frames(chunk: bytes, max_chunk: int = MAX_CHUNK) -> Iterator[bytes]:
    """`chunk` framed for INSTREAM: pieces of at most `max_chunk` bytes, each behind its
    length as 4 bytes big-endian. An empty chunk gives no frame, since a zero length would
    end the content; END_OF_STREAM is sent once, after the last chunk."""
    view = memoryview(chunk)
    for start in range(0, len(view), max_chunk):
        piece = view[start : start + max_chunk]
        yield struct.pack(">I", len(piece)) + piece


class Clamd:
    """The clamd at `url` (see parse_url). Each call opens a connection of its own, so one
    Clamd serves any number of tasks at once.

    `connect_timeout` bounds connecting, and also the answer to PING and VERSION, which
    cost clamd no work; `scan_timeout` bounds a whole scan after connecting: sending the
    content (reading it from `chunks` included) and clamd's verdict."""

    def __init__(
        self, url: str, *, connect_timeout: float = 2.0, scan_timeout: float = 60.0
    ) -> None:
        if connect_timeout <= 0 or scan_timeout <= 0:
            raise ValueError("clamd's timeouts must be positive")
        self.url = url
        self.address = parse_url(url)
        self.connect_timeout = connect_timeout
        self.scan_timeout = scan_timeout

    async def scan(self, chunks: AsyncIterable[bytes]) -> Verdict:
        """clamd's verdict on the content that `chunks` yields, streamed as it is read.

        Raises ScanFailed when clamd answers with an error (e.g. the content is larger
        than its StreamMaxLength: clamd then answers and closes before the end, and the
        rest of `chunks` is left unread), ScannerUnavailable when clamd cannot be reached,
        times out or answers nonsense. An exception raised by `chunks` closes the
        connection and propagates unchanged."""
        connection = await self._connect()
        reply: str | None = None
        try:
            with anyio.move_on_after(self.scan_timeout):
                reply = await _exchange(connection, b"zINSTREAM\0", chunks)
        finally:
            connection.close()
        if reply is None:
            raise ScannerUnavailable(
                f"clamd at {self.url} did not finish a scan within {self.scan_timeout} s"
            )
        return parse_reply(reply)

    async def ping(self) -> bool:
        """Whether clamd answers PING; False for any failure, never an exception."""
        try:
            return await self._command("PING") == "PONG"
        except ScannerUnavailable:
            return False

    async def version(self) -> str:
        """clamd's answer to VERSION, e.g. ``ClamAV 1.4.6/27500/Mon Dec  1 09:20:00 2025``:
        the engine's version, then the version and date of the daily signature database
        when one is loaded. Raises ScannerUnavailable when clamd does not answer."""
        reply = await self._command("VERSION")
        if not reply or reply.endswith("ERROR"):
            raise ScannerUnavailable(f"clamd at {self.url} answered VERSION with {reply!r}")
        return reply

    async def _command(self, name: str) -> str:
        connection = await self._connect()
        try:
            with anyio.move_on_after(self.connect_timeout):
                return (await _exchange(connection, f"z{name}\0".encode())).strip()
        finally:
            connection.close()
        raise ScannerUnavailable(
            f"clamd at {self.url} did not answer {name} within {self.connect_timeout} s"
        )

    async def _connect(self) -> _Connection:
        try:
            with anyio.fail_after(self.connect_timeout):
                sock = await _open_socket(self.address)
        except TimeoutError as exc:  # before OSError, which it is a kind of
            raise ScannerUnavailable(
                f"clamd at {self.url} did not accept a connection within {self.connect_timeout} s"
            ) from exc
        except (OSError, UnicodeError) as exc:  # UnicodeError: a host name IDNA refuses
            raise ScannerUnavailable(f"clamd at {self.url} cannot be reached: {exc}") from exc
        return _Connection(sock, self.url)


async def _exchange(
    connection: _Connection, command: bytes, chunks: AsyncIterable[bytes] | None = None
) -> str:
    """Sends `command` (then the content of `chunks`, framed), and returns the reply."""
    try:
        await connection.send(command)
        if chunks is not None:
            async for chunk in chunks:
                for frame in frames(chunk):
                    await connection.send(frame)
            await connection.send(END_OF_STREAM)
    except _SendFailed:
        # clamd stopped reading. When it refuses the content it answers first, then closes
        # on us mid-send: that answer is waiting in the receive buffer.
        pass
    return await connection.receive_reply()


class _SendFailed(Exception):
    """The connection broke while sending; the reply may still be readable."""


class _Connection:
    """One connection to clamd: a non-blocking socket driven by anyio's readiness waits.

    Not anyio's socket streams: on asyncio, a TCP stream drops the bytes it had received
    as soon as a send fails, and the reply clamd sends just before closing on a sender
    (the size-limit error) must still be read."""

    def __init__(self, sock: socket.socket, url: str) -> None:
        self._sock = sock
        self._url = url
        self._send_error: OSError | None = None

    async def send(self, data: bytes) -> None:
        """Sends all of `data`; raises _SendFailed when the connection broke."""
        view = memoryview(data)
        while view:
            try:
                sent = self._sock.send(view, _SEND_FLAGS)
            except BlockingIOError:
                await anyio.wait_writable(self._sock)
                continue
            except OSError as exc:
                self._send_error = exc
                raise _SendFailed from exc
            view = view[sent:]
        await anyio.lowlevel.checkpoint()  # the scan's timeout can strike between frames

    async def receive_reply(self) -> str:
        """The reply up to its closing NUL (not included)."""
        reply = bytearray()
        while True:
            try:
                data = self._sock.recv(_RECEIVE_SIZE)
            except BlockingIOError:
                await anyio.wait_readable(self._sock)
                continue
            except OSError as exc:
                raise ScannerUnavailable(f"clamd at {self._url}: connection lost: {exc}") from exc
            if not data:
                raise ScannerUnavailable(
                    f"clamd at {self._url} closed the connection without a complete reply"
                    f" (received {bytes(reply[:200])!r})"
                ) from self._send_error
            reply += data
            end = reply.find(0)
            if end >= 0:
                return reply[:end].decode(errors="replace")
            if len(reply) > _MAX_REPLY:
                raise ScannerUnavailable(f"clamd at {self._url} sent a reply with no end")

    def close(self) -> None:
        self._sock.close()


async def _open_socket(address: TcpAddress | UnixAddress) -> socket.socket:
    """A socket connected to `address`: each of a host's addresses tried in turn."""
    if isinstance(address, UnixAddress):
        return await _connect_socket(socket.AF_UNIX, address.path)
    infos = await anyio.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
    errors: list[OSError] = []
    for family, _, _, _, sockaddr in infos:
        try:
            return await _connect_socket(family, sockaddr)
        except OSError as exc:
            errors.append(exc)
    raise errors[-1] if errors else OSError(f"{address.host} has no address")


async def _connect_socket(family: int, sockaddr: str | tuple[object, ...]) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if family != socket.AF_UNIX:
            # The last frame and the end marker are small: not held back waiting for an ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.connect(sockaddr)
        except BlockingIOError as exc:
            # A Unix socket whose listen queue is full says EAGAIN: clamd is overloaded.
            if exc.errno != errno.EINPROGRESS:
                raise
            await anyio.wait_writable(sock)
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                raise OSError(error, os.strerror(error)) from None
    except BaseException:
        sock.close()
        raise
    return sock
