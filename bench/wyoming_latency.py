"""chinwag's Wyoming server against wyoming-faster-whisper and wyoming-piper, on the same
model files, in one run, alternating request by request.

Each server runs in its own process on a free loopback port, offline (the peers are given the
model paths in models/ and never download). Every request is Home Assistant's sequence
(homeassistant/components/wyoming: stt.py, tts.py) with the `wyoming` package's client:

- speech-to-text: transcribe, audio-start, audio-chunk* (16 kHz, 16-bit mono, 1024 samples
  each, sent at once), audio-stop; timed from writing audio-stop to the transcript; word
  error rate of the transcripts against tests/data/human.
- text-to-speech, not streaming: synthesize; time to the first audio-chunk and to audio-stop.
- text-to-speech, streaming: synthesize-start, synthesize-chunk* (the text in 6-character
  pieces, cut mid-word as an LLM's deltas are), synthesize, synthesize-stop; time to the first
  audio-chunk and to synthesize-stopped.

    python -m bench.wyoming_latency [--rounds 3] [--compare CHINWAG_TTS__STREAM_DECODER=false]
                                                     (make bench-wyoming)

`--compare` adds a chinwag server with other settings to the text-to-speech rotation, so
two configurations are measured side by side against the same peer; every text-to-speech
request also records how long a player starting at the first chunk would have waited for
audio (stalls).

Prints a table and writes bench/results-wyoming.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop

from bench.common import BENCH_DIR, hardware, median, server_process, stop
from clients.talk import read_wav
from server.audio.pcm import resample
from server.config import load_settings
from tests.speech import recordings, wer

RESULTS = BENCH_DIR / "results-wyoming.json"
RATE = 16000
CHUNK_SAMPLES = 1024
TIMEOUT_S = 120.0
TEXTS = [
    "The kitchen lights are on.",
    "Your timer for ten minutes has started.",
    "It is twenty one degrees in the living room, and the heating is set to twenty.",
    "Good morning! Today will be cloudy with a light breeze. Take an umbrella if you go out.",
    "Glue the sheet to the dark blue background. It is easy to tell the depth of a well.",
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def peer_process(args: list[str], port: int) -> Iterator[int]:
    """A Wyoming service from PyPI in its own process, offline; yields its port."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    proc = subprocess.Popen(
        [*args, "--uri", f"tcp://127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 300
        while not asyncio.run(answers_describe(port)):
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read() if proc.stderr else ""
                raise RuntimeError(f"{args[0]} did not start: {err[-2000:]}")
            time.sleep(0.5)
        yield port
    finally:
        stop(proc)


async def answers_describe(port: int) -> bool:
    try:
        async with AsyncTcpClient("127.0.0.1", port) as client:
            await client.write_event(Describe().event())
            event = await asyncio.wait_for(client.read_event(), 2)
            return event is not None and Info.is_type(event.type)
    except (OSError, TimeoutError):
        return False


async def stt(port: int, pcm: bytes) -> tuple[str, float]:
    """Home Assistant's speech-to-text request; (text, seconds from audio-stop)."""
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Transcribe(language="en").event())
        await client.write_event(AudioStart(rate=RATE, width=2, channels=1).event())
        step = CHUNK_SAMPLES * 2
        for i in range(0, len(pcm), step):
            chunk = AudioChunk(rate=RATE, width=2, channels=1, audio=pcm[i : i + step])
            await client.write_event(chunk.event())
        await client.write_event(AudioStop().event())
        stopped = time.perf_counter()
        while True:
            event = await asyncio.wait_for(client.read_event(), TIMEOUT_S)
            if event is None:
                raise RuntimeError("connection closed before the transcript")
            if Error.is_type(event.type):
                raise RuntimeError(f"error: {event.data}")
            if Transcript.is_type(event.type):
                return Transcript.from_event(event).text, time.perf_counter() - stopped


@dataclass(frozen=True)
class Spoken:
    first_s: float  # to the first audio-chunk
    total_s: float  # to audio-stop / synthesize-stopped
    audio_s: float  # seconds of audio
    # A player that starts at the first chunk and plays each as it comes: seconds it would
    # have fallen silent waiting for audio (0 when every chunk came in time).
    stall_s: float


