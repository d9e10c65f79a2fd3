"""The still image every decoder ends with, made into previews and a placeholder, and the
errors decoders raise.

Runs only inside a sandboxed media process (chatmedia.media.sandbox).

A decoder hands over a Pillow image of the picture as stored, its orientation, and the
boxes asked for; this module makes it displayable (sRGB, RGB or RGBA, upright) and encodes
one preview per box: JPEG at quality 80, or PNG when some pixel is transparent, with no
metadata at all (no EXIF, no GPS, no ICC profile, no comment). A preview is never larger
than its picture: a 200x100 image gives a 200x100 preview for every box.

Errors:

    DecodeError        the media could not be described; `reason` says why
     ├── Corrupt       the bytes are not valid media of their type (also: truncated)
     ├── Unsupported   valid, but nothing this service decodes (no video stream…)
     └── TooLarge      more pixels than allowed: refused before any decoding
"""

from __future__ import annotations

import io
from typing import Any

from blurhash_rs import blurhash_encode
from PIL import Image, ImageCms

# The JPEG quality of previews.
JPEG_QUALITY = 80
# Placeholder: BlurHash components across and down, computed on an image this small.
BLURHASH_COMPONENTS = (4, 3)
BLURHASH_BOX = 32
# The boxes a caller may ask for.
SMALLEST_BOX, LARGEST_BOX = 16, 4096

# EXIF orientation -> the transpose that makes the stored picture upright (EXIF 2.32, 4.6.4).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Counter-clockwise video rotation -> the transpose that shows the frame as displayed.
_TURNED = {
    90: Image.Transpose.ROTATE_90,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_270,
}
_SRGB = ImageCms.createProfile("sRGB")


class DecodeError(Exception):
    """The media could not be described; the message says why, naming no file path."""

    reason = "corrupt"


class Corrupt(DecodeError):
    """The bytes are not valid media of their type, or stop short."""

    reason = "corrupt"


class Unsupported(DecodeError):
    """Valid media, but of a kind this service does not decode."""

    reason = "unsupported"


class TooLarge(DecodeError):
    """More pixels than allowed; refused from the header, before any decoding."""

    reason = "too_large"


def parse_sizes(sizes: str) -> list[int]:
    """The preview boxes of a "320,800" option, smallest first; ValueError if malformed."""
    boxes = sorted({int(part) for part in sizes.split(",") if part.strip()})
    if not boxes or not all(SMALLEST_BOX <= box <= LARGEST_BOX for box in boxes):
        raise ValueError(f"preview sizes {sizes!r}: each must be {SMALLEST_BOX}..{LARGEST_BOX}")
    return boxes


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    """Raise TooLarge if a widthxheight picture has more than `max_pixels` pixels."""
    if width <= 0 or height <= 0:
        raise Corrupt(f"the picture claims a size of {width}x{height}")
    if width * height > max_pixels:
        raise TooLarge(
            f"{width}x{height} is {width * height} pixels, more than the limit of {max_pixels}"
        )


def fit(width: int, height: int, box: int) -> tuple[int, int]:
    """The size of a widthxheight picture shrunk to fit a boxxbox square, aspect kept,
    never enlarged."""
    if max(width, height) <= box:
        return width, height
    scale = box / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def displayable(image: Image.Image, target: tuple[int, int]) -> Image.Image:
    """`image` shrunk to `target` and made sRGB, in RGB or (if it has transparency) RGBA.

    Shrinks before converting colours where the mode allows, so that a large picture is
    converted at preview size."""
    icc = image.info.get("icc_profile")
    if image.mode not in ("L", "LA", "RGB", "RGBA", "CMYK"):
        image = _eight_bit(image)
    if image.size != target:
        # Bicubic: for a 12 MP JPEG drafted to 1000x750, 6.1 ms to 800x600 against
        # LANCZOS's 8.4, and the two results differ by 53.5 dB PSNR (no visible change).
        image = image.resize(target, Image.Resampling.BICUBIC, reducing_gap=2.0)
    if icc:
        image = _to_srgb(image, icc)
    if image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.mode else "RGB")
    if image.mode == "RGBA" and image.getchannel("A").getextrema()[0] == 255:
        image = image.convert("RGB")  # an alpha channel that hides nothing
    image.info = {}
    return image


def upright(image: Image.Image, orientation: int) -> Image.Image:
    """`image` turned and mirrored as its EXIF orientation (1..8) says."""
    method = _UPRIGHT.get(orientation)
    return image if method is None else image.transpose(method)


def turned(image: Image.Image, rotation: int) -> Image.Image:
    """`image` rotated counter-clockwise by `rotation` degrees, to the nearest quarter."""
    method = _TURNED.get(round(rotation / 90) % 4 * 90)
    return image if method is None else image.transpose(method)


def previews(image: Image.Image, boxes: list[int]) -> list[dict[str, Any]]:
    """One preview per box of a displayable image (see `displayable`), smallest box first:
    {"size", "width", "height", "contentType", "data"}."""
    made: list[dict[str, Any]] = []
    source = image
    for box in sorted(boxes, reverse=True):  # each from the one before: cheaper, as sharp
        size = fit(source.width, source.height, box)
        if size != source.size:
            source = source.resize(size, Image.Resampling.LANCZOS)
        same = made[-1] if made and (made[-1]["width"], made[-1]["height"]) == size else None
        content_type, data = (same["contentType"], same["data"]) if same else _encode(source)
        made.append(
            {"size": box, "width": size[0], "height": size[1], "contentType": content_type,
             "data": data}
        )  # fmt: skip
    return made[::-1]


def blurhash(image: Image.Image) -> str:
    """The BlurHash placeholder of a displayable image; transparency shows as white."""
    small = image.copy()
    small.thumbnail((BLURHASH_BOX, BLURHASH_BOX), Image.Resampling.BILINEAR)
    if small.mode == "RGBA":
        flat = Image.new("RGB", small.size, (255, 255, 255))
        flat.paste(small, mask=small.getchannel("A"))
        small = flat
    return blurhash_encode(small, *BLURHASH_COMPONENTS)


def _encode(image: Image.Image) -> tuple[str, bytes]:
    out = io.BytesIO()
    if image.mode == "RGBA":
        image.save(out, "PNG")
        return "image/png", out.getvalue()
    image.save(out, "JPEG", quality=JPEG_QUALITY)
    return "image/jpeg", out.getvalue()


def _eight_bit(image: Image.Image) -> Image.Image:
    """Palette, 1-bit, 16-bit and other modes as RGB, RGBA or L."""
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        return image.convert("I").point(lambda value: value / 256).convert("L")
    transparent = "transparency" in image.info or image.mode in ("PA", "La", "RGBa")
    return image.convert("RGBA" if transparent else "RGB")


def _to_srgb(image: Image.Image, icc: bytes) -> Image.Image:
    """Colours of `image` from its embedded profile to sRGB; unchanged if the profile is
    unusable or does not match the mode (the colours are then taken as sRGB already)."""
    out_mode = "RGBA" if image.mode in ("LA", "RGBA") else "RGB"
    in_mode = image.mode
    if in_mode == "LA":
        image, in_mode = image.convert("RGBA"), "RGBA"
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        converted = ImageCms.profileToProfile(
            image, profile, _SRGB, outputMode=out_mode, inPlace=False
        )
    except (ImageCms.PyCMSError, OSError, ValueError):
        return image
    return converted if converted is not None else image
