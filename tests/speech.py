"""Helpers for the voice tests: the recordings, word error rate, audio conversion."""

from __future__ import annotations

import csv
import io
import re
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import jiwer
import numpy as np

from clients.talk import read_wav
from server.audio.pcm import float32_to_int16, int16_to_float32, resample

DATA = Path(__file__).resolve().parent / "data" / "human"
PIPER_DATA = DATA.parent / "piper"  # Piper speech at 24 kHz that Whisper's short window looped on


@dataclass(frozen=True)
class Recording:
    path: Path
    rate: int
    text: str


def recordings(folder: Path = DATA) -> list[Recording]:
    with (folder / "transcripts.tsv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [Recording(folder / r["file"], int(r["sample_rate"]), r["text"]) for r in rows]


def piper_recordings() -> list[Recording]:
    return recordings(PIPER_DATA)


def recording(name: str) -> Recording:
    return next(r for r in recordings() if r.path.name == name)


def normalise(text: str) -> str:
    text = text.lower().replace("-", " ")
    return re.sub(r"\s+", " ", re.sub(r"[^a-z0-9' ]", " ", text)).strip()


def wer(references: list[str], hypotheses: list[str]) -> float:
    return float(
        jiwer.wer(
            [normalise(r) for r in references], [normalise(h) or "<empty>" for h in hypotheses]
        )
    )


def repeated_run(text: str, length: int = 4) -> str | None:
    """A run of `length` words that the text says twice (a decoding loop, in a transcript of
    one short sentence), or None."""
    words = normalise(text).split()
    first: dict[tuple[str, ...], int] = {}
    for i in range(len(words) - length + 1):
        run = tuple(words[i : i + length])
        if i - first.setdefault(run, i) >= length:
            return " ".join(run)
    return None


def turn_so_far(rec: Recording) -> list[np.ndarray]:
    """What the server transcribes of this recording streamed in 20 ms frames: the turn so far
    at each pause (a speculative reply's audio), then the whole turn; through the server's
    own resampler and VAD, so the samples are the server's, to the last bit."""
    from server.audio.pcm import StreamResampler
    from server.audio.vad import SpeechPaused, SpeechStopped, StreamingVad, VadConfig

    pcm, rate = read_wav(rec.path)
    pcm = np.concatenate([pcm, np.zeros(rate, dtype=np.int16)])  # the microphone stays open
    resampler = StreamResampler(rate, 16000, np.float32)
    vad = StreamingVad(config=VadConfig(report_pauses=True))
    found = []
    for i in range(0, len(pcm), rate // 50):
        for event in vad.feed(resampler.process(int16_to_float32(pcm[i : i + rate // 50]))):
            if isinstance(event, SpeechPaused | SpeechStopped):
                found.append(event.audio)
    return found


def to_16k_float(pcm: np.ndarray, rate: int) -> np.ndarray:
    return resample(int16_to_float32(pcm.astype(np.int16)), rate, 16000)


def load_16k(rec: Recording) -> np.ndarray:
    pcm, rate = read_wav(rec.path)
    return to_16k_float(pcm, rate)


def espeak_16k(text: str, voice: str = "en-us", speed: int = 150) -> np.ndarray:
    """espeak-ng (Debian package) saying `text`: 16 kHz int16, leading and trailing silence cut."""
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    with wave.open(io.BytesIO(wav)) as f:
        rate = f.getframerate()
        pcm = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2")
    return trim_silence(float32_to_int16(to_16k_float(pcm, rate)))


def trim_silence(audio: np.ndarray, level: int = 300) -> np.ndarray:
    """`audio` (int16) from its first to its last sample louder than `level`."""
    loud = np.nonzero(np.abs(audio.astype(np.int32)) > level)[0]
    return audio[loud[0] : loud[-1] + 1] if loud.size else audio[:0]
