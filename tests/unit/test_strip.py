"""Metadata stripping (chatmedia.media.strip): real Pillow images in every mode, any
chunking, malformed input, bounded memory."""

from __future__ import annotations

import random
import struct
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import ExifTags, Image

from chatmedia.media import exif
from chatmedia.media.strip import METADATA_LIMIT, StripMode, Stripper
from tests import media_samples as ms
from tests.conftest import HTML_BYTES, PDF_BYTES


async def pieces(data: bytes, sizes: list[int]) -> AsyncIterator[bytes]:
    at = 0
    for size in sizes:
        if at < len(data):
            yield data[at : at + size]
        at += size
    if at < len(data):
        yield data[at:]


def strip(data: bytes, mode: StripMode, sizes: list[int] | None = None) -> tuple[bytes, bool]:
    """The stripped bytes and the `stripped` flag, the input fed in chunks of `sizes`."""
    stripper = Stripper(mode)

    async def run() -> bytes:
        out = [chunk async for chunk in stripper.filter(pieces(data, sizes or []))]
        assert all(out), "no empty chunks"
        return b"".join(out)

    return anyio.run(run), stripper.stripped


def without_gps_pointer(tags: Image.Exif) -> dict[int, object]:
    return {tag: value for tag, value in tags.items() if tag != ms.GPS_IFD}


# Each format in each mode.


@pytest.mark.parametrize("name", ms.FORMATS)
def test_location_takes_out_gps_and_places_and_keeps_the_rest(name: str) -> None:
    data = ms.sample(name)
    out, stripped = strip(data, "location")
    before, after = ms.opened(data), ms.opened(out)
    assert stripped
    assert ms.gps_values_in(data)
    assert not ms.gps_values_in(out)
    assert after.getexif().get_ifd(ms.GPS_IFD) == {}
    assert dict(after.getexif()) == without_gps_pointer(before.getexif())
    assert after.getexif().get_ifd(ms.EXIF_IFD) == before.getexif().get_ifd(ms.EXIF_IFD)
    assert after.info["icc_profile"] == ms.icc_profile()
    assert b"London" not in out
    assert b"GPSLatitude" not in out
    assert ms.frames(out) == ms.frames(data)
    if name in ("jpeg", "png"):
        assert b"taken on holiday" in out  # a comment names no place


@pytest.mark.parametrize("name", ms.FORMATS)
def test_all_keeps_only_the_orientation_and_the_colour_profile(name: str) -> None:
    data = ms.sample(name)
    out, stripped = strip(data, "all")
    after = ms.opened(out)
    assert stripped
    assert dict(after.getexif()) == {ms.ORIENTATION: 6}
    assert after.getexif().get_ifd(ms.GPS_IFD) == {}
    assert after.info["icc_profile"] == ms.icc_profile()
    for gone in (b"London", b"ACME", b"2024:05:06", b"taken on holiday", b"xmpmeta"):
        assert gone not in out
    assert not ms.gps_values_in(out)
    assert "xmp" not in after.info
    assert ms.frames(out) == ms.frames(data)


@pytest.mark.parametrize("name", ms.FORMATS)
def test_off_changes_nothing(name: str) -> None:
    assert strip(ms.sample(name), "off", [100] * 100) == (ms.sample(name), False)


@pytest.mark.parametrize("mode", ["location", "all"])
def test_jpeg_scan_data_is_byte_identical(mode: StripMode) -> None:
    out, _ = strip(ms.sample("jpeg"), mode)
    assert ms.jpeg_scan(out) == ms.jpeg_scan(ms.sample("jpeg"))


@pytest.mark.parametrize("name", ["webp-lossy", "webp-lossless"])
@pytest.mark.parametrize("mode", ["location", "all"])
def test_webp_keeps_every_chunk_size(name: str, mode: StripMode) -> None:
    data = ms.sample(name)
    out, _ = strip(data, mode)
    assert len(out) == len(data)
    assert out[:8] == data[:8]
    before, after = ms.webp_chunks(data), ms.webp_chunks(out)
    assert [size for _, size in after] == [size for _, size in before]
    assert (b"XMP ", before[-1][1]) == before[-1]
    assert after[-1] == (b"JUNK", before[-1][1])
    assert out.endswith(bytes(before[-1][1]))  # the XMP payload is zeroed
    flags = out[20]
    assert flags & 0x08
    assert bool(flags & 0x04) == (mode == "location")


