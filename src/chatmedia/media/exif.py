"""What a metadata block says about where a photo was taken, and the block without it
(used by chatmedia.media.strip, which finds the blocks in JPEG, PNG and WebP files).

EXIF. A block is a TIFF file without pixels (CIPA DC-008, TIFF 6.0): an 8-byte header
("II*\\0" little-endian or "MM\\0*" big-endian, then the offset of IFD0) and image file
directories. An IFD is a 2-byte entry count, 12-byte entries (tag, type, count, then the
value itself when it fits in 4 bytes, else its offset) and the 4-byte offset of the next
IFD (IFD0 → IFD1, the thumbnail's). Offsets count from the header's first byte. IFD0's
tag 0x8825 points at the GPS IFD; tag 0x0112 is the orientation. Blocks are hostile
input: every offset is checked against the block's length, the IFD chain is followed at
most MAX_IFDS deep and never into an IFD already seen, and entry counts are bounded by
the block itself. What cannot be followed safely raises MalformedExif, nothing else.

XMP, IPTC and PNG text. These are not edited, only tested: a block that names a place is
removed whole by the caller. XMP names a place when an element or attribute local name is
GPS*, *Latitude, *Longitude, City, State, Country*, Location*, Sublocation,
ProvinceState or WorldRegion, whatever its namespace prefix (exif, photoshop,
Iptc4xmpCore, Iptc4xmpExt, drone-dji...); the test errs towards removal. IPTC-IIM names
one in its location records.
"""

from __future__ import annotations

import binascii
import re
import struct
import zlib

GPS_IFD = 0x8825
ORIENTATION = 0x0112
# IFD0, IFD1 and a few more: a longer chain is broken or hostile.
MAX_IFDS = 8
_HEADERS = {b"II*\0": "<", b"MM\0*": ">"}
# Bytes per value of each TIFF field type (TIFF 6.0 §2, plus 13 = IFD from TIFF Tech Note 1).
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
_LONG, _SHORT, _IFD = 4, 3, 13

# The most a compressed PNG text chunk may inflate to.
INFLATE_LIMIT = 4 << 20
# An element or attribute local name that names a place, after a prefix's colon or a "<".
_PLACE = re.compile(
    rb"[:<](?:gps\w*|\w*latitude|\w*longitude|city|state|countr\w*|(?:sub)?location\w*"
    rb"|provincestate|worldregion)(?=[\s=>/\"'])",
    re.IGNORECASE,
)
# IPTC-IIM application records (0x1C 0x02) that name a place: content location code and
# name (26, 27), city (90), sublocation (92), province/state (95), country code and name
# (100, 101); and Photoshop image resources holding EXIF (0x0422, 0x0423).
_IPTC_PLACE = re.compile(rb"\x1c\x02[\x1a\x1b\x5a\x5c\x5f\x64\x65]|8BIM\x04[\x22\x23]")


class MalformedExif(Exception):
    """The block's TIFF structure cannot be followed safely; the message says where."""


def reduce(payload: bytes, *, orientation_only: bool) -> bytes | None:
    """An EXIF payload (a TIFF block, or "Exif\\0\\0" and one as in JPEG's APP1) without
    its GPS IFD, or with only its orientation; None when nothing of it may stay: no
    orientation, or a structure that cannot be followed safely."""
    skip = 6 if payload.startswith(b"Exif\0") else 0
    try:
        block = (
            just_orientation(payload[skip:]) if orientation_only else without_gps(payload[skip:])
        )
    except MalformedExif:
        return None
    return None if block is None else payload[:skip] + block


def has_gps(payload: bytes) -> bool:
    """Whether an EXIF payload has a GPS IFD, or may have one that cannot be followed;
    False for bytes that are not EXIF at all."""
    block = payload[6:] if payload.startswith(b"Exif\0") else payload
    if block[:4] not in _HEADERS:
        return False
    try:
        return without_gps(block) != block
    except MalformedExif:
        return True


