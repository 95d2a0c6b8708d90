"""PCM helpers: decode client frames, convert sample formats, resample, measure level.

Pure functions and one small stateful resampler; no asyncio, safe in worker threads.
"""

from __future__ import annotations

import math
from typing import Any, Generic, TypeVar, overload

import numpy as np
import numpy.typing as npt
import soxr

from server.errors import ChinwagError, ErrorCode

MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 48000
# Floor for rms_dbfs so digital silence stays a finite, JSON-safe number.
SILENCE_DBFS = -120.0

Float32Audio = npt.NDArray[np.float32]
Int16Audio = npt.NDArray[np.int16]
Audio = Float32Audio | Int16Audio
_Sample = TypeVar("_Sample", np.int16, np.float32)


def check_sample_rate(rate: int) -> None:
    """Reject sample rates outside 8000..48000 Hz (client input, so a ChinwagError)."""
    if isinstance(rate, bool) or not isinstance(rate, int):
        raise ChinwagError(
            ErrorCode.INVALID_AUDIO_FORMAT, f"sample rate must be an integer, got {rate!r}"
        )
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise ChinwagError(
            ErrorCode.INVALID_AUDIO_FORMAT,
            f"sample rate {rate} Hz is not supported; use {MIN_SAMPLE_RATE} to "
            f"{MAX_SAMPLE_RATE} Hz",
        )


def decode_pcm16(frame: bytes) -> Int16Audio:
    """Decode mono 16-bit little-endian PCM; an empty frame gives an empty array."""
    if len(frame) % 2:
        raise ChinwagError(
            ErrorCode.INVALID_AUDIO_FORMAT,
            f"PCM16 frame has an odd number of bytes ({len(frame)}); "
            "expected 16-bit little-endian mono samples",
        )
    # astype copies: the result is writable, native-endian and owns its memory.
    return np.frombuffer(frame, dtype="<i2").astype(np.int16)


def encode_pcm16(audio: Int16Audio) -> bytes:
    """Encode int16 samples as 16-bit little-endian PCM bytes."""
    return audio.astype("<i2", copy=False).tobytes()


def int16_to_float32(audio: Int16Audio) -> Float32Audio:
    """Scale int16 to float32 in [-1, 1)."""
    return audio.astype(np.float32) / np.float32(32768.0)


def float32_to_int16(audio: Float32Audio) -> Int16Audio:
    """Scale float audio to int16, rounding and clipping out-of-range samples."""
    scaled = np.rint(audio.astype(np.float32, copy=False) * np.float32(32768.0))
    np.nan_to_num(scaled, copy=False, nan=0.0)
    out: Int16Audio = np.clip(scaled, -32768, 32767).astype(np.int16)
    return out


def resample(audio: npt.NDArray[_Sample], in_rate: int, out_rate: int) -> npt.NDArray[_Sample]:
    """Resample a whole mono clip at once; keeps the dtype (int16 or float32)."""
    if in_rate == out_rate:
        return audio
    if audio.size == 0:
        return audio.copy()
    if not audio.flags.c_contiguous:
        audio = audio.copy()
    out: npt.NDArray[_Sample] = soxr.resample(audio, in_rate, out_rate, quality="HQ")
    return out


class StreamResampler(Generic[_Sample]):
    """Streaming mono resampler; filter state carries across chunks, so no clicks at borders.

    The concatenated output of process() calls plus flush() equals resample() on the whole
    signal. soxr holds back a few ms (its filter delay) and may return nothing for tiny chunks.
    Not thread-safe: one instance per stream.
    """

    @overload
    def __init__(self: StreamResampler[np.float32], in_rate: int, out_rate: int) -> None: ...
    @overload
    def __init__(self, in_rate: int, out_rate: int, dtype: type[_Sample]) -> None: ...
    def __init__(self, in_rate: int, out_rate: int, dtype: type[_Sample] | None = None) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        if dtype not in (None, np.int16, np.float32):
            raise ValueError(f"dtype must be np.int16 or np.float32, got {dtype!r}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.dtype: np.dtype[Any] = np.dtype(np.float32 if dtype is None else dtype)
        self._stream: soxr.ResampleStream | None = None
        if in_rate != out_rate:
            self._stream = soxr.ResampleStream(
                in_rate, out_rate, 1, dtype=self.dtype.name, quality="HQ"
            )

    @property
    def is_identity(self) -> bool:
        return self._stream is None

    def process(self, chunk: npt.NDArray[_Sample]) -> npt.NDArray[_Sample]:
        """Resample the next chunk; the result may be shorter or empty (filter delay)."""
        chunk = self._check(chunk)
        if self._stream is None:
            return chunk
        out: npt.NDArray[_Sample] = self._stream.resample_chunk(chunk, last=False)
        return out

    def flush(self) -> npt.NDArray[_Sample]:
        """Drain the samples held back by the filter; the resampler is then ready for reuse."""
        if self._stream is None:
            return np.zeros(0, dtype=self.dtype)
        out: npt.NDArray[_Sample] = self._stream.resample_chunk(
            np.zeros(0, dtype=self.dtype), last=True
        )
        self._stream.clear()
        return out

    def reset(self) -> None:
        """Drop buffered samples without emitting them (e.g. on barge-in)."""
        if self._stream is not None:
            self._stream.clear()

    def _check(self, chunk: npt.NDArray[_Sample]) -> npt.NDArray[_Sample]:
        if chunk.ndim != 1:
            raise ValueError(f"expected mono 1-D audio, got shape {chunk.shape}")
        if chunk.dtype != self.dtype:
            raise ValueError(f"expected {self.dtype.name} audio, got {chunk.dtype.name}")
        return chunk if chunk.flags.c_contiguous else chunk.copy()


def rms_dbfs(audio_int16: Int16Audio) -> float:
    """RMS level relative to int16 full scale (a full-scale sine reads about -3 dBFS).

    Empty or silent input gives SILENCE_DBFS rather than -inf.
    """
    if audio_int16.size == 0:
        return SILENCE_DBFS
    samples = audio_int16.astype(np.float64)
    rms = math.sqrt(float(np.mean(samples * samples)))
    if rms == 0.0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 20.0 * math.log10(rms / 32768.0))