@pytest.mark.parametrize("name", ms.FORMATS)
def test_a_photo_without_location_is_left_alone(name: str) -> None:
    exif_ = ms.photo_exif(gps=False)
    makers = {
        "jpeg": lambda: ms.jpeg(exif=exif_, xmp=ms.XMP_NO_PLACE),
        "png": lambda: ms.png(exif=exif_, xmp=ms.XMP_NO_PLACE),
        "webp-lossy": lambda: ms.webp(False, exif=exif_, xmp=ms.XMP_NO_PLACE),
        "webp-lossless": lambda: ms.webp(True, exif=exif_, xmp=ms.XMP_NO_PLACE),
    }
    data = makers[name]()
    assert strip(data, "location", [37] * 200) == (data, False)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        PDF_BYTES,
        HTML_BYTES,
        random.Random(3).randbytes(5000),
        b"\xff\xd8",
        b"\xff\xd8\xff",
        b"\x89PNG\r\n\x1a\n",
        b"RIFF\x10\x00\x00\x00WEBP",
        b"RIFF\x10\x00\x00\x00WAVEfmt ",
    ],
)
@pytest.mark.parametrize("mode", ["location", "all"])
def test_other_bytes_pass_through(data: bytes, mode: StripMode) -> None:
    assert strip(data, mode, [3] * 10) == (data, False)


# Chunking, malformed input, memory.


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from([*ms.FORMATS, "mpo"]),
    mode=st.sampled_from(["location", "all"]),
    sizes=st.lists(st.integers(min_value=1, max_value=700), max_size=40),
)
def test_any_chunking_gives_the_same_output(name: str, mode: StripMode, sizes: list[int]) -> None:
    assert strip(ms.sample(name), mode, sizes) == strip(ms.sample(name), mode)


@pytest.mark.parametrize("name", [*ms.FORMATS, "mpo"])
def test_one_byte_at_a_time(name: str) -> None:
    data = ms.sample(name)
    assert strip(data, "location", [1] * len(data)) == strip(data, "location")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from([*ms.FORMATS, "mpo"]),
    mode=st.sampled_from(["location", "all"]),
    changes=st.lists(st.tuples(st.integers(0, 1999), st.integers(0, 255)), max_size=6),
    cut=st.integers(min_value=0, max_value=10_000),
    sizes=st.lists(st.integers(min_value=1, max_value=300), max_size=10),
)
def test_malformed_input_never_raises_nor_grows(
    name: str, mode: StripMode, changes: list[tuple[int, int]], cut: int, sizes: list[int]
) -> None:
    data = bytearray(ms.sample(name))
    for at, value in changes:
        data[at % min(len(data), 2000)] = value
    mangled = bytes(data[:cut])
    out, _ = strip(mangled, mode)
    assert len(out) <= len(mangled)
    assert strip(mangled, mode, sizes) == strip(mangled, mode)


@settings(max_examples=150, deadline=None)
@given(
    data=st.one_of(
        st.binary(max_size=3000),
        st.tuples(st.sampled_from([b"\xff\xd8", b"\x89PNG", b"RIFF"]), st.binary(max_size=20)).map(
            b"".join
        ),
        st.sampled_from([*ms.FORMATS, "mpo"]).map(ms.sample),
        st.sampled_from([HTML_BYTES, PDF_BYTES]),
    ),
    mode=st.sampled_from(["off", "location", "all"]),
    sizes=st.lists(st.integers(min_value=1, max_value=300), max_size=10),
)
def test_what_passes_through_is_known_early_and_unchanged(
    data: bytes, mode: StripMode, sizes: list[int]
) -> None:
    # A resumable upload's piece is staged as it is when the stripper says, once the first
    # chunk is through, that it changes nothing.
    stripper = Stripper(mode)
    said: list[bool] = []

    async def run() -> bytes:
        out = []
        async for chunk in stripper.filter(pieces(data, sizes)):
            said.append(stripper.passes_through)
            out.append(chunk)
        return b"".join(out)

    out = anyio.run(run)
    if said and said[0]:
        assert out == data
        assert not stripper.stripped
    format_stripped = data.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")) or (
        data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    )
    assert stripper.passes_through == (mode == "off" or not format_stripped)


