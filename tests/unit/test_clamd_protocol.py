"""The clamd client's pure parts: reading clamd's replies, framing content for INSTREAM,
and clamd URLs."""

from __future__ import annotations

import string
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatmedia.scanning.clamd import (
    CLEAN,
    END_OF_STREAM,
    MAX_CHUNK,
    ScanFailed,
    ScannerUnavailable,
    TcpAddress,
    UnixAddress,
    Verdict,
    frames,
    parse_reply,
    parse_url,
)

# --- Replies -------------------------------------------------------------------------------


def test_ok_is_clean() -> None:
    verdict = parse_reply("stream: OK")
    assert verdict == CLEAN
    assert not verdict.infected
    assert verdict.signature is None


@pytest.mark.parametrize(
    ("reply", "signature"),
    [
        ("stream: Eicar-Signature FOUND", "Eicar-Signature"),
        ("stream: Win.Test.EICAR_HDB-1 FOUND", "Win.Test.EICAR_HDB-1"),
        ("stream: Chatmedia-Test-Marker.UNOFFICIAL FOUND", "Chatmedia-Test-Marker.UNOFFICIAL"),
        (
            "stream: Heuristics.Limits.Exceeded.MaxFileSize FOUND",
            "Heuristics.Limits.Exceeded.MaxFileSize",
        ),
        ("stream: A name: with spaces FOUND", "A name: with spaces"),
        ("stream: stream: OK FOUND", "stream: OK"),
        ("stream: OK FOUND", "OK"),
    ],
)
def test_found_is_infected_by_the_whole_name(reply: str, signature: str) -> None:
    verdict = parse_reply(reply)
    assert verdict == Verdict(signature)
    assert verdict.infected


@given(st.text(min_size=1).filter(str.strip))
def test_any_name_found_is_that_name(name: str) -> None:
    assert parse_reply(f"stream: {name} FOUND") == Verdict(name)


@pytest.mark.parametrize(
    "reply",
    [
        "INSTREAM size limit exceeded. ERROR",
        "stream: Can't allocate memory ERROR",
        "stream: OK ERROR",
        "ERROR",
    ],
)
def test_an_error_is_a_failed_scan_with_the_reply_as_message(reply: str) -> None:
    with pytest.raises(ScanFailed) as failed:
        parse_reply(reply)
    assert str(failed.value) == reply


@given(st.text())
def test_a_reply_ending_in_error_is_never_clean(text: str) -> None:
    with pytest.raises(ScanFailed) as failed:
        parse_reply(text + "ERROR")
    assert str(failed.value) == text + "ERROR"


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "PONG",
        "OK",
        "stream: ok",
        "stream: OK\n",
        " stream: OK",
        "stream:OK",
        "stream: FOUND",
        "stream:  FOUND",
        "stream: Eicar FOUND\n",
        "UNKNOWN COMMAND",
        "COMMAND READ TIMED OUT",
        "ClamAV 1.4.6",
    ],
)
def test_anything_else_is_a_broken_protocol(reply: str) -> None:
    with pytest.raises(ScannerUnavailable):
        parse_reply(reply)


@given(st.text())
def test_only_stream_ok_is_clean(text: str) -> None:
    """Whatever clamd sends, the verdict is clean only for exactly "stream: OK"."""
    try:
        verdict = parse_reply(text)
    except ScanFailed:
        assert text.endswith("ERROR")
    except ScannerUnavailable:
        assert not text.endswith("ERROR")
        assert text != "stream: OK"
    else:
        if verdict.infected:
            assert text.startswith("stream: ")
            assert text.endswith(" FOUND")
        else:
            assert text == "stream: OK"


# --- Framing -------------------------------------------------------------------------------


def framed(chunks: list[bytes], max_chunk: int = MAX_CHUNK) -> bytes:
    """The INSTREAM body the client sends for `chunks`."""
    return b"".join(frame for chunk in chunks for frame in frames(chunk, max_chunk)) + (
        END_OF_STREAM
    )


def unframe(body: bytes) -> tuple[bytes, list[int]]:
    """The content of an INSTREAM body and the size of each of its chunks, as clamd reads
    them: the body must end right after the zero-length chunk."""
    content, sizes, at = bytearray(), [], 0
    while True:
        (size,) = struct.unpack_from(">I", body, at)
        at += 4
        if size == 0:
            break
        content += body[at : at + size]
        sizes.append(size)
        at += size
    assert at == len(body), "bytes after the end of the stream"
    return bytes(content), sizes


