"""Metadata stripping while an upload streams, without ever re-encoding a pixel.

CHATMEDIA_STRIP_METADATA picks a StripMode: "location" (the default) removes where a
photo was taken (the EXIF GPS IFD, XMP packets that name a place) and keeps all other
metadata; "all" removes every EXIF, XMP, IPTC, comment and text block except the
orientation (in a minimal EXIF block, so viewers still show the photo upright) and the
colour profile (ICC); "off" changes nothing.

A Stripper recognises JPEG, PNG and WebP by their magic bytes and walks their blocks.
Anything else, and whatever a walker cannot parse (a truncated or malformed header),
passes through as it is: stripping never fails an upload nor loses bytes. Image data is
copied through as it arrives, never held nor changed, so the output decodes to exactly
the input's pixels. At most one metadata block is held: a JPEG segment (64 KiB at most)
or a PNG/WebP chunk up to METADATA_LIMIT; a bigger one the mode must examine is dropped
(PNG) or zeroed (WebP) unseen.

JPEG (T.81, JFIF, Exif 2.3): an image's segments are walked from SOI to SOS; its scans
are then copied byte for byte, unheld, up to the EOI (FF D9 occurs nowhere else in
entropy-coded data), and a JPEG that follows (the other images of an MPF/MPO file: a
stereo view, a depth or gain map, which carry their own EXIF) is walked the same way.
APP1 Exif loses its GPS IFD in place ("location") or becomes orientation-only ("all");
APP1 XMP and extended XMP go when they name a place or in "all"; APP13 (Photoshop/IPTC)
goes when its IPTC names a place or in "all". "all" keeps only APP0, APP2 ICC_PROFILE and
MPF, APP14 Adobe and the non-APP segments (no COM). After an APP2 MPF segment and in
every image after the first, segments keep their size (a removed one becomes an APP15 of
zeros): MPF finds the other images by offsets counted from the MPF segment.

PNG: every chunk is walked, IDAT copied. eXIf is handled as in JPEG. iTXt/zTXt/tEXt
"XML:com.adobe.xmp" (XMP) and ImageMagick's "Raw profile type ..." chunks (hex EXIF, XMP
or IPTC, which Pillow also reads as EXIF) go in "location" when they name a place or
carry GPS; "all" drops every text chunk and tIME. A rewritten chunk gets a new CRC.

WebP: the RIFF header states the file's size up front and EXIF/XMP chunks follow the
image data, so a streaming filter cannot shrink the file. Every chunk keeps its size: an
EXIF payload is rewritten in place (GPS IFD unlinked and zeroed, or an orientation-only
block padded with zeros), and a chunk to remove is renamed "JUNK" (RIFF's padding chunk,
skipped by WebP readers as unknown) with its payload zeroed. VP8X comes first, so "all"
clears its XMP flag in stream; the EXIF flag stays, as whether an orientation survives is
known only later. libwebp (through Pillow) reads files whose flagged chunk is missing.

XMP: rather than editing XML in stream, a packet that names a place is removed whole
(WebP: neutralised). It names one when an element or attribute local name is GPS*,
*Latitude, *Longitude, City, State, Country*, Location*, Sublocation, ProvinceState or
WorldRegion, whatever its namespace prefix (chatmedia.media.exif.names_place): the test
errs towards removal. Extended XMP parts go after such a packet, or from the first part
that names a place on. In "location" a GPS pointer that cannot be followed safely
(chatmedia.media.exif) drops the EXIF block (JPEG, PNG) or zeroes it (WebP).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Generator
from dataclasses import dataclass
from functools import partial
from typing import Literal, get_args

from chatmedia.media import exif

StripMode = Literal["location", "all", "off"]

# The largest PNG/WebP metadata chunk held to be examined.
METADATA_LIMIT = 1 << 20

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_TEXT = frozenset({b"tEXt", b"zTXt", b"iTXt"})
_XMP = b"http://ns.adobe.com/xap/1.0/"
_XMP_EXTENSION = b"http://ns.adobe.com/xmp/extension/\0"
# The 32-byte GUID, the full length and the offset that precede each extended part.
_XMP_EXTENSION_HEAD = len(_XMP_EXTENSION) + 40
# The APPn segments "all" keeps, by the start of their payload: JFIF, ICC, MPF, Adobe.
_JPEG_KEPT = {0xE0: (b"",), 0xE2: (b"ICC_PROFILE\0", b"MPF\0"), 0xEE: (b"Adobe",)}
# Markers without a length: TEM, RST0-7, SOI and EOI.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xDA)})
_JPEG_PADDING = b"\xff\xef"  # APP15
_EXTENSION_TAIL = 64  # the end of an extended XMP part searched with the next part
_WEBP_XMP_FLAG = 0x04
_JUNK = b"JUNK"


class Stripper:
    """Removes metadata from a JPEG, PNG or WebP upload as it streams (see the module
    docstring). Detects the format from the magic bytes itself (JPEG FF D8 FF, PNG
    signature, RIFF....WEBP); anything else passes through untouched."""

    def __init__(self, mode: StripMode) -> None:
        if mode not in get_args(StripMode):
            raise ValueError(f"unknown metadata strip mode {mode!r}")
        self._mode = mode
        self._exif = partial(exif.reduce, orientation_only=mode == "all")
        # True once something was removed or neutralized (valid after the stream ended).
        self.stripped = False
        # True once it is known that no byte will change: stripping is off, or the bytes
        # are of no format it strips.
        self.passes_through = mode == "off"
        # JPEG: an XMP packet named a place, so the extended parts that follow go too.
        self._xmp_named_place = False
        self._extension_tail = b""

    async def filter(self, chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        """The upload's bytes with metadata removed, at most one output chunk per input
        chunk (plus one at the end), holding no more than one metadata block."""
        if self._mode == "off":
            async for chunk in chunks:
                yield chunk
            return
        machine = _Machine(self._steps())
        async for chunk in chunks:
            if out := machine.feed(chunk):
                yield out
        if out := machine.finish():
            yield out

    def _steps(self) -> _Steps:
        head = yield _Op("peek", 12)
        if head.startswith(b"\xff\xd8\xff"):
            yield from self._jpeg()
        elif head.startswith(_PNG_SIGNATURE):
            yield from self._png()
        elif head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            yield from self._webp()
        else:
            self.passes_through = True

    def _jpeg(self) -> _Steps:
        images, keep_sizes = 0, False
        header = True  # in an image's header; after its EOI only an SOI is walked
        while True:
            marker = yield _Op("read", 1)
            if marker == b"\xff":
                marker += yield _Op("read", 1)
                while marker == b"\xff\xff":  # fill bytes
                    yield _Op("emit", data=b"\xff")
                    marker = b"\xff" + (yield _Op("read", 1))
            code = marker[1] if len(marker) == 2 else 0x00
            if code == 0x00 or (not header and code != 0xD8):
                yield _Op("emit", data=marker)
                if header or not marker:  # malformed, or the input ended
                    return
                yield _Op("scan")
                continue
            if code in _JPEG_STANDALONE:
                yield _Op("emit", data=marker)
                if code == 0xD8:  # SOI: an image begins; a later one is located by MPF
                    images += 1
                    keep_sizes |= images > 1
                header = code != 0xD9
                continue
            length = yield _Op("read", 2)
            size = int.from_bytes(length, "big") - 2
            if len(length) < 2 or size < 0:
                yield _Op("emit", data=marker + length)
                return
            if not (0xE0 <= code <= 0xEF or code == 0xFE):
                yield _Op("emit", data=marker + length)
                yield _Op("copy", size)
                if code == 0xDA:  # SOS: the scans follow, up to the EOI
                    yield _Op("scan")
                    header = False
                continue
            payload = yield _Op("read", size)
            if len(payload) < size:
                yield _Op("emit", data=marker + length + payload)
                return
            new = self._jpeg_segment(code, payload)
            self.stripped |= new != payload
            if new == payload:
                yield _Op("emit", data=marker + length + payload)
            elif keep_sizes:
                yield _Op("emit", data=_same_size_segment(marker, size, new))
            elif new is not None:
                yield _Op("emit", data=marker + struct.pack(">H", len(new) + 2) + new)
            keep_sizes |= code == 0xE2 and payload.startswith(b"MPF\0")

    def _jpeg_segment(self, marker: int, payload: bytes) -> bytes | None:
        """What an APPn or COM segment's payload becomes: itself, another, or None."""
        if marker == 0xE1 and payload.startswith(b"Exif\0"):
            return self._exif(payload)
        if marker == 0xE1 and payload.startswith(_XMP):
            if self._mode == "all" or exif.names_place(payload):
                self._xmp_named_place = True
                return None
            return payload
        if marker == 0xE1 and payload.startswith(_XMP_EXTENSION):
            return self._xmp_extension(payload)
        if self._mode == "location":
            return None if marker == 0xED and exif.iptc_names_place(payload) else payload
        return payload if payload.startswith(_JPEG_KEPT.get(marker, ())) else None

    def _xmp_extension(self, payload: bytes) -> bytes | None:
        """An extended XMP part: kept in "location" unless it, or the packet or a part
        before it, names a place. The tail of the previous part is searched with it, so a
        name split between two parts is still found."""
        part = payload[_XMP_EXTENSION_HEAD:]
        if self._mode == "all" or self._xmp_named_place:
            return None
        if exif.names_place(self._extension_tail + part):
            self._xmp_named_place = True
            return None
        self._extension_tail = part[-_EXTENSION_TAIL:]
        return payload

    def _png(self) -> _Steps:
        yield _Op("emit", data=(yield _Op("read", 8)))  # the signature
        while True:
            head = yield _Op("read", 8)
            # A short head ends the walk as IEND does: the rest passes through.
            length, kind = struct.unpack(">I4s", head) if len(head) == 8 else (0, b"IEND")
            if kind == b"IEND" or length > 0x7FFFFFFF:
                yield _Op("emit", data=head)
                return
            drop = self._mode == "all" and (kind in _PNG_TEXT or kind == b"tIME")
            if not drop and kind != b"eXIf" and kind not in _PNG_TEXT:
                yield _Op("emit", data=head)
                yield _Op("copy", length + 4)
                continue
            if drop or length > METADATA_LIMIT:
                self.stripped = True
                yield _Op("skip", length + 4)
                continue
            body = yield _Op("read", length + 4)
            if len(body) < length + 4:
                yield _Op("emit", data=head + body)
                return
            data = body[:-4]
            new = (
                self._exif(data)
                if kind == b"eXIf"
                else (None if exif.png_text_names_place(kind, data) else data)
            )
            self.stripped |= new != data
            if new == data:
                yield _Op("emit", data=head + body)
            elif new is not None:
                crc = zlib.crc32(kind + new)
                yield _Op("emit", data=struct.pack(">I4s", len(new), kind) + new)
                yield _Op("emit", data=struct.pack(">I", crc))

    def _webp(self) -> _Steps:
        head = yield _Op("read", 12)
        yield _Op("emit", data=head)
        # The chunks' bytes the RIFF header announces; trailing bytes pass through.
        left = int.from_bytes(head[4:8], "little") - 4
        while left > 0:
            header = yield _Op("read", 8)
            if len(header) < 8:
                yield _Op("emit", data=header)
                return
            kind, size = header[:4], int.from_bytes(header[4:], "little")
            padded = size + (size & 1)
            left -= 8 + padded
            examine = padded <= METADATA_LIMIT and (
                kind == b"EXIF" or (kind == b"XMP " and self._mode == "location")
            )
            if kind in (b"EXIF", b"XMP ") and not examine:
                self.stripped = True
                yield _Op("emit", data=_JUNK + header[4:])
                yield _Op("zero", padded)
                continue
            if not examine and not (kind == b"VP8X" and size == 10):
                yield _Op("emit", data=header)
                yield _Op("copy", padded)
                continue
            body = yield _Op("read", padded)
            if len(body) < padded:
                yield _Op("emit", data=header + body)
                return
            new = self._webp_chunk(kind, body[:size])
            if new is None:
                header, new = _JUNK + header[4:], bytes(size)
            self.stripped |= new != body[:size]
            yield _Op("emit", data=header + new + body[size:])

    def _webp_chunk(self, kind: bytes, data: bytes) -> bytes | None:
        """A VP8X, EXIF or XMP payload rewritten to the same size, or None to neutralize."""
        if kind == b"VP8X":
            if self._mode == "all" and data[0] & _WEBP_XMP_FLAG:
                return bytes([data[0] & ~_WEBP_XMP_FLAG]) + data[1:]
            return data
        if kind == b"XMP ":
            return None if exif.names_place(data) else data
        new = self._exif(data)
        return None if new is None or len(new) > len(data) else new.ljust(len(data), b"\0")


