"""Real images with metadata, made with Pillow, EXIF blocks and other metadata blocks
built by hand, and streams too big to hold, for the tests of metadata stripping
(tests/unit/test_strip.py)."""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import Callable
from functools import cache

from PIL import Image, ImageCms, PngImagePlugin
from PIL.TiffImagePlugin import IFDRational

ORIENTATION = 0x0112
MAKE, MODEL = 0x010F, 0x0110
EXIF_IFD, GPS_IFD = 0x8769, 0x8825
DATE_TIME_ORIGINAL, MAKER_NOTE = 0x9003, 0x927C
THUMBNAIL_OFFSET, THUMBNAIL_LENGTH = 0x0201, 0x0202

# Rationals no other tag holds, so finding their bytes means the GPS data is still there.
LATITUDE = ((51, 1), (30, 1), (4242421, 100000))
LONGITUDE = ((0, 1), (7, 1), (3999991, 100000))
ALTITUDE = (1234567, 1000)
MAKER_NOTE_BYTES = b"ACME\0maker note " + bytes(range(40))

XMP_PLACE = (
    b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>'
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
    b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description rdf:about="" xmlns:exif="http://ns.adobe.com/exif/1.0/" '
    b'xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/" '
    b'exif:GPSLatitude="51,30.707N" exif:GPSLongitude="0,7.667W">'
    b"<photoshop:City>London</photoshop:City></rdf:Description></rdf:RDF></x:xmpmeta>"
    b'<?xpacket end="w"?>'
)
XMP_NO_PLACE = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
    b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
    b'xmp:CreatorTool="chatmedia tests" xmlns:exif="http://ns.adobe.com/exif/1.0/" '
    b'exif:SubjectLocation="3 4"/></rdf:RDF></x:xmpmeta>'
)


@cache
def icc_profile() -> bytes:
    """An sRGB ICC profile."""
    return bytes(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())


def rationals(values: tuple[tuple[int, int], ...]) -> tuple[IFDRational, ...]:
    return tuple(IFDRational(n, d) for n, d in values)


def gps_values_in(data: bytes) -> bool:
    """Whether the GPS rationals of the samples are in `data`, in either byte order."""
    wanted = [LATITUDE[2], LONGITUDE[2], ALTITUDE]
    return any(struct.pack(o + "II", *r) in data for o in "<>" for r in wanted)


def photo_exif(order: str = ">", gps: bool = True) -> Image.Exif:
    """A phone photo's EXIF: orientation 6, make and model, DateTimeOriginal and GPS."""
    exif = Image.Exif()
    exif.endian = order
    exif[ORIENTATION] = 6
    exif[MAKE] = "ACME"
    exif[MODEL] = "Phone 9"
    exif.get_ifd(EXIF_IFD)[DATE_TIME_ORIGINAL] = "2024:05:06 07:08:09"
    if gps:
        exif.get_ifd(GPS_IFD).update(
            {
                1: "N",
                2: rationals(LATITUDE),
                3: "W",
                4: rationals(LONGITUDE),
                5: b"\x00",
                6: IFDRational(*ALTITUDE),
            }
        )
    return exif


def pixels(mode: str = "RGB", size: tuple[int, int] = (48, 32), seed: int = 1) -> Image.Image:
    """A noisy image, so that compressed data is not trivial."""
    rng = random.Random(seed)
    depth = len(mode)
    return Image.frombytes(mode, size, rng.randbytes(size[0] * size[1] * depth))


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def jpeg(exif: bytes | Image.Exif | None = None, xmp: bytes | None = XMP_PLACE) -> bytes:
    """A JPEG photo with EXIF (default: photo_exif()), an ICC profile, XMP and a comment."""
    return encode(
        pixels(),
        "JPEG",
        exif=photo_exif() if exif is None else exif,
        icc_profile=icc_profile(),
        comment=b"taken on holiday",
        quality=90,
        **({"xmp": xmp} if xmp else {}),
    )