async def tts(port: int, text: str, streaming: bool) -> Spoken:
    async with AsyncTcpClient("127.0.0.1", port) as client:
        began = time.perf_counter()
        if streaming:
            await client.write_event(SynthesizeStart().event())
            for i in range(0, len(text), 6):
                await client.write_event(SynthesizeChunk(text=text[i : i + 6]).event())
            await client.write_event(Synthesize(text=text).event())
            await client.write_event(SynthesizeStop().event())
        else:
            await client.write_event(Synthesize(text=text).event())
        end = "synthesize-stopped" if streaming else "audio-stop"
        first: float | None = None
        audio_s = 0.0
        stall_s = 0.0
        played_until = 0.0  # when the audio received so far ends, played in real time
        while True:
            event = await asyncio.wait_for(client.read_event(), TIMEOUT_S)
            if event is None:
                raise RuntimeError("connection closed before the end of the audio")
            if Error.is_type(event.type):
                raise RuntimeError(f"error: {event.data}")
            if AudioChunk.is_type(event.type):
                chunk = AudioChunk.from_event(event)
                now = time.perf_counter() - began
                first = first if first is not None else now
                stall_s += max(0.0, now - played_until) if audio_s else 0.0
                played_until = max(played_until, now) + chunk.seconds
                audio_s += chunk.seconds
            if event.type == end:
                assert first is not None, "no audio"
                return Spoken(first, time.perf_counter() - began, audio_s, stall_s)


@dataclass
class Series:
    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, key: str, value: float) -> None:
        self.values.setdefault(key, []).append(value)

    def median_ms(self, key: str) -> float:
        return round(median(self.values.get(key, [])) * 1000, 1)


def pcm16k(path: Path) -> bytes:
    pcm, rate = read_wav(path)
    audio = resample(pcm.astype(np.int16), rate, RATE) if rate != RATE else pcm
    return bytes(audio.astype("<i2").tobytes())


TTS_METRICS = ("tts_single_first", "tts_single_total", "tts_stream_first", "tts_stream_total")


async def measure(
    ports: dict[str, int], rounds: int, warmup: int, variants: dict[str, int]
) -> dict[str, Any]:
    """`variants`: more chinwag servers (other settings) in the TTS rotation."""
    recs = recordings()
    clips = [pcm16k(r.path) for r in recs]
    series = Series()
    transcripts: dict[str, list[str]] = {"chinwag": [], "peer": []}
    stt_ports = {"chinwag": ports["chinwag"], "peer": ports["faster-whisper"]}
    tts_ports = {"chinwag": ports["chinwag"], "peer": ports["piper"], **variants}
    for _ in range(warmup):  # first requests load lazily (wyoming-piper loads its voice)
        for name in tts_ports:
            if name in stt_ports:
                await stt(stt_ports[name], clips[0])
            await tts(tts_ports[name], TEXTS[0], streaming=False)
            await tts(tts_ports[name], TEXTS[0], streaming=True)
    for round_no in range(rounds):
        # Alternate which goes first, request by request.
        order = ["chinwag", "peer"] if round_no % 2 == 0 else ["peer", "chinwag"]
        for clip in clips:
            for name in order:
                text, seconds = await stt(stt_ports[name], clip)
                series.add(f"stt_{name}", seconds)
                if round_no == 0:
                    transcripts[name].append(text)
            order.reverse()
        tts_order = list(tts_ports)
        for text in TEXTS:
            for streaming in (False, True):
                mode = "stream" if streaming else "single"
                for name in tts_order:
                    spoken = await tts(tts_ports[name], text, streaming)
                    series.add(f"tts_{mode}_first_{name}", spoken.first_s)
                    series.add(f"tts_{mode}_total_{name}", spoken.total_s)
                    series.add(f"tts_{mode}_audio_{name}", spoken.audio_s)
                    series.add(f"tts_{mode}_stall_{name}", spoken.stall_s)
                # Each server goes first, last and in between in turn.
                tts_order = tts_order[1:] + tts_order[:1]
    references = [r.text for r in recs]
    figures: dict[str, Any] = {}
    for metric in (
        "stt",
        "tts_single_first",
        "tts_single_total",
        "tts_stream_first",
        "tts_stream_total",
    ):
        ours, theirs = series.median_ms(f"{metric}_chinwag"), series.median_ms(f"{metric}_peer")
        figures[metric] = {
            "chinwag_ms": ours,
            "peer_ms": theirs,
            "ratio": round(ours / theirs, 2) if theirs else None,
            "n": len(series.values.get(f"{metric}_chinwag", [])),
        }
    for name in ("chinwag", *variants):
        for mode in ("single", "stream"):
            stalls = series.values[f"tts_{mode}_stall_{name}"]
            figures.setdefault("tts_stall_ms", {})[f"{name} {mode}"] = {
                "median": round(median(stalls) * 1000, 1),
                "max": round(max(stalls) * 1000, 1),
            }
    figures["variants"] = {}
    for name in variants:
        rows: dict[str, Any] = {}
        for metric in TTS_METRICS:
            ours = series.median_ms(f"{metric}_{name}")
            theirs = series.median_ms(f"{metric}_peer")
            rows[metric] = {
                "chinwag_ms": ours,
                "peer_ms": theirs,
                "ratio": round(ours / theirs, 2) if theirs else None,
            }
        figures["variants"][name] = rows
    figures["wer"] = {
        "chinwag": round(wer(references, transcripts["chinwag"]), 4),
        "peer": round(wer(references, transcripts["peer"]), 4),
    }
    figures["tts_audio_s"] = {
        name: round(sum(series.values[f"tts_single_audio_{name}"]) / rounds, 2)
        for name in ("chinwag", "peer")
    }
    figures["transcripts"] = {
        "references": references,
        "chinwag": transcripts["chinwag"],
        "faster-whisper": transcripts["peer"],
    }
    return figures


