"""What asking the chat model whether the words end a sentence costs at a pause.

The rule measured in bench/pause_cuts.py --chat-model (not kept; it was the server's `[vad]
sentence_end_model` in commit 78b67c1) evaluates the transcript into the KV cache and reads
the next token's distribution (`LlamaCppChatModel.sentence_end_probability`); the
speculative reply that follows reuses those tokens. So the cost that matters is the
difference it makes to the reply, measured side by side, alternating, for each sentence:

- reply: the system prompt cached, the reply's first token (what happens without it);
- ask + reply: the sentence-end probability, then the reply's first token;
- ask: the sentence-end probability alone;

each from a cache that holds the persona's system prompt only (no prefill: the dearer case)
and, for `prefilled`, also the words but the last (what prefill while speaking leaves).
Wall time and process CPU time (both llama.cpp threads). Prints a table and writes
bench/results-sentence-end-cost.json.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import BENCH_DIR, hardware, median, percentile
from bench.pause_cuts import PAUSE_SENTENCES
from bench.voice_set import SENTENCES
from server.config import load_settings
from server.engines.base import ChatMessage
from server.engines.llama_cpp import LlamaCppChatModel
from server.prompts import GenerationSettings, PersonaLibrary

FIRST_TOKEN = GenerationSettings(max_tokens=1, temperature=0.0)


def texts() -> list[str]:
    whole = [f"{a} {b}" for a, b in PAUSE_SENTENCES]
    return [text for _, text in SENTENCES] + whole


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results-sentence-end-cost.json")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    settings = load_settings(environ={})
    llm = settings.llm
    model = LlamaCppChatModel(
        llm.model_path, context_size=llm.context_size, threads=llm.threads, parallel=llm.parallel
    )
    model.warm_up()
    persona = PersonaLibrary.load(settings.prompts.directory, settings.prompts.default_persona)
    system = ChatMessage("system", persona.get(None).system_prompt)
    load_before = hardware()["load_average"]

    def ready(text: str, prefilled: bool) -> list[ChatMessage]:
        model.clear_cache()
        model.prefill([system, ChatMessage("user", "")])
        if prefilled:
            model.prefill([system, ChatMessage("user", text.rsplit(" ", 1)[0])])
        return [system, ChatMessage("user", text)]

    def reply(messages: list[ChatMessage]) -> None:
        model.generate(messages, FIRST_TOKEN, lambda _delta: None, threading.Event())

    def ask(messages: list[ChatMessage]) -> None:
        assert model.sentence_end_probability(messages) is not None

    def ask_and_reply(messages: list[ChatMessage]) -> None:
        ask(messages)
        reply(messages)

    ways = {"reply": reply, "ask + reply": ask_and_reply, "ask": ask}
    wall: dict[str, list[float]] = {f"{w} {c}": [] for c in ("cold", "prefilled") for w in ways}
    cpu: dict[str, list[float]] = {key: [] for key in wall}
    began_all = time.perf_counter()
    for round_number in range(args.rounds):
        for n, text in enumerate(texts()):
            print(f"round {round_number + 1}: {n}/{len(texts())}", flush=True)
            for case in ("cold", "prefilled"):
                for way, run in ways.items():
                    messages = ready(text, case == "prefilled")
                    began, began_cpu = time.perf_counter(), time.process_time()
                    run(messages)
                    wall[f"{way} {case}"].append(time.perf_counter() - began)
                    cpu[f"{way} {case}"].append(time.process_time() - began_cpu)

    summary: dict[str, dict[str, float]] = {}
    for key in wall:
        summary[key] = {
            "wall_ms_p50": round(median(wall[key]) * 1000, 1),
            "wall_ms_p95": round(percentile(wall[key], 95) * 1000, 1),
            "cpu_ms_p50": round(median(cpu[key]) * 1000, 1),
        }
    for case in ("cold", "prefilled"):
        with_ask, without = f"ask + reply {case}", f"reply {case}"
        extra_wall = [a - b for a, b in zip(wall[with_ask], wall[without], strict=True)]
        extra_cpu = [a - b for a, b in zip(cpu[with_ask], cpu[without], strict=True)]
        summary[f"extra {case}"] = {
            "wall_ms_p50": round(median(extra_wall) * 1000, 1),
            "wall_ms_p95": round(percentile(extra_wall, 95) * 1000, 1),
            "cpu_ms_p50": round(median(extra_cpu) * 1000, 1),
        }
    result: dict[str, Any] = {
        "benchmark": "sentence_end_cost",
        "hardware": {**hardware(), "load_average_at_start": load_before},
        "sentences": len(texts()),
        "rounds": args.rounds,
        "summary": summary,
        "runtime_s": round(time.perf_counter() - began_all, 1),
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{'':<24}{'wall p50':>10}{'p95':>8}{'cpu p50':>10}")
    for key, row in summary.items():
        print(
            f"{key:<24}{row['wall_ms_p50']:>10.1f}{row['wall_ms_p95']:>8.1f}"
            f"{row['cpu_ms_p50']:>10.1f}"
        )
    print(f"load average {result['hardware']['load_average']}; wrote {args.out}")


if __name__ == "__main__":
    main()