def png(exif: bytes | Image.Exif | None = None, xmp: bytes = XMP_PLACE) -> bytes:
    """An RGBA PNG with eXIf, iCCP, a tEXt comment and an XMP iTXt."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "taken on holiday")
    info.add_itxt("XML:com.adobe.xmp", xmp.decode())
    return encode(
        pixels("RGBA"),
        "PNG",
        exif=photo_exif() if exif is None else exif,
        icc_profile=icc_profile(),
        pnginfo=info,
    )


def webp(lossless: bool, exif: bytes | Image.Exif | None = None, xmp: bytes = XMP_PLACE) -> bytes:
    """A lossy or lossless WebP with EXIF, XMP and an ICC profile."""
    return encode(
        pixels("RGBA" if lossless else "RGB"),
        "WEBP",
        lossless=lossless,
        exif=photo_exif() if exif is None else exif,
        xmp=xmp,
        icc_profile=icc_profile(),
    )


Entry = tuple[int, int, int, bytes]  # tag, type, count, value bytes


def handmade_exif(order: str, thumbnail: bytes = b"\xff\xd8thumb\xff\xd9") -> bytes:
    """A TIFF block as cameras write it: IFD0 (orientation 3, make, Exif and GPS
    pointers) → IFD1 (a thumbnail), the Exif IFD with a maker note, the GPS IFD."""
    ascii_ = 2

    def short(tag: int, value: int) -> Entry:
        return (tag, 3, 1, struct.pack(order + "H", value))

    def long(tag: int, value: int) -> Entry:
        return (tag, 4, 1, struct.pack(order + "I", value))

    def text(tag: int, value: str) -> Entry:
        return (tag, ascii_, len(value) + 1, value.encode() + b"\0")

    def rational(tag: int, values: tuple[tuple[int, int], ...]) -> Entry:
        return (tag, 5, len(values), b"".join(struct.pack(order + "II", *v) for v in values))

    gps = [
        text(1, "N"),
        rational(2, LATITUDE),
        text(3, "W"),
        rational(4, LONGITUDE),
        rational(6, (ALTITUDE,)),
    ]
    exif_ifd = [text(DATE_TIME_ORIGINAL, "2024:05:06 07:08:09")]
    exif_ifd.append((MAKER_NOTE, 7, len(MAKER_NOTE_BYTES), MAKER_NOTE_BYTES))
    ifd0 = [text(MAKE, "ACME"), short(ORIENTATION, 3), long(EXIF_IFD, 0), long(GPS_IFD, 0)]
    ifd1 = [long(THUMBNAIL_OFFSET, 0), long(THUMBNAIL_LENGTH, len(thumbnail))]
    # Layout: header, IFD0, Exif IFD, GPS IFD, IFD1, thumbnail; each IFD's data after it.
    at0 = 8
    at_exif = at0 + _ifd_size(ifd0)
    at_gps = at_exif + _ifd_size(exif_ifd)
    at1 = at_gps + _ifd_size(gps)
    at_thumb = at1 + _ifd_size(ifd1)
    ifd0[2], ifd0[3] = long(EXIF_IFD, at_exif), long(GPS_IFD, at_gps)
    ifd1[0] = long(THUMBNAIL_OFFSET, at_thumb)
    head = (b"II*\0" if order == "<" else b"MM\0*") + struct.pack(order + "I", at0)
    return (
        head
        + _ifd(order, at0, ifd0, at1)
        + _ifd(order, at_exif, exif_ifd, 0)
        + _ifd(order, at_gps, gps, 0)
        + _ifd(order, at1, ifd1, 0)
        + thumbnail
    )


def _ifd_size(entries: list[Entry]) -> int:
    data = sum(len(v) + len(v) % 2 for _, _, _, v in entries if len(v) > 4)
    return 2 + 12 * len(entries) + 4 + data


def _ifd(order: str, at: int, entries: list[Entry], following: int) -> bytes:
    table = struct.pack(order + "H", len(entries))
    data = b""
    values_at = at + 2 + 12 * len(entries) + 4
    for tag, kind, count, value in entries:
        table += struct.pack(order + "HHI", tag, kind, count)
        if len(value) <= 4:
            table += value.ljust(4, b"\0")
        else:
            table += struct.pack(order + "I", values_at + len(data))
            data += value + b"\0" * (len(value) % 2)
    return table + struct.pack(order + "I", following) + data


# Named samples.


FORMATS = ["jpeg", "png", "webp-lossy", "webp-lossless"]


@cache
def sample(name: str) -> bytes:
    """One of FORMATS, or "mpo": two JPEGs with EXIF and XMP, the second found by MPF."""
    makers: dict[str, Callable[[], bytes]] = {
        "jpeg": jpeg,
        "png": png,
        "webp-lossy": lambda: webp(lossless=False),
        "webp-lossless": lambda: webp(lossless=True),
        "mpo": mpo,
    }
    return makers[name]()


@cache
def mpo() -> bytes:
    out = io.BytesIO()
    pixels().save(
        out,
        "MPO",
        save_all=True,
        append_images=[pixels(seed=2)],
        exif=photo_exif(),
        xmp=XMP_PLACE,
    )
    return out.getvalue()


# Blocks to put into files.


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def app1(payload: bytes) -> bytes:
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def with_segments(data: bytes, *segments: bytes, first: bool = True) -> bytes:
    """A JPEG with segments inserted after its SOI, or (not first) before its DQT, after
    Pillow's APPn segments."""
    at = 2
    while not first and data[at + 1] != 0xDB:
        at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
    return data[:at] + b"".join(segments) + data[at:]