def print_table(figures: dict[str, Any]) -> None:
    labels = {
        "stt": "STT: audio-stop -> transcript",
        "tts_single_first": "TTS synthesize: first audio",
        "tts_single_total": "TTS synthesize: audio-stop",
        "tts_stream_first": "TTS streaming: first audio",
        "tts_stream_total": "TTS streaming: synthesize-stopped",
    }
    print(f"{'median over requests':38} {'chinwag':>10} {'peer':>10} {'ratio':>7}")
    for key, label in labels.items():
        row = figures[key]
        print(f"{label:38} {row['chinwag_ms']:>8.1f}ms {row['peer_ms']:>8.1f}ms {row['ratio']:>7}")
    for name, rows in figures["variants"].items():
        print(f"chinwag with {name}:")
        for key in TTS_METRICS:
            row = rows[key]
            print(
                f"  {labels[key]:36} {row['chinwag_ms']:>8.1f}ms {row['peer_ms']:>8.1f}ms"
                f" {row['ratio']:>7}"
            )
    for name, stall in figures["tts_stall_ms"].items():
        print(f"audio stalls, {name:28} median {stall['median']} ms, max {stall['max']} ms")
    w = figures["wer"]
    print(f"{'STT word error rate':38} {w['chinwag']:>10.1%} {w['peer']:>10.1%}")
    print("peers: wyoming-faster-whisper (STT), wyoming-piper (TTS); same model files")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="NAME=VALUE[,NAME=VALUE]",
        help="another chinwag server with these settings' environment variables in the TTS "
        "rotation, e.g. CHINWAG_TTS__STREAM_DECODER=false (repeatable)",
    )
    args = parser.parse_args(argv)
    variant_envs = {
        label: dict(item.split("=", 1) for item in label.split(",")) for label in args.compare
    }
    settings = load_settings(environ={})
    whisper_dir = settings.asr.model_path
    voice = settings.tts.voice_path
    bin_dir = Path(sys.executable).parent
    chinwag_port = free_port()
    fw = [
        str(bin_dir / "wyoming-faster-whisper"),
        "--model", str(whisper_dir),
        "--data-dir", str(whisper_dir.parent),
        "--download-dir", str(whisper_dir.parent),
        "--local-files-only",
        "--language", settings.asr.language or "en",
        "--compute-type", settings.asr.compute_type,
        "--device", "cpu",
    ]  # fmt: skip
    piper = [
        str(bin_dir / "wyoming-piper"),
        "--voice", voice.name.removesuffix(".onnx"),
        "--data-dir", str(voice.parent),
        "--download-dir", str(voice.parent),
    ]  # fmt: skip
    with contextlib.ExitStack() as stack:
        # Every request synthesized, as the peer does: the texts repeat each round, and
        # chinwag would say short phrases again from memory.
        no_cache = {"CHINWAG_TTS__PHRASE_CACHE_ENTRIES": "0"}
        uri = f"tcp://127.0.0.1:{chinwag_port}"
        stack.enter_context(server_process("--wyoming", uri, env=no_cache))
        variants: dict[str, int] = {}
        for label, env in variant_envs.items():
            variants[label] = free_port()
            uri = f"tcp://127.0.0.1:{variants[label]}"
            stack.enter_context(server_process("--wyoming", uri, env={**no_cache, **env}))
        fw_port = stack.enter_context(peer_process(fw, free_port()))
        piper_port = stack.enter_context(peer_process(piper, free_port()))
        ports = {"chinwag": chinwag_port, "faster-whisper": fw_port, "piper": piper_port}
        figures = asyncio.run(measure(ports, args.rounds, args.warmup, variants))
    result = {
        "hardware": hardware(),
        "rounds": args.rounds,
        "load_average_at_end": os.getloadavg(),
        "settings": {"chinwag": "defaults", **{label: label for label in variant_envs}},
        "recordings": len(recordings()),
        "texts": TEXTS,
        "models": {"asr": str(whisper_dir.name), "voice": voice.name},
        "peers": {"stt": "wyoming-faster-whisper 3.8.1", "tts": "wyoming-piper 2.5.2"},
        "figures": figures,
    }
    print_table(figures)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
