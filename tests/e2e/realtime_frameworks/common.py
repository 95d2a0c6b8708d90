"""Shared by the framework clients: each runs in its framework's own venv (no chinwag there),
so this is stdlib and numpy only. A client prints one JSON line, its report, and exits 0."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import wave
from collections.abc import Callable
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


class ServerEvents:
    """The raw server events a client saw, and waiting for what it expects among them."""

    def __init__(self) -> None:
        self.raw: list[dict[str, Any]] = []
        self.changed = asyncio.Event()  # set on every event (and whatever else a client notes)

    def add(self, event: dict[str, Any]) -> None:
        self.raw.append(event)
        self.changed.set()

    def of(self, kind: str, start: int = 0) -> list[dict[str, Any]]:
        """The events of one type, from position `start` (a `len(raw)` taken earlier)."""
        return [e for e in self.raw[start:] if e.get("type") == kind]

    async def until(self, check: Callable[[], Any], timeout: float = 120) -> Any:
        """Wait until `check()` is truthy, re-checking at each change; returns its value."""
        async with asyncio.timeout(timeout):
            while not (found := check()):
                self.changed.clear()
                await self.changed.wait()
        return found


def report(result: dict[str, Any]) -> None:
    print(json.dumps(result), flush=True)
    sys.stdout.flush()
