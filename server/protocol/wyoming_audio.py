"""Wyoming audio: any sample width and channel count in, mono 16-bit PCM out.

Wyoming audio may come at any rate, sample width and channel count; `audio_format` checks an
`audio-start` or `audio-chunk`'s format and `to_mono_pcm16` turns its bytes into mono 16-bit
PCM (the rate is kept: the session resamples). The `audio_*_event`s are what chinwag sends: 16-bit
mono at the rate it speaks at. Kept apart from the requests (server/protocol/wyoming.py)
because the satellite link converts and sends audio the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.event import Event

from server.errors import ChinwagError, ErrorCode

SAMPLE_WIDTH = 2  # what chinwag sends and converts to: 16-bit signed little-endian
MAX_CHANNELS = 8
WIDTHS = (1, 2, 3, 4)


@dataclass(frozen=True)
class AudioFormat:
    rate: int
    width: int
    channels: int

    @property
    def bytes_per_frame(self) -> int:
        return self.width * self.channels


def audio_format(data: Mapping[str, Any]) -> AudioFormat:
    """The rate, width and channels of an audio-start or audio-chunk, checked."""
    values = []
    for name in ("rate", "width", "channels"):
        value = data.get(name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ChinwagError(ErrorCode.INVALID_AUDIO_FORMAT, f"audio needs an integer {name}")
        values.append(value)
    fmt = AudioFormat(*values)
    if fmt.width not in WIDTHS:
        raise ChinwagError(
            ErrorCode.INVALID_AUDIO_FORMAT, f"sample width {fmt.width} is not 1, 2, 3 or 4 bytes"
        )
    if not 1 <= fmt.channels <= MAX_CHANNELS:
        raise ChinwagError(
            ErrorCode.INVALID_AUDIO_FORMAT, f"{fmt.channels} channels; 1 to {MAX_CHANNELS} work"
        )
    from server.audio.pcm import check_sample_rate

    check_sample_rate(fmt.rate)
    return fmt


def to_mono_pcm16(audio: bytes, fmt: AudioFormat) -> bytes:
    """Little-endian PCM of any width (8-bit unsigned, 16/24/32-bit signed) and channel count
    as mono 16-bit PCM at the same rate (channels averaged). A trailing partial frame is an
    error: Wyoming chunks hold whole frames."""
    if len(audio) % fmt.bytes_per_frame:
        raise ChinwagError(
            ErrorCode.INVALID_AUDIO_FORMAT,
            f"{len(audio)} bytes is not a whole number of {fmt.bytes_per_frame}-byte frames",
        )
    if fmt.width == SAMPLE_WIDTH and fmt.channels == 1:
        return audio
    raw = np.frombuffer(audio, dtype=np.uint8)
    if fmt.width == 1:
        samples = (raw.astype(np.int32) - 128) << 8
    elif fmt.width == 2:
        samples = np.frombuffer(audio, dtype="<i2").astype(np.int32)
    elif fmt.width == 3:
        triples = raw.reshape(-1, 3).astype(np.int32)
        value = triples[:, 0] | (triples[:, 1] << 8) | (triples[:, 2] << 16)
        samples = np.where(value >= 1 << 23, value - (1 << 24), value) >> 8
    else:
        samples = np.frombuffer(audio, dtype="<i4").astype(np.int64) >> 16
    mono = samples.reshape(-1, fmt.channels).mean(axis=1)
    out: bytes = np.clip(np.rint(mono), -32768, 32767).astype("<i2").tobytes()
    return out


def audio_start_event(rate: int) -> Event:
    return AudioStart(rate=rate, width=SAMPLE_WIDTH, channels=1).event()


def audio_chunk_event(rate: int, pcm: bytes) -> Event:
    return AudioChunk(rate=rate, width=SAMPLE_WIDTH, channels=1, audio=pcm).event()


def audio_stop_event() -> Event:
    return AudioStop().event()
