"""Blobs in an S3 bucket (AWS, MinIO, R2, Ceph…) through obstore, with standard S3 calls only.

Layout under the URL's prefix, named from our ids only:

    blobs/ab/cd/<sha256>    a promoted blob, sharded like the local store
    staging/<token>         a complete upload waiting for `promote` or `discard`
    uploads/<id>/<start>-<writer>   a piece of a resumable upload under way (Segments;
                            see chatmedia.storage.s3segments for its multipart upload)

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
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

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
    in_pieces,
    nothing,
)
from chatmedia.storage.s3parts import MultipartParts
from chatmedia.storage.s3segments import S3Segments
from chatmedia.storage.s3url import S3Location, parse_s3_url

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
        signs = location.access_key_id is not None and location.secret_access_key is not None
        self._segments = S3Segments(self, MultipartParts(location) if signs else None)

    def __repr__(self) -> str:
        where = self.location  # its repr leaves the credentials out
        return (
            f"S3BlobStore(bucket={where.bucket!r}, prefix={where.prefix!r}, "
            f"endpoint={where.endpoint!r})"
        )

    async def put(self, chunks: AsyncIterable[bytes]) -> StagedBlob:
        token = secrets.token_hex(16)
        upload = await self.write_object(_staged_path(token), chunks)
        sha256 = upload.digest.hexdigest()
        return StagedBlob(key=sha256, size=upload.size, sha256=sha256, token=token)

    async def promote(self, staged: StagedBlob) -> None:
        source, target = _staged_path(staged.token), _blob_path(staged.key)
        if await self.object_size(target) is None:
            try:
                with _store_errors("copying a staged blob"):
                    await obstore.copy_async(self._store, source, target)
            except FileNotFoundError:
                raise BlobMissing(f"staged blob {staged.token} is gone") from None
        await self.delete_object(source)

    async def discard(self, staged: StagedBlob) -> None:
        await self.delete_object(_staged_path(staged.token))

    async def open_range(self, key: str, start: int, end: int) -> AsyncGenerator[bytes, None]:
        return await self.read_object(_blob_path(key), start, end)

    async def open_staged(self, staged: StagedBlob) -> AsyncGenerator[bytes, None]:
        return await self.read_object(_staged_path(staged.token), 0, staged.size)

    async def read_object(self, path: str, start: int, end: int) -> AsyncGenerator[bytes, None]:
        """Bytes `start` to `end` of the object at `path` (keys relative to the prefix)."""
        key = path.rpartition("/")[2]
        if end <= start:  # S3 has no empty range: ask whether the blob is there at all
            if await self.object_size(path) is None:
                raise BlobMissing(f"blob {key} is missing")
            return nothing()
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

    async def aclose(self) -> None:
        await self._segments.aclose()

    async def begin_segments(self, upload_id: str) -> None:
        await self._segments.begin(upload_id)

    async def put_segment(
        self,
        name: str,
        chunks: AsyncIterable[bytes],
        after: tuple[str, int] | None = None,
        total: int | None = None,
    ) -> tuple[str, int]:
        return await self._segments.put(name, chunks, after, total)

    async def open_segment(
        self, name: str, offset: int, length: int
    ) -> AsyncGenerator[bytes, None]:
        return await self._segments.open(name, offset, length)

    async def delete_segment(self, name: str, offset: int = 0, length: int = 0) -> None:
        await self._segments.delete(name)

    async def delete_segments(self, upload_id: str) -> None:
        await self._segments.delete_all(upload_id)

    async def join_segments(self, upload_id: str, names: list[str], number: int) -> str | None:
        return await self._segments.join(upload_id, names, number)

    async def stage_piece(
        self, name: str, size: int, chunks: AsyncIterable[bytes], same: Callable[[], bool]
    ) -> StagedBlob:
        return await self._segments.stage(name, size, chunks, same)

    # Objects by key under the prefix, for the pieces of uploads (S3Segments).

    async def delete_objects(self, prefix: str) -> None:
        with _store_errors("listing objects"):
            async for batch in obstore.list(self._store, prefix):
                for meta in batch:
                    await self.delete_object(meta["path"])

    async def write_object(self, path: str, chunks: AsyncIterable[bytes]) -> _Upload:
        """Stream `chunks` to a new object at `path`; nothing of it is left on failure."""
        upload = _Upload(self._store, path)
        try:
            async for piece in in_pieces(chunks):
                await upload.write(piece)
            await upload.finish()
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await upload.abandon(exc)
            raise
        return upload

    async def delete(self, key: str) -> None:
        await self.delete_object(_blob_path(key))

    async def stat(self, key: str) -> BlobStat | None:
        size = await self.object_size(_blob_path(key))
        return None if size is None else BlobStat(key=key, size=size)

    async def sweep_staging(self, older_than: timedelta) -> int:
        cutoff = datetime.now(UTC) - older_than
        dropped = 0
        with _store_errors("listing staged blobs"):
            async for batch in obstore.list(self._store, "staging"):
                for meta in batch:
                    token = meta["path"].rpartition("/")[2]
                    if _TOKEN.fullmatch(token) and meta["last_modified"] < cutoff:
                        await self.delete_object(_staged_path(token))
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

    async def object_size(self, path: str) -> int | None:
        """The object's size, or None when there is no such object."""
        try:
            with _store_errors("looking up a blob"):
                meta = await obstore.head_async(self._store, path)
        except FileNotFoundError:
            return None
        return meta["size"]

    async def delete_object(self, path: str) -> None:
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
        # Failures here are logged in one line: the store is most likely down (the
        # caller's error says so), and each upload under way would repeat a traceback.
        if not self._completing:  # once closing began, the writer cannot abort any more
            try:
                await self._writer.__aexit__(type(exc), exc, exc.__traceback__)
            except Exception as e:
                log.warning("could not abort the upload to %s (%s)", self._path, type(e).__name__)
        else:  # completing failed or was cancelled, perhaps after it took
            try:
                with _store_errors("deleting a staged blob"):
                    await obstore.delete_async(self._store, self._path)
            except Exception as e:
                log.warning("could not delete the staged blob %s (%s)", self._path, e)

    async def _settle(self) -> None:
        if self._in_flight is not None:
            # Shielded: if this wait is cancelled the piece still lands and abandon() waits.
            with _store_errors("uploading"):
                await asyncio.shield(self._in_flight)
            self._in_flight = None


async def _chunks_of(result: GetResult, length: int) -> AsyncGenerator[bytes, None]:
    """The body of a ranged GET in chunks of about CHUNK_SIZE, checked to be `length` long."""
    received = 0
    with _store_errors("reading a blob"):
        async for chunk in result.stream(min_chunk_size=CHUNK_SIZE):
            received += len(chunk)
            yield chunk
    if received < length:
        raise BlobMissing("blob is shorter than its recorded size")


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
