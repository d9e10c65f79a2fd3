"""Real media made with the libraries for the media tests: photos with every EXIF
orientation, a 12-megapixel photo, an animated GIF, transparent PNG, WebP, AVIF, a phone
video turned by its display matrix, a WebM, an Opus voice note that grows louder, MP3, WAV,
M4A, a two-page PDF, a PNG decompression bomb, and damaged copies. No binary fixture is
committed; each file is made when first asked for, once per session.

Pictures carry marks a test can find after turning: a photo's top-left quadrant is red
(the rest blue) as displayed, whatever its orientation; a video frame's left half is red,
so that after the 90° clockwise turn phones ask for, the poster's top half is red.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from collections.abc import Callable
from fractions import Fraction
from functools import cached_property
from pathlib import Path

import av
import pytest
from PIL import Image

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 160, 0)
# A displayed photo: 120 wide, 80 tall.
PHOTO_SIZE = (120, 80)
GPS = {1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 36.0)}
# Orientation -> the transpose that stores a displayed picture so that EXIF turns it back.
_STORED = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}
VIDEO_SIZE = (320, 180)  # as stored; displayed 180 wide, 320 tall
VOICE_SECONDS = 4
# Amplitude (0..1) at a time in seconds.
Loudness = Callable[[float], float]
# Sample format -> how struct packs one sample, and the largest value.
_SAMPLES = {"s16": ("h", 32767), "s32": ("i", 2**31 - 1), "flt": ("f", 1.0)}


class MediaFiles:
    """Media files in `folder`, each made on first use."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def write(self, name: str, data: bytes) -> Path:
        """A file of the folder with these bytes."""
        path = self.folder / name
        path.write_bytes(data)
        return path

    def photo(self, orientation: int) -> Path:
        """A 120x80 (as displayed) JPEG with EXIF `orientation` and a GPS position."""
        path = self.folder / f"photo-{orientation}.jpg"
        if not path.exists():
            shown = marked_photo()
            stored = shown.transpose(_STORED[orientation]) if orientation in _STORED else shown
            exif = Image.Exif()
            exif[0x0112] = orientation
            exif[0x8825] = GPS
            stored.save(path, "JPEG", quality=95, exif=exif.tobytes())
        return path

    @cached_property
    def big_photo(self) -> Path:
        """A 4000x3000 (12 MP) JPEG of smooth gradients, with orientation 6."""
        across = Image.linear_gradient("L").rotate(90).resize((4000, 3000))
        down = Image.linear_gradient("L").resize((4000, 3000))
        rings = Image.radial_gradient("L").resize((4000, 3000))
        exif = Image.Exif()
        exif[0x0112] = 6
        path = self.folder / "big.jpg"
        Image.merge("RGB", (across, down, rings)).save(
            path, "JPEG", quality=90, exif=exif.tobytes()
        )
        return path

    @cached_property
    def gif(self) -> Path:
        """A 64x48 animated GIF: a red frame, then green, then blue."""
        frames = [Image.new("RGB", (64, 48), colour) for colour in (RED, GREEN, BLUE)]
        path = self.folder / "anim.gif"
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
        return path

    @cached_property
    def transparent_png(self) -> Path:
        """A 100x80 RGBA PNG: the left half transparent, the right half opaque green."""
        image = Image.new("RGBA", (100, 80), (0, 0, 0, 0))
        image.paste((*GREEN, 255), (50, 0, 100, 80))
        path = self.folder / "clear.png"
        image.save(path, "PNG")
        return path

    @cached_property
    def webp(self) -> Path:
        """A 200x100 lossy WebP, red left and blue right."""
        image = Image.new("RGB", (200, 100), BLUE)
        image.paste(RED, (0, 0, 100, 100))
        path = self.folder / "pic.webp"
        image.save(path, "WEBP", quality=80)
        return path

    @cached_property
    def avif(self) -> Path:
        """A 96x64 AVIF (Pillow 13 writes and reads them)."""
        path = self.folder / "pic.avif"
        Image.new("RGB", (96, 64), BLUE).save(path, "AVIF", quality=60)
        return path

    def bomb(self, side: int = 50_000) -> Path:
        """A side x side 1-bit PNG of zeros: 50000 gives 2.5 gigapixels in about 300 KB."""
        path = self.folder / f"bomb-{side}.png"
        if not path.exists():
            row = b"\x00" * (1 + (side + 7) // 8)
            packer = zlib.compressobj(9)
            rows = [packer.compress(row * 1000) for _ in range(side // 1000)]
            data = b"".join([*rows, packer.compress(row * (side % 1000)), packer.flush()])
            path.write_bytes(_png(side, side, bit_depth=1, colour_type=0, data=data))
        return path

    @cached_property
    def phone_video(self) -> Path:
        """An H.264 + AAC MP4 of 2 s stored 320x180 with a display matrix turning it 90°
        clockwise (as phones film portrait); each frame's left half is red."""
        path = self.folder / "phone.mp4"
        with av.open(str(path), "w") as out:
            video = out.add_stream("libx264", rate=30, options={"preset": "ultrafast"})
            video.width, video.height, video.pix_fmt = *VIDEO_SIZE, "yuv420p"
            video.set_display_rotation(-90)  # counter-clockwise -90: clockwise 90
            audio = out.add_stream("aac", rate=48000, layout="mono")
            picture = Image.new("RGB", VIDEO_SIZE, BLUE)
            picture.paste(RED, (0, 0, VIDEO_SIZE[0] // 2, VIDEO_SIZE[1]))
            for index in range(60):
                frame = av.VideoFrame.from_image(picture)
                frame.pts = index
                out.mux(video.encode(frame))
            out.mux(video.encode(None))
            _tone(out, audio, 2.0, lambda t: 0.3)
        return path

    @cached_property
    def webm_video(self) -> Path:
        """A VP8 WebM of 1 s, 160x120, green."""
        path = self.folder / "clip.webm"
        with av.open(str(path), "w") as out:
            video = out.add_stream("libvpx", rate=25)
            video.width, video.height, video.pix_fmt = 160, 120, "yuv420p"
            picture = Image.new("RGB", (160, 120), GREEN)
            for index in range(25):
                frame = av.VideoFrame.from_image(picture)
                frame.pts = index
                out.mux(video.encode(frame))
            out.mux(video.encode(None))
        return path

    @cached_property
    def voice_note(self) -> Path:
        """An Opus voice note in Ogg: a 440 Hz tone of 4 s, growing from a whisper to loud."""
        return self._audio("voice.ogg", "libopus", 48000, lambda t: 0.02 + 0.9 * t / VOICE_SECONDS)

    @cached_property
    def mp3(self) -> Path:
        """An MP3 of 4 s: quiet for the first half, loud for the second."""
        return self._audio("tone.mp3", "libmp3lame", 44100, lambda t: 0.05 if t < 2 else 0.8)

    @cached_property
    def wav(self) -> Path:
        """A 16-bit PCM WAV of 4 s: loud for the first half, quiet for the second."""
        return self._audio("tone.wav", "pcm_s16le", 16000, lambda t: 0.8 if t < 2 else 0.05)

    @cached_property
    def m4a(self) -> Path:
        """AAC in an MP4 container, 4 s, of even loudness."""
        return self._audio("tone.m4a", "aac", 48000, lambda t: 0.5)

    @cached_property
    def pdf(self) -> Path:
        """A PDF of two pages of 300x200 points, the first red on its left half."""
        first = Image.new("RGB", (300, 200), BLUE)
        first.paste(RED, (0, 0, 150, 200))
        second = Image.new("RGB", (300, 200), GREEN)
        path = self.folder / "two.pdf"
        first.save(path, "PDF", resolution=72.0, save_all=True, append_images=[second])
        return path

    def truncated(self, source: Path, fraction: float = 0.5) -> Path:
        """The first `fraction` of a file."""
        data = source.read_bytes()
        return self.write(f"cut-{fraction}-{source.name}", data[: int(len(data) * fraction)])

    def corrupted(self, source: Path) -> Path:
        """A copy with everything after its first 32 bytes replaced by noise."""
        data = source.read_bytes()
        noise = bytes((i * 131 + 7) % 251 for i in range(len(data) - 32))
        return self.write(f"noisy-{source.name}", data[:32] + noise)

    def _audio(self, name: str, codec: str, rate: int, loudness: Loudness) -> Path:
        path = self.folder / name
        with av.open(str(path), "w") as out:
            stream = out.add_stream(codec, rate=rate, layout="mono")
            _tone(out, stream, VOICE_SECONDS, loudness)
        return path


def marked_photo() -> Image.Image:
    """The photo as displayed: red top-left quadrant, blue elsewhere."""
    image = Image.new("RGB", PHOTO_SIZE, BLUE)
    image.paste(RED, (0, 0, PHOTO_SIZE[0] // 2, PHOTO_SIZE[1] // 2))
    return image


def colour_at(data: bytes, x: float, y: float) -> tuple[int, ...]:
    """The RGB colour of a picture's bytes at a fraction of its width and height."""
    with Image.open(io.BytesIO(data)) as image:
        rgb = image.convert("RGB")
        return tuple(rgb.getpixel((int(x * (rgb.width - 1)), int(y * (rgb.height - 1)))))


def looks(colour: tuple[int, ...], like: tuple[int, int, int]) -> bool:
    """Whether a colour is near another, as compression leaves it."""
    return all(abs(a - b) < 60 for a, b in zip(colour, like, strict=False))


def _tone(
    out: av.container.OutputContainer, stream: av.AudioStream, seconds: float, loudness: Loudness
) -> None:
    """Encode a 440 Hz tone of `seconds`, its amplitude `loudness(t)`."""
    rate = stream.codec_context.sample_rate
    size = stream.codec_context.frame_size or 1024
    kind = stream.codec_context.format.name
    code, full = _SAMPLES[kind.removesuffix("p")]  # mono: planar and packed are alike
    total = int(seconds * rate)
    for start in range(0, total, size):
        count = min(size, total - start)
        values = [
            loudness(t) * math.sin(2 * math.pi * 440 * t)
            for t in ((start + i) / rate for i in range(count))
        ]
        frame = av.AudioFrame(format=kind, layout="mono", samples=count)
        scaled = [v * full if code == "f" else int(v * full) for v in values]
        frame.planes[0].update(struct.pack(f"{count}{code}", *scaled))
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def _png(width: int, height: int, bit_depth: int, colour_type: int, data: bytes) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


_shared: MediaFiles | None = None


def shared_media(factory: pytest.TempPathFactory) -> MediaFiles:
    """The session's media files, made once whichever test module asks first."""
    global _shared
    if _shared is None:
        _shared = MediaFiles(factory.mktemp("media"))
    return _shared
