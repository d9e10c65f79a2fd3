"""Opening audio and video files with FFmpeg (PyAV), confined to the one local file.

FFmpeg will follow references inside a file if it is let: an HLS playlist or a concat
script names other files or URLs, a QuickTime data reference another file. So the file is
opened through the `file` protocol only, with the demuxer chosen from the sniffed type (or,
without one, probed among ALLOWED only), and `format_whitelist` set so that no nested
demuxer can open either. Runs only inside a sandboxed media process.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

import av
import av.container
from av.audio.stream import AudioStream
from av.packet import Packet
from av.video.stream import VideoStream

from chatmedia.media.stills import Corrupt, Unsupported

# Sniffed content type -> the one demuxer (libavformat name) allowed to read it.
DEMUXERS = {
    "video/mp4": "mov,mp4,m4a,3gp,3g2,mj2",
    "video/quicktime": "mov,mp4,m4a,3gp,3g2,mj2",
    "audio/mp4": "mov,mp4,m4a,3gp,3g2,mj2",
    "audio/x-m4a": "mov,mp4,m4a,3gp,3g2,mj2",
    "video/webm": "matroska,webm",
    "video/x-matroska": "matroska,webm",
    "audio/webm": "matroska,webm",
    "audio/ogg": "ogg",
    "audio/mpeg": "mp3",
    "audio/aac": "aac",
    "audio/x-hx-aac-adts": "aac",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
}
ALLOWED = ",".join(sorted(set(DEMUXERS.values())))
# Decoder threads per process: the sandbox runs several processes instead, and each thread
# would reserve its own stack in the limited address space.
THREADS = 1

S = TypeVar("S", AudioStream, VideoStream)


@contextmanager
def opened(path: str, content_type: str = "") -> Iterator[av.container.InputContainer]:
    """The container at `path`, read by the demuxer of `content_type` only ("" probes
    among ALLOWED); Corrupt or Unsupported if FFmpeg will not open it."""
    if content_type and content_type not in DEMUXERS:
        raise Unsupported(f"media of type {content_type} are not decoded")
    demuxer = DEMUXERS.get(content_type)
    options = {"protocol_whitelist": "file", "format_whitelist": demuxer or ALLOWED}
    try:
        container = av.open(
            "file:" + path,
            format=demuxer.split(",")[0] if demuxer else None,
            options=options,
            metadata_errors="ignore",
        )
    except av.FFmpegError as e:
        raise Corrupt(f"not {content_type or 'audio or video'} FFmpeg reads: {_cause(e)}") from None
    try:
        yield container
    finally:
        container.close()


def packets(container: av.container.InputContainer, stream: S) -> Iterator[Packet[S]]:
    """The packets of `stream`, then an empty one that flushes its decoder; Corrupt if
    the file cannot be read to its end (FFmpeg treats a cut file as ended, not as an
    error)."""
    try:
        yield from container.demux(stream)
    except av.FFmpegError as e:
        raise Corrupt(f"the file cannot be read to its end: {_cause(e)}") from None


def _cause(error: av.FFmpegError) -> str:
    """FFmpeg's words for an error, without the file name it appends."""
    return error.strerror or type(error).__name__