def stream(parts: list[ms.Part]) -> Iterator[bytes]:
    """Bytes, and (piece, count) for a piece repeated count times, never joined."""
    for part in parts:
        if isinstance(part, tuple):
            yield from [part[0]] * part[1]
        else:
            yield part


def peak_memory(mode: StripMode, parts: list[ms.Part]) -> tuple[int, int, bool]:
    """(output length, tracemalloc peak, stripped) of a stream through a Stripper; the
    event loop is running before tracing starts, so only the stream is measured."""
    stripper = Stripper(mode)

    async def source() -> AsyncIterator[bytes]:
        for chunk in stream(parts):
            yield chunk

    async def run() -> tuple[int, int]:
        tracemalloc.start()
        try:
            length = sum([len(chunk) async for chunk in stripper.filter(source())])
            return length, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    length, peak = anyio.run(run)
    return length, peak, stripper.stripped


@pytest.mark.parametrize("parts", [ms.huge_png, ms.huge_jpeg, ms.huge_webp])
def test_memory_does_not_grow_with_the_file(parts: Callable[[], list[ms.Part]]) -> None:
    length, peak, stripped = peak_memory("location", parts())
    assert stripped
    assert length > ms.HUGE * len(ms.BLOCK)
    assert peak < 1 << 20, f"peak {peak} bytes"


def test_a_huge_webp_metadata_chunk_is_zeroed_without_being_held() -> None:
    data = ms.sample("webp-lossy")
    size = 3 * METADATA_LIMIT
    riff = b"RIFF" + struct.pack("<I", len(data) - 8 + 8 + size) + data[8:]
    length, peak, stripped = peak_memory(
        "location", [riff, b"XMP " + struct.pack("<I", size), (b"<exif:GPSx/>" * 1024, 256)]
    )
    assert stripped
    assert length == len(riff) + 8 + size
    assert peak < 1 << 20


# JPEG specifics: MPF, extended XMP, IPTC, fill bytes.


@pytest.mark.parametrize("mode", ["location", "all"])
def test_every_image_of_an_mpo_is_stripped_and_still_found(mode: StripMode) -> None:
    out, stripped = strip(ms.mpo(), mode, [300] * 40)
    assert stripped
    assert ms.gps_values_in(ms.mpo())
    assert not ms.gps_values_in(out)
    assert b"London" not in out
    assert ms.frames(out) == ms.frames(ms.mpo())
    assert len(ms.frames(out)) == 2
    if mode == "location":
        assert len(out) == len(ms.mpo())


def test_extended_xmp_that_names_a_place_goes_from_its_first_mention() -> None:
    parts = [
        ms.extended_xmp(b"<rdf:Description><exif:GPSLa"),
        ms.extended_xmp(b"titude>51,30N</exif:GPSLatitude>"),
        ms.extended_xmp(b"<xmp:Rating>5</xmp:Rating>"),
    ]
    main = ms.app1(b"http://ns.adobe.com/xap/1.0/\0" + ms.XMP_NO_PLACE)
    data = ms.with_segments(ms.sample("jpeg"), main, *parts)
    out, _ = strip(data, "location")
    assert main in out
    assert parts[0] in out
    assert parts[1] not in out
    assert parts[2] not in out
    out, _ = strip(data, "all")
    assert b"ns.adobe.com" not in out


