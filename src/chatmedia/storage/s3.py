"""Blobs in an S3 bucket (AWS, MinIO, R2, Ceph…) through obstore, with standard S3 calls only.

Layout under the URL's prefix, named from our ids only:

    blobs/ab/cd/<sha256>    a promoted blob, sharded like the local store
    staging/<token>         a complete upload waiting for `promote` or `discard`

`put` streams into ``staging/<token>`` with obstore's buffered writer: up to PART_SIZE bytes
go as one PutObject; more becomes a multipart upload of PART_SIZE parts with at most
MAX_CONCURRENCY parts in flight, so an upload holds about (1 + MAX_CONCURRENCY) * PART_SIZE
bytes whatever its size. Nothing is visible until the upload completes. When reading the
client's bytes fails, or the put is cancelled, the multipart upload is aborted
(AbortMultipartUpload) and the error propagates.

A process that dies in the middle of an upload cannot abort it: its parts stay in the bucket,
invisible and billed, until something aborts them. Give the bucket a lifecycle rule with
``AbortIncompleteMultipartUpload`` (``DaysAfterInitiation: 1``). A crash after an upload
completed leaves a staging object, which `sweep_staging` removes.

`promote` is CopyObject then DeleteObject (S3 has no rename). One CopyObject copies at most
5 GiB, so larger blobs cannot be promoted: keep the upload size limit below that.

A store that cannot be reached, times out or answers 5xx raises `StoreUnavailable` after a
few retries (a dead endpoint fails within seconds); a missing blob raises `BlobMissing`; any
other failure (refused credentials, no such bucket) propagates as obstore raised it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import anyio
import obstore
from obstore.exceptions import BaseError
from obstore.store import S3Store

from chatmedia.storage.base import (
    CHUNK_SIZE,
    BlobMissing,
    BlobStat,
    StagedBlob,
    StoreUnavailable,
)

if TYPE_CHECKING:
    from obstore import GetResult
    from obstore.store import ClientConfig, RetryConfig, S3Config

log = logging.getLogger("chatmedia.storage")

# Multipart part size: S3 wants at least 5 MiB per part but the last, and allows 10,000
# parts (78 GiB at this size, far past the 5 GiB that promote can copy).
PART_SIZE = 8 * 1024 * 1024
# Parts uploaded at once by one put; with the part being filled this bounds its memory.
MAX_CONCURRENCY = 2

_KEY = re.compile(r"[0-9a-f]{64}")
_TOKEN = re.compile(r"[0-9a-f]{32}")

# Fail fast when the store is gone (connection refused or no answer to the connect), retry
# briefly for a blip. `timeout` bounds a whole request, and a ranged GET lasts as long as
# the client reading it, so it is long; a store that stops sending is caught by read_timeout.
_CLIENT_OPTIONS: ClientConfig = {
    "connect_timeout": timedelta(seconds=5),
    "read_timeout": timedelta(seconds=30),
    "timeout": timedelta(hours=1),
    # Blob keys have no extension; say what they are so a presigned GET is never rendered.
    "default_content_type": "application/octet-stream",
}
_RETRY: RetryConfig = {
    "max_retries": 3,
    "retry_timeout": timedelta(seconds=5),
    "backoff": {
        "init_backoff": timedelta(milliseconds=100),
        "max_backoff": timedelta(seconds=1),
        "base": 2,
    },
}


@dataclass(frozen=True, slots=True)
class S3Location:
    """Where the bucket is and how to sign in: an ``s3://`` URL read with the environment."""

    bucket: str
    prefix: str  # "" or segments joined by "/", without leading or trailing "/"
    endpoint: str | None  # None: AWS's endpoint for the region
    region: str
    path_style: bool
    # None: obstore's own credential chain (web identity, container, instance metadata).
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)


def open_s3_store(url: str, environ: Mapping[str, str]) -> S3BlobStore:
    """The store an ``s3://`` URL names (see `parse_s3_url`); ValueError when it is invalid."""
    return S3BlobStore(parse_s3_url(url, environ))


