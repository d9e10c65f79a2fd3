"""The decoders a sandboxed media process runs, by task name (chatmedia.media.sandbox).

Importing this module loads Pillow, PyAV, PDFium and BlurHash and warms Pillow up
(chatmedia.media.images.warm_up): only the sandbox's fork server and its children do,
never the server process.

Each task takes the path of a local file and the same options, given as keywords:
`content_type` (the sniffed type, which chooses the one decoder allowed), `max_pixels`
(larger pictures are refused before decoding) and `sizes` (the preview boxes, "320,800").
It returns a dict of JSON values and `bytes`, or raises a DecodeError (see stills.py):

    image   {width, height, blurhash, previews}            JPEG, PNG, WebP, GIF, AVIF
    video   {durationMs, width, height, blurhash, previews} MP4, MOV, WebM, MKV
    audio   {durationMs, waveform}                          Ogg, MP3, AAC/M4A, WAV, WebM
    pdf     {pages, width, height, blurhash, previews}      width and height in points

where previews are [{size, width, height, contentType, data}], one per box, smallest first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chatmedia.media.audio import describe_audio
from chatmedia.media.images import describe_image, warm_up
from chatmedia.media.pdf import describe_pdf
from chatmedia.media.video import describe_video

TASKS: dict[str, Callable[..., dict[str, Any]]] = {
    "image": describe_image,
    "video": describe_video,
    "audio": describe_audio,
    "pdf": describe_pdf,
}

warm_up()
