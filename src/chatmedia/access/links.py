"""Signed, expiring file links: a content URL that works without any header, for a
browser's <img>, an agent desk's download link or a provider fetching `mediaUrl`.

    /v1/files/{id}/content?exp=UNIX&disp=inline&g=GEN&kid=KID&sig=HMAC
    /v1/files/{id}/preview?size=320&exp=…     (a preview: the size is signed too)

The HMAC-SHA256, in URL-safe base64, covers the method (GET, which HEAD is too), the
path, the expiry, the signing key's id, the disposition and the file's link generation:
raising the generation (a link revocation) ends every earlier link of the file, and a
deleted file is gone whatever its links say. Signing keys form a ring: the first signs,
every one is accepted, so a key can be rotated out once its links have expired. They are
never API keys and never logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal
from urllib.parse import urlencode

from chatmedia.errors import InvalidSignature, LinkExpired

Disposition = Literal["inline", "attachment"]
LINK_PARAMETERS = ("exp", "disp", "g", "kid", "sig")
MAX_TTL = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class Grant:
    """What a valid link allows: its file's content, with this disposition, while the
    file's link generation is still `generation`."""

    generation: int
    disposition: Disposition


def key_id(secret: bytes) -> str:
    """A signing key's public name: not the key, nor anything that helps guess it."""
    return hashlib.sha256(b"chatmedia link key\0" + secret).hexdigest()[:12]


class Links:
    """Signs links with the first key of a ring and checks them against every key. The
    ring is the configured one, or else the key the server generated and keeps in the
    database (installed at start with `use`, so that every node signs alike)."""

    def __init__(self, ttl: timedelta, public_url: str, ring: tuple[bytes, ...] = ()) -> None:
        self.ttl = ttl
        self._public_url = public_url
        self._ring: dict[str, bytes] = {}
        self._signing: tuple[str, bytes] | None = None
        if ring:
            self.use(ring)

    @property
    def ready(self) -> bool:
        """True once it has keys."""
        return self._signing is not None

    def use(self, ring: tuple[bytes, ...]) -> None:
        """Sign with the first of `ring`, accept every one."""
        self._ring = {key_id(k): k for k in ring}
        self._signing = key_id(ring[0]), ring[0]

    def content_url(
        self,
        file_id: str,
        generation: int,
        *,
        ttl: timedelta | None = None,
        disposition: Disposition = "inline",
    ) -> tuple[str, int]:
        """A signed content URL of the file, valid `ttl` (the configured TTL by default)
        from now; and when it expires (Unix time)."""
        path = content_path(file_id)
        query, expires = self.sign(path, generation, ttl=ttl, disposition=disposition)
        return f"{self._public_url}{path}?{query}", expires

    def preview_url(self, file_id: str, generation: int, size: int) -> str:
        """A signed URL of the file's preview for box `size`, valid the configured TTL."""
        query, _ = self.sign(preview_resource(file_id, size), generation)
        return f"{self._public_url}{preview_path(file_id)}?size={size}&{query}"

    def file_engine_url(self, stored_name: str, generation: int) -> str:
        """A signed file-engine download URL (CHATMEDIA_COMPAT_DOWNLOAD=signed)."""
        query, _ = self.sign(file_engine_resource(stored_name), generation)
        name = urlencode({"filename": stored_name})
        return f"{self._public_url}{FILE_ENGINE_DOWNLOAD}?{name}&{query}"

    def sign(
        self,
        resource: str,
        generation: int,
        *,
        ttl: timedelta | None = None,
        disposition: Disposition = "inline",
    ) -> tuple[str, int]:
        """The query parameters that sign `resource` (a path, with what names the file),
        and when they expire (Unix time)."""
        assert self._signing is not None, "no signing key yet"
        # Rounded up: a link lives at least as long as asked (a second at most longer).
        expires = math.ceil(time.time() + (ttl or self.ttl).total_seconds())
        if ttl is None:
            # Rounded up to the minute: within a minute a File keeps one url, which browsers
            # and caches then reuse; it lives at most a minute past CHATMEDIA_URL_TTL.
            expires = -(-expires // 60) * 60
        kid, secret = self._signing
        signature = _sign(secret, resource, expires, kid, disposition, generation)
        query = {"exp": expires, "disp": disposition, "g": generation, "kid": kid}
        return f"{urlencode(query)}&sig={signature}", expires

    def check(self, resource: str, params: Mapping[str, str], now: float | None = None) -> Grant:
        """The grant of a signed request for `resource`; raises InvalidSignature for a link
        tampered with, unsigned or signed by a key not in the ring, LinkExpired for one
        past its time."""
        try:
            expires, generation = int(params["exp"]), int(params["g"])
            kid, disposition, signature = params["kid"], params["disp"], params["sig"]
        except (KeyError, ValueError):
            raise InvalidSignature("the link is not signed") from None
        secret = self._ring.get(kid)
        if secret is None or disposition not in ("inline", "attachment"):
            raise InvalidSignature("the link's signature is not valid")
        expected = _sign(secret, resource, expires, kid, disposition, generation)
        if not hmac.compare_digest(expected, signature):
            raise InvalidSignature("the link's signature is not valid")
        if expires < (now or time.time()):
            raise LinkExpired("the link has expired; ask for a new one")
        return Grant(generation, disposition)  # type: ignore[arg-type]


def content_path(file_id: str) -> str:
    """The path of a file's content, which its links sign."""
    return f"/v1/files/{file_id}/content"


def preview_path(file_id: str) -> str:
    """The path of a file's previews (`?size=` picks one)."""
    return f"/v1/files/{file_id}/preview"


def preview_resource(file_id: str, size: int) -> str:
    """What a preview link signs: the path and the size."""
    return f"{preview_path(file_id)}\n{size}"


FILE_ENGINE_DOWNLOAD = "/file-engine/api/downloadFileStream"


def file_engine_resource(stored_name: str) -> str:
    """What a file-engine download link signs: the path and the file's name."""
    return f"{FILE_ENGINE_DOWNLOAD}\n{stored_name}"


def is_signed(params: Mapping[str, str]) -> bool:
    """True when a request carries any of a link's parameters: it is then a link, which
    needs no key and must be valid whole."""
    return any(name in params for name in LINK_PARAMETERS)


def _sign(
    secret: bytes, resource: str, expires: int, kid: str, disposition: str, generation: int
) -> str:
    message = f"GET\n{resource}\n{expires}\n{kid}\n{disposition}\n{generation}".encode()
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")