class S3BlobStore:
    """A `BlobStore` (and `Presigner`) over a bucket and prefix."""

    def __init__(self, location: S3Location) -> None:
        self.location = location
        options: ClientConfig = {
            **_CLIENT_OPTIONS,
            "allow_http": (location.endpoint or "").startswith("http://"),
        }
        self._store = S3Store(
            location.bucket,
            prefix=location.prefix or None,
            config=_s3_config(location),
            client_options=options,
            retry_config=_RETRY,
        )

    def __repr__(self) -> str:
        where = self.location  # its repr leaves the credentials out
        return (
            f"S3BlobStore(bucket={where.bucket!r}, prefix={where.prefix!r}, "
            f"endpoint={where.endpoint!r})"
        )

    async def put(self, chunks: AsyncIterable[bytes]) -> StagedBlob:
        token = secrets.token_hex(16)
        upload = _Upload(self._store, _staged_path(token))
        try:
            async for piece in _pieces(chunks):
                await upload.write(piece)
            await upload.finish()
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await upload.abandon(exc)
            raise
        sha256 = upload.digest.hexdigest()
        return StagedBlob(key=sha256, size=upload.size, sha256=sha256, token=token)

    async def promote(self, staged: StagedBlob) -> None:
        source, target = _staged_path(staged.token), _blob_path(staged.key)
        if await self._head(target) is None:
            try:
                with _store_errors("copying a staged blob"):
                    await obstore.copy_async(self._store, source, target)
            except FileNotFoundError:
                raise BlobMissing(f"staged blob {staged.token} is gone") from None
        await self._delete(source)

    async def discard(self, staged: StagedBlob) -> None:
        await self._delete(_staged_path(staged.token))

    async def open_range(self, key: str, start: int, end: int) -> AsyncGenerator[bytes, None]:
        path = _blob_path(key)
        if end <= start:  # S3 has no empty range: ask whether the blob is there at all
            if await self._head(path) is None:
                raise BlobMissing(f"blob {key} is missing")
            return _nothing()
        try:
            with _store_errors("reading a blob"):
                result = await obstore.get_async(self._store, path, options={"range": (start, end)})
        except FileNotFoundError:
            raise BlobMissing(f"blob {key} is missing") from None
        except (BaseError, OSError) as e:
            if _is_bad_range(e):  # the blob is shorter than `start`
                raise BlobMissing("blob is shorter than its recorded size") from e
            raise
        return _chunks_of(result, end - start)

    async def delete(self, key: str) -> None:
        await self._delete(_blob_path(key))

    async def stat(self, key: str) -> BlobStat | None:
        size = await self._head(_blob_path(key))
        return None if size is None else BlobStat(key=key, size=size)

    async def sweep_staging(self, older_than: timedelta) -> int:
        cutoff = datetime.now(UTC) - older_than
        dropped = 0
        with _store_errors("listing staged blobs"):
            async for batch in obstore.list(self._store, "staging"):
                for meta in batch:
                    token = meta["path"].rpartition("/")[2]
                    if _TOKEN.fullmatch(token) and meta["last_modified"] < cutoff:
                        await self._delete(_staged_path(token))
                        dropped += 1
        return dropped

    async def presigned_url(self, key: str, expires: timedelta) -> str:
        """A SigV4 presigned GET for blob `key`. obstore 0.12 signs a path and nothing more,
        so the URL cannot carry response-content-type / response-content-disposition
        overrides: the store answers with what the object was stored with, the type
        application/octet-stream and no Content-Disposition (a browser saves it under the
        key's name instead of showing it)."""
        if not timedelta(seconds=1) <= expires <= timedelta(days=7):  # SigV4's range
            raise ValueError("a presigned URL lives from 1 second to 7 days")
        with _store_errors("signing a URL"):  # signing may first fetch credentials
            return await obstore.sign_async(self._store, "GET", _blob_path(key), expires)

    async def _head(self, path: str) -> int | None:
        """The object's size, or None when there is no such object."""
        try:
            with _store_errors("looking up a blob"):
                meta = await obstore.head_async(self._store, path)
        except FileNotFoundError:
            return None
        return meta["size"]

    async def _delete(self, path: str) -> None:
        try:
            with _store_errors("deleting a blob"):
                await obstore.delete_async(self._store, path)
        except FileNotFoundError:  # S3 answers 204 for a missing key; some clones say 404
            pass


class _Upload:
    """One staged write. Pieces are hashed in a worker thread while obstore's writer takes
    them on its own runtime, one piece in flight: the next piece is read from the client
    meanwhile, and at most one piece is held here besides the writer's buffer."""

    def __init__(self, store: S3Store, path: str) -> None:
        self._store = store
        self._path = path
        self._writer = obstore.open_writer_async(
            store, path, buffer_size=PART_SIZE, max_concurrency=MAX_CONCURRENCY
        )
        self.digest = hashlib.sha256()
        self.size = 0
        self._in_flight: asyncio.Future[Any] | None = None
        self._completing = False

    async def write(self, piece: bytes) -> None:
        await self._settle()
        hashed = asyncio.get_running_loop().run_in_executor(None, self.digest.update, piece)
        self._in_flight = asyncio.gather(hashed, self._writer.write(piece))
        self.size += len(piece)

    async def finish(self) -> None:
        """Wait for the last piece, then complete the upload: the object appears."""
        await self._settle()
        self._completing = True
        with _store_errors("completing an upload"):
            await self._writer.close()

    async def abandon(self, exc: BaseException) -> None:
        """Let a piece in flight land (aborting must not race it), then abort the upload:
        parts already sent are dropped and no object appears. Best effort: what is left is
        for the lifecycle rule and `sweep_staging`, and `exc` is what the caller gets."""
        if self._in_flight is not None:
            await asyncio.wait([self._in_flight])
            if not self._in_flight.cancelled():
                self._in_flight.exception()  # seen: do not log it as never retrieved
        try:
            await self._writer.__aexit__(type(exc), exc, exc.__traceback__)
        except Exception:
            log.warning("could not abort the upload to %s", self._path, exc_info=True)
        if self._completing:  # completing failed or was cancelled, perhaps after it took
            try:
                with _store_errors("deleting a staged blob"):
                    await obstore.delete_async(self._store, self._path)
            except Exception:
                log.warning("could not delete the staged blob %s", self._path, exc_info=True)

    async def _settle(self) -> None:
        if self._in_flight is not None:
            # Shielded: if this wait is cancelled the piece still lands and abandon() waits.
            with _store_errors("uploading"):
                await asyncio.shield(self._in_flight)
            self._in_flight = None