def extended_xmp(part: bytes) -> bytes:
    return app1(b"http://ns.adobe.com/xmp/extension/\0" + b"A" * 32 + bytes(8) + part)


def iptc(*records: tuple[int, bytes]) -> bytes:
    iim = b"".join(b"\x1c\x02" + bytes([n]) + struct.pack(">H", len(v)) + v for n, v in records)
    resource = b"8BIM\x04\x04\0\0" + struct.pack(">I", len(iim)) + iim
    payload = b"Photoshop 3.0\0" + resource
    return b"\xff\xed" + struct.pack(">H", len(payload) + 2) + payload


def raw_profile(name: str, data: bytes) -> bytes:
    text = f"\n{name}\n{len(data):8d}\n".encode() + data.hex().encode()
    return png_chunk(b"zTXt", b"Raw profile type " + name.encode() + b"\0\0" + zlib.compress(text))


def patched(order: str, tag: int, field: str, value: int) -> bytes:
    """The handmade block with one field ("count" of IFD0, or "type"/"value" of the IFD0
    entry for `tag`) overwritten."""
    block = bytearray(handmade_exif(order))
    if field == "count":
        struct.pack_into(order + "H", block, 8, value)
        return bytes(block)
    count = struct.unpack_from(order + "H", block, 8)[0]
    for at in range(10, 10 + 12 * count, 12):
        if struct.unpack_from(order + "H", block, at)[0] == tag:
            form, at = ("H", at + 2) if field == "type" else ("I", at + 8)
            struct.pack_into(order + form, block, at, value)
    return bytes(block)


# Reading files back.


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def frames(data: bytes) -> list[bytes]:
    """The decoded pixels of every frame."""
    image = opened(data)
    decoded = []
    for index in range(getattr(image, "n_frames", 1)):
        image.seek(index)
        decoded.append(image.tobytes())
    return decoded


def loaded(block: bytes) -> Image.Exif:
    tags = Image.Exif()
    tags.load(block)
    return tags


def jpeg_scan(data: bytes) -> bytes:
    """Everything from the first SOS marker on."""
    at = 2
    while data[at + 1] != 0xDA:
        at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
    return data[at:]


def webp_chunks(data: bytes) -> list[tuple[bytes, int]]:
    out, at = [], 12
    while at + 8 <= len(data):
        size = int.from_bytes(data[at + 4 : at + 8], "little")
        out.append((data[at : at + 4], size))
        at += 8 + size + (size & 1)
    return out


# Streams too big to hold: (piece, count) stands for a piece repeated count times.


Part = bytes | tuple[bytes, int]
BLOCK = bytes(range(256)) * 256  # 64 KiB, with FF 00 but never FF D9
HUGE = 800  # blocks: 50 MiB


def huge_png() -> list[Part]:
    head = sample("png")[: sample("png").index(b"IDAT") - 4]
    xmp = b"XML:com.adobe.xmp\0\0\0\0\0" + b"<x:xmpmeta photoshop:City='x'/>" + b" " * 3_000_000
    return [
        head,
        struct.pack(">I", len(xmp)) + b"iTXt",  # more than METADATA_LIMIT: dropped unseen
        (xmp[:65536], 1),
        xmp[65536:],
        b"\0\0\0\0",
        struct.pack(">I", HUGE * len(BLOCK)) + b"IDAT",
        (BLOCK, HUGE),
        b"\0\0\0\0",
        png_chunk(b"IEND", b""),
    ]


def huge_jpeg() -> list[Part]:
    data = sample("jpeg")
    scan = jpeg_scan(data)
    return [data[: -len(scan)], scan[:-2], (BLOCK, HUGE), b"\xff\xd9"]


def huge_webp() -> list[Part]:
    data = sample("webp-lossless")
    size = HUGE * len(BLOCK)
    exif_chunk = data[data.index(b"EXIF") :]
    return [
        b"RIFF" + struct.pack("<I", 4 + 18 + 8 + size + len(exif_chunk)) + b"WEBP",
        data[12:30],  # VP8X
        b"VP8L" + struct.pack("<I", size),
        (BLOCK, HUGE),
        exif_chunk,
    ]
