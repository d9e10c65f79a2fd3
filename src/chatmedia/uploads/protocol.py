"""The tus 1.0 headers, parsed and checked: what a request says, or a named error.

Tus-Resumable: 1.0.0            every request but OPTIONS (412 otherwise)
Upload-Length / Upload-Defer-Length: 1
Upload-Offset                   where a PATCH's bytes go
Upload-Metadata: key base64,…   the file's name, type, conversation and properties
Upload-Checksum: sha256 base64  of one PATCH's bytes (460 when they differ)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chatmedia.errors import InvalidUploadHeader, TusVersionUnsupported

TUS_VERSION = "1.0.0"
EXTENSIONS = (
    "creation", "creation-with-upload", "creation-defer-length", "expiration", "checksum",
    "termination",
)  # fmt: skip
CHECKSUM_ALGORITHMS = ("sha1", "sha256", "md5")
PATCH_TYPE = "application/offset+octet-stream"
_KEY = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")
_NUMBER = re.compile(r"[0-9]{1,19}")
# Upload-Metadata: at most this many pairs and characters.
MAX_METADATA_PAIRS = 64
MAX_METADATA_LENGTH = 16 * 1024


@dataclass(frozen=True, slots=True)
class Checksum:
    """A chunk's expected digest."""

    algorithm: str
    digest: bytes

    def hasher(self) -> Any:
        """A new hash object of the algorithm."""
        return hashlib.new(self.algorithm, usedforsecurity=False)


def check_version(headers: Mapping[str, str]) -> None:
    """Raise TusVersionUnsupported unless the request speaks tus 1.0.0."""
    if headers.get("tus-resumable") != TUS_VERSION:
        raise TusVersionUnsupported(f"send Tus-Resumable: {TUS_VERSION}")


def number(headers: Mapping[str, str], name: str) -> int | None:
    """A non-negative integer header, or None when absent."""
    text = headers.get(name.lower())
    if text is None:
        return None
    text = text.strip(" \t")  # HTTP's optional white space, and nothing else
    if not _NUMBER.fullmatch(text):
        raise InvalidUploadHeader(f"{name} must be a non-negative integer")
    return int(text)


def creation_length(headers: Mapping[str, str]) -> int | None:
    """The Upload-Length of a creation; None when deferred (Upload-Defer-Length: 1)."""
    length = number(headers, "Upload-Length")
    deferred = headers.get("upload-defer-length")
    if deferred is not None and deferred.strip() != "1":
        raise InvalidUploadHeader("Upload-Defer-Length must be 1")
    if (length is None) == (deferred is None):
        raise InvalidUploadHeader("send either Upload-Length or Upload-Defer-Length: 1")
    return length


def metadata(headers: Mapping[str, str]) -> dict[str, str]:
    """The Upload-Metadata pairs: `key base64-value` separated by commas (a key alone has
    an empty value); values must be UTF-8."""
    text = headers.get("upload-metadata", "").strip()
    if not text:
        return {}
    if len(text) > MAX_METADATA_LENGTH:
        raise InvalidUploadHeader("Upload-Metadata is too long")
    pairs: dict[str, str] = {}
    for item in text.split(","):
        key, _, encoded = item.strip().partition(" ")
        if not _KEY.fullmatch(key) or key in pairs or " " in encoded.strip():
            raise InvalidUploadHeader("Upload-Metadata is not `key base64,…` with unique keys")
        try:
            pairs[key] = base64.b64decode(encoded.strip(), validate=True).decode()
        except (ValueError, binascii.Error):  # not ASCII, not base64, not UTF-8
            raise InvalidUploadHeader(f"Upload-Metadata {key} is not base64 UTF-8") from None
    if len(pairs) > MAX_METADATA_PAIRS:
        raise InvalidUploadHeader("Upload-Metadata has too many pairs")
    return pairs


def checksum(headers: Mapping[str, str]) -> Checksum | None:
    """The Upload-Checksum of a PATCH, if any."""
    text = headers.get("upload-checksum")
    if text is None:
        return None
    algorithm, _, encoded = text.strip().partition(" ")
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise InvalidUploadHeader(f"Upload-Checksum takes {', '.join(CHECKSUM_ALGORITHMS)}")
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except (ValueError, binascii.Error):  # not ASCII, not base64
        raise InvalidUploadHeader("Upload-Checksum's digest is not base64") from None
    if len(digest) != hashlib.new(algorithm, usedforsecurity=False).digest_size:
        raise InvalidUploadHeader("Upload-Checksum's digest has the wrong length")
    return Checksum(algorithm, digest)


def encode_metadata(pairs: Mapping[str, str]) -> str:
    """Upload-Metadata for these pairs (what HEAD answers with)."""
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in pairs.items())
