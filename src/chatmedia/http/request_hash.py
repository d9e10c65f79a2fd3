"""A request's identity for Idempotency-Key: a hash of what makes two requests the same,
and the checks of the key itself."""

from __future__ import annotations

import hashlib

from starlette.types import Scope

from chatmedia.http.multipart import multipart_boundary

_BOUNDARY_TOKEN = b"\x00boundary\x00"


def valid_key(value: bytes) -> bool:
    """1 to 255 printable ASCII characters, without spaces."""
    return 1 <= len(value) <= 255 and all(0x21 <= b <= 0x7E for b in value)


class RequestHasher:
    """SHA-256 of a request's method, path, query, content type and body, fed with the body
    in chunks of any size. In a multipart/form-data body every occurrence of the boundary is
    hashed as a fixed token, and the boundary parameter is left out of the content type: a
    retry with a new random boundary hashes the same."""

    def __init__(self, method: str, path: str, query: bytes, content_type: str | None) -> None:
        media_type, boundary = _split_boundary(content_type or "")
        self._sha = hashlib.sha256()
        # Length-prefixed, so that no two different requests feed the same bytes.
        for part in (method.encode(), path.encode("utf-8", "surrogateescape"), query, media_type):
            self._sha.update(len(part).to_bytes(8, "big") + part)
        self._boundary = boundary
        self._pending = b""
        self.size = 0

    @classmethod
    def for_scope(cls, scope: Scope) -> RequestHasher:
        """A hasher for the request of an ASGI HTTP scope."""
        content_type = header_values(scope, b"content-type")[b"content-type"]
        return cls(
            scope["method"],
            scope["path"],
            scope.get("query_string", b""),
            content_type[0].decode("latin-1") if content_type else None,
        )

    def update(self, chunk: bytes) -> None:
        """Feed the next bytes of the body."""
        self.size += len(chunk)
        boundary = self._boundary
        if not boundary:
            self._sha.update(chunk)
            return
        data = self._pending + chunk if self._pending else chunk
        view = memoryview(data)
        # A match that starts before `safe` ends within `data`; bytes from there on may
        # begin one that the next chunk completes, so they wait for it (fewer than
        # len(boundary) bytes). Matching leftmost first, without overlaps, as bytes.replace.
        safe = len(data) - len(boundary) + 1
        start = 0
        while (found := data.find(boundary, start)) != -1:
            self._sha.update(view[start:found])
            self._sha.update(_BOUNDARY_TOKEN)
            start = found + len(boundary)
        keep = max(start, safe)
        self._sha.update(view[start:keep])
        self._pending = data[keep:]

    def hexdigest(self) -> str:
        """The digest of everything fed so far (more may be fed after)."""
        sha = self._sha.copy()
        sha.update(self._pending)  # too short to hold a boundary
        return sha.hexdigest()


def _split_boundary(content_type: str) -> tuple[bytes, bytes]:
    """The content type without its boundary parameter, and the boundary of a
    multipart/form-data type (else b""), found as the app's multipart parser finds it."""
    media_type, *params = content_type.split(";")
    media_type = media_type.strip().lower()
    boundary = b""
    if media_type == "multipart/form-data":
        # As the multipart reader finds it; without one, the bytes are hashed as they are.
        boundary = multipart_boundary(content_type) or b""
    kept = [media_type]
    kept += [p.strip() for p in params if not (boundary and _param_name(p) == "boundary")]
    return "; ".join(kept).encode("latin-1", "replace"), boundary


def _param_name(param: str) -> str:
    return param.partition("=")[0].strip().lower()


def header_values(scope: Scope, *names: bytes) -> dict[bytes, list[bytes]]:
    values: dict[bytes, list[bytes]] = {name: [] for name in names}
    for name, value in scope.get("headers", ()):
        lowered = bytes(name).lower()
        if lowered in values:
            values[lowered].append(bytes(value))
    return values
