"""Byte ranges (RFC 9110 §14) and conditional requests (RFC 9110 §13) for downloads.

Only a single range is served (206); a request for several ranges, or a Range header that
does not parse, is answered with the whole content (200), as §14.2 allows. Every check
here runs in time linear in the header's length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime

from chatmedia.errors import PreconditionFailed, RangeNotSatisfiable

# Longer Range headers are ignored outright (no client needs more to ask for one range).
MAX_RANGE_HEADER = 200
# Positions with more digits than this are past any size we store.
_MAX_DIGITS = 19
_RANGE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", re.IGNORECASE)
_ENTITY_TAG = re.compile(r'\s*(W/)?("[^"]*")\s*(?:,|$)')


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Bytes `start` to `end` (exclusive) of content of `size` bytes."""

    start: int
    end: int
    size: int

    @property
    def content_range(self) -> str:
        """The Content-Range header value (RFC 9110 §14.4)."""
        return f"bytes {self.start}-{self.end - 1}/{self.size}"


def _position(digits: str) -> int:
    return int(digits) if len(digits) <= _MAX_DIGITS else 1 << 64


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one range a Range header asks for, or None to send the whole content.

    Raises RangeNotSatisfiable (416) when the range is well-formed but lies outside the
    content (RFC 9110 §14.1.1-§14.1.3)."""
    if not header or len(header) > MAX_RANGE_HEADER:
        return None
    match = _RANGE.fullmatch(header)
    if match is None:  # another unit, several ranges, or not a range at all
        return None
    first, last = match.groups()
    if first:
        start = _position(first)
        if last and _position(last) < start:
            return None  # "bytes=5-2" is invalid: ignored (§14.1.1)
        if start >= size:
            raise RangeNotSatisfiable(size)
        end = min(_position(last) + 1, size) if last else size
        return ByteRange(start, end, size)
    if not last:
        return None  # "bytes=-"
    suffix = _position(last)
    if suffix == 0 or size == 0:
        raise RangeNotSatisfiable(size)
    return ByteRange(max(size - suffix, 0), size, size)


def entity_tags(header: str) -> list[tuple[bool, str]]:
    """The (weak, opaque-tag) pairs of an If-Match / If-None-Match list; [] if malformed."""
    tags = []
    position = 0
    while position < len(header):
        match = _ENTITY_TAG.match(header, position)
        if match is None:
            return []
        tags.append((match.group(1) is not None, match.group(2)))
        position = match.end()
    return tags


def _http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed if parsed.tzinfo is not None else None


@dataclass(frozen=True, slots=True)
class Validators:
    """A representation's current validators: its strong ETag and Last-Modified."""

    etag: str
    last_modified: datetime

    def not_modified(self, if_none_match: str | None, if_modified_since: str | None) -> bool:
        """RFC 9110 §13.1.2 (weak comparison) and §13.1.3: true means answer 304."""
        if if_none_match is not None:
            if if_none_match.strip() == "*":
                return True
            return any(tag == self.etag for _, tag in entity_tags(if_none_match))
        since = _http_date(if_modified_since)
        return since is not None and self._seconds() <= since

    def check_preconditions(self, if_match: str | None, if_unmodified_since: str | None) -> None:
        """RFC 9110 §13.1.1 (strong comparison) and §13.1.4: raise PreconditionFailed (412)."""
        if if_match is not None:
            if if_match.strip() == "*":
                return
            if not any(not weak and tag == self.etag for weak, tag in entity_tags(if_match)):
                raise PreconditionFailed("the file does not match If-Match")
            return
        since = _http_date(if_unmodified_since)
        if since is not None and self._seconds() > since:
            raise PreconditionFailed("the file was modified after If-Unmodified-Since")

    def range_applies(self, if_range: str | None) -> bool:
        """RFC 9110 §13.1.5: a Range is honoured only while If-Range still matches."""
        if if_range is None:
            return True
        value = if_range.strip()
        if value.startswith(('"', "W/")):
            return value == self.etag  # strong comparison; a weak tag never matches
        date = _http_date(value)
        return date is not None and date == self._seconds()

    def _seconds(self) -> datetime:
        return self.last_modified.replace(microsecond=0)
