"""The decoders, run in this process (the sandbox is tested apart): what each kind of media
gives, previews turned the way the picture is displayed, limits refused before decoding,
damaged files refused, and the server-side header reader."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms, ImageFile, ImageOps

from chatmedia.media.audio import WAVEFORM_BARS, describe_audio
from chatmedia.media.decode import TASKS
from chatmedia.media.header import HEAD_SIZE, image_dimensions
from chatmedia.media.images import describe_image
from chatmedia.media.pdf import describe_pdf
from chatmedia.media.stills import Corrupt, DecodeError, TooLarge, Unsupported
from chatmedia.media.video import describe_video
from tests.media_files import BLUE, GPS, GREEN, RED, MediaFiles, colour_at, looks, shared_media

MAX_PIXELS = 32_000_000


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> MediaFiles:
    return shared_media(tmp_path_factory)


def sizes_of(found: dict[str, Any]) -> list[tuple[int, int, int]]:
    return [(p["size"], p["width"], p["height"]) for p in found["previews"]]


def test_the_tasks_are_the_four_decoders() -> None:
    expected = {
        "image": describe_image,
        "video": describe_video,
        "audio": describe_audio,
        "pdf": describe_pdf,
    }
    assert expected == TASKS


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_photo_is_described_as_displayed_whatever_its_orientation(
    media: MediaFiles, orientation: int
) -> None:
    found = describe_image(str(media.photo(orientation)), "image/jpeg", MAX_PIXELS)
    assert (found["width"], found["height"]) == (120, 80)
    # Never enlarged: one preview per box, both the photo's own size.
    assert sizes_of(found) == [(320, 120, 80), (800, 120, 80)]
    for preview in found["previews"]:
        assert preview["contentType"] == "image/jpeg"
        assert looks(colour_at(preview["data"], 0.1, 0.1), RED)
        assert looks(colour_at(preview["data"], 0.9, 0.9), BLUE)
    assert isinstance(found["blurhash"], str)
    assert len(found["blurhash"]) == 4 + 2 * (4 * 3 - 1) + 2  # 4x3 components


def test_previews_carry_no_exif_gps_or_profile(media: MediaFiles) -> None:
    with Image.open(media.photo(6)) as source:
        assert source.getexif().get_ifd(0x8825) == GPS  # the photo itself has a position
    found = describe_image(str(media.photo(6)), "image/jpeg", MAX_PIXELS)
    for preview in found["previews"]:
        data = preview["data"]
        assert b"Exif" not in data
        assert b"ICC_PROFILE" not in data
        with Image.open(io.BytesIO(data)) as image:
            assert not image.getexif()
            assert not {"exif", "icc_profile", "comment"} & image.info.keys()


def test_a_12_megapixel_portrait_photo_gives_portrait_previews(media: MediaFiles) -> None:
    found = describe_image(str(media.big_photo), "image/jpeg", MAX_PIXELS)
    assert (found["width"], found["height"]) == (3000, 4000)  # EXIF 6 turns 4000x3000
    assert sizes_of(found) == [(320, 240, 320), (800, 600, 800)]


def test_a_jpeg_is_decoded_at_reduced_scale(
    media: MediaFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded: list[tuple[int, int]] = []
    load = ImageFile.ImageFile.load

    def spy(image: ImageFile.ImageFile) -> Any:
        loaded.append(image.size)
        return load(image)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    describe_image(str(media.big_photo), "image/jpeg", MAX_PIXELS)
    assert loaded[0] == (1000, 750)  # 1/4 scale: the smallest that covers 800x600


def test_a_gif_is_described_by_its_first_frame(media: MediaFiles) -> None:
    found = describe_image(str(media.gif), "image/gif", MAX_PIXELS)
    assert (found["width"], found["height"]) == (64, 48)
    assert all(looks(colour_at(p["data"], 0.5, 0.5), RED) for p in found["previews"])


def test_a_transparent_png_keeps_its_transparency(media: MediaFiles) -> None:
    found = describe_image(str(media.transparent_png), "image/png", MAX_PIXELS)
    assert (found["width"], found["height"]) == (100, 80)
    for preview in found["previews"]:
        assert preview["contentType"] == "image/png"
        with Image.open(io.BytesIO(preview["data"])) as image:
            assert image.mode == "RGBA"
            assert image.getpixel((10, 40))[3] == 0
            assert image.getpixel((90, 40)) == (*GREEN, 255)


@pytest.mark.parametrize(("mode", "fmt", "expected"), [
    ("CMYK", "JPEG", "image/jpeg"),
    ("L", "JPEG", "image/jpeg"),
    ("P", "PNG", "image/jpeg"),
    ("LA", "PNG", "image/png"),
    ("I;16", "PNG", "image/jpeg"),
    ("1", "PNG", "image/jpeg"),
    ("RGBA", "PNG", "image/jpeg"),  # an alpha channel that hides nothing
])  # fmt: skip
def test_every_mode_becomes_rgb_or_rgba(tmp_path: Path, mode: str, fmt: str, expected: str) -> None:
    path = tmp_path / f"odd.{fmt.lower()}"
    image = Image.new(mode, (40, 30), (9, 9, 9, 255) if mode == "RGBA" else 0)
    if mode == "LA":
        image.putpixel((0, 0), (0, 0))  # one transparent pixel
    image.save(path, fmt)
    found = describe_image(str(path), "", MAX_PIXELS)
    assert (found["width"], found["height"]) == (40, 30)
    for preview in found["previews"]:
        assert preview["contentType"] == expected
        with Image.open(io.BytesIO(preview["data"])) as shown:
            assert shown.mode == ("RGBA" if expected == "image/png" else "RGB")


def test_a_colour_profile_is_applied_not_carried(tmp_path: Path) -> None:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    path = tmp_path / "profiled.jpg"
    Image.new("RGB", (40, 30), RED).save(path, "JPEG", icc_profile=srgb)
    found = describe_image(str(path), "image/jpeg", MAX_PIXELS)
    with Image.open(io.BytesIO(found["previews"][0]["data"])) as shown:
        assert "icc_profile" not in shown.info
    assert looks(colour_at(found["previews"][0]["data"], 0.5, 0.5), RED)


@pytest.mark.parametrize(("sample", "content_type", "size"), [
    ("webp", "image/webp", (200, 100)),
    ("avif", "image/avif", (96, 64)),
])  # fmt: skip
def test_webp_and_avif_are_described(
    media: MediaFiles, sample: str, content_type: str, size: tuple[int, int]
) -> None:
    found = describe_image(str(getattr(media, sample)), content_type, MAX_PIXELS)
    assert (found["width"], found["height"]) == size
    assert sizes_of(found) == [(320, *size), (800, *size)]


def test_the_pixel_limit_is_checked_before_anything_is_decoded(
    media: MediaFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", never)
    with pytest.raises(TooLarge, match="limit of 32000000"):
        describe_image(str(media.bomb()), "image/png", MAX_PIXELS)
    with pytest.raises(TooLarge, match="limit of 9000"):
        describe_image(str(media.photo(1)), "image/jpeg", 9000)
    monkeypatch.setattr(Image, "open", never)  # the bomb is refused from its header
    with pytest.raises(TooLarge):
        describe_image(str(media.bomb()), "image/png", MAX_PIXELS)


@pytest.mark.parametrize("sample", ["photo-1", "big_photo", "gif", "transparent_png", "webp"])
def test_damaged_images_are_refused(media: MediaFiles, sample: str) -> None:
    source = media.photo(1) if sample == "photo-1" else getattr(media, sample)
    # Cut within the first frame: a GIF cut after it is described by that whole frame.
    for damaged in (media.truncated(source, 0.3), media.corrupted(source)):
        with pytest.raises(Corrupt):
            describe_image(str(damaged), "", MAX_PIXELS)


def test_only_the_decoder_of_the_sniffed_type_reads_an_image(media: MediaFiles) -> None:
    with pytest.raises(Corrupt, match="not a valid PNG image"):
        describe_image(str(media.photo(1)), "image/png", MAX_PIXELS)
    with pytest.raises(Unsupported):
        describe_image(str(media.photo(1)), "image/tiff", MAX_PIXELS)


def test_a_phone_video_is_turned_as_displayed(media: MediaFiles) -> None:
    found = describe_video(str(media.phone_video), "video/mp4", MAX_PIXELS)
    assert abs(found["durationMs"] - 2000) <= 50
    assert (found["width"], found["height"]) == (180, 320)  # stored 320x180, turned
    assert sizes_of(found) == [(320, 180, 320), (800, 180, 320)]
    for preview in found["previews"]:
        assert looks(colour_at(preview["data"], 0.5, 0.1), RED)  # the left half, on top
        assert looks(colour_at(preview["data"], 0.5, 0.9), BLUE)
    assert isinstance(found["blurhash"], str)


def test_a_webm_video_is_described(media: MediaFiles) -> None:
    found = describe_video(str(media.webm_video), "video/webm", MAX_PIXELS)
    assert (found["width"], found["height"]) == (160, 120)
    assert abs(found["durationMs"] - 1000) <= 50
    assert looks(colour_at(found["previews"][0]["data"], 0.5, 0.5), GREEN)


def test_a_video_frame_over_the_pixel_limit_is_refused(media: MediaFiles) -> None:
    with pytest.raises(TooLarge):
        describe_video(str(media.phone_video), "video/mp4", 320 * 180 - 1)


@pytest.mark.parametrize("content_type", ["", "video/mp4", "video/webm"])
def test_playlists_and_concat_scripts_open_nothing(
    media: MediaFiles, tmp_path: Path, content_type: str
) -> None:
    target = media.phone_video
    playlists = {
        "local.m3u8": f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n{target}\n#EXT-X-ENDLIST\n",
        "remote.m3u8": "#EXTM3U\n#EXTINF:2,\nhttp://127.0.0.1:9/a.ts\n#EXT-X-ENDLIST\n",
        "list.ffconcat": f"ffconcat version 1.0\nfile {target}\n",
    }
    for name, text in playlists.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(DecodeError):
            describe_video(str(tmp_path / name), content_type, MAX_PIXELS)
        with pytest.raises(DecodeError):
            describe_audio(str(tmp_path / name), content_type.replace("video", "audio"))


def test_damaged_videos_are_refused(media: MediaFiles) -> None:
    for source in (media.phone_video, media.webm_video):
        for damaged in (media.truncated(source, 0.05), media.corrupted(source)):
            with pytest.raises(DecodeError):
                describe_video(str(damaged), "", MAX_PIXELS)
    with pytest.raises(Unsupported, match="no video stream"):
        describe_video(str(media.m4a), "video/mp4", MAX_PIXELS)


def test_a_voice_note_gives_a_waveform_that_follows_its_loudness(media: MediaFiles) -> None:
    found = describe_audio(str(media.voice_note), "audio/ogg")
    assert abs(found["durationMs"] - 4000) <= 50
    waveform = found["waveform"]
    assert len(waveform) == WAVEFORM_BARS == 64
    assert all(isinstance(bar, int) and 0 <= bar <= 100 for bar in waveform)
    assert max(waveform) == 100
    assert waveform[:8] < waveform[28:36] < waveform[-8:]  # grows louder
    assert sum(waveform[:16]) * 3 < sum(waveform[-16:])


@pytest.mark.parametrize(("sample", "content_type", "louder"), [
    ("mp3", "audio/mpeg", "second"),
    ("wav", "audio/wav", "first"),
    ("m4a", "audio/mp4", "neither"),
])  # fmt: skip
def test_other_audio_formats_are_described(
    media: MediaFiles, sample: str, content_type: str, louder: str
) -> None:
    found = describe_audio(str(getattr(media, sample)), content_type)
    assert abs(found["durationMs"] - 4000) <= 100
    first, second = found["waveform"][4:28], found["waveform"][36:60]
    if louder == "neither":  # FFmpeg's AAC encoder lets a steady tone waver a little
        assert min(first + second) >= 75
    else:
        quiet, loud = (first, second) if louder == "second" else (second, first)
        assert max(quiet) < 20 < 90 < min(loud)


def test_the_audio_of_a_video_is_described(media: MediaFiles) -> None:
    found = describe_audio(str(media.phone_video), "video/mp4")
    assert abs(found["durationMs"] - 2000) <= 100
    assert min(found["waveform"][4:60]) >= 75


def test_damaged_audio_is_refused(media: MediaFiles) -> None:
    for source, content_type in ((media.voice_note, "audio/ogg"), (media.m4a, "audio/mp4")):
        for damaged in (media.truncated(source, 0.02), media.corrupted(source)):
            with pytest.raises(DecodeError):
                describe_audio(str(damaged), content_type)
    with pytest.raises(Unsupported, match="no audio stream"):
        describe_audio(str(media.webm_video), "video/webm")


def test_a_pdf_gives_its_pages_and_first_page(media: MediaFiles) -> None:
    found = describe_pdf(str(media.pdf), "application/pdf", MAX_PIXELS)
    assert found["pages"] == 2
    assert (found["width"], found["height"]) == (300, 200)  # points
    assert sizes_of(found) == [(320, 300, 200), (800, 300, 200)]
    assert looks(colour_at(found["previews"][0]["data"], 0.1, 0.5), RED)
    assert looks(colour_at(found["previews"][0]["data"], 0.9, 0.5), BLUE)


def test_a_large_pdf_page_is_rendered_only_as_large_as_the_largest_preview(
    tmp_path: Path,
) -> None:
    poster = tmp_path / "poster.pdf"
    Image.new("RGB", (2000, 4000), GREEN).save(poster, "PDF", resolution=72.0)
    found = describe_pdf(str(poster), "application/pdf", MAX_PIXELS)
    assert (found["width"], found["height"]) == (2000, 4000)
    assert sizes_of(found) == [(320, 160, 320), (800, 400, 800)]


def test_damaged_pdfs_are_refused(media: MediaFiles) -> None:
    with pytest.raises(Corrupt):
        describe_pdf(str(media.corrupted(media.pdf)), "application/pdf", MAX_PIXELS)
    with pytest.raises(Corrupt):
        describe_pdf(str(media.truncated(media.pdf, 0.01)), "application/pdf", MAX_PIXELS)


# The server-side header reader.


def expected_dimensions(path: Path) -> tuple[int, int]:
    """What Pillow shows: the size after EXIF orientation."""
    with Image.open(path) as image:
        return ImageOps.exif_transpose(image).size


def samples(media: MediaFiles) -> list[Path]:
    return [
        *(media.photo(o) for o in range(1, 9)),
        media.big_photo,
        media.gif,
        media.transparent_png,
        media.webp,
    ]


def test_the_header_gives_the_displayed_size(media: MediaFiles) -> None:
    for path in samples(media):
        assert image_dimensions(path.read_bytes()[:HEAD_SIZE]) == expected_dimensions(path)
    assert image_dimensions(media.bomb().read_bytes()[:HEAD_SIZE]) == (50_000, 50_000)
    for fmt, options in (("WEBP", {"lossless": True}), ("WEBP", {"exif": _exif(8)})):
        data = io.BytesIO()
        Image.new("RGBA", (30, 20)).save(data, fmt, **options)
        with Image.open(data) as image:
            shown = ImageOps.exif_transpose(image).size
        assert image_dimensions(data.getvalue()) == shown


def test_a_png_exif_orientation_counts(tmp_path: Path) -> None:
    path = tmp_path / "turned.png"
    Image.new("RGB", (30, 20)).save(path, "PNG", exif=_exif(6))
    assert image_dimensions(path.read_bytes()) == expected_dimensions(path) == (20, 30)


def test_a_jpeg_whose_frame_header_lies_past_the_head_gives_none() -> None:
    data = io.BytesIO()
    Image.new("RGB", (30, 20)).save(
        data, "JPEG", comment=b"x" * 65_000, icc_profile=b"\0" * 4000, exif=_exif(6)
    )
    padded = data.getvalue()
    assert image_dimensions(padded) == (20, 30)
    assert image_dimensions(padded[:HEAD_SIZE]) is None


@given(st.binary(max_size=2048))
def test_the_header_reader_never_raises_on_garbage(head: bytes) -> None:
    found = image_dimensions(head)
    assert found is None or (found[0] > 0 and found[1] > 0)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=200)
@given(data=st.data())
def test_the_header_reader_copes_with_cut_and_flipped_heads(
    media: MediaFiles, data: st.DataObject
) -> None:
    path = data.draw(st.sampled_from(samples(media)))
    head = path.read_bytes()[:HEAD_SIZE]
    cut = data.draw(st.integers(0, len(head)))
    assert image_dimensions(head[:cut]) in (None, expected_dimensions(path))
    flipped = bytearray(head[:4096])
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(flipped) - 1))
        flipped[at] = data.draw(st.integers(0, 255))
    found = image_dimensions(bytes(flipped))
    assert found is None or (found[0] > 0 and found[1] > 0)


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()