def without_gps(block: bytes) -> bytes:
    """The block, the same length, with every GPS IFD gone: the IFD and the values it
    points at zeroed, and its 0x8825 entry taken out of IFD0 (and of any later IFD in the
    chain) by shifting the later entries up. A block without GPS comes back unchanged.

    Raises MalformedExif when IFD0 cannot be read or a GPS pointer leads anywhere unsafe.
    """
    order, first = _header(block)
    ifds = _chain(block, order, first)
    # The bytes no zeroing may touch: the header and every IFD's table.
    tables = [(0, 8)] + [(offset, _end(count, offset)) for offset, count in ifds]
    out = bytearray(block)
    for offset, count in ifds:
        gps = [i for i in range(count) if _u16(block, order, _entry(offset, i)) == GPS_IFD]
        for index in gps:
            for start, stop in _gps_ranges(block, order, _entry(offset, index)):
                if any(start < t_stop and t_start < stop for t_start, t_stop in tables):
                    raise MalformedExif(f"GPS data at {start} overlaps an IFD")
                out[start:stop] = bytes(stop - start)
        for removed, index in enumerate(reversed(gps)):
            _remove_entry(out, order, offset, count - removed, index)
    return bytes(out)


def just_orientation(block: bytes) -> bytes | None:
    """A minimal block in the same byte order holding only IFD0's orientation, or None
    when IFD0 has no usable orientation (a SHORT). Raises MalformedExif when IFD0 cannot
    be read."""
    order, first = _header(block)
    count = _ifd(block, order, first)
    for i in range(count):
        at = _entry(first, i)
        tag, kind, number = struct.unpack_from(order + "HHI", block, at)
        if tag == ORIENTATION and kind == _SHORT and number >= 1:
            value = block[at + 8 : at + 10]
            return (
                block[:4]
                + struct.pack(order + "IHHHI", 8, 1, ORIENTATION, _SHORT, 1)
                + value
                + bytes(6)  # the value field's padding, then "no next IFD"
            )
    return None


def _header(block: bytes) -> tuple[str, int]:
    """The byte order ("<" or ">") and the offset of IFD0."""
    order = _HEADERS.get(block[:4])
    if order is None or len(block) < 8:
        raise MalformedExif("no TIFF header")
    return order, _u32(block, order, 4)


def _ifd(block: bytes, order: str, offset: int) -> int:
    """The entry count of the IFD at offset, checked to lie wholly inside the block."""
    if offset < 8 or offset + 2 > len(block):
        raise MalformedExif(f"IFD offset {offset} outside the block")
    count = _u16(block, order, offset)
    if _end(count, offset) > len(block):
        raise MalformedExif(f"IFD at {offset} with {count} entries runs past the block")
    return count


def _chain(block: bytes, order: str, first: int) -> list[tuple[int, int]]:
    """(offset, entry count) of IFD0 and the IFDs chained after it. A broken link after
    IFD0 ends the chain: no reader can follow it either."""
    ifds = [(first, _ifd(block, order, first))]
    seen = {first}
    while len(ifds) < MAX_IFDS:
        offset, count = ifds[-1]
        following = _u32(block, order, _end(count, offset) - 4)
        if following == 0 or following in seen:
            break
        try:
            ifds.append((following, _ifd(block, order, following)))
        except MalformedExif:
            break
        seen.add(following)
    return ifds


def _gps_ranges(block: bytes, order: str, pointer: int) -> list[tuple[int, int]]:
    """The byte ranges of the GPS IFD that the entry at `pointer` points at: its table
    and each value stored out of line."""
    kind, number, offset = struct.unpack_from(order + "HII", block, pointer + 2)
    if kind not in (_LONG, _IFD) or number != 1:
        raise MalformedExif(f"GPS pointer of type {kind} and count {number}")
    count = _ifd(block, order, offset)
    ranges = [(offset, _end(count, offset))]
    for i in range(count):
        at = _entry(offset, i)
        kind, number = struct.unpack_from(order + "HI", block, at + 2)
        size = _TYPE_SIZES.get(kind)
        if size is None:
            raise MalformedExif(f"GPS entry of unknown type {kind}")
        if size * number > 4:
            start = _u32(block, order, at + 8)
            if start < 8 or start + size * number > len(block):
                raise MalformedExif(f"GPS value at {start} outside the block")
            ranges.append((start, start + size * number))
    return ranges


