"""What each stage of a turn costs on this machine, each engine alone, in this process.

The engines `chinwag serve` loads with the default settings (load_engines), called directly:

- ASR: each recording of tests/data/human transcribed whole, as a turn is (the short window);
- LLM: each short question answered (60 tokens, greedy, the default persona's system prompt):
  time to first token and tokens per second; then the same questions 1, 2, 4 and 8 at a time
  in one batch (continuous batching, as ChatRunner runs them): tokens per second in all;
- TTS: first phrases (at most 4 words, as the splitter cuts them) and whole sentences.

For docs/scaling.md: what one turn costs, so what a box holds and what moving a stage buys.
Writes bench/results-stages.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import BENCH_DIR, SHORT_QUESTIONS, hardware, median, percentile
from clients.talk import read_wav
from server.app import load_engines
from server.config import load_settings
from server.engines.base import ChatMessage, ChatModel, Generation
from server.prompts import GenerationSettings, PersonaLibrary
from tests.speech import recordings, to_16k_float

QUESTIONS = SHORT_QUESTIONS
FIRST_PHRASES = ["Sure, here is", "The capital of France", "Two plus two", "Hello there!"]
SENTENCES = [
    "The capital of France is Paris, a city known for its art and food.",
    "Rainbows appear when sunlight is bent and split by drops of rain in the air.",
    "To boil an egg, cover it with water, bring it to a boil and wait ten minutes.",
    "Cats sleep for about two thirds of the day, so they are rested for the hunt.",
]
GENERATION = GenerationSettings(max_tokens=60, temperature=0.0)


def stats(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(median(values), 1),
        "p95": round(percentile(values, 95), 1),
        "n": len(values),
    }


def batch(llm: ChatModel, system: ChatMessage, width: int) -> dict[str, float]:
    """`width` replies begun together and stepped in one batch until all are done."""
    start = time.perf_counter()
    first_seen: dict[int, float] = {}

    def recorder(index: int) -> Callable[[str], None]:
        def on_delta(_delta: str) -> None:
            first_seen.setdefault(index, time.perf_counter() - start)

        return on_delta

    gens: list[Generation] = [
        llm.begin(
            [system, ChatMessage("user", QUESTIONS[i % len(QUESTIONS)])], GENERATION, recorder(i)
        )
        for i in range(width)
    ]
    while not all(g.done for g in gens):
        llm.step([g for g in gens if not g.done])
    produced = sum(llm.end(g).completion_tokens for g in gens)
    wall = time.perf_counter() - start
    return {
        "tokens_per_s_total": round(produced / wall, 1),
        "tokens_per_s_each": round(produced / wall / width, 1),
        "last_first_token_ms": round(max(first_seen.values()) * 1000, 1) if first_seen else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results-stages.json")
    args = parser.parse_args()
    settings = load_settings()
    load_before = hardware()["load_average"]
    engines = load_engines(settings)
    personas = PersonaLibrary.load(settings.prompts.directory, settings.prompts.default_persona)
    system = ChatMessage("system", personas.get(None).system_prompt)
    asr, llm, tts = engines.transcriber, engines.chat, engines.synthesizer

    # ASR: whole turns.
    asr_ms: list[float] = []
    per_audio_s: list[float] = []
    audio = [to_16k_float(*read_wav(r.path)) for r in recordings()]
    asr.transcribe(audio[0])  # warm-up
    for _ in range(args.rounds):
        for samples in audio:
            start = time.perf_counter()
            asr.transcribe(np.asarray(samples, dtype=np.float32))
            ms = (time.perf_counter() - start) * 1000
            asr_ms.append(ms)
            per_audio_s.append(ms / (len(samples) / 16000))

    print(f"ASR done: turn p50 {median(asr_ms):.0f} ms", flush=True)

    # LLM: one reply at a time (the system prompt cached, as in a running server).
    first_ms: list[float] = []
    rates: list[float] = []
    tokens: list[float] = []
    llm.generate(
        [system, ChatMessage("user", "Hi.")], GENERATION, lambda _d: None, threading.Event()
    )
    for _ in range(args.rounds):
        for question in QUESTIONS:
            s = llm.generate(
                [system, ChatMessage("user", question)],
                GENERATION,
                lambda _d: None,
                threading.Event(),
            )
            first_ms.append((s.first_token_s or 0.0) * 1000)
            tokens.append(s.completion_tokens)
            gen_s = s.total_s - (s.first_token_s or 0.0)
            if s.completion_tokens > 1 and gen_s > 0:
                rates.append((s.completion_tokens - 1) / gen_s)

    print(f"LLM done: first token p50 {median(first_ms):.0f} ms", flush=True)

    # LLM: several replies in one batch, as ChatRunner steps them.
    batched = {str(width): batch(llm, system, width) for width in (1, 2, 4, 8)}

    # TTS: first phrases and whole sentences.
    def synth_ms(text: str) -> tuple[float, float]:
        start = time.perf_counter()
        chunks = list(tts.synthesize(text))
        ms = (time.perf_counter() - start) * 1000
        audio_s = sum(len(c) for c in chunks) / tts.sample_rate
        return ms, audio_s

    synth_ms("Warm up.")
    phrase_ms = [synth_ms(t)[0] for _ in range(args.rounds) for t in FIRST_PHRASES]
    sentence = [synth_ms(t) for _ in range(args.rounds) for t in SENTENCES]

    hw = hardware()
    hw["load_average_before"] = load_before
    result: dict[str, Any] = {
        "benchmark": "stage_costs",
        "hardware": hw,
        "asr": {
            "model": str(settings.asr.model_path.name),
            "turn_ms": stats(asr_ms),
            "ms_per_audio_s": stats(per_audio_s),
        },
        "llm": {
            "model": str(settings.llm.model_path.name),
            "first_token_ms": stats(first_ms),
            "tokens_per_s": stats(rates),
            "reply_tokens": stats(tokens),
            "batched": batched,
        },
        "tts": {
            "voice": str(settings.tts.voice_path.name),
            "first_phrase_ms": stats(phrase_ms),
            "sentence_ms": stats([ms for ms, _ in sentence]),
            "real_time_factor": round(
                median([ms / 1000 / audio_s for ms, audio_s in sentence if audio_s]), 3
            ),
        },
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    load_after = hw["load_average"]
    print(f"stage costs, {hw['cpu']} x{hw['cores']}, load average {load_before} -> {load_after}")
    a, m, t = result["asr"], result["llm"], result["tts"]
    per_s = a["ms_per_audio_s"]["p50"]
    print(f"ASR  turn p50 {a['turn_ms']['p50']:.0f} ms ({per_s:.0f} ms per s of audio)")
    print(
        f"LLM  first token p50 {m['first_token_ms']['p50']:.0f} ms, "
        f"{m['tokens_per_s']['p50']:.0f} tokens/s, reply {m['reply_tokens']['p50']:.0f} tokens"
    )
    for n, b in batched.items():
        print(
            f"LLM  {n} at once: {b['tokens_per_s_total']:.0f} tokens/s in all, "
            f"{b['tokens_per_s_each']:.0f} each, last first token {b['last_first_token_ms']:.0f} ms"
        )
    print(
        f"TTS  first phrase p50 {t['first_phrase_ms']['p50']:.0f} ms, sentence p50 "
        f"{t['sentence_ms']['p50']:.0f} ms, real-time factor {t['real_time_factor']}"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
