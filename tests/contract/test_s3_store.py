"""What only the S3 backend promises: its URL, bounded multipart uploads that are aborted on
failure, presigned URLs, and StoreUnavailable when the store does not answer. Run against the
session's SeaweedFS, which checks signatures (presigned URLs too); the abort of a failed
multipart upload is checked on the wire, through a recording proxy."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import timedelta
from urllib.parse import quote

import anyio
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from obstore.exceptions import PermissionDeniedError

from chatmedia.storage import Presigner, StoreUnavailable
from chatmedia.storage.local import LocalBlobStore
from chatmedia.storage.s3 import MAX_CONCURRENCY, PART_SIZE, S3BlobStore, open_s3_store
from chatmedia.storage.s3url import S3Location, parse_s3_url
from tests.contract.test_blob_store import read, stream
from tests.s3server import S3Server

pytestmark = pytest.mark.anyio
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYzEXAMPLEKEY"  # a '/' and a '+' as real keys have


def _store(server: S3Server, endpoint: str | None = None) -> S3BlobStore:
    url = server.url(f"t-{secrets.token_hex(6)}")
    if endpoint is not None:
        url = url.replace(server.endpoint, endpoint)
    return open_s3_store(url, {})


# ---- the URL --------------------------------------------------------------------------------


def test_a_full_url() -> None:
    url = (
        "s3://media.example-1/chat/prod?endpoint=http://127.0.0.1:9000&region=eu-west-3"
        f"&path_style=false&access_key_id=AKID&secret_access_key={quote(SECRET, safe='')}"
        "&session_token=tok%2Bx"
    )
    location = parse_s3_url(url, {"AWS_ACCESS_KEY_ID": "other", "AWS_SECRET_ACCESS_KEY": "x"})
    assert location == S3Location(
        "media.example-1", "chat/prod", "http://127.0.0.1:9000", "eu-west-3", False,
        "AKID", SECRET, "tok+x",
    )  # fmt: skip


def test_defaults_and_the_environment() -> None:
    assert parse_s3_url("s3://bucket", {}) == S3Location("bucket", "", None, "us-east-1", False)
    env = {
        "AWS_ENDPOINT_URL": "https://s3.example.com/",
        "AWS_DEFAULT_REGION": "eu-central-1",
        "AWS_ACCESS_KEY_ID": "AKID",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_SESSION_TOKEN": "token",
    }
    location = parse_s3_url("s3://bucket/a/", env)
    assert location == S3Location(
        "bucket", "a", "https://s3.example.com", "eu-central-1", True, "AKID", SECRET, "token"
    )
    env |= {"AWS_REGION": "ap-south-1", "AWS_ENDPOINT_URL_S3": "http://[::1]:9000"}
    location = parse_s3_url("s3://bucket?region=us-west-2&path_style=0", env)
    assert (location.region, location.endpoint, location.path_style) == (
        "us-west-2", "http://[::1]:9000", False,
    )  # fmt: skip


def test_a_plus_in_a_secret_stays_a_plus() -> None:
    location = parse_s3_url(f"s3://bucket?access_key_id=A&secret_access_key={SECRET}", {})
    assert location.secret_access_key == SECRET


@pytest.mark.parametrize(
    ("url", "env", "message"),
    [
        ("https://bucket/x", {}, "not an s3://"),
        ("s3://AKID:secret@bucket", {}, "not before the bucket name"),
        ("s3://Bucket", {}, "bucket 'Bucket' is not a bucket name"),
        ("s3://ab", {}, "bucket 'ab'"),
        ("s3://a_b_c", {}, "bucket 'a_b_c'"),
        ("s3://bucket:9000", {}, "bucket 'bucket:9000'"),
        ("s3://bucket/a/../b", {}, "prefix 'a/../b'"),
        ("s3://bucket/a//b", {}, "prefix 'a//b'"),
        ("s3://bucket/a%2Fb", {}, "prefix 'a%2Fb'"),
        ("s3://bucket/p#x", {}, "no #fragment"),
        ("s3://bucket/p q", {}, "spaces or control characters"),
        ("s3://bucket?regoin=x", {}, "'regoin' it does not know"),
        ("s3://bucket?region=a&region=b", {}, "gives region twice"),
        ("s3://bucket?endpoint=", {}, "endpoint is empty"),
        ("s3://bucket?endpoint=ftp://host", {}, "http:// or https://"),
        ("s3://bucket?endpoint=http://", {}, "http:// or https://"),
        ("s3://bucket?endpoint=http://h:99999", {}, "endpoint is not a URL"),
        ("s3://bucket?endpoint=http://h/bucket", {}, "without a path"),
        ("s3://bucket?endpoint=http://u:p@h", {}, "must not carry credentials"),
        ("s3://bucket", {"AWS_ENDPOINT_URL": "h:9000"}, "http:// or https://"),
        ("s3://bucket?region=eu/west", {}, "region 'eu/west'"),
        ("s3://bucket?path_style=maybe", {}, "path_style 'maybe'"),
        ("s3://bucket?access_key_id=A", {}, "together"),
        ("s3://bucket?session_token=T", {}, "together"),
        ("s3://bucket?region=%FF", {}, "region is not UTF-8"),
        ("s3://bucket", {"AWS_ACCESS_KEY_ID": "A"}, "AWS_SECRET_ACCESS_KEY is missing"),
        ("s3://bucket", {"AWS_SECRET_ACCESS_KEY": "S"}, "AWS_ACCESS_KEY_ID is missing"),
    ],
)
def test_invalid_urls_name_the_bad_part(url: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("?", r"\?").replace(".", r"\.")):
        parse_s3_url(url, env)


def test_an_unknown_parameter_that_may_be_a_secret_is_not_quoted() -> None:
    with pytest.raises(ValueError, match="has a parameter it does not know") as caught:
        parse_s3_url(f"s3://bucket?access_key_id=A&{quote(SECRET, safe='')}", {})
    assert SECRET not in str(caught.value)


_SEGMENTS = st.text("abcxyz019._-", min_size=1, max_size=12).filter(lambda s: s not in (".", ".."))
_BUCKETS = st.from_regex(r"[a-z0-9][a-z0-9-]{1,20}[a-z0-9]", fullmatch=True)


@given(
    bucket=_BUCKETS,
    prefix=st.lists(_SEGMENTS, max_size=4),
    region=st.from_regex(r"[a-z0-9-]{1,20}", fullmatch=True),
    host=st.sampled_from(["127.0.0.1", "minio.internal", "[::1]"]),
    port=st.one_of(st.none(), st.integers(1, 65535)),
    scheme=st.sampled_from(["http", "https"]),
    path_style=st.booleans(),
    secret=st.text(min_size=1, max_size=50),
)
def test_urls_round_trip(
    bucket: str,
    prefix: list[str],
    region: str,
    host: str,
    port: int | None,
    scheme: str,
    path_style: bool,
    secret: str,
) -> None:
    endpoint = f"{scheme}://{host}" + (f":{port}" if port is not None else "")
    url = (
        f"s3://{bucket}/{'/'.join(prefix)}?endpoint={quote(endpoint, safe='')}&region={region}"
        f"&path_style={str(path_style).lower()}&access_key_id=AKID"
        f"&secret_access_key={quote(secret, safe='')}"
    )
    location = parse_s3_url(url, {})
    assert location == S3Location(
        bucket, "/".join(prefix), endpoint, region, path_style, "AKID", secret, None
    )
    S3BlobStore(location)  # obstore takes whatever the parser lets through


@given(text=st.text(max_size=80), env=st.dictionaries(st.sampled_from(
    ["AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
), st.text(max_size=20)))  # fmt: skip
def test_any_text_is_a_location_or_a_value_error(text: str, env: dict[str, str]) -> None:
    for url in (text, "s3://" + text, "s3://bucket?" + text):
        with suppress(ValueError):
            parse_s3_url(url, env)


_PARTS = st.text(st.characters(codec="ascii"), max_size=12)


@given(
    secret=st.from_regex(r"[A-Za-z0-9/+]{30,40}", fullmatch=True),
    bucket=_PARTS,
    prefix=_PARTS,
    query=st.lists(st.tuples(st.sampled_from(["endpoint", "region", "path_style", "x"]), _PARTS)),
    twice=st.booleans(),
)
def test_secrets_never_appear_in_errors(
    secret: str, bucket: str, prefix: str, query: list[tuple[str, str]], twice: bool
) -> None:
    params = [("access_key_id", "AKID"), ("secret_access_key", secret), *query]
    if twice:
        params.append(("secret_access_key", secret))
    url = f"s3://{bucket}/{prefix}?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in params)
    try:
        location = parse_s3_url(url, {})
    except ValueError as e:
        shown = str(e)
    else:
        shown = repr(location) + repr(S3BlobStore(location))
    assert secret not in shown
    assert quote(secret, safe="") not in shown


# ---- a recording proxy ----------------------------------------------------------------------


class RecordingProxy:
    """Passes HTTP/1.1 requests through to s3rver unchanged (SigV4 signs the Host header,
    which is passed as sent) and records each request line with its Content-Length."""

    def __init__(self, upstream: str) -> None:
        self._upstream = upstream.removeprefix("http://").rpartition(":")
        self.requests: list[tuple[str, int]] = []
        self.endpoint = ""
        self._handlers: set[asyncio.Task[None]] = set()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[RecordingProxy]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.endpoint = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        try:
            async with server:
                yield self
        finally:
            # Connections a client gave up on may still be waiting on s3rver: end them here,
            # sockets closed, rather than leave them to the garbage collector of a later test.
            for task in self._handlers:
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)

    def lines(self, method: str, marker: str) -> list[str]:
        return [line for line, _ in self.requests if line.startswith(method) and marker in line]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._pass_one(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client gave up, as obstore does with the parts in flight when it aborts
        finally:
            with suppress(asyncio.CancelledError):
                await _close(writer)
            self._handlers.discard(task)

    async def _pass_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        fields = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
        length = int(fields.get("content-length", "0"))
        self.requests.append((lines[0], length))
        body = await reader.readexactly(length)
        host, _, port = self._upstream
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        try:
            up_writer.write(_close_after(head) + body)
            response = await up_reader.read()  # s3rver closes: the request said Connection: close
        finally:
            await _close(up_writer)
        status, _, rest = response.partition(b"\r\n\r\n")
        writer.write(_close_after(status + b"\r\n\r\n") + rest)  # one exchange per connection
        await writer.drain()


async def _close(writer: asyncio.StreamWriter) -> None:
    # Waited for: a transport left closing when the test's event loop ends is a socket
    # that the garbage collector finds open later, in whichever test is running then.
    writer.close()
    with suppress(ConnectionError):
        await writer.wait_closed()


def _close_after(head: bytes) -> bytes:
    lines = [
        line for line in head.split(b"\r\n")[:-2] if not line.lower().startswith(b"connection:")
    ]
    return b"\r\n".join([*lines, b"Connection: close", b"", b""])


@asynccontextmanager
async def proxied(server: S3Server) -> AsyncIterator[tuple[S3BlobStore, RecordingProxy]]:
    async with RecordingProxy(server.endpoint).running() as proxy:
        yield _store(server, proxy.endpoint), proxy


async def _numbered(total: int, piece: int = 1024 * 1024) -> AsyncIterator[bytes]:
    """`total` bytes in distinct pieces (a fresh object each, as a client's chunks are)."""
    for i in range(0, total, piece):
        size = min(piece, total - i)
        yield (i // piece).to_bytes(8, "big") * (size // 8) + b"\x00" * (size % 8)


async def _collect(total: int) -> bytes:
    return b"".join([chunk async for chunk in _numbered(total)])


# ---- uploads --------------------------------------------------------------------------------


async def test_large_blobs_go_in_bounded_parts(s3_server: S3Server) -> None:
    size = 2 * PART_SIZE + PART_SIZE // 2
    data = await _collect(size)
    async with proxied(s3_server) as (store, proxy):
        staged = await store.put(_numbered(size))
        await store.promote(staged)
        for start, end in [(0, size), (PART_SIZE - 3, PART_SIZE + 3), (size - 1, size)]:
            assert await read(store, staged.key, start, end) == data[start:end]
    assert staged.sha256 == hashlib.sha256(data).hexdigest()
    parts = [length for line, length in proxy.requests if "partNumber=" in line]
    assert parts == [PART_SIZE, PART_SIZE, PART_SIZE // 2]


async def test_small_blobs_are_one_put(s3_server: S3Server) -> None:
    async with proxied(s3_server) as (store, proxy):
        await store.put(stream(b"small"))
    assert [line.split()[0] for line, _ in proxy.requests] == ["PUT"]


async def test_a_failed_multipart_upload_is_aborted(s3_server: S3Server) -> None:
    async def fails() -> AsyncIterator[bytes]:
        async for chunk in _numbered(PART_SIZE + 1024 * 1024):
            yield chunk
        raise RuntimeError("client went away")

    async with proxied(s3_server) as (store, proxy):
        with pytest.raises(RuntimeError, match="client went away"):  # not the abort's 405
            await store.put(fails())
        assert await store.sweep_staging(timedelta(0)) == 0
    [started] = proxy.lines("POST", "?uploads")
    upload = started.split()[1].partition("?")[0]
    assert proxy.lines("DELETE", f"{upload}?uploadId=")  # AbortMultipartUpload


async def test_a_cancelled_multipart_upload_is_aborted(s3_server: S3Server) -> None:
    async def stalls() -> AsyncIterator[bytes]:
        async for chunk in _numbered(PART_SIZE + 1024 * 1024):
            yield chunk
        await anyio.sleep(60)
        yield b"never"

    async with proxied(s3_server) as (store, proxy):
        with anyio.move_on_after(2) as scope:
            await store.put(stalls())
        assert scope.cancelled_caught
        assert await store.sweep_staging(timedelta(0)) == 0
    assert proxy.lines("DELETE", "?uploadId=")


# Run in a fresh interpreter: in this one, memory freed by earlier tests would be reused and
# hide what a put needs. It prints how far the resident set grew above where it started.
_MEASURE_PUT = """
import asyncio, os, sys, threading
from chatmedia.storage.s3 import open_s3_store

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

async def chunks(total):
    for i in range(total >> 20):  # a fresh 1 MiB object each time, as a client's chunks are
        yield i.to_bytes(8, "big") * (1 << 17)

async def main(url, total):
    store = open_s3_store(url, {})
    await store.stat("0" * 64)  # obstore's runtime and connection pool exist before measuring
    base, peak, done = rss(), [0], threading.Event()
    def sample():
        while not done.wait(0.002):
            peak[0] = max(peak[0], rss() - base)
    sampler = threading.Thread(target=sample)
    sampler.start()
    staged = await store.put(chunks(total))
    done.set()
    sampler.join()
    assert staged.size == total
    print(peak[0], flush=True)

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
# Skip finalization: on CPython 3.11 a tokio thread still handing obstore's last result to
# the loop can abort the exiting interpreter (SIGABRT), which would fail this check.
os._exit(0)
"""


def test_memory_stays_flat_whatever_the_size(s3_server: S3Server) -> None:
    size = 64 * 1024 * 1024
    url = s3_server.url(f"t-{secrets.token_hex(6)}")
    run = subprocess.run(
        [sys.executable, "-c", _MEASURE_PUT, url, str(size)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    growth = int(run.stdout.split()[-1])
    print(f"peak RSS growth putting {size >> 20} MiB: {growth / 2**20:.1f} MiB")
    # The writer's buffer and the parts in flight, (1 + MAX_CONCURRENCY) * PART_SIZE, and a
    # piece or two; measured: about 19 MiB.
    assert growth < (MAX_CONCURRENCY + 2) * PART_SIZE < size


# ---- presigned URLs -------------------------------------------------------------------------


async def test_a_presigned_url_serves_the_bytes(s3_server: S3Server) -> None:
    # The store checks the signature: the URL works, carries no secret, and a URL changed
    # after signing is refused.
    secret = s3_server.secret_access_key
    store = open_s3_store(s3_server.url(f"t-{secrets.token_hex(6)}"), {})
    assert isinstance(store, Presigner)
    assert not isinstance(LocalBlobStore(s3_server.root), Presigner)
    staged = await store.put(stream(b"<html>not rendered</html>"))
    await store.promote(staged)
    url = await store.presigned_url(staged.key, timedelta(minutes=5))
    assert f"/{staged.key}?" in url
    assert "X-Amz-Expires=300&" in url
    assert "X-Amz-Signature=" in url
    assert secret not in url
    assert quote(secret, safe="") not in url
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
    assert response.status_code == 200
    assert response.content == b"<html>not rendered</html>"
    assert response.headers["content-type"] == "application/octet-stream"
    async with httpx.AsyncClient() as client:
        tampered = await client.get(url.replace("X-Amz-Expires=300", "X-Amz-Expires=301"))
    assert tampered.status_code == 403


@pytest.mark.parametrize("expires", [timedelta(0), timedelta(days=8)])
async def test_presigned_urls_live_at_most_a_week(s3_server: S3Server, expires: timedelta) -> None:
    with pytest.raises(ValueError, match="1 second to 7 days"):
        await _store(s3_server).presigned_url("0" * 64, expires)


# ---- a store that does not answer -----------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _unreachable() -> S3BlobStore:
    return open_s3_store(
        f"s3://bucket/p?endpoint=http://127.0.0.1:{_closed_port()}&access_key_id=AKIDEXAMPLE"
        f"&secret_access_key={quote(SECRET, safe='')}",
        {},
    )


def _shown(e: BaseException) -> str:
    return "".join(traceback.format_exception(e)) + repr(e)


async def test_an_unreachable_store_is_unavailable_quickly() -> None:
    store = _unreachable()
    assert SECRET not in repr(store)
    calls = {
        "stat": lambda: store.stat("0" * 64),
        "put": lambda: store.put(stream(b"x")),
        "open_range": lambda: store.open_range("0" * 64, 0, 10),
        "delete": lambda: store.delete("0" * 64),
        "sweep": lambda: store.sweep_staging(timedelta(0)),
    }
    for name, call in calls.items():
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as caught:
            await call()
        assert time.monotonic() - started < 10, name
        assert caught.value.__cause__ is not None
        assert SECRET not in _shown(caught.value)
        assert quote(SECRET, safe="") not in _shown(caught.value)


async def test_a_failing_store_is_unavailable() -> None:
    async def answer_503(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 503 Slow Down\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        await _close(writer)

    server = await asyncio.start_server(answer_503, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        store = open_s3_store(
            f"s3://bucket?endpoint=http://127.0.0.1:{port}&access_key_id=A&secret_access_key=S",
            {},
        )
        with pytest.raises(StoreUnavailable, match="did not answer"):
            await store.stat("0" * 64)


async def test_an_answer_is_not_an_outage(s3_server: S3Server) -> None:
    store = open_s3_store(s3_server.url("p").replace(s3_server.access_key_id, "NOPE", 1), {})
    with pytest.raises(PermissionDeniedError, match="403"):
        await store.stat("0" * 64)
