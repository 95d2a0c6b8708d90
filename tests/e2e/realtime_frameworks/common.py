"""Shared by the framework clients: each runs in its framework's own venv (no chinwag there),
so this is stdlib and numpy only. A client prints one JSON line, its report, and exits 0."""

from __future__ import annotations

import argparse
import json
import sys
import wave
from typing import Any

import numpy as np

RATE = 24000


def args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True, help="the server, http://127.0.0.1:PORT")
    parser.add_argument("--question", required=True, help="a recording of a short question")
    parser.add_argument("--interruption", required=True, help="a recording to talk over a reply")
    return parser.parse_args()


def pcm24k(path: str) -> np.ndarray:
    """A 16-bit mono WAV at 24 kHz (linear interpolation is enough for speech)."""
    with wave.open(path, "rb") as wav:
        assert wav.getsampwidth() == 2 and wav.getnchannels() == 1, path
        rate = wav.getframerate()
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.float32)
    if rate != RATE:
        n = int(len(pcm) * RATE / rate)
        pcm = np.interp(np.linspace(0, len(pcm) - 1, n), np.arange(len(pcm)), pcm)
    return pcm.astype("<i2")


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(RATE * seconds), dtype="<i2")


def report(result: dict[str, Any]) -> None:
    print(json.dumps(result), flush=True)
    sys.stdout.flush()