def _same_size_segment(marker: bytes, size: int, new: bytes | None) -> bytes:
    """A JPEG segment of the original's size: the new payload padded with zeros, or an
    APP15 of zeros when there is none (or it does not fit)."""
    length = struct.pack(">H", size + 2)
    if new is None or len(new) > size:
        return _JPEG_PADDING + length + bytes(size)
    return marker + length + new.ljust(size, b"\0")


@dataclass(frozen=True, slots=True)
class _Op:
    """One step of a format walker: "peek" or "read" `size` bytes (fewer only when the
    input ended), "copy", "skip" or "zero" the next `size` input bytes without holding
    them (zero: write as many zeros), "scan": copy up to and with the next JPEG EOI (FF D9)
    or the end, or "emit" `data`."""

    kind: Literal["peek", "read", "copy", "skip", "zero", "scan", "emit"]
    size: int = 0
    data: bytes = b""


# A walker yields ops and is sent the bytes of each peek and read (b"" for the others).
# When it returns, the rest of the input passes through.
_Steps = Generator[_Op, bytes, None]


class _Machine:
    """Runs a walker over input chunks of any size, holding only what it reads."""

    def __init__(self, steps: _Steps) -> None:
        self._steps: _Steps | None = steps
        self._op = _Op("emit")
        self._left = 0  # of a copy, skip or zero
        self._after_ff = False  # a scan's input so far ended with FF
        self._buffer = bytearray()
        self._out: list[bytes] = []
        self._resume(None)

    def feed(self, chunk: bytes) -> bytes:
        """The output that `chunk` lets out."""
        at = 0
        while at < len(chunk) and self._steps is not None:
            if self._op.kind in ("peek", "read"):
                needed = self._op.size - len(self._buffer)
                self._buffer += chunk[at : at + needed]
                at += needed
                if len(self._buffer) >= self._op.size:
                    self._resume(self._take())
            else:
                end, done = self._extent(chunk, at)
                self._pass(chunk, at, end)
                at = end
                if done:
                    self._resume(b"")
        if at < len(chunk):
            self._out.append(chunk[at:] if at else chunk)
        return self._collect()

    def finish(self) -> bytes:
        """The rest of the output once the input has ended: short reads for the walker,
        which then passes on what it holds and ends."""
        while self._steps is not None:
            if self._op.kind in ("peek", "read"):
                self._resume(self._take())
            else:
                self._left = 0
                self._resume(b"")
        return self._collect()

    def _take(self) -> bytes:
        """What the buffer holds for the pending peek or read (short at the end)."""
        reply = bytes(self._buffer[: self._op.size])
        if self._op.kind == "read":
            del self._buffer[: self._op.size]
        return reply

    def _extent(self, data: bytes | bytearray, at: int) -> tuple[int, bool]:
        """Where the pending copy, skip, zero or scan stops in `data` (from `at`), and
        whether it is done there."""
        if self._op.kind != "scan":
            end = min(at + self._left, len(data))
            self._left -= end - at
            return end, not self._left
        if self._after_ff and data[at : at + 1] == b"\xd9":
            return at + 1, True
        found = data.find(b"\xff\xd9", at)
        if found >= 0:
            return found + 2, True
        if len(data) > at:
            self._after_ff = data.endswith(b"\xff")
        return len(data), False

    def _pass(self, data: bytes | bytearray, at: int, end: int) -> None:
        """Let data[at:end] out as the pending copy, skip, zero or scan says."""
        if self._op.kind in ("copy", "scan") and isinstance(data, bytes) and end - at == len(data):
            self._out.append(data)  # a whole input chunk: no copy
        elif self._op.kind in ("copy", "scan"):
            self._out.append(bytes(data[at:end]))
        elif self._op.kind == "zero":
            self._out.append(bytes(end - at))

    def _resume(self, reply: bytes | None) -> None:
        """Send `reply` to the walker and run it until it waits for input or ends."""
        while self._steps is not None:
            try:
                op = next(self._steps) if reply is None else self._steps.send(reply)
            except StopIteration:
                self._steps = None
                self._out.append(bytes(self._buffer))
                self._buffer.clear()
                return
            self._op, reply = op, b""
            if op.kind == "emit":
                self._out.append(op.data)
            elif op.kind in ("peek", "read"):
                if len(self._buffer) < op.size:
                    return
                reply = self._take()
            else:
                self._left, self._after_ff = op.size, False
                end, done = self._extent(self._buffer, 0)
                self._pass(self._buffer, 0, end)
                del self._buffer[:end]
                if not done:
                    return

    def _collect(self) -> bytes:
        out = self._out[0] if len(self._out) == 1 else b"".join(self._out)
        self._out.clear()
        return out
