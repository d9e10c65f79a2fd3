"""Opaque cursors for newest-first pages: a position in insertion order, not an offset, so
pages stay consistent while items are added."""

from __future__ import annotations

import base64
import binascii

from chatmedia.errors import InvalidCursor


def encode_cursor(seq: int) -> str:
    """The cursor that continues after the item with this seq."""
    return base64.urlsafe_b64encode(f"s{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The seq a cursor names; raises InvalidCursor for anything this server did not make."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if text[:1] == "s" and text[1:].isdigit() and len(text) < 21:
            return int(text[1:])
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise InvalidCursor("the cursor is not one this server handed out")
