"""File names: sanitizing what clients send, the file-engine's stored names, and the
Content-Disposition header (RFC 6266, with RFC 5987 encoding for non-ASCII names)."""

from __future__ import annotations

import unicodedata
from urllib.parse import quote

MAX_NAME_LENGTH = 255
DEFAULT_NAME = "file"
_MAX_EXTENSION = 16
# Invisible direction controls turn "gpj.exe" into what looks like "exe.jpg".
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def sanitize_name(raw: str | None, default: str = DEFAULT_NAME) -> str:
    """A display name safe to show and to send in headers: the last path component only,
    without control or format characters (NUL, bidi overrides), NFC-normalized, trimmed,
    at most 255 characters with the extension kept. Never empty, never "." or "..".
    """
    text = unicodedata.normalize("NFC", raw or "")
    text = text.replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(
        c for c in text if c not in _BIDI and unicodedata.category(c) not in ("Cc", "Cf", "Cs")
    )
    text = text.strip()
    if not text.strip("."):
        return default
    return _truncate(text)


def _truncate(name: str) -> str:
    if len(name) <= MAX_NAME_LENGTH:
        return name
    stem, dot, ext = name.rpartition(".")
    if dot and stem and len(ext) < _MAX_EXTENSION:
        return stem[: MAX_NAME_LENGTH - len(ext) - 1].rstrip() + "." + ext
    return name[:MAX_NAME_LENGTH].rstrip()


def stored_name(conversation_id: str | None, name: str) -> str:
    """The unique name the file-engine API knows a file by: `<conversationId>_<name>`."""
    return f"{conversation_id}_{name}" if conversation_id else name


def with_suffix(name: str, suffix: str) -> str:
    """`name` with `-suffix` added before its extension ("a.png" -> "a-x1y2.png")."""
    stem, dot, ext = name.rpartition(".")
    if dot and stem and len(ext) < _MAX_EXTENSION:
        return f"{stem}-{suffix}.{ext}"
    return f"{name}-{suffix}"


def content_disposition(name: str, inline: bool) -> str:
    """RFC 6266 header value with an ASCII `filename=` fallback and RFC 5987 `filename*=`."""
    kind = "inline" if inline else "attachment"
    fallback = (
        "".join(
            c if 0x20 <= ord(c) < 0x7F and c not in '"\\%' else "_"
            for c in unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
        )
        or DEFAULT_NAME
    )
    if fallback == name:
        return f'{kind}; filename="{name}"'
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"
