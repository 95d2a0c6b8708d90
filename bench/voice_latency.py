"""Voice: end of speech to first reply audio, through the server vs a naive pipeline.

Each recording of tests/data/human is streamed at real-time pace in 20 ms frames through a real
`chinwag serve` (its own process, WebSocket on loopback), followed by silence as a live
microphone would send. The clock starts at the end of the last voiced frame.

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
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.client import connect

from bench.common import BENCH_DIR, hardware, median, percentile, server_process
from clients.talk import read_wav, send_paced, speech_end_s, talk_turn
from server.audio.pcm import resample
from server.audio.vad import SileroVad, SpeechStopped, StreamingVad, VadConfig
from server.config import load_settings
from server.engines.base import ChatMessage
from server.prompts import GenerationSettings, PersonaLibrary
from tests.speech import recordings, to_16k_float, wer


def load_pcm_16k(pcm: np.ndarray, rate: int) -> np.ndarray:
    return np.asarray(to_16k_float(pcm, rate), dtype=np.float32)


GENERATION = {"max_tokens": 60, "temperature": 0.0}


async def through_server(port: int, path: Path) -> dict[str, Any]:
    pcm, rate = read_wav(path)
    async with connect(f"ws://127.0.0.1:{port}/", max_size=None) as ws:
        json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "session.update", "generation": GENERATION}))
        json.loads(await ws.recv())
        result = await talk_turn(ws, pcm, rate, timeout=120)
    t = result.timings_ms
    turn_end = t.get("speech_end_to_turn_end", 0.0)
    return {
        "transcript": result.transcript,
        "reply": result.reply,
        "first_audio_ms": t["speech_end_to_first_audio"],
        # With speculation the transcript and even the reply may be ready when the turn ends.
        "stages_ms": {
            "end_of_turn": turn_end,
            "asr_after_turn_end": t["speech_end_to_transcript"] - turn_end,
            "llm_first_token": t["speech_end_to_first_token"] - t["speech_end_to_transcript"],
            "tts_first_phrase": t["speech_end_to_first_audio"] - t["speech_end_to_first_token"],
        },
    }


async def through_realtime(port: int, path: Path) -> dict[str, Any]:
    """The same turn over `/v1/realtime` (OpenAI's protocol: base64 PCM at 24 kHz in JSON), as
    a Realtime client would send it: 20 ms appends at real-time pace, then silence."""
    pcm, rate = read_wav(path)
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

        sender = asyncio.create_task(send_paced(append, pcm24, 24000, time.perf_counter(), mark))
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

    def end_of_turn_ms(self, pcm: np.ndarray, rate: int) -> float:
        """How long the same VAD, with the same silence setting, takes to call the turn over:
        the recording plus silence fed in 20 ms frames (stream time, no network)."""
        vad = StreamingVad(SileroVad.load(), VadConfig(silence_ms=self.silence_ms))
        audio = np.concatenate([load_pcm_16k(pcm, rate), np.zeros(16000 * 3, dtype=np.float32)])
        fed = 0
        for i in range(0, len(audio), 320):
            fed += len(audio[i : i + 320])
            if any(isinstance(e, SpeechStopped) for e in vad.feed(audio[i : i + 320])):
                return (fed / 16000 - speech_end_s(pcm, rate)) * 1000
        raise RuntimeError("the VAD never ended the turn")

    def run(self, pcm: np.ndarray, rate: int) -> dict[str, Any]:
        audio = load_pcm_16k(pcm, rate)
        end_of_turn = self.end_of_turn_ms(pcm, rate)
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
        return {"transcript": text, "first_audio_ms": sum(stages.values()), "stages_ms": stages}


def summarise(samples: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = [s["first_audio_ms"] for s in samples]
    stages = {
        name: round(median([s["stages_ms"][name] for s in samples]), 1)
        for name in samples[0]["stages_ms"]
    }
    return {
        "first_audio_ms_p50": round(median(latencies), 1),
        "first_audio_ms_p95": round(percentile(latencies, 95), 1),
        "stage_ms_p50": stages,
        "samples": len(samples),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2, help="passes over the recordings")
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
    args = parser.parse_args()
    settings = load_settings(args.config)
    naive = Naive(settings.vad.silence_ms)
    recs = recordings()
    rows: dict[str, list[dict[str, Any]]] = {"server": [], "naive": []}
    if args.compare or args.compare_checkout:
        rows["compare"] = []
    if args.realtime:
        rows["realtime"] = []
    extra = ("--config", str(args.config)) if args.config else ()
    with contextlib.ExitStack() as stack:
        port = stack.enter_context(server_process(*extra))
        ports = {"server": port}
        if args.compare:
            ports["compare"] = stack.enter_context(server_process("--config", str(args.compare)))
        elif args.compare_checkout:
            ports["compare"] = stack.enter_context(
                server_process(*extra, checkout=args.compare_checkout)
            )
        for p in ports.values():
            asyncio.run(through_server(p, recs[0].path))  # untimed warm-up turn
        for _ in range(args.rounds):
            for rec in recs:
                for name, p in ports.items():
                    rows[name].append(asyncio.run(through_server(p, rec.path)))
                if args.realtime:
                    rows["realtime"].append(asyncio.run(through_realtime(port, rec.path)))
                rows["naive"].append(naive.run(*read_wav(rec.path)))
    references = [r.text for r in recs] * args.rounds
    summary = {name: summarise(samples) for name, samples in rows.items()}
    for name, samples in rows.items():
        summary[name]["wer"] = round(wer(references, [s["transcript"] for s in samples]), 4)
    ratio = summary["server"]["first_audio_ms_p50"] / summary["naive"]["first_audio_ms_p50"]
    if args.compare or args.compare_checkout:
        summary["compare"]["config"] = str(args.compare or args.compare_checkout)
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
        "hardware": hardware(),
        "measure": "end of the last voiced 20 ms frame -> first reply audio frame received",
        "generation": GENERATION,
        "vad_silence_ms": settings.vad.silence_ms,
        "results": summary,
        "ratio_server_over_naive_p50": round(ratio, 3),
        "turns": rows,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    hw = result["hardware"]
    print(f"voice latency, {hw['cpu']} x{hw['cores']}, {len(recs) * args.rounds} turns each")
    print(f"{'pipeline':<8} {'p50 ms':>8} {'p95 ms':>8} {'WER':>6}  stage medians (ms)")
    for name in rows:
        s = summary[name]
        stages = ", ".join(f"{k} {v:.0f}" for k, v in s["stage_ms_p50"].items())
        print(
            f"{name:<8} {s['first_audio_ms_p50']:>8.0f} {s['first_audio_ms_p95']:>8.0f} "
            f"{s['wer']:>6.3f}  {stages}"
        )
    print(f"ratio server/naive (p50): {ratio:.2f}")
    if args.compare or args.compare_checkout:
        print(
            f"compare = {args.compare or args.compare_checkout}: compare/server (p50) "
            f"{summary['compare']['ratio_over_server_p50']:.2f}"
        )
    draw_waterfall(summary, result["hardware"], args.label, args.chart)
    print(f"wrote {args.out} and {args.chart}")


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
