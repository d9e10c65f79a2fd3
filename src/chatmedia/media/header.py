"""Image dimensions from the first bytes of a file, read in the server process.

No decoder runs here: the headers of JPEG, PNG, GIF and WebP are parsed by hand, a few
fields at known offsets, so that hostile bytes meet only bounds-checked slicing. The size
returned is the displayed one, after the EXIF orientation (EXIF 2.32 §4.6.4, tag 0x0112),
as the sandboxed decoder (chatmedia.media.images) shows the picture.
"""

from __future__ import annotations

import struct

# How many bytes a caller should pass; a JPEG whose frame header lies further gives None.
HEAD_SIZE = 64 * 1024

_ORIENTATION_TAG = 0x0112
_SHORT = 3
# JPEG start-of-frame markers: SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# JPEG markers that stand alone, without a length: TEM, RST0..RST7, SOI, EOI.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xDA)})
_SOS = 0xDA
_APP1 = 0xE1


def image_dimensions(head: bytes) -> tuple[int, int] | None:
    """The displayed (width, height) of a JPEG, PNG, GIF or WebP from its first bytes (up
    to HEAD_SIZE), or None when they do not tell it. Never raises, never decodes pixels."""
    try:
        found = _dimensions(head)
    except (struct.error, IndexError, ValueError):
        return None
    if found is None:
        return None
    width, height, orientation = found
    if width <= 0 or height <= 0:
        return None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _dimensions(head: bytes) -> tuple[int, int, int] | None:
    if head.startswith(b"\xff\xd8"):
        return _jpeg(head)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return _png(head)
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        width, height = struct.unpack_from("<HH", head, 6)
        return width, height, 1
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _webp(head)
    return None


def _jpeg(head: bytes) -> tuple[int, int, int] | None:
    """Walk the marker segments up to the scan (ITU T.81 §B.1): the frame header gives the
    size, an Exif APP1 segment the orientation."""
    orientation = 1
    size: tuple[int, int] | None = None
    at = 2
    while at + 4 <= len(head):
        if head[at] != 0xFF:
            return None  # not a marker where one must be
        marker = head[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _STANDALONE:
            at += 2
            continue
        if marker == _SOS:
            break
        (length,) = struct.unpack_from(">H", head, at + 2)
        if length < 2:
            return None
        body = head[at + 4 : at + 2 + length]
        if marker in _SOF and size is None and len(body) >= 5:
            height, width = struct.unpack_from(">HH", body, 1)
            size = (width, height)
        elif marker == _APP1 and orientation == 1 and body.startswith(b"Exif\x00\x00"):
            orientation = _exif_orientation(body[6:])
        at += 2 + length
    # The head may end after the frame header: an orientation given later is not seen.
    return None if size is None else (*size, orientation)


def _png(head: bytes) -> tuple[int, int, int] | None:
    """IHDR comes first (PNG §11.2.2); an eXIf chunk before the image data may orient it."""
    if head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack_from(">II", head, 16)
    orientation = 1
    at = 8
    while at + 8 <= len(head):
        length, kind = struct.unpack_from(">I4s", head, at)
        if kind in (b"IDAT", b"IEND"):
            break
        if kind == b"eXIf":
            orientation = _exif_orientation(head[at + 8 : at + 8 + length])
            break
        at += 12 + length
    return width, height, orientation


def _webp(head: bytes) -> tuple[int, int, int] | None:
    """The first chunk says the size (RFC 9649 §2.5-2.7); an EXIF chunk, if within the
    head, the orientation."""
    kind = head[12:16]
    if kind == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", head, 26)
        return width & 0x3FFF, height & 0x3FFF, 1
    if kind == b"VP8L" and head[20:21] == b"\x2f":
        (bits,) = struct.unpack_from("<I", head, 21)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, 1
    if kind != b"VP8X" or len(head) < 30:
        return None
    width = int.from_bytes(head[24:27], "little") + 1
    height = int.from_bytes(head[27:30], "little") + 1
    orientation = 1
    at = 12
    while at + 8 <= len(head):
        kind, length = struct.unpack_from("<4sI", head, at)
        if kind == b"EXIF":
            exif = head[at + 8 : at + 8 + length]
            orientation = _exif_orientation(exif.removeprefix(b"Exif\x00\x00"))
            break
        at += 8 + length + (length & 1)  # chunks are padded to an even length
    return width, height, orientation


def _exif_orientation(tiff: bytes) -> int:
    """The Orientation tag of IFD0 of a TIFF-structured EXIF block; 1 if absent or odd."""
    try:
        return _ifd0_orientation(tiff)
    except (struct.error, IndexError):
        return 1  # a damaged EXIF block does not hide the size


def _ifd0_orientation(tiff: bytes) -> int:
    if tiff[:4] == b"II*\x00":
        order = "<"
    elif tiff[:4] == b"MM\x00*":
        order = ">"
    else:
        return 1
    (ifd,) = struct.unpack_from(order + "I", tiff, 4)
    (count,) = struct.unpack_from(order + "H", tiff, ifd)
    for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
        tag, kind, number = struct.unpack_from(order + "HHI", tiff, entry)
        if tag == _ORIENTATION_TAG:
            (value,) = struct.unpack_from(order + "H", tiff, entry + 8)
            return value if kind == _SHORT and number == 1 and 1 <= value <= 8 else 1
    return 1