def test_extended_xmp_goes_with_a_packet_that_names_a_place() -> None:
    part = ms.extended_xmp(b"<xmp:Rating>5</xmp:Rating>")
    out, _ = strip(ms.with_segments(ms.sample("jpeg"), part, first=False), "location")
    assert part not in out  # Pillow's XMP APP1 comes first and names London
    out, _ = strip(ms.with_segments(ms.sample("jpeg"), part), "location")
    assert part in out


def test_iptc_goes_when_it_names_a_place() -> None:
    place, caption = ms.iptc((90, b"Paris"), (120, b"hello")), ms.iptc((120, b"hello"))
    out, _ = strip(ms.with_segments(ms.sample("jpeg"), place, caption), "location")
    assert place not in out
    assert caption in out
    out, _ = strip(ms.with_segments(ms.sample("jpeg"), caption), "all")
    assert caption not in out


def test_fill_bytes_are_kept_and_the_segment_after_them_handled() -> None:
    data = ms.sample("jpeg")
    at = data.index(b"\xff\xe1")
    filled = data[:at] + b"\xff\xff\xff" + data[at:]
    out, _ = strip(filled, "location")
    assert b"\xff\xff\xff\xff\xe1" in out
    assert not ms.gps_values_in(out)
    assert ms.frames(out) == ms.frames(data)


# EXIF in place: both byte orders, IFD1, maker notes, hostile structures.


@pytest.mark.parametrize("order", ["<", ">"])
def test_gps_is_taken_out_in_place_and_the_rest_parses_the_same(order: str) -> None:
    block = ms.handmade_exif(order)
    new = exif.without_gps(block)
    before, after = ms.loaded(block), ms.loaded(new)
    assert len(new) == len(block)
    assert ms.gps_values_in(block)
    assert not ms.gps_values_in(new)
    assert exif.has_gps(block)
    assert not exif.has_gps(new)
    assert dict(after) == without_gps_pointer(before)
    assert after.get_ifd(ms.GPS_IFD) == {}
    for ifd in (ms.EXIF_IFD, ExifTags.IFD.IFD1):
        assert after.get_ifd(ifd) == before.get_ifd(ifd)
    assert after.get_ifd(ms.EXIF_IFD)[ms.MAKER_NOTE] == ms.MAKER_NOTE_BYTES
    assert new.endswith(b"\xff\xd8thumb\xff\xd9")
    assert exif.without_gps(new) == new


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("name", ms.FORMATS)
def test_handmade_exif_in_every_container(order: str, name: str) -> None:
    block = b"Exif\0\0" + ms.handmade_exif(order)
    data = {
        "jpeg": lambda: ms.jpeg(exif=block),
        "png": lambda: ms.png(exif=block),
        "webp-lossy": lambda: ms.webp(False, exif=block),
        "webp-lossless": lambda: ms.webp(True, exif=block),
    }[name]()
    out, _ = strip(data, "location")
    assert not ms.gps_values_in(out)
    assert ms.opened(out).getexif().get_ifd(ExifTags.IFD.IFD1) == {
        ms.THUMBNAIL_OFFSET: ms.loaded(block).get_ifd(ExifTags.IFD.IFD1)[ms.THUMBNAIL_OFFSET],
        ms.THUMBNAIL_LENGTH: 9,
    }
    out, _ = strip(data, "all")
    assert dict(ms.opened(out).getexif()) == {ms.ORIENTATION: 3}


@pytest.mark.parametrize("order", ["<", ">"])
def test_just_the_orientation_keeps_the_byte_order(order: str) -> None:
    new = exif.just_orientation(ms.handmade_exif(order))
    assert new is not None
    assert new[:2] == (b"II" if order == "<" else b"MM")
    assert dict(ms.loaded(new)) == {ms.ORIENTATION: 3}
    assert exif.just_orientation(exif.without_gps(ms.handmade_exif(order))) == new
    assert exif.reduce(b"MM\0*" + bytes(4), orientation_only=True) is None


