"""Cursors for newest-first pages: a position in insertion order, not an offset, so pages
stay consistent while items are added. A cursor is opaque to clients; any string of
CURSOR_PATTERN is a position, so every cursor the OpenAPI document allows is taken."""

from __future__ import annotations

import re

from chatmedia.errors import InvalidCursor

CURSOR_PATTERN = r"^[0-9]{1,18}$"
_CURSOR = re.compile(CURSOR_PATTERN)


def encode_cursor(seq: int) -> str:
    """The cursor that continues after the item with this seq."""
    return str(seq)


def decode_cursor(cursor: str) -> int:
    """The position a cursor names: items older than it follow; raises InvalidCursor."""
    if not _CURSOR.fullmatch(cursor):
        raise InvalidCursor("a cursor is the nextCursor of a previous page")
    return int(cursor)
