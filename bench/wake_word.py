"""Wake words: what one always-listening stream costs, and whether four fit beside a voice turn.

1. The detector alone, in this process: CPU seconds per second of audio for one stream
   listening for one wake word and for all five, fed the same speech without wake words
   (tests/wake_corpus.py) in 20 ms frames, as fast as it goes and at real-time pace.
2. A real `chinwag serve` (its own process, default models): rounds that alternate 0 and N
   always-listening sessions (native WebSocket, `wake` set, speech without the wake word at
   real-time pace in 20 ms frames). In each: the server's CPU share over a window, then a
   spoken question (a tests/data/human recording, no wake word, on its own session) and its
   end of speech -> first reply audio. The streaming clients run in this process, on the same
   cores: on a real site they are the devices.

Prints a table and writes bench/results-wake.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.client import connect

from bench.common import BENCH_DIR, hardware, median, percentile, server_process
from clients.talk import read_wav, talk_turn
from server.engines.open_wakeword import OpenWakeWordEngine
from tests.speech import recordings
from tests.wake_corpus import non_wake_audio

RATE = 16_000
FRAME = 320  # 20 ms
TICKS = os.sysconf("SC_CLK_TCK")


def corpus(seconds: float, seed: int) -> np.ndarray:
    return np.concatenate([audio for _, audio in non_wake_audio(seconds, seed=seed)])


def detector_cost(audio: np.ndarray, words: list[str], paced_s: float) -> dict[str, float]:
    engine = OpenWakeWordEngine()
    detector = engine.new_detector(words)
    detector.process(np.zeros(FRAME, dtype=np.int16))  # the first call fills 8 s of history
    start = time.thread_time()
    for offset in range(0, audio.size, FRAME):
        detector.process(audio[offset : offset + FRAME])
    fast = (time.thread_time() - start) / (audio.size / RATE)
    # Real-time pace: the same frames, each when it is due.
    paced = audio[: round(paced_s * RATE)]
    begin, start = time.perf_counter(), time.thread_time()
    for index, offset in enumerate(range(0, paced.size, FRAME)):
        delay = begin + index * FRAME / RATE - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        detector.process(paced[offset : offset + FRAME])
    real_time = (time.thread_time() - start) / (paced.size / RATE)
    return {"cpu_per_audio_s_fast": fast, "cpu_per_audio_s_paced": real_time}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


@contextlib.asynccontextmanager
async def listening_devices(port: int, count: int, audio: np.ndarray) -> AsyncIterator[None]:
    """`count` sessions waiting for hey_jarvis, each streaming `audio` on a loop."""

    async def device(index: int) -> None:
        async with connect(f"ws://127.0.0.1:{port}/", max_size=None, ping_interval=None) as ws:
            await ws.recv()
            wake = {"words": ["hey_jarvis"]}
            await ws.send(json.dumps({"type": "session.start", "wake": wake}))
            await ws.send(json.dumps({"type": "audio.start", "sample_rate": RATE}))
            start = time.perf_counter()
            frames = audio.size // FRAME
            index_ = (index * frames) // max(count, 1)  # each device at another place
            sent = 0
            while True:
                offset = (index_ + sent) % frames * FRAME
                delay = start + sent * FRAME / RATE - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await ws.send(audio[offset : offset + FRAME].astype("<i2").tobytes())
                sent += 1

    tasks = [asyncio.create_task(device(i)) for i in range(count)]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def ask(port: int, path: Path) -> float:
    pcm, rate = read_wav(path)
    async with connect(f"ws://127.0.0.1:{port}/", max_size=None, ping_interval=None) as ws:
        await ws.recv()
        generation = {"max_tokens": 40, "temperature": 0.0}
        await ws.send(json.dumps({"type": "session.update", "generation": generation}))
        await ws.recv()
        result = await talk_turn(ws, pcm, rate, timeout=120)
    return float(result.timings_ms["speech_end_to_first_audio"])


async def server_rounds(
    port: int, pid: int, devices: int, rounds: int, window_s: float
) -> dict[str, Any]:
    audio = corpus(120.0, seed=7)
    questions = [r.path for r in recordings()]
    results: dict[int, dict[str, list[float]]] = {
        n: {"cpu_share": [], "first_audio_ms": []} for n in (0, devices)
    }
    for round_ in range(rounds):
        for n in (0, devices) if round_ % 2 == 0 else (devices, 0):
            async with listening_devices(port, n, audio):
                await asyncio.sleep(2.0)  # sessions open, detectors loaded
                cpu, wall = cpu_seconds(pid), time.perf_counter()
                await asyncio.sleep(window_s)
                share = (cpu_seconds(pid) - cpu) / (time.perf_counter() - wall)
                first_audio = await ask(port, questions[round_ % len(questions)])
            results[n]["cpu_share"].append(share)
            results[n]["first_audio_ms"].append(first_audio)
            print(f"  round {round_ + 1}: {n} listening: server CPU {share:.3f} cores, "
                  f"first audio {first_audio:.0f} ms")  # fmt: skip
    return {str(n): r for n, r in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--audio-s", type=float, default=120.0, help="detector test audio")
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--window-s", type=float, default=10.0)
    parser.add_argument("--skip-server", action="store_true")
    args = parser.parse_args()

    hw = hardware()
    audio = corpus(args.audio_s, seed=3)
    print(f"detector alone ({audio.size / RATE:.0f} s of speech without wake words):")
    detector = {}
    for label, words in (("1 wake word", ["hey_jarvis"]), ("5 wake words", None)):
        chosen = words or list(OpenWakeWordEngine().available)
        detector[label] = detector_cost(audio, chosen, paced_s=min(30.0, args.audio_s))
        costs = detector[label]
        fast, paced = costs["cpu_per_audio_s_fast"], costs["cpu_per_audio_s_paced"]
        print(f"  {label}: {fast:.3f} CPU s per audio s (as fast as it goes), "
              f"{paced:.3f} at real-time pace")  # fmt: skip

    server: dict[str, Any] = {}
    if not args.skip_server:
        print(f"chinwag serve, 0 vs {args.devices} always-listening sessions, alternated:")
        pids: list[int] = []
        with server_process(pids=pids) as port:
            server = asyncio.run(
                server_rounds(port, pids[0], args.devices, args.rounds, args.window_s)
            )
    summary: dict[str, Any] = {}
    for n, r in server.items():
        summary[n] = {
            "cpu_share_median": median(r["cpu_share"]),
            "first_audio_ms_p50": median(r["first_audio_ms"]),
            "first_audio_ms_p95": percentile(r["first_audio_ms"], 95),
        }
    if summary:
        print(
            "\n| always-listening sessions | server CPU (cores, median) | first audio p50 | p95 |"
        )
        print("| --- | --- | --- | --- |")
        for n, s in summary.items():
            print(f"| {n} | {s['cpu_share_median']:.3f} | {s['first_audio_ms_p50']:.0f} ms "
                  f"| {s['first_audio_ms_p95']:.0f} ms |")  # fmt: skip
    out = {"hardware": hw, "detector": detector, "server": server, "summary": summary}
    path = BENCH_DIR / "results-wake.json"
    path.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