HOSTILE = [
    ("GPS pointer past the end", ms.GPS_IFD, "value", 1 << 30),
    ("GPS pointer into IFD0", ms.GPS_IFD, "value", 8),
    ("GPS pointer of type ASCII", ms.GPS_IFD, "type", 2),
    ("IFD0 claims 65535 entries", 0, "count", 0xFFFF),
]


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize(("why", "tag", "field", "value"), HOSTILE)
def test_a_gps_pointer_that_cannot_be_followed_drops_the_block(
    order: str, why: str, tag: int, field: str, value: int
) -> None:
    block = ms.patched(order, tag, field, value)
    with pytest.raises(exif.MalformedExif):
        exif.without_gps(block)
    assert exif.has_gps(block), why
    jpeg_out, stripped = strip(ms.jpeg(exif=b"Exif\0\0" + block), "location")
    assert stripped
    assert b"Exif\0\0" not in jpeg_out
    assert not ms.gps_values_in(jpeg_out)
    png_out, _ = strip(ms.png(exif=b"Exif\0\0" + block), "location")
    assert b"eXIf" not in png_out
    assert not ms.gps_values_in(png_out)
    webp = ms.webp(True, exif=b"Exif\0\0" + block)
    webp_out, _ = strip(webp, "location")
    assert len(webp_out) == len(webp)
    assert b"EXIF" not in webp_out
    assert not ms.gps_values_in(webp_out)
    assert ms.frames(webp_out) == ms.frames(webp)


def test_an_ifd_chain_that_loops_ends() -> None:
    block = bytearray(ms.handmade_exif("<"))
    ifd1 = struct.unpack_from("<I", block, 8 + 2 + 12 * 4)[0]
    struct.pack_into("<I", block, ifd1 + 2 + 12 * 2, 8)  # IFD1 → IFD0
    new = exif.without_gps(bytes(block))
    assert not ms.gps_values_in(new)
    assert ms.loaded(new)[ms.ORIENTATION] == 3


# PNG specifics and the XMP test.


def test_png_raw_profile_exif_with_gps_goes() -> None:
    plain = ms.encode(ms.pixels(), "PNG")
    gps = ms.raw_profile("exif", b"Exif\0\0" + ms.handmade_exif(">"))
    data = plain[:33] + gps + plain[33:]
    assert ms.opened(data).getexif().get_ifd(ms.GPS_IFD)
    out, stripped = strip(data, "location")
    assert stripped
    assert out == plain
    no_gps = ms.raw_profile("exif", b"Exif\0\0" + exif.without_gps(ms.handmade_exif(">")))
    data = plain[:33] + no_gps + plain[33:]
    assert strip(data, "location") == (data, False)


@pytest.mark.parametrize(
    ("xmp", "names_place"),
    [
        (ms.XMP_PLACE, True),
        (ms.XMP_PLACE.decode().encode("utf-16"), True),
        (b'<rdf:Description drone-dji:GpsLongitude="+7.1"/>', True),
        (b"<Iptc4xmpExt:LocationShown><rdf:Bag>", True),
        (b"<photoshop:Country>France</photoshop:Country>", True),
        (ms.XMP_NO_PLACE, False),
        (b'xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:SubjectLocation="1 2"', False),
    ],
)
def test_what_names_a_place(xmp: bytes, names_place: bool) -> None:
    assert exif.names_place(xmp) is names_place


def test_png_exif_after_the_image_data_is_handled_too() -> None:
    plain = ms.encode(ms.pixels(), "PNG")
    data = plain[:-12] + ms.png_chunk(b"eXIf", ms.handmade_exif("<")) + plain[-12:]
    out, stripped = strip(data, "location")
    assert stripped
    assert not ms.gps_values_in(out)
    assert ms.opened(out).getexif()[ms.ORIENTATION] == 3


def test_webp_exif_without_an_orientation_is_neutralized_in_all() -> None:
    tags = ms.photo_exif()
    del tags[ms.ORIENTATION]
    data = ms.webp(True, exif=tags)
    out, stripped = strip(data, "all")
    assert stripped
    assert len(out) == len(data)
    assert b"EXIF" not in out
    assert dict(ms.opened(out).getexif()) == {}
    assert ms.frames(out) == ms.frames(data)


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="'some'"):
        Stripper("some")  # type: ignore[arg-type]
