"""`chinwag satellite`'s sound (clients/satellite.py is the satellite): the microphone or an
audio file in, the speaker or a WAV file out, the buffer the speaker plays from, and the check
that the sound devices are there. PortAudio (`sounddevice`) is imported only when used.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

from clients.talk import Pcm, read_audio

log = logging.getLogger("chinwag.satellite")

FRAME_S = 0.02  # microphone frames of 20 ms
MIC_RATE = 16000
MIC_QUEUE_FRAMES = 50  # 1 s: a stalled connection drops the oldest microphone audio
PLAYBACK_MAX_S = 120.0  # reply audio held for the speaker; beyond it the oldest is dropped


class Fatal(Exception):
    """A problem that retrying will not fix (a refused token, a missing sound device)."""


def load_sounddevice() -> Any:
    """The `sounddevice` module; Fatal when PortAudio (libportaudio2) is not installed."""
    try:
        import sounddevice
    except OSError as exc:
        raise Fatal(f"no PortAudio ({exc}); --input-file/--output-file work without") from exc
    return sounddevice


def _open_stream(factory: Any, **options: Any) -> Any:
    try:
        return factory(**options)
    except Exception as exc:  # sounddevice.PortAudioError: no such device, busy...
        raise Fatal(f"sound device: {exc}") from exc


class PlaybackBuffer:
    """Reply audio waiting for the speaker: written on the event loop, read by PortAudio's
    thread. Bounded (the oldest is dropped beyond `max_bytes`); `clear()` is barge-in."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._data = bytearray()
        self._lock = threading.Lock()
        self.played_bytes = 0  # of the current stream
        self.dropped_bytes = 0

    def write(self, pcm: bytes) -> None:
        with self._lock:
            self._data.extend(pcm)
            over = len(self._data) - self.max_bytes
            if over > 0:
                over += over % 2  # whole samples
                del self._data[:over]
                self.dropped_bytes += over

    def read(self, size: int) -> bytes:
        """Up to `size` bytes for the speaker, padded with silence."""
        with self._lock:
            chunk = bytes(self._data[:size])
            del self._data[:size]
            self.played_bytes += len(chunk)
        return chunk + bytes(size - len(chunk))

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def new_stream(self) -> None:
        with self._lock:
            self.played_bytes = 0

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._data)


# --- audio in ----------------------------------------------------------------------------------


class AudioSource(Protocol):
    rate: int
    finished: asyncio.Event  # a file source: the whole file has been sent

    def frames(self) -> AsyncIterator[bytes]: ...


class FileSource:
    """An audio file at real-time pace in 20 ms frames, then silence for as long as the
    connection lasts (a quiet room). Played once, across reconnections."""

    def __init__(self, path: Path) -> None:
        self.pcm, self.rate = read_audio(path)
        self.finished = asyncio.Event()
        self._offset = 0  # samples sent, kept across reconnections

    async def frames(self) -> AsyncIterator[bytes]:
        size = int(self.rate * FRAME_S)
        silence = bytes(size * 2)
        start = time.perf_counter()
        sent = 0
        while True:
            if self._offset < len(self.pcm):
                chunk: Pcm = self.pcm[self._offset : self._offset + size]
                self._offset += size
                frame = chunk.astype("<i2").tobytes().ljust(size * 2, b"\0")
            else:
                self.finished.set()
                frame = silence
            delay = start + sent * FRAME_S - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent += 1
            yield frame


class MicrophoneSource:
    """The default (or the named) input device, 16 kHz mono 16-bit, 20 ms frames."""

    def __init__(self, device: str | int | None) -> None:
        self.rate = MIC_RATE
        self.device = device
        self.finished = asyncio.Event()  # never: a microphone does not end

    async def frames(self) -> AsyncIterator[bytes]:
        sounddevice = load_sounddevice()  # only a satellite with a sound card needs PortAudio
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes] = asyncio.Queue(MIC_QUEUE_FRAMES)

        def put(frame: bytes) -> None:
            if queue.full():  # the connection stalls: the oldest audio goes
                queue.get_nowait()
            queue.put_nowait(frame)

        def callback(data: Any, frames: int, when: Any, status: Any) -> None:
            loop.call_soon_threadsafe(put, bytes(data))

        stream = _open_stream(
            sounddevice.RawInputStream,
            samplerate=self.rate,
            blocksize=int(self.rate * FRAME_S),
            channels=1,
            dtype="int16",
            device=self.device,
            callback=callback,
        )
        with stream:
            while True:
                yield await queue.get()


