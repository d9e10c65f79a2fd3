"""chatmedia with malware scanning, for the benchmarks: a clamd started in the benchmark's
temporary folder by the tests' launcher (tests/clamdserver.py: Debian's clamd, a signature
database of its own, about 20 ms to start), and a chatmedia whose CHATMEDIA_CLAMAV_URL
points at it. clamd runs on the same two cores as the server and the client: what it
takes from them is part of what is measured.

That database holds two signatures, where a deployment's clamd loads freshclam's millions
(none can be downloaded here): clamd's work per byte is then larger than measured here, so
these figures are what the round trip, clamd's engine and chatmedia's part cost, a lower
bound for a deployment's.

`stub_clamd` stands in for clamd in an A/B: it speaks the same protocol over a Unix socket
and reads every byte, but answers `stream: OK` without scanning, so that chatmedia's part
of scanning is measured without clamd's work. It runs as this module's own process:

    python bench/scan_peer.py stub-clamd SOCKET
"""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import quote

from client import request
from common import (
    MIB,
    REPO,
    START_TIMEOUT,
    check_alive,
    cpu_seconds,
    running_server,
    start_process,
    stop,
)
from peers import MAX_UPLOAD, Chatmedia
from workloads import Outcome

SCAN = "chatmedia-scan"  # the peer's name in the results
# clamd's StreamMaxLength: CHATMEDIA_SCAN_MAX_SIZE's default, so clamd refuses nothing
# that chatmedia sends it.
MAX_STREAM = 100 * MIB


@dataclass(frozen=True, slots=True)
class Clamd:
    """A running clamd: its process, its addresses and its version line."""

    pid: int
    unix_url: str
    tcp_url: str
    socket_path: Path
    version: str


@contextmanager
def clamd(workdir: Path) -> Iterator[Clamd]:
    """A clamd over `workdir`/clamd (on 127.0.0.1 and a Unix socket), stopped at the end."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))  # the test launchers live in tests/
    from tests.clamdserver import running_clamd

    with running_clamd(workdir / "clamd", max_stream=MAX_STREAM) as server:
        pid = int((server.root / "clamd.pid").read_text())
        version = server.ask(b"zVERSION\0")
        yield Clamd(pid, server.unix_url, server.tcp_url, server.socket_path, version)


@contextmanager
def stub_clamd(workdir: Path) -> Iterator[Clamd]:
    """The stub (see the module's docstring) on a Unix socket under `workdir`/stub-clamd."""
    root = workdir / "stub-clamd"
    root.mkdir()
    path = root / "clamd.sock"
    command = [sys.executable, str(Path(__file__).resolve()), "stub-clamd", str(path)]
    log = root / "out.log"
    process = start_process(command, root, None, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _pongs(path):
            check_alive(process, log)
            if time.monotonic() > deadline:
                raise RuntimeError(f"the stub clamd did not answer PING on {path}")
            time.sleep(0.02)
        yield Clamd(process.pid, f"unix://{path}", "", path, "stub")
    finally:
        stop(process)


def _pongs(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(str(path))
            s.sendall(b"zPING\0")
            return s.recv(16) == b"PONG\0"
        except OSError:
            return False


async def _stub_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with suppress(asyncio.IncompleteReadError, ConnectionError):
        command = await reader.readuntil(b"\0")
        if command == b"zINSTREAM\0":
            while length := struct.unpack(">I", await reader.readexactly(4))[0]:
                await reader.readexactly(length)
            writer.write(b"stream: OK\0")
        elif command == b"zPING\0":
            writer.write(b"PONG\0")
        elif command == b"zVERSION\0":
            writer.write(b"ClamAV stub/1/Thu Jan  1 00:00:00 1970\0")
        else:
            writer.write(b"UNKNOWN COMMAND ERROR\0")
        await writer.drain()
    writer.close()


async def _serve_stub(path: str) -> None:
    server = await asyncio.start_unix_server(_stub_connection, path, limit=1024 * 1024)
    async with server:
        await server.serve_forever()


@contextmanager
def chatmedia_scan(
    workdir: Path,
    scanner: Clamd,
    workers: int | None = None,
    source: Path | None = None,
    settings: Mapping[str, str] | None = None,
    name: str = SCAN,
) -> Iterator[Chatmedia]:
    """A second chatmedia (its own data folder and database) scanning every upload with
    `scanner` over its Unix socket, as a clamd on the same machine is reached. clamd's CPU
    counts as the server's."""
    root = workdir / name
    root.mkdir()
    scanning = dict(settings or {}) | {"CHATMEDIA_CLAMAV_URL": scanner.unix_url}
    with running_server(root, MAX_UPLOAD, workers, source, scanning) as server:
        port = int(server.base_url.rsplit(":", 1)[1])
        yield Chatmedia(
            server.process.pid, server.data_dir, ("127.0.0.1", port), server.key,
            name=name, helper_pids=(scanner.pid,),
        )  # fmt: skip


def counting_helpers(body: Callable[[], Outcome], peer: Chatmedia) -> Callable[[], Outcome]:
    """`body`, with the CPU seconds the peer's helpers (clamd) used while it ran added to
    its raw figures as `helper_cpu_s`: the part of the server's CPU that is not chatmedia."""

    def counted() -> Outcome:
        before = cpu_seconds(peer.helper_pids)
        outcome = body()
        used = round(cpu_seconds(peer.helper_pids) - before, 2)
        return replace(outcome, raw=outcome.raw | {"helper_cpu_s": used})

    return counted


def scan_statuses(peer: Chatmedia) -> dict[str, int]:
    """How many of the peer's files have each scan status: every upload should have been
    answered `clean`, none left `pending` by an inline scan that ran out of time."""
    counts: dict[str, int] = {}
    cursor = ""
    while True:
        target = "/v1/files?limit=1000" + (f"&cursor={quote(cursor)}" if cursor else "")
        page = request(peer.address, "GET", target, peer.upload_auth).json()
        for item in page["items"]:
            status = (item.get("scan") or {}).get("status", "none")
            counts[status] = counts.get(status, 0) + 1
        cursor = page["nextCursor"]
        if not cursor:
            return counts


if __name__ == "__main__" and sys.argv[1:2] == ["stub-clamd"]:
    asyncio.run(_serve_stub(sys.argv[2]))
