"""Describing still images: JPEG, PNG, WebP, GIF (first frame), AVIF, and HEIC/HEIF when
pillow-heif is installed. Runs only inside a sandboxed media process.

The pixel count is checked from the header before Pillow is even asked to open the file
(Pillow's WebP plugin allocates the canvas when it opens one). A JPEG is decoded at the
smallest scale its DCT allows that still covers the largest preview (`Image.draft`), so a
12-megapixel photo is decoded at a quarter of its size; the EXIF orientation is applied to
the small image only.
"""

from __future__ import annotations

import io
import warnings
from typing import Any, BinaryIO

from PIL import Image, UnidentifiedImageError

from chatmedia.media.header import HEAD_SIZE, image_dimensions
from chatmedia.media.stills import (
    Corrupt,
    TooLarge,
    Unsupported,
    blurhash,
    check_pixels,
    displayable,
    fit,
    parse_sizes,
    previews,
    upright,
)

try:  # the optional extra chatmedia[heic]
    from pillow_heif import register_heif_opener  # type: ignore[import-not-found,unused-ignore]
except ImportError:
    HEIF = False
else:
    register_heif_opener()
    HEIF = True

# Sniffed content type -> the only Pillow plugin allowed to read it.
FORMATS = {
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/webp": "WEBP",
    "image/gif": "GIF",
    "image/avif": "AVIF",
} | ({"image/heic": "HEIF", "image/heif": "HEIF"} if HEIF else {})
_ORIENTATION_TAG = 0x0112
# What Pillow raises for bytes that are not the image they claim to be.
_BAD_IMAGE = (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError)


def describe_image(
    path: str, content_type: str = "", max_pixels: int = 32_000_000, sizes: str = "320,800"
) -> dict[str, Any]:
    """Width and height as displayed, BlurHash and previews of the image at `path`.

    `content_type` (the sniffed type) chooses the one decoder allowed; "" allows every
    format of FORMATS. Raises TooLarge beyond `max_pixels`, before decoding anything."""
    with open(path, "rb") as file:
        return _describe(file, content_type, max_pixels, sizes)


def warm_up() -> None:
    """Describe a tiny JPEG made here, so that what Pillow does once per process (finding
    its plugins, the EXIF and colour code, the JPEG codecs, BlurHash) is done by the fork
    server before it forks, not by every child: 68 -> 62 ms for a 12 MP photo in the sandbox."""
    picture, out = Image.new("RGB", (64, 48), (90, 120, 150)), io.BytesIO()
    exif = Image.Exif()
    exif[_ORIENTATION_TAG] = 6
    picture.save(out, "JPEG", exif=exif.tobytes())
    out.seek(0)
    _describe(out, "image/jpeg", 64 * 48, "16,32")


def _describe(file: BinaryIO, content_type: str, max_pixels: int, sizes: str) -> dict[str, Any]:
    boxes = parse_sizes(sizes)
    formats = _formats(content_type)
    if (known := image_dimensions(file.read(HEAD_SIZE))) is not None:
        check_pixels(*known, max_pixels)
    file.seek(0)
    with _open(file, formats) as image:
        width, height = image.size
        check_pixels(width, height, max_pixels)
        orientation = _orientation(image)
        target = fit(width, height, boxes[-1])
        if image.format == "JPEG":
            image.draft(image.mode, target)  # decodes at 1/2, 1/4 or 1/8 scale
        try:
            image.load()
            # A copy at most preview-sized, which outlives the file's image.
            shown = upright(displayable(image, target), orientation).copy()
        except _BAD_IMAGE as e:
            raise Corrupt(f"the {image.format} image cannot be decoded: {e}") from None
    if orientation in (5, 6, 7, 8):  # a quarter turn
        width, height = height, width
    return {
        "width": width,
        "height": height,
        "blurhash": blurhash(shown),
        "previews": previews(shown, boxes),
    }


def _formats(content_type: str) -> list[str]:
    if not content_type:
        return sorted(set(FORMATS.values()))
    if content_type not in FORMATS:
        raise Unsupported(f"images of type {content_type} are not decoded")
    return [FORMATS[content_type]]


def _open(file: BinaryIO, formats: list[str]) -> Image.Image:
    """Pillow's lazy open: the header is read, no pixel yet."""
    try:
        with warnings.catch_warnings():
            # Our own limit was checked already, or is checked next.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(file, formats=formats)
    except Image.DecompressionBombError:
        raise TooLarge("the image has more pixels than Pillow ever decodes") from None
    except UnidentifiedImageError:
        raise Corrupt(f"not a valid {' or '.join(formats)} image") from None
    except _BAD_IMAGE as e:
        raise Corrupt(f"the image header cannot be read: {e}") from None


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation, 1 if there is none or it is not 1..8."""
    try:
        value = image.getexif().get(_ORIENTATION_TAG, 1)
    except _BAD_IMAGE:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1
