"""The clamd client against a real clamd (tests/clamdserver.py): verdicts over TCP and a
Unix socket, content clamd refuses, an outage before and during a scan, a failing source,
the signature version, and streaming without holding the content."""

from __future__ import annotations

import io
import os
import re
import socket
import time
import tracemalloc
import zipfile
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest

from chatmedia.scanning.clamd import CLEAN, Clamd, ScanFailed, ScannerUnavailable, Verdict
from tests.clamdserver import (
    EICAR,
    EICAR_SIGNATURE,
    MARKER,
    MARKER_SIGNATURE,
    ClamdServer,
    running_clamd,
)

pytestmark = pytest.mark.anyio
MiB = 1024 * 1024
TRANSPORTS = ["tcp_url", "unix_url"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClamdServer]:
    """clamd taking up to 64 MiB; a test that stops it starts it again."""
    with running_clamd(tmp_path_factory.mktemp("clamd"), max_stream=64 * MiB) as running:
        yield running


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClamdServer]:
    """clamd refusing content over 1 MiB."""
    with running_clamd(tmp_path_factory.mktemp("clamd-small"), max_stream=MiB) as running:
        yield running


@pytest.fixture(params=TRANSPORTS)
def url(request: pytest.FixtureRequest, server: ClamdServer) -> str:
    return str(getattr(server, request.param))


async def stream(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def zipped(name: str, data: bytes) -> bytes:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, data)
    return archive.getvalue()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# --- Verdicts ------------------------------------------------------------------------------


def test_clamd_starts_fast(server: ClamdServer) -> None:
    assert server.start_seconds < 3, f"clamd took {server.start_seconds:.2f} s to start"


async def test_clean_content(url: str) -> None:
    clamd = Clamd(url)
    big = bytes(range(256)) * 4096  # 1 MiB: split into frames
    assert await clamd.scan(stream(b"hello ", b"", b"world", big, b"")) == CLEAN
    assert await clamd.scan(stream()) == CLEAN


async def test_eicar_is_infected_with_its_name(url: str) -> None:
    verdict = await Clamd(url).scan(stream(EICAR[:20], EICAR[20:]))
    assert verdict == Verdict(EICAR_SIGNATURE)
    assert verdict.infected


async def test_a_marker_inside_a_zip_is_found(url: str) -> None:
    archive = zipped("notes/report.txt", b"ordinary text " * 1000 + MARKER + b" more" * 100)
    assert MARKER not in archive, "the marker must be compressed, so clamd has to unpack"
    assert await Clamd(url).scan(stream(archive[:100], archive[100:])) == Verdict(MARKER_SIGNATURE)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("total", [4 * MiB, 256 * MiB])
async def test_content_over_the_stream_limit_fails_never_clean(
    small_server: ClamdServer, transport: str, total: int
) -> None:
    """clamd answers and closes after its StreamMaxLength: the answer is read even when
    sending breaks (the 256 MiB case), and the rest of the content is not read."""
    read = 0

    async def content() -> AsyncIterator[bytes]:
        nonlocal read
        while read < total:
            read += 64 * 1024
            yield b"x" * 64 * 1024

    clamd = Clamd(getattr(small_server, transport))
    for _ in range(3):
        read = 0
        with pytest.raises(ScanFailed, match=r"^INSTREAM size limit exceeded\. ERROR$"):
            await clamd.scan(content())
        if total > 64 * MiB:
            assert read < 64 * MiB, f"{read} bytes read after clamd had given up"


# --- Outages -------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("kill", [False, True])
async def test_a_stopped_clamd_is_unavailable_at_once(
    server: ClamdServer, transport: str, kill: bool
) -> None:
    clamd = Clamd(getattr(server, transport), connect_timeout=1)
    server.stop(kill=kill)
    try:
        began = time.monotonic()
        with pytest.raises(ScannerUnavailable, match="cannot be reached"):
            await clamd.scan(stream(EICAR))
        assert await clamd.ping() is False
        with pytest.raises(ScannerUnavailable):
            await clamd.version()
        assert time.monotonic() - began < 1
    finally:
        server.start()
    assert await clamd.ping() is True


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_clamd_killed_during_a_scan_is_unavailable_not_clean(
    server: ClamdServer, transport: str
) -> None:
    async def slowly() -> AsyncIterator[bytes]:
        for i in range(400):
            if i == 5:
                server.stop(kill=True)
            yield b"y" * 64 * 1024
            await anyio.sleep(0.005)

    try:
        with pytest.raises(ScannerUnavailable):
            await Clamd(getattr(server, transport)).scan(slowly())
    finally:
        server.start()


