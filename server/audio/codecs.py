"""Audio files in and out with PyAV (FFmpeg): any common format decoded to 16 kHz mono, and
speech encoded as it is synthesized (WAV, raw PCM, MP3, Opus, FLAC, AAC).

Blocking; call from worker threads. PyAV already comes with faster-whisper, and its wheels
carry FFmpeg with the encoders used here (libmp3lame, libopus, flac, aac), so no codec is
written by hand. The one exception is the WAV header: FFmpeg's WAV muxer seeks back to write
the sizes, which a stream cannot do, so a streamed WAV gets the usual "unknown length"
header (sizes 0xFFFFFFFF) from `wav_header`.
"""

from __future__ import annotations

import contextlib
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from server.audio.pcm import Float32Audio, Int16Audio


class AudioDecodeError(Exception):
    """The bytes are not audio FFmpeg can read (or hold no samples)."""


class AudioTooLong(Exception):
    """The audio lasts longer than the caller allows."""

    def __init__(self, limit_s: float) -> None:
        super().__init__(f"the audio is longer than {limit_s:g} s")
        self.limit_s = limit_s


def decode_audio(data: bytes, rate: int, max_seconds: float) -> Float32Audio:
    """A whole audio file (any container and codec FFmpeg reads) as mono float32 at `rate`.

    Stops with AudioTooLong as soon as more than `max_seconds` are decoded, so a long file
    costs no more than the limit."""
    import io

    import av

    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise AudioDecodeError(_reason(exc)) from exc
    limit = int(max_seconds * rate)
    chunks: list[Float32Audio] = []
    total = 0
    with container:
        if not container.streams.audio:
            raise AudioDecodeError("the file has no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    samples = np.asarray(out.to_ndarray(), dtype=np.float32).reshape(-1)
                    chunks.append(samples)
                    total += samples.size
                if total > limit:
                    raise AudioTooLong(max_seconds)
            chunks.extend(
                np.asarray(f.to_ndarray(), dtype=np.float32).reshape(-1)
                for f in resampler.resample(None)
            )
        except (av.FFmpegError, ValueError) as exc:
            raise AudioDecodeError(_reason(exc)) from exc
    audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    if not audio.size:
        raise AudioDecodeError("the file holds no audio samples")
    if audio.size > limit:
        raise AudioTooLong(max_seconds)
    return np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False)


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(reason)[:200]


def wav_header(rate: int, channels: int = 1, bits: int = 16) -> bytes:
    """A WAV (RIFF) header for a stream of unknown length: both sizes are 0xFFFFFFFF, which
    FFmpeg, browsers, SoX and Python's soundfile read as "until the end"."""
    block = channels * bits // 8
    return (
        b"RIFF"
        + struct.pack("<I", 0xFFFFFFFF)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block, block, bits)
        + b"data"
        + struct.pack("<I", 0xFFFFFFFF)
    )


@dataclass(frozen=True)
class OutputFormat:
    """How one `response_format` of /v1/audio/speech is made."""

    content_type: str
    container: str | None  # FFmpeg muxer; None: raw PCM (with a WAV header for "wav")
    codec: str | None
    bit_rate: int | None = None  # lossy codecs: FFmpeg's defaults are low for speech (32k mp3)


# The formats OpenAI's speech endpoint names; all at 24 kHz mono, as OpenAI's.
OUTPUT_FORMATS: dict[str, OutputFormat] = {
    "wav": OutputFormat("audio/wav", None, None),
    "pcm": OutputFormat("audio/pcm", None, None),
    "mp3": OutputFormat("audio/mpeg", "mp3", "libmp3lame", 64_000),
    "opus": OutputFormat("audio/ogg", "ogg", "libopus", 32_000),
    "flac": OutputFormat("audio/flac", "flac", "flac"),
    "aac": OutputFormat("audio/aac", "adts", "aac", 64_000),
}
OUTPUT_RATE = 24_000


class _Collect:
    """A write-only file for PyAV's muxer: keeps what it writes until taken."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        return len(chunk)

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


class SpeechEncoder:
    """Mono int16 audio at OUTPUT_RATE in, bytes of one response format out, piece by piece.

    `encode(pcm)` returns the bytes ready so far (the muxer flushes each packet), `finish()`
    the rest. Not thread-safe; use from one worker at a time."""

    def __init__(self, response_format: str) -> None:
        self.format = OUTPUT_FORMATS[response_format]
        self._header_sent = response_format != "wav"
        self._container: Any = None
        self._stream: Any = None
        self._out = _Collect()
        if self.format.container is not None:
            import av

            self._container = av.open(
                self._out, mode="w", format=self.format.container, options={"flush_packets": "1"}
            )
            self._stream = self._container.add_stream(
                self.format.codec, rate=OUTPUT_RATE, layout="mono"
            )
            if self.format.bit_rate is not None:
                self._stream.bit_rate = self.format.bit_rate

    def encode(self, pcm: Int16Audio) -> bytes:
        if self._container is None:
            data = np.asarray(pcm, dtype="<i2").tobytes()
            if not self._header_sent:
                self._header_sent = True
                data = wav_header(OUTPUT_RATE) + data
            return data
        if not len(pcm):
            return self._out.take()
        import av

        frame = av.AudioFrame.from_ndarray(
            np.asarray(pcm, dtype=np.int16).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = OUTPUT_RATE
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        return self._out.take()

    def finish(self) -> bytes:
        if self._container is None:
            return self.encode(np.zeros(0, dtype=np.int16))
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        self._container = None
        return self._out.take()

    def close(self) -> None:
        """Release the encoder without finishing (the client went away)."""
        if self._container is not None:
            # A half-written stream may fail to close; nobody reads it.
            with contextlib.suppress(Exception):
                self._container.close()
            self._container = None
