"""A microphone for wyoming-satellite's --mic-command: raw 16 kHz 16-bit mono PCM on stdout
at real-time pace. Silence until the file named by --go exists, then the WAV, then silence
(as a room would be) until the satellite stops reading.

Standard library only: it runs with any Python (the satellite's venv has no numpy).
"""

from __future__ import annotations

import argparse
import sys
import time
import wave
from pathlib import Path

RATE = 16000
CHUNK_S = 0.02


def _pcm16_mono_16k(path: Path) -> bytes:
    with wave.open(str(path), "rb") as wav:
        if (wav.getsampwidth(), wav.getnchannels(), wav.getframerate()) != (2, 1, RATE):
            raise SystemExit(f"{path}: expected 16 kHz 16-bit mono PCM")
        return wav.readframes(wav.getnframes())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("wav", type=Path)
    parser.add_argument("--go", type=Path, required=True, help="start speaking once it exists")
    args = parser.parse_args()
    speech = _pcm16_mono_16k(args.wav)
    size = int(RATE * CHUNK_S) * 2
    silence = bytes(size)
    out = sys.stdout.buffer
    start = time.monotonic()
    sent = 0
    position: int | None = None  # into `speech`, once speaking
    try:
        while True:
            if position is None and args.go.exists():
                position = 0
            if position is not None and position < len(speech):
                chunk = speech[position : position + size].ljust(size, b"\0")
                position += size
            else:
                chunk = silence
            delay = start + sent * CHUNK_S - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            out.write(chunk)
            out.flush()
            sent += 1
    except (BrokenPipeError, KeyboardInterrupt):
        pass


if __name__ == "__main__":
    main()
