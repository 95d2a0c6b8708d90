"""`chinwag talk`: stream an audio file (WAV, FLAC, MP3, Ogg...) to the server as a live
microphone would, then silence.

Also the library the tests and the benchmark use to hold a spoken conversation turn.
The clock starts at the end of the last voiced 20 ms frame (the last frame whose RMS is above
max(-50 dBFS, 3% of the loudest frame)), so trailing silence in the file is not hidden inside
the turn-detection wait.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import wave
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

FRAME_S = 0.02
Pcm = npt.NDArray[np.int16]


class AudioFileError(ValueError):
    """A file that cannot be read as audio; the message says which file and why, in one line."""


# The rates the server takes (8-48 kHz); a file outside them is resampled to the nearest.
MIN_RATE, MAX_RATE = 8000, 48000


def read_audio(path: Path) -> tuple[Pcm, int]:
    """Mono 16-bit samples and their rate, from any audio file PyAV (FFmpeg) decodes: WAV of
    any sample format, FLAC, MP3, Ogg Vorbis or Opus, AAC/M4A... Several channels are mixed
    down; a rate outside 8-48 kHz is resampled into it. A 16-bit PCM WAV is read as it is,
    with the standard library. Raises AudioFileError (a ValueError) for anything else."""
    try:
        return _read_pcm16_wav(path)
    except (wave.Error, EOFError, _NotPcm16):
        pass  # another WAV format, or not a WAV: FFmpeg knows
    return _decode(path)


read_wav = read_audio  # the name the tests and benchmarks know


class _NotPcm16(Exception):
    pass


def _read_pcm16_wav(path: Path) -> tuple[Pcm, int]:
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise _NotPcm16
        rate, channels = wav.getframerate(), wav.getnchannels()
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    if not MIN_RATE <= rate <= MAX_RATE or len(data) % channels:
        raise _NotPcm16
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return data.astype(np.int16), rate


def _decode(path: Path) -> tuple[Pcm, int]:
    import av  # PyAV comes with faster-whisper; imported only for files that need it

    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise AudioFileError(f"{path}: not an audio file chinwag can read ({reason})") from exc
    chunks: list[Pcm] = []
    with container:
        if not container.streams.audio:
            raise AudioFileError(f"{path}: the file has no audio stream")
        stream = container.streams.audio[0]
        rate = min(max(stream.codec_context.sample_rate or 16000, MIN_RATE), MAX_RATE)
        resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
        try:
            for frame in container.decode(stream):
                chunks.extend(_samples(f) for f in resampler.resample(frame))
            chunks.extend(_samples(f) for f in resampler.resample(None))
        except av.FFmpegError as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise AudioFileError(f"{path}: the audio cannot be decoded ({reason})") from exc
    if not chunks or not sum(len(c) for c in chunks):
        raise AudioFileError(f"{path}: the file holds no audio samples")
    return np.concatenate(chunks).astype(np.int16), rate


def _samples(frame: Any) -> Pcm:
    """A resampled (s16, mono) frame's samples."""
    return np.asarray(frame.to_ndarray(), dtype=np.int16).reshape(-1)


def write_wav(path: Path, pcm: bytes, rate: int) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)


def speech_end_s(pcm: Pcm, rate: int) -> float:
    """End of the last voiced 20 ms frame, in seconds from the start of the recording."""
    size = int(rate * FRAME_S)
    frames = len(pcm) // size
    if frames == 0:
        return len(pcm) / rate
    blocks = pcm[: frames * size].astype(np.float64).reshape(frames, size) / 32768.0
    rms = np.sqrt((blocks**2).mean(axis=1))
    threshold = max(10 ** (-50 / 20), 0.03 * float(rms.max()))
    voiced = np.nonzero(rms > threshold)[0]
    return float((voiced[-1] + 1) * FRAME_S) if len(voiced) else 0.0


@dataclass
class TalkResult:
    transcript: str = ""
    reply: str = ""
    heard: str | None = None
    status: str = ""
    audio: bytearray = field(default_factory=bytearray)
    audio_rate: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    discarded: bool = False


async def send_paced(
    send: Callable[[bytes], Awaitable[None]],
    pcm: Pcm,
    rate: int,
    start: float,
    mark: dict[str, float],
    end_s: float | None = None,
) -> None:
    """The recording at real-time pace in 20 ms frames of PCM16, each through `send`, then
    silence for as long as needed; mark["speech_end"] is set when the last voiced frame is out
    (end_s: where the speech ends, when the file's loudness cannot tell, as under noise)."""
    size = int(rate * FRAME_S)
    if end_s is None:
        end_s = speech_end_s(pcm, rate)
    silence = np.zeros(size, dtype="<i2").tobytes()
    index = 0
    while True:
        offset = index * size
        chunk = (
            pcm[offset : offset + size].astype("<i2").tobytes() if offset < len(pcm) else silence
        )
        due = start + index * FRAME_S
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await send(chunk)
        index += 1
        if "speech_end" not in mark and index * FRAME_S >= end_s:
            mark["speech_end"] = time.perf_counter()