def _remove_entry(out: bytearray, order: str, offset: int, count: int, index: int) -> None:
    """Take entry `index` out of the IFD at offset (which has `count` entries): the later
    entries and the next-IFD offset move up 12 bytes and the freed tail is zeroed."""
    start, stop = _entry(offset, index), _end(count, offset)
    out[start : stop - 12] = out[start + 12 : stop]
    out[stop - 12 : stop] = bytes(12)
    struct.pack_into(order + "H", out, offset, count - 1)


def _entry(offset: int, index: int) -> int:
    return offset + 2 + 12 * index


def _end(count: int, offset: int) -> int:
    """Where the IFD at offset ends, its next-IFD offset included."""
    return offset + 2 + 12 * count + 4


def _u16(block: bytes, order: str, at: int) -> int:
    value: int = struct.unpack_from(order + "H", block, at)[0]
    return value


def _u32(block: bytes, order: str, at: int) -> int:
    value: int = struct.unpack_from(order + "I", block, at)[0]
    return value


# XMP, IPTC and PNG text: tested, never edited.


def names_place(xmp: bytes) -> bool:
    """Whether XMP (or a part of it) names a place. NULs are removed first, so a UTF-16
    or UTF-32 packet's ASCII names are found too."""
    return _PLACE.search(xmp.replace(b"\0", b"")) is not None


def iptc_names_place(block: bytes) -> bool:
    """Whether a Photoshop/IPTC block names a place or carries EXIF or XMP that does."""
    return _IPTC_PLACE.search(block) is not None or names_place(block)


def png_text_names_place(kind: bytes, data: bytes) -> bool:
    """Whether the data of a PNG tEXt, zTXt or iTXt chunk is XMP ("XML:com.adobe.xmp")
    or an ImageMagick raw profile (hex EXIF, XMP or IPTC) that names a place, carries
    GPS, or cannot be read."""
    keyword, _, rest = data.partition(b"\0")
    text = _png_text(kind, rest)
    if keyword == b"XML:com.adobe.xmp":
        return text is None or names_place(text)
    if keyword.lower().startswith(b"raw profile type "):
        profile = None if text is None else _raw_profile(text)
        return profile is None or iptc_names_place(profile) or has_gps(profile)
    return False


def _png_text(kind: bytes, rest: bytes) -> bytes | None:
    """The text of a tEXt, zTXt or iTXt chunk after its keyword, inflated; None when it
    cannot be read."""
    if kind == b"tEXt":
        return rest
    if kind == b"zTXt":
        return _inflate(rest[1:])
    if len(rest) < 2:
        return None
    compressed, rest = rest[0], rest[2:]
    _language, _, rest = rest.partition(b"\0")
    _translated, _, text = rest.partition(b"\0")
    return _inflate(text) if compressed else text


def _inflate(data: bytes) -> bytes | None:
    """zlib data inflated, or None when it is broken or inflates past INFLATE_LIMIT."""
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(data, INFLATE_LIMIT)
    except zlib.error:
        return None
    return None if inflater.unconsumed_tail else text


def _raw_profile(text: bytes) -> bytes | None:
    """The bytes of an ImageMagick raw profile: a blank line, the profile's name, its
    length, then hex digits over many lines; None when it does not have that shape."""
    lines = text.split(b"\n", 3)
    if len(lines) < 4:
        return None
    try:
        return binascii.unhexlify(b"".join(lines[3].split()))
    except binascii.Error:
        return None