async def _pieces(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """`chunks` regrouped into pieces of at least CHUNK_SIZE bytes (the last may be short), so
    that tiny client chunks do not each cost a thread hop and a call into obstore."""
    pending: list[bytes] = []
    pending_size = 0
    async for chunk in chunks:
        pending.append(chunk)
        pending_size += len(chunk)
        if pending_size >= CHUNK_SIZE:
            yield b"".join(pending)
            pending, pending_size = [], 0
    if pending:
        yield b"".join(pending)


async def _chunks_of(result: GetResult, length: int) -> AsyncGenerator[bytes, None]:
    """The body of a ranged GET in chunks of about CHUNK_SIZE, checked to be `length` long."""
    received = 0
    with _store_errors("reading a blob"):
        async for chunk in result.stream(min_chunk_size=CHUNK_SIZE):
            received += len(chunk)
            yield chunk
    if received < length:
        raise BlobMissing("blob is shorter than its recorded size")


async def _nothing() -> AsyncGenerator[bytes, None]:
    return
    yield


def _blob_path(key: str) -> str:
    if not _KEY.fullmatch(key):
        raise ValueError(f"not a blob key: {key!r}")
    return f"blobs/{key[:2]}/{key[2:4]}/{key}"


def _staged_path(token: str) -> str:
    if not _TOKEN.fullmatch(token):
        raise ValueError(f"not a staging token: {token!r}")
    return f"staging/{token}"


# obstore raises one error class for most failures and says what happened only in the
# message, so the message is what tells a store that did not answer from one that refused.
_STATUS = re.compile(r"status code: (\d{3})")


def _did_not_answer(e: BaseException) -> bool:
    """Whether an obstore error means the store could not be reached, timed out or failed on
    its side (5xx), as opposed to an answer (404, 403, a bad request)."""
    if isinstance(e, FileNotFoundError):
        return False
    if isinstance(e, TimeoutError | ConnectionError):
        return True
    status = _STATUS.search(str(e))
    if status is not None:
        return status.group(1).startswith("5")
    return "HTTP error" in str(e)  # connect, timeout, reset: no status at all


def _is_bad_range(e: BaseException) -> bool:
    return "InvalidRangeRequest" in str(e) or "status code: 416" in str(e)


@contextmanager
def _store_errors(action: str) -> Iterator[None]:
    """Raise StoreUnavailable, chained, for an obstore error that means no answer."""
    try:
        yield
    except (BaseError, OSError) as e:
        if _did_not_answer(e):
            raise StoreUnavailable(f"the S3 store did not answer ({action})") from e
        raise


def _s3_config(location: S3Location) -> S3Config:
    config: S3Config = {
        "region": location.region,
        "virtual_hosted_style_request": not location.path_style,
        # One DeleteObject per key: bulk DeleteObjects is missing from some S3 clones, and
        # the store never deletes more than one object at a time.
        "disable_bulk_delete": True,
    }
    if location.endpoint is not None:
        config["endpoint"] = location.endpoint
    if location.access_key_id is not None and location.secret_access_key is not None:
        config["access_key_id"] = location.access_key_id
        config["secret_access_key"] = location.secret_access_key
    if location.session_token is not None:
        config["session_token"] = location.session_token
    return config


# ---- reading s3:// URLs ------------------------------------------------------------------

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")  # S3's bucket naming rules
_SEGMENT = re.compile(r"[A-Za-z0-9._-]{1,100}")
_REGION = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PARAMETER_NAME = re.compile(r"[A-Za-z_]{1,40}")
_PARAMETERS = frozenset(
    {"endpoint", "region", "path_style", "access_key_id", "secret_access_key", "session_token"}
)
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def parse_s3_url(url: str, environ: Mapping[str, str]) -> S3Location:
    """Read ``s3://BUCKET[/PREFIX][?endpoint=…&region=…&path_style=…]`` and the environment.

    Query parameters win over the environment: `endpoint` (else AWS_ENDPOINT_URL_S3 or
    AWS_ENDPOINT_URL; else AWS), `region` (else AWS_REGION or AWS_DEFAULT_REGION; else
    us-east-1), `path_style` (true/false; default true when an endpoint is given),
    `access_key_id` with `secret_access_key` and optionally `session_token` (else
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN; else obstore's chain).
    Values are percent-decoded, and ``+`` stays a plus, as secret keys often contain one.
    A ValueError names the part that is wrong and never quotes a credential.
    """
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ValueError("the S3 URL contains spaces or control characters")
    parts = urlsplit(url)
    if parts.scheme.lower() != "s3":
        raise ValueError("not an s3://BUCKET/PREFIX URL")
    if "@" in parts.netloc:
        raise ValueError(
            "credentials go in the access_key_id and secret_access_key parameters or the "
            "AWS_* variables, not before the bucket name"
        )
    if parts.fragment or url.endswith("#"):
        raise ValueError("an S3 URL has no #fragment (percent-encode '#' in values as %23)")
    bucket = parts.netloc
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ValueError(
            f"bucket {bucket!r} is not a bucket name (3 to 63 lowercase letters, digits, "
            "dots and hyphens)"
        )
    prefix = parts.path.strip("/")
    if prefix and not all(
        _SEGMENT.fullmatch(s) and s not in (".", "..") for s in prefix.split("/")
    ):
        raise ValueError(
            f"prefix {prefix!r} is not a path of segments made of letters, digits, '.', '_' and '-'"
        )
    params = _query(parts.query)
    endpoint = params.get("endpoint") or _env(environ, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
    if endpoint is not None:
        endpoint = _endpoint(endpoint)
    region = params.get("region") or _env(environ, "AWS_REGION", "AWS_DEFAULT_REGION")
    region = region or "us-east-1"
    if not _REGION.fullmatch(region):
        raise ValueError(f"region {region!r} is not a region name")
    path_style = endpoint is not None
    if "path_style" in params:
        flag = _BOOLEANS.get(params["path_style"].lower())
        if flag is None:
            raise ValueError(f"path_style {params['path_style']!r} is not true or false")
        path_style = flag
    key_id, secret, token = _credentials(params, environ)
    return S3Location(bucket, prefix, endpoint, region, path_style, key_id, secret, token)


def _query(query: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in query.split("&") if query else ():
        name, _, value = item.partition("=")
        name = unquote(name)
        if name not in _PARAMETERS:
            shown = repr(name) if _PARAMETER_NAME.fullmatch(name) else "a parameter"
            raise ValueError(
                f"the S3 URL has {shown} it does not know; it takes "
                + ", ".join(sorted(_PARAMETERS))
            )
        if name in params:
            raise ValueError(f"the S3 URL gives {name} twice")
        if not value:
            raise ValueError(f"the S3 URL's {name} is empty")
        try:
            params[name] = unquote(value, errors="strict")
        except UnicodeDecodeError:
            raise ValueError(f"the S3 URL's {name} is not UTF-8 once percent-decoded") from None
    return params


def _env(environ: Mapping[str, str], *names: str) -> str | None:
    return next((environ[n] for n in names if environ.get(n)), None)


def _endpoint(text: str) -> str:
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueError("endpoint is not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("endpoint must be an http:// or https:// URL with a host")
    if "@" in parts.netloc:
        raise ValueError("endpoint must not carry credentials")
    if parts.path not in ("", "/") or parts.query or parts.fragment or text.endswith(("?", "#")):
        raise ValueError("endpoint must be scheme://host[:port], without a path")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


def _credentials(
    params: Mapping[str, str], environ: Mapping[str, str]
) -> tuple[str | None, str | None, str | None]:
    """Static credentials from the URL, else from the environment, else none."""
    if {"access_key_id", "secret_access_key", "session_token"} & params.keys():
        if "access_key_id" not in params or "secret_access_key" not in params:
            raise ValueError("the S3 URL needs access_key_id and secret_access_key together")
        return params["access_key_id"], params["secret_access_key"], params.get("session_token")
    key_id, secret = environ.get("AWS_ACCESS_KEY_ID"), environ.get("AWS_SECRET_ACCESS_KEY")
    if bool(key_id) != bool(secret):
        missing = "AWS_SECRET_ACCESS_KEY" if key_id else "AWS_ACCESS_KEY_ID"
        raise ValueError(f"{missing} is missing (AWS credentials are a pair)")
    if not key_id:
        return None, None, None
    return key_id, secret, environ.get("AWS_SESSION_TOKEN") or None
