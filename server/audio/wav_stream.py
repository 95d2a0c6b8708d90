"""Audio bodies of HTTP responses, decoded as they arrive: raw 16-bit PCM, or WAV whose header
comes first. No I/O.

A streamed WAV (OpenAI's /v1/audio/speech, chinwag's own) is written before its length is
known, so its RIFF and data sizes are placeholders (0 or 0xFFFFFFFF): the data chunk is read to
the end of the body, not to its stated size. The stdlib `wave` module wants a seekable file
with true sizes, hence this.
"""

from __future__ import annotations

import io
import struct
import wave

import numpy as np

from server.engines.base import Float32Audio, Int16Audio

# A header longer than this (chunks before "data") is not a WAV we read.
MAX_HEADER_BYTES = 64 * 1024
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)


class AudioStreamError(ValueError):
    """The body is not audio in the format asked for."""


class Pcm16Decoder:
    """Little-endian 16-bit mono PCM in chunks of any size (an odd byte waits for its pair)."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self._odd = b""

    def feed(self, chunk: bytes) -> Int16Audio:
        data = self._odd + chunk
        whole = len(data) - len(data) % 2
        self._odd = data[whole:]
        return np.frombuffer(data[:whole], dtype="<i2").astype(np.int16)


class WavDecoder:
    """A 16-bit PCM WAV in chunks of any size; mono samples out (channels are averaged).

    `sample_rate` is known once the header is read (None before)."""

    def __init__(self) -> None:
        self.sample_rate: int | None = None
        self.channels = 0
        self._header = b""
        self._in_data = False  # the header is read; what comes is samples
        self._data_left: int | None = None  # bytes of the data chunk still to come, if known
        self._pending = b""  # samples not yet whole (a frame split across chunks)

    def feed(self, chunk: bytes) -> Int16Audio:
        if not self._in_data:
            self._header += chunk
            start = self._parse_header()
            if start is None:
                if len(self._header) > MAX_HEADER_BYTES:
                    raise AudioStreamError("no WAV data chunk in the first 64 KB")
                return np.zeros(0, dtype=np.int16)
            chunk, self._header, self._in_data = self._header[start:], b"", True
        if self._data_left is not None:
            chunk = chunk[: self._data_left]
            self._data_left -= len(chunk)
        data = self._pending + chunk
        frame = 2 * self.channels
        whole = len(data) - len(data) % frame
        self._pending = data[whole:]
        samples = np.frombuffer(data[:whole], dtype="<i2")
        if self.channels > 1:
            mixed = samples.reshape(-1, self.channels).astype(np.int32).mean(axis=1)
            return np.asarray(mixed, dtype=np.int16)
        return samples.astype(np.int16)

    def _parse_header(self) -> int | None:
        """Where the samples start once the header is all here; None if more is needed."""
        head = self._header
        if len(head) < 12:
            return None
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise AudioStreamError("not a WAV file (no RIFF/WAVE header)")
        at = 12
        while len(head) >= at + 8:
            kind, size = head[at : at + 4], struct.unpack_from("<I", head, at + 4)[0]
            body = at + 8
            if kind == b"data":
                if self.sample_rate is None:
                    raise AudioStreamError("WAV data before its fmt chunk")
                self._data_left = None if size in _UNKNOWN_SIZES else size
                return body
            if len(head) < body + size:
                return None
            if kind == b"fmt ":
                self._read_format(head[body : body + size])
            at = body + size + size % 2  # chunks are padded to an even length
        return None

    def _read_format(self, fmt: bytes) -> None:
        if len(fmt) < 16:
            raise AudioStreamError("WAV fmt chunk too short")
        tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", fmt)
        if tag == 0xFFFE and len(fmt) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the subformat's tag
            tag = struct.unpack_from("<H", fmt, 24)[0]
        if tag != 1 or bits != 16 or not 1 <= channels <= 8 or not 1000 <= rate <= 384000:
            raise AudioStreamError(
                f"WAV must be 16-bit PCM (format {tag}, {bits} bits, {channels} channels)"
            )
        self.channels = channels
        self.sample_rate = rate


def wav_bytes(audio: Float32Audio, sample_rate: int) -> bytes:
    """Mono float32 audio in [-1, 1] as a 16-bit PCM WAV file."""
    pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm.tobytes())
    return out.getvalue()