# --- audio out ---------------------------------------------------------------------------------


class AudioSink(Protocol):
    # Whether played_ms() is what a listener heard (a speaker), worth reporting to the server;
    # a file is written at once, and the server's own clock is the better guess.
    reports: bool

    def start(self, stream_id: str, rate: int) -> None: ...

    def write(self, pcm: bytes) -> None: ...

    def clear(self) -> None: ...

    @property
    def playing(self) -> bool: ...

    def played_ms(self) -> float: ...

    def close(self) -> None: ...


class FileSink:
    """Every reply's audio into one WAV file (at the first reply's rate), written as it comes.
    Barge-in drops nothing here: a file has no buffer to drop (the server stopped sending)."""

    reports = False

    def __init__(self, path: Path) -> None:
        self.path = path
        self._wav: wave.Wave_write | None = None
        self.rate = 0
        self._bytes = 0

    def start(self, stream_id: str, rate: int) -> None:
        if self._wav is None:
            self._wav = wave.open(str(self.path), "wb")  # noqa: SIM115 - open for the run
            self._wav.setnchannels(1)
            self._wav.setsampwidth(2)
            self._wav.setframerate(rate)
            self.rate = rate
        elif rate != self.rate:
            log.warning("a reply at %d Hz in a %d Hz file: written as it is", rate, self.rate)
        self._bytes = 0

    def write(self, pcm: bytes) -> None:
        if self._wav is not None:
            self._wav.writeframes(pcm)
            self._bytes += len(pcm)

    def clear(self) -> None:
        pass

    @property
    def playing(self) -> bool:
        return False

    def played_ms(self) -> float:
        return self._bytes / 2 / self.rate * 1000 if self.rate else 0.0

    def close(self) -> None:
        if self._wav is not None:
            self._wav.close()
            self._wav = None


class SpeakerSink:
    """The default (or the named) output device, fed from a PlaybackBuffer by PortAudio."""

    reports = True

    def __init__(self, device: str | int | None) -> None:
        self.device = device
        self.buffer = PlaybackBuffer(0)
        self.rate = 0
        self._stream: Any = None

    def start(self, stream_id: str, rate: int) -> None:
        if rate != self.rate:
            self.close()
        if self._stream is None:
            sounddevice = load_sounddevice()
            self.rate = rate
            self.buffer = PlaybackBuffer(int(PLAYBACK_MAX_S * rate) * 2)
            buffer = self.buffer

            def callback(out: Any, frames: int, when: Any, status: Any) -> None:
                out[:] = buffer.read(frames * 2)

            self._stream = _open_stream(
                sounddevice.RawOutputStream,
                samplerate=rate,
                channels=1,
                dtype="int16",
                device=self.device,
                callback=callback,
            )
            self._stream.start()
        self.buffer.new_stream()

    def write(self, pcm: bytes) -> None:
        self.buffer.write(pcm)

    def clear(self) -> None:
        self.buffer.clear()

    @property
    def playing(self) -> bool:
        return self.buffer.pending > 0

    def played_ms(self) -> float:
        return self.buffer.played_bytes / 2 / self.rate * 1000 if self.rate else 0.0

    def close(self) -> None:
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None


def check_devices(source: AudioSource, sink: AudioSink) -> None:
    """Fail at start, not at the first reply, when a sound device is missing."""
    checks: list[tuple[str, Any]] = []
    if isinstance(source, MicrophoneSource):
        checks.append(("input", source.device))
    if isinstance(sink, SpeakerSink):
        checks.append(("output", sink.device))
    if not checks:
        return
    sounddevice = load_sounddevice()
    for kind, device in checks:
        check = getattr(sounddevice, f"check_{kind}_settings")
        try:
            check(device=device, channels=1, dtype="int16", samplerate=MIC_RATE)
        except Exception as exc:  # PortAudioError, ValueError: no such device
            raise Fatal(
                f"no {kind} sound device ({exc}); --input-file/--output-file work without"
            ) from exc
