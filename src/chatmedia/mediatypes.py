"""Content types: detection from the bytes, the allow/block policy, and how each is served."""

from __future__ import annotations

import mimetypes
import re
import threading
from dataclasses import dataclass

import magic

# libmagic needs more than the first few bytes for container formats (OOXML, MP4 boxes).
SNIFF_SIZE = 64 * 1024

OCTET_STREAM = "application/octet-stream"
# A file sent without a name is called this, with the extension of its detected type.
DEFAULT_NAME_STEM = "file"

# Types a browser may render in our origin without running anything (habit: passive-only
# inline serving). SVG is an image type that runs scripts, so it is not here.
_PASSIVE = re.compile(
    r"(image/(png|jpeg|gif|webp|bmp|avif|heic|heif|tiff|x-icon|vnd\.microsoft\.icon)"
    r"|audio/[\w.+-]+|video/[\w.+-]+|text/plain)"
)
_MIME_PATTERN = re.compile(r"[a-z0-9][\w.+-]*/(\*|[\w.+-]+)|\*/\*")
# A type a client declares (RFC 6838 §4.2 restricted names), in any case; published as
# the pattern of such fields in the OpenAPI document.
CONTENT_TYPE_PATTERN = (
    r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$"
)
_CONTENT_TYPE = re.compile(CONTENT_TYPE_PATTERN)
# One libmagic handle: each loads its own copy of the magic database (megabytes), and a
# handle is not thread-safe, so threads take turns (a detection takes about a millisecond).
_magic_lock = threading.Lock()
_magic: magic.Magic | None = None


def detect(head: bytes) -> str:
    """The MIME type of content whose first bytes are `head`, decided by libmagic.

    Blocking (a few hundred microseconds): call it from a thread.
    """
    global _magic
    if not head:
        return OCTET_STREAM
    with _magic_lock:
        if _magic is None:
            _magic = magic.Magic(mime=True)
        found: str = _magic.from_buffer(head)
    return found if _MIME_PATTERN.fullmatch(found) else OCTET_STREAM


def declared_type(text: str) -> str | None:
    """A type a client declares, lower-cased; None when it is not a concrete MIME type
    ("image/png", not "image/*" nor "image/png; q=1")."""
    return text.lower() if _CONTENT_TYPE.fullmatch(text) else None


def is_passive(content_type: str) -> bool:
    """True when a browser may show this type inline without running active content."""
    return _PASSIVE.fullmatch(content_type) is not None


def extension_for(content_type: str) -> str:
    """A conventional file extension for a type (".png"), or "" when there is none."""
    return mimetypes.guess_extension(content_type) or ""


def parse_type_list(text: str) -> tuple[str, ...]:
    """Parse a comma-separated list of MIME patterns ("image/*", "application/pdf") or file
    extensions ("pdf", ".docx") into MIME patterns. Raises ValueError naming a bad item."""
    patterns = []
    for raw in text.split(","):
        item = raw.strip().lower()
        if not item:
            continue
        if "/" in item:
            if not _MIME_PATTERN.fullmatch(item):
                raise ValueError(f"'{raw.strip()}' is not a MIME type pattern")
            patterns.append(item)
            continue
        guessed, _ = mimetypes.guess_type("x." + item.lstrip("."), strict=False)
        if guessed is None:
            raise ValueError(f"'{raw.strip()}' is not a known file extension")
        patterns.append(guessed)
    return tuple(patterns)


def _matches(content_type: str, pattern: str) -> bool:
    if pattern == "*/*":
        return True
    if pattern.endswith("/*"):
        return content_type.startswith(pattern[:-1])
    return content_type == pattern


@dataclass(frozen=True, slots=True)
class TypePolicy:
    """Which detected content types may be stored. Blocked wins over allowed; an empty
    allow-list allows everything."""

    allowed: tuple[str, ...] = ()
    blocked: tuple[str, ...] = ()

    def permits(self, content_type: str) -> bool:
        """True when a file of this (detected) type may be stored."""
        if any(_matches(content_type, p) for p in self.blocked):
            return False
        return not self.allowed or any(_matches(content_type, p) for p in self.allowed)
