"""A Wyoming satellite driven by chinwag vs a native WebSocket client, on one server, in one run.

The same recordings (tests/data/human) go to the same server (real models, in this process,
WebSocket and satellite link on loopback), alternating path by path so machine noise hits both
alike:

- native: `chinwag talk`'s turn (clients/talk.py) on one connection for the whole run:
  audio.start, 20 ms PCM frames at real-time pace, then silence; timed from the end of the
  last voiced frame to the first reply audio frame.
- satellite: a satellite speaking Wyoming as wyoming-satellite does (16 kHz, 16-bit mono chunks
  of 1024 samples, at real-time pace), which asked for a run from `asr` to `tts`; chinwag
  connected to it from `[wyoming] satellites`; timed from the end of the last voiced frame to
  the first `audio-chunk` the satellite receives.

    python -m bench.satellite_latency [--rounds 2]

Prints a table and writes bench/results-satellites.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from wyoming.audio import AudioChunk
from wyoming.event import Event, async_read_event, async_write_event
from wyoming.info import Attribution, Info, Satellite
from wyoming.pipeline import PipelineStage, RunPipeline
from wyoming.snd import Played

from bench.common import BENCH_DIR, hardware, median, percentile
from clients.talk import read_wav, speech_end_s, talk_turn
from server.app import App, load_into
from server.config import load_settings
from server.prompts import PersonaLibrary
from server.transports.websocket import WebSocketServer
from server.transports.wyoming_satellite import WyomingSatellites

RECORDINGS = ["spk1_snt1.wav", "spk1_snt3.wav", "spk2_snt1.wav", "birch_canoe.wav"]
DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "human"
CHUNK = 1024  # samples per audio-chunk, as wyoming-satellite's microphone sends
TIMEOUT_S = 240.0


class BenchSatellite:
    """The satellite side: answers describe, records chinwag's events with their times."""

    def __init__(self) -> None:
        self.events: list[tuple[float, Event]] = []
        self.arrived = asyncio.Event()
        self.writer: asyncio.StreamWriter | None = None
        self.port = 0
        self.connected = asyncio.Event()

    async def start(self) -> asyncio.Server:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        return server

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        while (event := await async_read_event(reader)) is not None:
            if event.type == "describe":
                satellite = Satellite(
                    name="bench",
                    attribution=Attribution(name="", url=""),
                    installed=True,
                    description="bench",
                    version=None,
                )
                await self.send(Info(satellite=satellite).event())
            elif event.type == "run-satellite":
                self.connected.set()
            self.events.append((time.perf_counter(), event))
            self.arrived.set()

    async def send(self, event: Event) -> None:
        assert self.writer is not None
        await async_write_event(event, self.writer)

    async def wait_for(self, kind: str, since: int) -> float:
        async with asyncio.timeout(TIMEOUT_S):
            while True:
                for at, event in self.events[since:]:
                    if event.type == kind:
                        return at
                self.arrived.clear()
                await self.arrived.wait()


async def satellite_turn(satellite: BenchSatellite, pcm: np.ndarray, rate: int) -> float:
    """One run from asr to tts; ms from the end of speech to the first reply audio."""
    since = len(satellite.events)
    await satellite.send(
        RunPipeline(start_stage=PipelineStage.ASR, end_stage=PipelineStage.TTS).event()
    )
    audio = np.concatenate([pcm, np.zeros(int(rate * 3.0), dtype=np.int16)])
    end_s = speech_end_s(pcm, rate)
    start = time.perf_counter()
    speech_end = start + end_s
    sender = asyncio.create_task(_stream(satellite, audio, rate, start))
    try:
        first_audio = await satellite.wait_for("audio-chunk", since)
        await satellite.wait_for("audio-stop", since)
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    await satellite.send(Played().event())
    await asyncio.sleep(0.5)  # the run ends; the next one starts clean
    return (first_audio - speech_end) * 1000