@given(st.lists(st.binary(max_size=2000), max_size=20), st.integers(1, 700))
def test_framing_gives_back_the_bytes_in_bounded_chunks(
    chunks: list[bytes], max_chunk: int
) -> None:
    body = framed(chunks, max_chunk)
    content, sizes = unframe(body)
    assert content == b"".join(chunks)
    assert all(0 < size <= max_chunk for size in sizes)
    assert body.endswith(END_OF_STREAM)
    assert len(sizes) == sum(-(-len(chunk) // max_chunk) for chunk in chunks)


def test_an_empty_chunk_is_not_sent_as_the_end() -> None:
    assert list(frames(b"")) == []
    assert unframe(framed([b"a", b"", b"b"]))[0] == b"ab"


def test_a_large_chunk_is_split_at_the_default_size() -> None:
    content = bytes(range(256)) * (2 * MAX_CHUNK // 256 + 100)
    got, sizes = unframe(framed([content]))
    assert got == content
    assert sizes == [MAX_CHUNK, MAX_CHUNK, 100 * 256]


# --- URLs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("tcp://127.0.0.1:3310", TcpAddress("127.0.0.1", 3310)),
        ("tcp://clamav.internal:3310", TcpAddress("clamav.internal", 3310)),
        ("tcp://clamav:3310/", TcpAddress("clamav", 3310)),
        ("tcp://[::1]:3310", TcpAddress("::1", 3310)),
        ("unix:///run/clamav/clamd.ctl", UnixAddress("/run/clamav/clamd.ctl")),
        ("unix:///tmp/a_b/../clamd.sock", UnixAddress("/tmp/a_b/../clamd.sock")),
    ],
)
def test_urls(url: str, address: TcpAddress | UnixAddress) -> None:
    assert parse_url(url) == address


@pytest.mark.parametrize(
    "url",
    [
        "",
        "127.0.0.1:3310",
        "clamd.sock",
        "/run/clamav/clamd.ctl",
        "http://127.0.0.1:3310",
        "TCP://127.0.0.1:3310",
        "tcp://127.0.0.1",
        "tcp://127.0.0.1:",
        "tcp://:3310",
        "tcp://127.0.0.1:0",
        "tcp://127.0.0.1:65536",
        "tcp://127.0.0.1:port",
        "tcp://127.0.0.1:3310/scan",
        "tcp://127.0.0.1:3310?timeout=1",
        "tcp://127.0.0.1:3310#x",
        "tcp://127.0.0.1:3310?",
        "tcp://user:pw@127.0.0.1:3310",
        "tcp://[::1:3310",
        " tcp://127.0.0.1:3310",
        "tcp://127.0.0.1:3310\n",
        "tcp://127.0.0.1:33\t10",
        "unix://clamd.sock",
        "unix://run/clamav/clamd.ctl",
        "unix:/run/clamav/clamd.ctl",
        "unix:///",
        "unix://",
        "unix:///run/clamav/",
        "unix:///run/clamd.ctl?x=1",
        "unix:///" + "a" * 107,
    ],
)
def test_bad_urls_say_what_is_expected(url: str) -> None:
    with pytest.raises(ValueError, match=r"clamd URL .*expected tcp://HOST:PORT or unix:///"):
        parse_url(url)


_LABELS = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=12)


@given(
    st.one_of(
        st.ip_addresses(v=4).map(str),
        st.lists(_LABELS, min_size=1, max_size=4).map(".".join),
    ),
    st.integers(1, 65535),
)
def test_any_host_and_port(host: str, port: int) -> None:
    assert parse_url(f"tcp://{host}:{port}") == TcpAddress(host, port)


@given(st.ip_addresses(v=6), st.integers(1, 65535))
def test_any_ipv6_address(ip: object, port: int) -> None:
    assert parse_url(f"tcp://[{ip}]:{port}") == TcpAddress(str(ip), port)


@given(
    st.lists(
        st.text(string.ascii_letters + string.digits + "._-", min_size=1, max_size=20),
        min_size=1,
        max_size=5,
    )
)
def test_any_absolute_socket_path(parts: list[str]) -> None:
    path = "/" + "/".join(parts)
    assert parse_url("unix://" + path) == UnixAddress(path)


def parse_or_message(url: str) -> TcpAddress | UnixAddress | str:
    try:
        return parse_url(url)
    except ValueError as e:
        return str(e)


@given(st.text())
def test_any_text_parses_or_is_a_clear_value_error(url: str) -> None:
    result = parse_or_message(url)
    if isinstance(result, str):
        assert result.startswith(f"clamd URL {url!r}: ")
    else:
        assert url.startswith(("tcp://", "unix:///"))
