"""Which content is decoded as what: by the type sniffed from the bytes, never the
client's word. Only these formats are ever decoded; other images, video and audio (SVG,
TIFF, PSD…) are media the service says it does not process."""

from __future__ import annotations

from importlib.util import find_spec

from chatmedia.models import MediaStatus

# Sniffed type (libmagic) -> the sandbox task that describes it.
_TASKS = {
    "image/jpeg": "image",
    "image/png": "image",
    "image/webp": "image",
    "image/gif": "image",
    "image/avif": "image",
    "video/mp4": "video",
    "video/quicktime": "video",
    "video/webm": "video",
    "video/x-matroska": "video",
    "audio/ogg": "audio",
    "audio/mpeg": "audio",
    "audio/mp4": "audio",
    "audio/x-m4a": "audio",
    "audio/aac": "audio",
    "audio/x-hx-aac-adts": "audio",
    "audio/wav": "audio",
    "audio/x-wav": "audio",
    "audio/webm": "audio",
    "application/pdf": "pdf",
}
# iPhone photos, with the optional extra (pip install chatmedia[heic]).
if find_spec("pillow_heif") is not None:
    _TASKS |= {"image/heic": "image", "image/heif": "image"}

# The boxes previews are made for; a request for another size gets the next larger.
PREVIEW_SIZES = (320, 800)


def media_task(content_type: str) -> str | None:
    """The sandbox task that describes content of this type, if it is decoded at all."""
    return _TASKS.get(content_type)


def initial_status(content_type: str) -> MediaStatus | None:
    """A new file's media status: pending work, media not processed, or not media."""
    if content_type in _TASKS:
        return "pending"
    if content_type.split("/")[0] in ("image", "video", "audio"):
        return "unsupported"
    return None


def preview_size(asked: int) -> int:
    """The preview size served for a request of `asked` pixels."""
    return next((size for size in PREVIEW_SIZES if asked <= size), PREVIEW_SIZES[-1])