@pytest.mark.parametrize(
    "url",
    [
        "unix:///nonexistent/clamd.sock",
        "tcp://127.0.0.1:1",
        "tcp://no-such-host.invalid:3310",
        "tcp://\u00fc..x:3310",  # a host name IDNA refuses
    ],
)
async def test_an_unreachable_address_is_unavailable(url: str) -> None:
    clamd = Clamd(url, connect_timeout=1)
    assert await clamd.ping() is False
    with pytest.raises(ScannerUnavailable, match=r"cannot be reached|did not accept"):
        await clamd.scan(stream(b"hello"))


async def test_a_silent_server_times_out() -> None:
    """Something that accepts connections and never answers: scan_timeout bounds the
    scan, connect_timeout the commands."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        clamd = Clamd(f"tcp://127.0.0.1:{port}", connect_timeout=0.3, scan_timeout=0.5)
        began = time.monotonic()
        with pytest.raises(ScannerUnavailable, match=r"did not finish a scan within 0\.5 s"):
            await clamd.scan(stream(b"hello"))
        assert 0.5 <= time.monotonic() - began < 1.5
        began = time.monotonic()
        assert await clamd.ping() is False
        assert time.monotonic() - began < 1


class SourceBroke(Exception):
    """A failure of the content's source."""


@pytest.mark.parametrize(
    "error", [SourceBroke("source broke"), OSError(5, "disk failed"), TimeoutError("slow")]
)
async def test_a_failing_source_propagates_its_own_error(url: str, error: Exception) -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield b"first chunk"
        raise error

    clamd = Clamd(url)
    before = open_fds()
    with pytest.raises(type(error)) as raised:
        await clamd.scan(failing())
    assert raised.value is error
    assert open_fds() == before, "the connection was left open"
    assert await clamd.ping()


# --- Signature versions --------------------------------------------------------------------


async def test_version_reports_the_daily_database(server: ClamdServer, url: str) -> None:
    version = await Clamd(url).version()
    assert re.fullmatch(rf"ClamAV [\d.]+/{server.database_version}/\w{{3}} .+ \d{{4}}", version)


async def test_a_new_daily_database_changes_version(server: ClamdServer) -> None:
    clamd = Clamd(server.unix_url)
    before = await clamd.version()
    server.add_signature("Chatmedia-Test-New", b"CHATMEDIA-NEW-MARKER")
    assert await clamd.scan(stream(b"a CHATMEDIA-NEW-MARKER b")) == CLEAN
    assert await clamd.version() == before, "clamd reloads only when told"
    server.reload()
    after = await clamd.version()
    assert after != before
    assert f"/{server.database_version}/" in after
    assert await clamd.scan(stream(b"a CHATMEDIA-NEW-MARKER b")) == Verdict(
        "Chatmedia-Test-New.UNOFFICIAL"
    )


async def test_a_loose_signature_file_does_not_change_version(server: ClamdServer) -> None:
    """Signatures outside daily.* (an operator's own .ndb) are used but not versioned."""
    clamd = Clamd(server.unix_url)
    before = await clamd.version()
    server.add_signature("Chatmedia-Test-Loose", b"CHATMEDIA-LOOSE-MARKER", versioned=False)
    server.reload()
    assert await clamd.scan(stream(b"CHATMEDIA-LOOSE-MARKER")) == Verdict(
        "Chatmedia-Test-Loose.UNOFFICIAL"
    )
    assert await clamd.version() == before


# --- Memory --------------------------------------------------------------------------------


async def test_content_is_streamed_not_held(server: ClamdServer) -> None:
    size = 50 * MiB

    async def generated() -> AsyncIterator[bytes]:
        for i in range(size // MiB):
            yield bytes([i % 251]) * MiB

    tracemalloc.start()
    try:
        verdict = await Clamd(server.tcp_url).scan(generated())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert verdict == CLEAN
    assert peak < 4 * MiB, f"{peak} bytes held at once to scan {size}"