async def _stream(satellite: BenchSatellite, audio: np.ndarray, rate: int, start: float) -> None:
    for index, offset in enumerate(range(0, len(audio), CHUNK)):
        delay = start + index * CHUNK / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        chunk = audio[offset : offset + CHUNK].astype("<i2").tobytes()
        await satellite.send(AudioChunk(rate=rate, width=2, channels=1, audio=chunk).event())


async def native_turn(ws: ClientConnection, pcm: np.ndarray, rate: int) -> float:
    result = await talk_turn(ws, pcm, rate, timeout=TIMEOUT_S)
    await asyncio.sleep(0.5)  # as the satellite's run ends
    return result.timings_ms["speech_end_to_first_audio"]


async def run(rounds: int) -> dict[str, Any]:
    satellite = BenchSatellite()
    satellite_server = await satellite.start()
    settings = load_settings(
        overrides={
            "server": {"port": 0},
            "wyoming": {
                "satellites": [f"tcp://127.0.0.1:{satellite.port}"],
                "satellite_persona": "assistant",
            },
            "llm": {"seed": 7},
        },
        environ={},
    )
    personas = PersonaLibrary.load(settings.prompts.directory, settings.prompts.default_persona)
    app = App(settings=settings, personas=personas)
    web = WebSocketServer(app)
    await web.start("127.0.0.1", 0)
    await load_into(app)
    links = WyomingSatellites(app, settings.wyoming)
    links.start()
    rows: list[dict[str, Any]] = []
    try:
        await asyncio.wait_for(satellite.connected.wait(), TIMEOUT_S)
        # One session on each path for the whole run, as a satellite keeps its session.
        ws = await connect(f"ws://127.0.0.1:{web.port}/")
        json.loads(await ws.recv())  # session.started
        await ws.send(json.dumps({"type": "session.start", "persona": "assistant"}))
        for round_ in range(rounds):
            for index, name in enumerate(RECORDINGS):
                pcm, rate = read_wav(DATA / name)
                order = (
                    ["native", "satellite"]
                    if (round_ + index) % 2 == 0
                    else ["satellite", "native"]
                )
                for path in order:
                    if path == "native":
                        ms = await native_turn(ws, pcm, rate)
                    else:
                        ms = await satellite_turn(satellite, pcm, rate)
                    rows.append({"round": round_, "item": name, "path": path, "ms": round(ms, 1)})
                    print(f"{name:18} {path:10} {ms:7.0f} ms", flush=True)
        await ws.close()
    finally:
        await links.close()
        await web.close()
        app.close()
        satellite_server.close()
    native = [r["ms"] for r in rows if r["path"] == "native"]
    sat = [r["ms"] for r in rows if r["path"] == "satellite"]
    ratios = [s / n for s, n in zip(sat, native, strict=True) if n > 0]
    return {
        "hardware": hardware(),
        "rounds": rounds,
        "rows": rows,
        "summary": {
            "native_median_ms": median(native),
            "satellite_median_ms": median(sat),
            "native_p90_ms": percentile(native, 90),
            "satellite_p90_ms": percentile(sat, 90),
            "satellite_over_native_median_ratio": median(ratios),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    result = asyncio.run(run(args.rounds))
    summary = result["summary"]
    print()
    print("| path | median end of speech -> first audio | p90 |")
    print("| --- | --- | --- |")
    native_median, native_p90 = summary["native_median_ms"], summary["native_p90_ms"]
    print(f"| native WebSocket | {native_median:.0f} ms | {native_p90:.0f} ms |")
    print(
        f"| Wyoming satellite | {summary['satellite_median_ms']:.0f} ms | "
        f"{summary['satellite_p90_ms']:.0f} ms |"
    )
    ratio = summary["satellite_over_native_median_ratio"]
    print(f"satellite / native (median of per-item ratios): {ratio:.2f}")
    out = BENCH_DIR / "results-satellites.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