async def talk_turn(
    ws: ClientConnection,
    pcm: Pcm,
    rate: int,
    *,
    output_sample_rate: int | None = None,
    timeout: float = 120.0,
    wait_for_audio_end: bool = True,
    speech_end: float | None = None,
) -> TalkResult:
    """Speak one utterance on an open session and collect the spoken answer (speech_end: the
    end of the speech in the file, in seconds, if the file's loudness cannot tell)."""
    result = TalkResult()
    start_msg: dict[str, Any] = {"type": "audio.start", "sample_rate": rate}
    if output_sample_rate:
        start_msg["output_sample_rate"] = output_sample_rate
    await ws.send(json.dumps(start_msg))
    mark: dict[str, float] = {}
    sender = asyncio.create_task(
        send_paced(ws.send, pcm, rate, time.perf_counter(), mark, speech_end)
    )
    reply_done = audio_done = False
    transcripts: list[tuple[str, str]] = []  # (utterance id, text)
    # Replies the person spoke over: their `reply.done` (cancelled) can arrive after the end of
    # the file's speech on a loaded server, and the answer that counts is the one that follows.
    spoken_over: set[str] = set()
    replying: str | None = None
    try:
        async with asyncio.timeout(timeout):
            while not (reply_done and (audio_done or not wait_for_audio_end)):
                frame = await ws.recv()
                now = time.perf_counter()
                # A recording may hold several turns (a pause between sentences); the answer
                # that counts is the one to the end of it, so timings start at speech end.
                ended = "speech_end" in mark
                if isinstance(frame, bytes):
                    if ended and "first_audio" not in mark:
                        mark["first_audio"] = now
                    result.audio.extend(frame)
                    continue
                event = json.loads(frame)
                result.events.append(event)
                kind = event["type"]
                if kind == "speech.started" and replying is not None:
                    spoken_over.add(replying)
                elif kind == "reply.started":
                    replying = event["reply_id"]
                elif kind == "speech.stopped" and ended:
                    mark["turn_end"] = now  # the last one after the end of speech
                elif kind == "transcript":
                    if ended:
                        mark.setdefault("transcript", now)
                    joined = event.get("joins")
                    transcripts[:] = [(u, t) for u, t in transcripts if u != joined]
                    transcripts.append((event["utterance_id"], event["text"].strip()))
                elif kind == "speech.discarded" and ended and not transcripts:
                    result.discarded = True
                    break
                elif kind == "reply.delta" and ended:
                    mark.setdefault("first_token", now)
                elif kind == "output_audio.start":
                    result.audio_rate = event["sample_rate"]
                    result.audio.clear()  # keep the last reply's audio only
                    audio_done = False
                elif kind == "output_audio.done":
                    audio_done = True
                elif kind == "reply.done" and event["reply_id"] == replying:
                    replying = None
                if (
                    kind == "reply.done"
                    and event["reply_id"] in spoken_over
                    and event["status"] != "completed"
                ):
                    continue
                if kind == "reply.done" and (ended or event["status"] == "completed"):
                    reply_done = ended
                    result.reply = event["text"]
                    result.heard = event.get("heard_text")
                    result.status = event["status"]
                    if event["reply_id"] not in {
                        e.get("stream_id")
                        for e in result.events
                        if e["type"] == "output_audio.start"
                    }:
                        audio_done = True  # nothing was spoken
                        result.audio.clear()  # an earlier reply's audio is not this one's
                elif kind == "error":
                    raise RuntimeError(f"{event['code']}: {event['message']}")
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    result.transcript = " ".join(text for _, text in transcripts)
    await ws.send(json.dumps({"type": "audio.stop"}))
    end = mark.get("speech_end")
    if end is not None:
        for name in ("turn_end", "transcript", "first_token", "first_audio"):
            if name in mark:
                result.timings_ms[f"speech_end_to_{name}"] = round((mark[name] - end) * 1000, 1)
    return result


async def run_talk(
    url: str, wav: Path, *, out: Path | None, as_json: bool, token: str | None = None
) -> int:
    try:
        pcm, rate = read_audio(wav)
    except OSError as exc:
        print(f"chinwag: {wav}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # AudioFileError
        print(f"chinwag: {exc}", file=sys.stderr)
        return 2
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        async with connect(url, additional_headers=headers, open_timeout=30) as ws:
            first = json.loads(await asyncio.wait_for(ws.recv(), 600))
            if first.get("type") != "session.started":
                print(f"chinwag: unexpected first event {first}", file=sys.stderr)
                return 1
            result = await talk_turn(ws, pcm, rate)
    except (OSError, InvalidStatus, ConnectionClosed, TimeoutError, RuntimeError) as exc:
        print(f"chinwag: talking to {url} failed: {exc!r}", file=sys.stderr)
        return 1
    if out is not None and result.audio:
        write_wav(out, bytes(result.audio), result.audio_rate)
    if as_json:
        print(
            json.dumps(
                {
                    "transcript": result.transcript,
                    "reply": result.reply,
                    "timings_ms": result.timings_ms,
                    "reply_audio_ms": round(len(result.audio) / 2 / result.audio_rate * 1000, 1)
                    if result.audio_rate
                    else 0,
                    "discarded": result.discarded,
                }
            )
        )
    else:
        print(f"you:     {result.transcript}" if not result.discarded else "you:     (no speech)")
        print(f"chinwag: {result.reply}")
        for name, value in result.timings_ms.items():
            print(f"  {name}: {value:.0f} ms", file=sys.stderr)
    return 0 if result.reply.strip() and not result.discarded else 1
