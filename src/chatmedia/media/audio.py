"""Describing audio (Opus or Vorbis in Ogg, MP3, AAC and M4A, WAV, WebM) with PyAV: its
duration and a waveform. Runs only inside a sandboxed media process.

The waveform is WAVEFORM_BARS integers 0..100: the loudness (RMS) of each of that many equal
stretches of the whole recording, scaled so the loudest is 100 - the bars a chat app draws
for a voice note. The audio is decoded as a stream, resampled to mono at RATE, and its
squares summed in blocks; when the blocks grow too many, neighbours merge pairwise and
blocks double in length. So memory stays bounded whatever the duration, and the duration
need not be known in advance: it is counted from the samples decoded.
"""

from __future__ import annotations

import math
from array import array
from operator import mul
from typing import Any

import av
from av.audio.frame import AudioFrame

from chatmedia.media.containers import THREADS, opened, packets
from chatmedia.media.stills import Corrupt, Unsupported

RATE = 8000  # samples per second the loudness is measured at
WAVEFORM_BARS = 64
FIRST_BLOCK = RATE // 100  # 10 ms
MAX_BLOCKS = 4096  # even: blocks merge in pairs
# Packets that fail to decode before the audio counts as corrupt.
MAX_BAD_PACKETS = 16


def describe_audio(
    path: str, content_type: str = "", max_pixels: int = 0, sizes: str = ""
) -> dict[str, Any]:
    """Duration and waveform of the audio at `path`; `content_type` (the sniffed type)
    chooses the demuxer. `max_pixels` and `sizes` are the options every task takes, unused
    here."""
    del max_pixels, sizes
    loudness = Loudness()
    resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
    bad = 0
    with opened(path, content_type) as container:
        if not container.streams.audio:
            raise Unsupported("the file has no audio stream")
        stream = container.streams.audio[0]
        stream.codec_context.thread_count = THREADS
        for packet in packets(container, stream):
            try:
                frames = packet.decode()
            except av.FFmpegError:
                bad += 1
                if bad > MAX_BAD_PACKETS:
                    raise Corrupt("the audio stream cannot be decoded") from None
                continue
            for frame in frames:
                try:
                    _measure(loudness, resampler.resample(frame))
                except ValueError:  # the format changed midway (chained Ogg streams)
                    _measure(loudness, resampler.resample(None))
                    resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
                    _measure(loudness, resampler.resample(frame))
        _measure(loudness, resampler.resample(None))
    if loudness.samples == 0:
        raise Corrupt("no audio can be decoded")
    return {
        "durationMs": round(1000 * loudness.samples / RATE),
        "waveform": loudness.bars(WAVEFORM_BARS),
    }


class Loudness:
    """Sums of squared samples over blocks of the whole stream, in bounded memory."""

    def __init__(self) -> None:
        self.samples = 0
        self._block = FIRST_BLOCK
        self._sums: list[float] = []
        self._open_sum = 0.0  # the block being filled
        self._open_count = 0

    def add(self, samples: array[int]) -> None:
        """Count more samples, in stream order."""
        at = 0
        while at < len(samples):
            take = min(self._block - self._open_count, len(samples) - at)
            part = samples[at : at + take]
            self._open_sum += sum(map(mul, part, part))
            self._open_count += take
            at += take
            if self._open_count == self._block:
                self._close_block()
        self.samples += len(samples)

    def bars(self, count: int) -> list[int]:
        """The loudness of `count` equal stretches of the stream, 0..100, loudest 100."""
        sums = [*self._sums, self._open_sum] if self._open_count else self._sums
        lengths = [self._block] * len(self._sums) + ([self._open_count] if self._open_count else [])
        levels = []
        for bar in range(count):
            low = bar * len(sums) // count
            high = max(low + 1, (bar + 1) * len(sums) // count)
            levels.append(math.sqrt(sum(sums[low:high]) / sum(lengths[low:high])))
        loudest = max(levels)
        return [round(100 * level / loudest) if loudest else 0 for level in levels]

    def _close_block(self) -> None:
        self._sums.append(self._open_sum)
        self._open_sum, self._open_count = 0.0, 0
        if len(self._sums) == MAX_BLOCKS:
            self._sums = [a + b for a, b in zip(self._sums[::2], self._sums[1::2], strict=True)]
            self._block *= 2


def _measure(loudness: Loudness, frames: list[AudioFrame]) -> None:
    for frame in frames:
        # One plane of native 16-bit samples, perhaps padded past the last one.
        loudness.add(array("h", bytes(frame.planes[0])[: 2 * frame.samples]))
