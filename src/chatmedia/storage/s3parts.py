"""S3 multipart uploads whose parts different processes add: the five calls obstore does not
offer (0.12 adds parts only to an upload it began itself, in the same call), made with
httpx and signed with AWS Signature Version 4 (`sign`).

Why by hand: these calls are five plain HTTP requests with a signature that S3's
documentation specifies exactly; the alternative, botocore, is a second, blocking HTTP
stack and about 80 MB of service models for them. The signing is tested against SeaweedFS,
which checks every signature. It needs static credentials (the URL's or the AWS_*
variables): without them a store has no `MultipartParts` and resumable uploads keep their
pieces as objects of their own (chatmedia.storage.s3)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterable, Iterable
from datetime import UTC, datetime
from urllib.parse import quote

import httpx

from chatmedia.storage.base import BlobMissing, StoreUnavailable
from chatmedia.storage.s3url import S3Location

UNSIGNED = "UNSIGNED-PAYLOAD"
# S3's limits: parts are numbered 1 to 10,000, and all but the last hold at least 5 MiB.
MAX_PART_NUMBER = 10_000
MIN_PART_SIZE = 5 * 1024 * 1024


def sign(
    location: S3Location,
    method: str,
    url: httpx.URL,
    payload_hash: str = UNSIGNED,
    now: datetime | None = None,
) -> dict[str, str]:
    """The headers that sign a request to `url` with the location's static credentials
    (SigV4, service s3, signed headers host and x-amz-*)."""
    key_id, secret = location.access_key_id, location.secret_access_key
    if key_id is None or secret is None:
        raise ValueError("signing needs static credentials")
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    headers = {"host": url.netloc.decode("ascii"), "x-amz-content-sha256": payload_hash,
               "x-amz-date": stamp}  # fmt: skip
    if location.session_token:
        headers["x-amz-security-token"] = location.session_token
    names = sorted(headers)
    query = sorted(
        (quote(k, safe="-_.~"), quote(v, safe="-_.~"))
        for k, v in httpx.QueryParams(url.query.decode("ascii")).multi_items()
    )
    canonical = "\n".join(
        [
            method,
            quote(url.path, safe="/-_.~"),
            "&".join(f"{k}={v}" for k, v in query),
            "".join(f"{n}:{headers[n].strip()}\n" for n in names),
            ";".join(names),
            payload_hash,
        ]
    )
    scope = f"{stamp[:8]}/{location.region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = ("AWS4" + secret).encode()
    for part in (stamp[:8], location.region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={key_id}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    del headers["host"]  # httpx sends it
    return headers


class MultipartParts:
    """Multipart uploads under the location's bucket and prefix, by object key (relative to
    the prefix) and upload id."""

    def __init__(self, location: S3Location) -> None:
        self._location = location
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(30.0, connect=5.0), follow_redirects=False
        )

    async def create(self, key: str) -> str:
        """Begin a multipart upload to `key`; its upload id."""
        root = await self._call("POST", key, {"uploads": ""})
        return _text(root, "UploadId")

    async def uploads(self, prefix: str) -> list[tuple[str, str]]:
        """The multipart uploads under way to keys under `prefix`: (key, upload id), the
        oldest first (the first 1,000)."""
        root = await self._call("GET", "", {"uploads": "", "prefix": self._path(prefix)})
        cut = len(self._path(""))
        found = sorted(
            (_text(u, "Initiated"), _text(u, "Key")[cut:], _text(u, "UploadId"))
            for u in _all(root, "Upload")
        )
        return [(key, upload_id) for _, key, upload_id in found]

    async def put_part(
        self, key: str, upload_id: str, number: int, body: AsyncIterable[bytes], length: int
    ) -> None:
        """Upload part `number` of `length` bytes from `body`."""
        params = {"partNumber": str(number), "uploadId": upload_id}
        await self._call("PUT", key, params, body, length)

    async def parts(self, key: str, upload_id: str) -> dict[int, str]:
        """The parts uploaded so far: number -> ETag."""
        found: dict[int, str] = {}
        marker = "0"
        while True:
            params = {"uploadId": upload_id, "part-number-marker": marker}
            root = await self._call("GET", key, params)
            for part in _all(root, "Part"):
                found[int(_text(part, "PartNumber"))] = _text(part, "ETag")
            if _text(root, "IsTruncated", "false") != "true":
                return found
            marker = _text(root, "NextPartNumberMarker")

    async def complete(self, key: str, upload_id: str, parts: Iterable[tuple[int, str]]) -> None:
        """Join `parts` (number, ETag; in ascending order) into the object `key`."""
        items = "".join(
            f"<Part><PartNumber>{n}</PartNumber><ETag>{_escape(e)}</ETag></Part>" for n, e in parts
        )
        body = f"<CompleteMultipartUpload>{items}</CompleteMultipartUpload>".encode()
        root = await self._call("POST", key, {"uploadId": upload_id}, body)
        if root.tag.endswith("Error"):  # S3 may answer 200 and fail in the body
            raise StoreUnavailable(f"the S3 store did not complete the upload ({_code(root)})")

    async def abort(self, key: str, upload_id: str) -> None:
        """Drop an upload and its parts; one already gone is not an error."""
        with contextlib.suppress(BlobMissing):
            await self._call("DELETE", key, {"uploadId": upload_id})

    async def aclose(self) -> None:
        await self._client.aclose()

    def _path(self, key: str) -> str:
        prefix = self._location.prefix
        return f"{prefix}/{key}" if prefix else key

    def _url(self, key: str, params: dict[str, str]) -> httpx.URL:
        where = self._location
        path = "/" + quote(self._path(key), safe="/-_.~") if key else "/"
        if where.endpoint is not None and where.path_style:
            base = f"{where.endpoint}/{where.bucket}"
        elif where.endpoint is not None:
            scheme, _, host = where.endpoint.partition("://")
            base = f"{scheme}://{where.bucket}.{host}"
        elif where.path_style:
            base = f"https://s3.{where.region}.amazonaws.com/{where.bucket}"
        else:
            base = f"https://{where.bucket}.s3.{where.region}.amazonaws.com"
        return httpx.URL(base + path, params=params)

    async def _call(
        self,
        method: str,
        key: str,
        params: dict[str, str],
        body: bytes | AsyncIterable[bytes] = b"",
        length: int | None = None,
    ) -> ET.Element:
        url = self._url(key, params)
        payload = hashlib.sha256(body).hexdigest() if isinstance(body, bytes) else UNSIGNED
        headers = sign(self._location, method, url, payload)
        size = len(body) if isinstance(body, bytes) else length
        if size is not None and (size or method in ("PUT", "POST")):
            headers["content-length"] = str(size)
        try:
            response = await self._client.request(method, url, content=body, headers=headers)
        except httpx.TransportError as e:
            raise StoreUnavailable(f"the S3 store did not answer ({method} {key})") from e
        if response.status_code == 404:
            raise BlobMissing(f"no multipart upload or object at {key}")
        if response.status_code >= 500:
            raise StoreUnavailable(f"the S3 store failed ({response.status_code})")
        root = _xml(response.content)
        if response.status_code >= 300:
            raise OSError(f"S3 refused {method} ({response.status_code} {_code(root)})")
        return root


def _xml(text: bytes) -> ET.Element:
    """An answer's XML. The store is the operator's, and ElementTree neither fetches
    external entities nor (with expat 2.4.1 and later) expands nested ones without bound."""
    return ET.fromstring(text) if text.strip() else ET.Element("Empty")  # noqa: S314


def _all(root: ET.Element, name: str) -> list[ET.Element]:
    """The elements called `name`, in S3's namespace or none (some clones leave it out)."""
    return [e for e in root.iter() if e.tag.rpartition("}")[2] == name]


def _text(element: ET.Element, name: str, default: str | None = None) -> str:
    found = next((e for e in element if e.tag.rpartition("}")[2] == name), None)
    if found is None or found.text is None:
        if default is not None:
            return default
        raise StoreUnavailable(f"the S3 store's answer has no {name}")
    return found.text


def _code(root: ET.Element) -> str:
    return _text(root, "Code", "no code")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
