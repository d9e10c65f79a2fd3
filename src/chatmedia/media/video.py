"""Describing videos (MP4, MOV, WebM, MKV) with PyAV: duration, size as displayed, and a
poster frame made into previews and a BlurHash. Runs only inside a sandboxed media process.

Phones store a portrait video as landscape frames and a display matrix that turns them; the
decoder attaches that matrix to each frame as side data, which PyAV reads back as
`VideoFrame.rotation` (degrees counter-clockwise). Width, height and poster are given as
displayed: turned, and stretched by the sample aspect ratio.

The poster is the first keyframe at or after POSTER_AT (or a tenth of a shorter video):
only keyframes are decoded (`skip_frame = "NONKEY"`), so finding it costs a keyframe or
two, and a frame that fades in from black is usually skipped.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import av
from av.container import InputContainer
from av.video.frame import VideoFrame
from av.video.stream import VideoStream
from PIL import Image

from chatmedia.media.containers import THREADS, opened, packets
from chatmedia.media.stills import (
    Corrupt,
    Unsupported,
    blurhash,
    check_pixels,
    displayable,
    fit,
    parse_sizes,
    previews,
    turned,
)

POSTER_AT = 1.0  # seconds
# With keyframes further apart than this past POSTER_AT, the last one before it will do.
POSTER_REACH = 5.0  # seconds
# Packets that fail to decode before the video counts as corrupt.
MAX_BAD_PACKETS = 16


def describe_video(
    path: str, content_type: str = "", max_pixels: int = 32_000_000, sizes: str = "320,800"
) -> dict[str, Any]:
    """Duration, width and height as displayed, BlurHash and poster previews of the video
    at `path`. `content_type` (the sniffed type) chooses the demuxer; frames of more than
    `max_pixels` are refused before decoding."""
    boxes = parse_sizes(sizes)
    with opened(path, content_type) as container:
        if not container.streams.video:
            raise Unsupported("the file has no video stream")
        stream = container.streams.video[0]
        context = stream.codec_context
        if context.width and context.height:  # else known once a frame is decoded
            check_pixels(context.width, context.height, max_pixels)
        context.thread_count = THREADS
        context.skip_frame = "NONKEY"
        duration = _duration(container, stream)
        at = POSTER_AT if duration is None else min(POSTER_AT, duration / 10)
        frame, end = _poster(container, stream, at, need_end=duration is None)
    check_pixels(frame.width, frame.height, max_pixels)
    width = round(frame.width * _aspect(stream))
    height = frame.height
    target = fit(width, height, boxes[-1])
    try:
        rgb = frame.reformat(*target, format="rgb24", interpolation="AREA")
    except av.FFmpegError as e:
        raise Corrupt(f"the poster frame cannot be converted: {e.strerror}") from None
    plane = rgb.planes[0]  # rows of line_size bytes, perhaps padded
    picture = Image.frombytes("RGB", target, bytes(plane), "raw", "RGB", plane.line_size)
    shown = turned(displayable(picture, target), frame.rotation)
    if round(frame.rotation / 90) % 2:  # a quarter turn
        width, height = height, width
    return {
        "durationMs": round(1000 * (duration if duration is not None else end)),
        "width": width,
        "height": height,
        "blurhash": blurhash(shown),
        "previews": previews(shown, boxes),
    }


def _duration(container: InputContainer, stream: VideoStream) -> float | None:
    """Seconds, as the container or the stream states it; None if neither does."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _poster(
    container: InputContainer, stream: VideoStream, at: float, need_end: bool
) -> tuple[VideoFrame, float]:
    """The first keyframe at or after `at` seconds (or the last before it, if the next
    is far), and when the stream ends if `need_end` (else 0: reading stops early)."""
    poster: VideoFrame | None = None
    done = False
    end = 0.0
    bad = 0
    for packet in packets(container, stream):
        if packet.pts is not None and packet.time_base is not None:
            time = float((packet.pts + (packet.duration or 0)) * packet.time_base)
            end = max(end, time)
            done = done or (poster is not None and time > at + POSTER_REACH)
        if done and not need_end:
            break
        if done:
            continue
        try:
            frames = packet.decode()
        except av.FFmpegError:
            bad += 1
            if bad > MAX_BAD_PACKETS:
                break
            continue
        for frame in frames:
            poster = frame
            done = frame.time is None or frame.time >= at
    if poster is None:
        poster = _first_frame(container, stream)
    return poster, end


def _first_frame(container: InputContainer, stream: VideoStream) -> VideoFrame:
    """The first frame of all, for a stream that flags no keyframe."""
    stream.codec_context.skip_frame = "DEFAULT"
    try:
        container.seek(0, stream=stream)
        for frame in container.decode(stream):
            return frame
    except av.FFmpegError:
        pass
    raise Corrupt("no frame of the video can be decoded")


def _aspect(stream: VideoStream) -> Fraction:
    """The width of a pixel relative to its height (anamorphic video)."""
    ratio = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    return ratio if ratio and 0.1 < ratio < 10 else Fraction(1)
