"""Helpers for the voice tests: the recordings, word error rate, audio conversion."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import jiwer
import numpy as np

from clients.talk import read_wav
from server.audio.pcm import int16_to_float32, resample

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
