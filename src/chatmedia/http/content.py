"""Answering a request for a file's bytes: conditional requests, a single Range, and the
headers that keep content passive in our origin."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from email.utils import format_datetime

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import Receive, Scope, Send

from chatmedia.access.content import check_content
from chatmedia.http.ranges import ByteRange, Validators, parse_range
from chatmedia.mediatypes import is_passive
from chatmedia.models import FileRecord
from chatmedia.naming import content_disposition
from chatmedia.services import Services
from chatmedia.storage import BlobStore, LocalPaths

# Content under one id never changes, but a deleted file must stop being served soon.
CACHE_CONTROL = "private, max-age=3600"
# How long a redirect to the store works: long enough to start a download, short enough
# that a leaked URL soon stops working (a download under way continues past it).
PRESIGNED_URL_TTL = timedelta(minutes=5)


async def content_response(
    request: Request, record: FileRecord, services: Services, *, attachment: bool = False
) -> Response:
    """The response to GET or HEAD of a file's content (RFC 9110 §13, §14): the bytes of a
    HOSTED file, a 307 to where an EXTERNAL file is. With the services' `presigner`, a
    HOSTED file that the client does not already have is a 307 to a short-lived URL of the
    store. Passive types are shown inline unless `attachment` (a link may ask for it).
    Content its scan holds back is refused (chatmedia.access.content)."""
    check_content(record, services.settings.scan_fail_open)
    if record.sha256 is None:
        assert record.url is not None
        return RedirectResponse(record.url, status_code=307)
    validators = Validators(etag=record.etag, last_modified=record.created_at)
    headers = {
        "ETag": record.etag,
        "Last-Modified": format_datetime(record.created_at, usegmt=True),
        "Cache-Control": CACHE_CONTROL,
        "Accept-Ranges": "bytes",
    }
    h = request.headers
    validators.check_preconditions(h.get("if-match"), h.get("if-unmodified-since"))
    if validators.not_modified(h.get("if-none-match"), h.get("if-modified-since")):
        return Response(status_code=304, headers=headers)
    if services.presigner is not None:
        # The store answers Range itself; the URL is a credential, so nobody may keep it.
        url = await services.presigner.presigned_url(record.sha256, PRESIGNED_URL_TTL)
        return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
    inline = is_passive(record.content_type) and not attachment
    headers |= {
        "Content-Type": record.content_type,
        "Content-Disposition": content_disposition(record.name, inline=inline),
        # Even if a browser is asked to render it, nothing in it runs in our origin.
        "Content-Security-Policy": "sandbox",
    }
    byte_range = None
    if validators.range_applies(h.get("if-range")):
        byte_range = parse_range(h.get("range"), record.size)
    accel = services.settings.accel_redirect
    if accel is not None and "if-range" not in h and (byte_range or "range" not in h):
        # Every check is done: nginx sends the bytes (and the one Range asked for) from its
        # internal location, with its own Accept-Ranges and Last-Modified (docs/deploy.md).
        location = accel + "/".join((record.sha256[:2], record.sha256[2:4], record.sha256))
        del headers["Accept-Ranges"], headers["Last-Modified"]
        return Response(status_code=200, headers=headers | {"X-Accel-Redirect": location})
    return BlobResponse(
        services.store,
        services.local_paths,
        record.sha256,
        byte_range or ByteRange(0, record.size, record.size),
        partial=byte_range is not None,
        headers=headers,
        send_body=request.method != "HEAD",
    )


class BlobResponse(Response):
    """Streams a byte range of a blob. A whole blob of `local_paths` (the store, when its
    blobs are files here) goes out through the server's `http.response.pathsend`
    extension when it has one, without Python reading it."""

    def __init__(
        self,
        store: BlobStore,
        local_paths: LocalPaths | None,
        key: str,
        byte_range: ByteRange,
        *,
        partial: bool,
        headers: Mapping[str, str],
        send_body: bool,
    ) -> None:
        length = byte_range.end - byte_range.start
        all_headers = dict(headers) | {"Content-Length": str(length)}
        if partial:
            all_headers["Content-Range"] = byte_range.content_range
        super().__init__(status_code=206 if partial else 200, headers=all_headers)
        self._store = store
        self._local_paths = local_paths
        self._key = key
        self._range = byte_range
        self._partial = partial
        self._send_body = send_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = {
            "type": "http.response.start",
            "status": self.status_code,
            "headers": self.raw_headers,
        }
        if not self._send_body:
            await send(start)
            await send({"type": "http.response.body", "body": b""})
            return
        if (
            not self._partial
            and self._local_paths is not None
            and "http.response.pathsend" in scope.get("extensions", {})
        ):
            await send(start)
            path = self._local_paths.local_path(self._key)
            await send({"type": "http.response.pathsend", "path": str(path)})
            return
        # Opened before the headers go out, so a missing blob is still a clean 500.
        chunks = await self._store.open_range(self._key, self._range.start, self._range.end)
        try:
            await send(start)
            # Each chunk is sent once the next is read, so the last one ends the body: a
            # send costs a round through the server, and most ranges are one chunk.
            last = b""
            async for chunk in chunks:
                if last:
                    await send({"type": "http.response.body", "body": last, "more_body": True})
                last = chunk
            await send({"type": "http.response.body", "body": last})
        finally:
            await chunks.aclose()
