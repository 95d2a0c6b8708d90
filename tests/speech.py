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


@dataclass(frozen=True)
class Recording:
    path: Path
    rate: int
    text: str


def recordings() -> list[Recording]:
    with (DATA / "transcripts.tsv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [Recording(DATA / r["file"], int(r["sample_rate"]), r["text"]) for r in rows]


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
