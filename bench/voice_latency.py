"""Voice: end of speech to first reply audio, through the server vs a naive pipeline.

The set (bench/voice_set.py): the recordings of tests/data/human plus questions, requests and
commands spoken by Piper and espeak-ng voices at 16, 24 and 48 kHz, a few under background
noise, generated into a cache on first use. Each item is streamed at real-time pace in 20 ms
frames through a real `chinwag serve` (its own process, WebSocket on loopback), followed by
silence as a live microphone would send. The clock starts at the end of the last voiced frame
(of the clean speech, for the noisy items).

The naive pipeline runs the same models in this process, alternating with the server recording
by recording so machine noise hits both alike: wait for the same VAD with the same silence
setting to call the turn over (measured on the recording in stream time), transcribe the whole
utterance with faster-whisper's standard 30 s window, generate the whole reply, synthesize all
of it, then play. Its latency is the sum of those stages.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.client import connect

from bench.common import BENCH_DIR, hardware, median, percentile, server_process
from bench.voice_set import BenchItem, bench_set
from clients.talk import read_wav, send_paced, talk_turn
from server.audio.pcm import resample
from server.audio.vad import SileroVad, SpeechStopped, StreamingVad, VadConfig
from server.config import load_settings
from server.engines.base import ChatMessage
from server.prompts import GenerationSettings, PersonaLibrary
from tests.speech import to_16k_float, wer


def load_pcm_16k(pcm: np.ndarray, rate: int) -> np.ndarray:
    return np.asarray(to_16k_float(pcm, rate), dtype=np.float32)


FAMILIES = ("human", "piper", "espeak")
GENERATION = {"max_tokens": 60, "temperature": 0.0}


def describe(item: BenchItem) -> dict[str, Any]:
    return {
        "item": item.path.name,
        "family": item.family,
        "voice": item.voice,
        "kind": item.kind,
        "rate": item.rate,
        "noise_snr_db": item.noise_snr_db,
    }


async def through_server(port: int, item: BenchItem) -> dict[str, Any]:
    pcm, rate = read_wav(item.path)
    async with connect(f"ws://127.0.0.1:{port}/", max_size=None) as ws:
        json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "session.update", "generation": GENERATION}))
        json.loads(await ws.recv())
        result = await talk_turn(ws, pcm, rate, timeout=120, speech_end=item.speech_end_s)
    t = result.timings_ms
    turn_end = t.get("speech_end_to_turn_end", 0.0)
    return {
        **describe(item),
        "transcript": result.transcript,
        "reply": result.reply,
        "first_audio_ms": t["speech_end_to_first_audio"],
        "turn_end_ms": turn_end,
        # What the goal is about: is the reply ready when the turn ends?
        "turn_end_to_first_audio_ms": round(t["speech_end_to_first_audio"] - turn_end, 1),
        # With speculation the transcript and even the reply may be ready when the turn ends.
        "stages_ms": {
            "end_of_turn": turn_end,
            "asr_after_turn_end": t["speech_end_to_transcript"] - turn_end,
            "llm_first_token": t["speech_end_to_first_token"] - t["speech_end_to_transcript"],
            "tts_first_phrase": t["speech_end_to_first_audio"] - t["speech_end_to_first_token"],
        },
    }


async def through_realtime(port: int, item: BenchItem) -> dict[str, Any]:
    """The same turn over `/v1/realtime` (OpenAI's protocol: base64 PCM at 24 kHz in JSON), as
    a Realtime client would send it: 20 ms appends at real-time pace, then silence."""
    pcm, rate = read_wav(item.path)
    pcm24 = resample(pcm, rate, 24000)
    mark: dict[str, float] = {}
    transcripts: dict[str, str] = {}

    async with connect(f"ws://127.0.0.1:{port}/v1/realtime", max_size=None) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        update = {"type": "realtime", "max_output_tokens": GENERATION["max_tokens"]}
        await ws.send(json.dumps({"type": "session.update", "session": update}))
        assert json.loads(await ws.recv())["type"] == "session.updated"

        async def append(frame: bytes) -> None:
            audio = base64.b64encode(frame).decode()
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))

        sender = asyncio.create_task(
            send_paced(append, pcm24, 24000, time.perf_counter(), mark, item.speech_end_s)
        )
        try:
            async with asyncio.timeout(120):
                while True:
                    event = json.loads(await ws.recv())
                    kind = event["type"]
                    # A recording may hold several turns; the answer that counts is the one
                    # to its end, as in the native client.
                    ended = "speech_end" in mark
                    if kind == "conversation.item.input_audio_transcription.completed":
                        transcripts[event["item_id"]] = event["transcript"].strip()
                    elif kind == "conversation.item.deleted":
                        transcripts.pop(event["item_id"], None)  # joined to the next one
                    elif kind == "response.output_audio.delta" and ended:
                        mark.setdefault("first_audio", time.perf_counter())
                    elif kind == "response.done" and ended:
                        break
                    elif kind == "error":
                        raise RuntimeError(f"realtime error: {event}")
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
    first_audio = (mark["first_audio"] - mark["speech_end"]) * 1000
    return {
        **describe(item),
        "transcript": " ".join(transcripts.values()),
        "first_audio_ms": first_audio,
        "stages_ms": {"first_audio": first_audio},
    }


class Naive:
    def __init__(self, silence_ms: int) -> None:
        from server.engines.faster_whisper import WhisperTranscriber
        from server.engines.llama_cpp import LlamaCppChatModel
        from server.engines.piper import PiperSynthesizer

        settings = load_settings()
        self.silence_ms = silence_ms
        self.asr = WhisperTranscriber(
            settings.asr.model_path, compute_type=settings.asr.compute_type
        )
        self.llm = LlamaCppChatModel(
            settings.llm.model_path, context_size=settings.llm.context_size
        )
        self.tts = PiperSynthesizer(settings.tts.voice_path)
        persona = PersonaLibrary.load(settings.prompts.directory, settings.prompts.default_persona)
        self.system = persona.get(None).system_prompt
        self.generation = GenerationSettings.model_validate(GENERATION)
        for warm in (self.asr.warm_up, self.llm.warm_up, self.tts.warm_up):
            warm()

    def end_of_turn_ms(self, pcm: np.ndarray, rate: int, speech_end: float) -> float:
        """How long the same VAD, with the same silence setting, takes to call the turn over:
        the recording plus silence fed in 20 ms frames (stream time, no network)."""
        vad = StreamingVad(SileroVad.load(), VadConfig(silence_ms=self.silence_ms))
        audio = np.concatenate([load_pcm_16k(pcm, rate), np.zeros(16000 * 3, dtype=np.float32)])
        fed = 0
        for i in range(0, len(audio), 320):
            fed += len(audio[i : i + 320])
            if any(isinstance(e, SpeechStopped) for e in vad.feed(audio[i : i + 320])):
                return (fed / 16000 - speech_end) * 1000
        raise RuntimeError("the VAD never ended the turn")

    def run(self, item: BenchItem) -> dict[str, Any]:
        pcm, rate = read_wav(item.path)
        audio = load_pcm_16k(pcm, rate)
        end_of_turn = self.end_of_turn_ms(pcm, rate, item.speech_end_s)
        t0 = time.perf_counter()
        text = self.asr.transcribe(audio).text
        t1 = time.perf_counter()
        parts: list[str] = []
        self.llm.generate(
            [ChatMessage("system", self.system), ChatMessage("user", text)],
            self.generation,
            parts.append,
            threading.Event(),
        )
        t2 = time.perf_counter()
        spoken = list(self.tts.synthesize("".join(parts)))
        t3 = time.perf_counter()
        assert spoken
        stages = {
            "end_of_turn": end_of_turn,
            "asr": (t1 - t0) * 1000,
            "llm_whole_reply": (t2 - t1) * 1000,
            "tts_whole_reply": (t3 - t2) * 1000,
        }
        return {
            **describe(item),
            "transcript": text,
            "first_audio_ms": sum(stages.values()),
            "turn_end_ms": end_of_turn,
            "turn_end_to_first_audio_ms": sum(stages.values()) - end_of_turn,
            "stages_ms": stages,
        }


def summarise(samples: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = [s["first_audio_ms"] for s in samples]
    stages = {
        name: round(median([s["stages_ms"][name] for s in samples]), 1)
        for name in samples[0]["stages_ms"]
    }
    summary: dict[str, Any] = {
        "first_audio_ms_p50": round(median(latencies), 1),
        "first_audio_ms_p95": round(percentile(latencies, 95), 1),
        "stage_ms_p50": stages,
        "samples": len(samples),
    }
    # The Realtime client does not see the end of the turn.
    if all("turn_end_ms" in s for s in samples):
        gaps = [s["turn_end_to_first_audio_ms"] for s in samples]
        summary["turn_end_ms_p50"] = round(median([s["turn_end_ms"] for s in samples]), 1)
        summary["turn_end_to_first_audio_ms_p50"] = round(median(gaps), 1)
        summary["turn_end_to_first_audio_ms_p95"] = round(percentile(gaps, 95), 1)
    return summary


def summarise_all(samples: list[dict[str, Any]], references: list[str]) -> dict[str, Any]:
    """Overall, then per voice family (human, piper, espeak) and per input rate."""
    summary = summarise(samples)
    summary["wer"] = round(wer(references, [s["transcript"] for s in samples]), 4)
    for group in ("family", "rate"):
        summary[f"by_{group}"] = {}
        for value in sorted({s[group] for s in samples}, key=str):
            picked = [i for i, s in enumerate(samples) if s[group] == value]
            part = summarise([samples[i] for i in picked])
            part["wer"] = round(
                wer([references[i] for i in picked], [samples[i]["transcript"] for i in picked]),
                4,
            )
            summary[f"by_{group}"][str(value)] = part
    noisy = [i for i, s in enumerate(samples) if s["noise_snr_db"] is not None]
    if noisy:
        part = summarise([samples[i] for i in noisy])
        part["wer"] = round(
            wer([references[i] for i in noisy], [samples[i]["transcript"] for i in noisy]), 4
        )
        summary["noisy"] = part
    return summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=1, help="passes over the set")
    parser.add_argument(
        "--human-only",
        action="store_true",
        help="only the 14 human recordings (the set before issue 16)",
    )
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results.json")
    parser.add_argument("--chart", type=Path, default=BENCH_DIR / "waterfall.png")
    parser.add_argument("--config", type=Path, help="server config file (a lever to try)")
    parser.add_argument("--label", default="default settings")
    parser.add_argument(
        "--compare",
        type=Path,
        help="a second server config, run alternately with the first in the same run",
    )
    parser.add_argument(
        "--compare-checkout",
        type=Path,
        help="another source tree (a git worktree of an older commit), its server run "
        "alternately with this one in the same run",
    )
    parser.add_argument(
        "--realtime",
        action="store_true",
        help="also stream each recording to the first server over /v1/realtime",
    )
    parser.add_argument("--no-naive", action="store_true", help="skip the naive pipeline")
    parser.add_argument("--every", type=int, default=1, help="a sample: every Nth item of the set")
    parser.add_argument(
        "--trace",
        type=Path,
        help="write the servers' debug logs to TRACE.server.log (and TRACE.compare.log) and "
        "print when each step of the speculative turns happened",
    )
    args = parser.parse_args()
    began = time.perf_counter()
    settings = load_settings(args.config)
    items = bench_set(synthetic=not args.human_only)[:: args.every]
    naive = None if args.no_naive else Naive(settings.vad.silence_ms)
    rows: dict[str, list[dict[str, Any]]] = {"server": []}
    if args.compare or args.compare_checkout:
        rows["compare"] = []
    if args.realtime:
        rows["realtime"] = []
    if naive is not None:
        rows["naive"] = []
    extra = ("--config", str(args.config)) if args.config else ()
    load_before = os.getloadavg()
    logs: dict[str, Path | None] = {
        name: args.trace.with_suffix(f".{name}.log") if args.trace else None
        for name in ("server", "compare")
    }
    with contextlib.ExitStack() as stack:
        port = stack.enter_context(server_process(*extra, log_file=logs["server"]))
        ports = {"server": port}
        if args.compare:
            ports["compare"] = stack.enter_context(
                server_process("--config", str(args.compare), log_file=logs["compare"])
            )
        elif args.compare_checkout:
            ports["compare"] = stack.enter_context(
                server_process(*extra, checkout=args.compare_checkout, log_file=logs["compare"])
            )
        for p in ports.values():
            asyncio.run(through_server(p, items[0]))  # untimed warm-up turn
        for round_ in range(args.rounds):
            for n, item in enumerate(items):
                # Alternate which server goes first, so neither always follows the other.
                order = list(ports.items())
                if (n + round_) % 2:
                    order.reverse()
                for name, p in order:
                    rows[name].append(asyncio.run(through_server(p, item)))
                    turn = rows[name][-1]
                    print(
                        f"{name:<8} {item.path.name:<28} first audio {turn['first_audio_ms']:6.0f}"
                        f" ms, turn end {turn['turn_end_ms']:5.0f} ms, "
                        f"gap {turn['turn_end_to_first_audio_ms']:5.0f} ms",
                        flush=True,
                    )
                if args.realtime:
                    rows["realtime"].append(asyncio.run(through_realtime(port, item)))
                if naive is not None:
                    rows["naive"].append(naive.run(item))
    references = [item.text for item in items] * args.rounds
    summary = {name: summarise_all(samples, references) for name, samples in rows.items()}
    ratio = (
        summary["server"]["first_audio_ms_p50"] / summary["naive"]["first_audio_ms_p50"]
        if "naive" in summary
        else None
    )
    compared = args.compare or args.compare_checkout
    if compared:
        summary["compare"]["config"] = str(compared)
        summary["compare"]["ratio_over_server_p50"] = round(
            summary["compare"]["first_audio_ms_p50"] / summary["server"]["first_audio_ms_p50"], 3
        )
    result = {
        "benchmark": "voice_latency",
        "label": args.label,
        "server_settings": {
            "asr_short_window": settings.asr.short_window,
            "vad": settings.vad.model_dump(),
            "tts_first_phrase_max_words": settings.tts.first_phrase_max_words,
            "llm_threads": settings.llm.threads,
            "llm_prefill_while_speaking": settings.llm.prefill_while_speaking,
            "llm_pause_for_speech": settings.llm.pause_for_speech,
        },
        "hardware": {**hardware(), "load_average_at_start": load_before},
        "measure": "end of the last voiced 20 ms frame -> first reply audio frame received",
        "generation": GENERATION,
        "vad_silence_ms": settings.vad.silence_ms,
        "set": {
            "items": len(items),
            "rounds": args.rounds,
            "families": {
                f: sum(i.family == f for i in items) for f in ("human", "piper", "espeak")
            },
        },
        "results": summary,
        "ratio_server_over_naive_p50": round(ratio, 3) if ratio is not None else None,
        "runtime_s": round(time.perf_counter() - began, 1),
        "turns": rows,
    }
    if args.trace:
        result["trace"] = {
            name: trace_steps(path)
            for name, path in logs.items()
            if path is not None and path.exists() and name in ports
        }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_tables(result, rows)
    for name, steps in result.get("trace", {}).items():
        print(
            f"{name}: speculative turns kept, ms after the pause began (p50 / p95, n={steps['n']}):"
        )
        for step, (p50, p95) in steps["ms_after_pause"].items():
            print(f"  {step:<24} {p50:>6.0f} {p95:>6.0f}")
    if ratio is not None:
        print(f"ratio server/naive (p50): {ratio:.2f}")
    if compared:
        print(
            f"compare = {compared}: compare/server (p50) "
            f"{summary['compare']['ratio_over_server_p50']:.2f}"
        )
    if "naive" in summary:
        draw_waterfall(summary, result["hardware"], args.label, args.chart)
        print(f"wrote {args.out} and {args.chart} in {result['runtime_s']:.0f} s")
    else:
        print(f"wrote {args.out} in {result['runtime_s']:.0f} s")


TRACE_STEPS = {
    "transcribed": "transcribed in",
    "first token": "first token of",
    "first phrase to TTS": "first phrase of",
    "first audio ready": "first audio of",
    "turn confirmed": "turn confirmed",
}


def trace_steps(path: Path) -> dict[str, Any]:
    """When each step of a speculative turn happened, from a server's debug log: per session,
    the last pause before the turn was confirmed, then the first of each step after it."""
    from datetime import datetime

    sessions: dict[str, list[tuple[float, str]]] = {}
    for line in path.read_text(errors="replace").splitlines():
        # "2026-12-02 07:09:33,289 DEBUG server.pipeline.session: [session] message"
        parts = line.split(" ", 4)
        if len(parts) < 5 or not parts[4].startswith("["):
            continue
        stamp = datetime.strptime(f"{parts[0]} {parts[1]}", "%Y-%m-%d %H:%M:%S,%f").timestamp()
        session, _, message = parts[4][1:].partition("] ")
        sessions.setdefault(session, []).append((stamp, message))
    found: dict[str, list[float]] = {step: [] for step in TRACE_STEPS}
    for lines in sessions.values():
        confirmed = [t for t, m in lines if m.startswith("turn confirmed")]
        if not confirmed:
            continue
        end = confirmed[-1]
        pauses = [t for t, m in lines if m.startswith("paused: speculating") and t <= end]
        if not pauses:
            continue
        pause = pauses[-1]
        for step, prefix in TRACE_STEPS.items():
            after = [t for t, m in lines if m.startswith(prefix) and t >= pause]
            if after:
                found[step].append((after[0] - pause) * 1000)
    return {
        "n": len(found["turn confirmed"]),
        "ms_after_pause": {
            step: (round(median(v), 1), round(percentile(v, 95), 1))
            for step, v in found.items()
            if v
        },
    }


def print_tables(result: dict[str, Any], rows: dict[str, list[dict[str, Any]]]) -> None:
    hw = result["hardware"]
    summary = result["results"]
    print(
        f"voice latency, {hw['cpu']} x{hw['cores']}, load average "
        f"{hw['load_average_at_start'][0]:.1f} -> {hw['load_average'][0]:.1f}, "
        f"{len(rows['server'])} turns each"
    )
    header = (
        f"{'pipeline':<9} {'group':<9} {'n':>3} {'p50 ms':>7} {'p95 ms':>7} "
        f"{'turn end':>8} {'gap p50':>7} {'gap p95':>7} {'WER':>6}"
    )
    print(header)
    print("(turn end: end of speech -> end of the turn, p50; gap: end of the turn -> first audio)")
    for name in rows:
        s = summary[name]
        groups = [("all", s), *s["by_family"].items(), *s["by_rate"].items()]
        if "noisy" in s:
            groups.append(("noisy", s["noisy"]))
        for group, g in groups:
            print(
                f"{name:<9} {group:<9} {g['samples']:>3} {g['first_audio_ms_p50']:>7.0f} "
                f"{g['first_audio_ms_p95']:>7.0f} {g.get('turn_end_ms_p50', float('nan')):>8.0f} "
                f"{g.get('turn_end_to_first_audio_ms_p50', float('nan')):>7.0f} "
                f"{g.get('turn_end_to_first_audio_ms_p95', float('nan')):>7.0f} {g['wer']:>6.3f}"
            )
        stages = ", ".join(f"{k} {v:.0f}" for k, v in s["stage_ms_p50"].items())
        print(f"{name:<9} stage medians (ms): {stages}")


def draw_waterfall(summary: dict[str, Any], hw: dict[str, Any], label: str, path: Path) -> None:
    """Where the time goes from the end of speech to the first reply audio (p50 stages)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 2.8), dpi=110)
    colours = ["#9aa5b1", "#4c78a8", "#f58518", "#54a24b", "#e45756"]
    for row, name in enumerate(("server", "naive")):
        left = 0.0
        for (stage, ms), colour in zip(
            summary[name]["stage_ms_p50"].items(), colours, strict=False
        ):
            ms = max(ms, 0.0)
            ax.barh(row, ms, left=left, color=colour, edgecolor="white")
            if ms > 60:
                ax.text(
                    left + ms / 2,
                    row,
                    f"{stage}\n{ms:.0f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white",
                )
            left += ms
        ax.text(
            left + 20,
            row,
            f"p50 {summary[name]['first_audio_ms_p50']:.0f} ms",
            va="center",
            fontsize=8,
        )
    ax.set_yticks([0, 1], ["chinwag", "naive"])
    ax.invert_yaxis()
    ax.set_xlabel("ms from the end of speech to the first reply audio (stage medians)")
    ax.set_title(f"{label}: {hw['cpu']} x{hw['cores']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
