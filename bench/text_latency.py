"""Text chat: time to first token and tokens/s through the server (native WebSocket and
OpenAI-compatible HTTP) vs llama-cpp-python direct.

All three run in the same benchmark, alternating prompt by prompt so that machine noise hits
them alike: the server in its own process, over a real WebSocket on loopback (`server`) and
over `POST /v1/chat/completions` with server-sent events on a kept-alive HTTP connection
(`http`, issue 13: within 10 % of the WebSocket's time to first token), the baseline as the
obvious direct use of llama-cpp-python (`create_chat_completion(stream=True)`) in this
process, with the same model file, context, threads, system prompt and sampling.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
from websockets.asyncio.client import connect

from bench.common import BENCH_DIR, hardware, median, percentile, server_process
from server.config import load_settings
from server.prompts import PersonaLibrary

PROMPTS = [
    "What is the capital of France?",
    "Give me one tip for sleeping better.",
    "What is a rainbow?",
    "Name three kinds of fruit.",
    "How do I boil an egg?",
    "Why is the sky blue?",
    "What is two plus two?",
    "Tell me a fun fact about cats.",
]
MAX_TOKENS = 48


def direct_baseline(model_path: Path, system: str, context: int) -> Any:
    from llama_cpp import Llama

    threads = os.cpu_count() or 1
    llm: Any = Llama(
        model_path=str(model_path), n_ctx=context, n_threads=threads, n_threads_batch=threads,
        n_batch=256, verbose=False,
    )  # fmt: skip

    def run(prompt: str) -> dict[str, float]:
        start = time.perf_counter()
        first = None
        tokens = 0
        for chunk in llm.create_chat_completion(
            messages=[{"role": "system", "content": system}, {"role": "user", "content": prompt}],
            max_tokens=MAX_TOKENS, temperature=0.0, stream=True,
        ):  # fmt: skip
            if chunk["choices"][0]["delta"].get("content"):
                tokens += 1
                if first is None:
                    first = time.perf_counter() - start
        total = time.perf_counter() - start
        assert first is not None
        return {"ttft_ms": first * 1000, "tps": (tokens - 1) / (total - first), "tokens": tokens}

    return run


async def through_server(port: int, prompt: str) -> dict[str, float]:
    async with connect(f"ws://127.0.0.1:{port}/") as ws:
        json.loads(await ws.recv())  # session.started
        await ws.send(
            json.dumps(
                {
                    "type": "session.update",
                    "generation": {"max_tokens": MAX_TOKENS, "temperature": 0.0},
                }
            )
        )
        json.loads(await ws.recv())
        start = time.perf_counter()
        await ws.send(json.dumps({"type": "user.message", "text": prompt}))
        first = started = None
        while True:
            event = json.loads(await ws.recv())
            if event["type"] == "reply.started":
                started = time.perf_counter() - start
            elif event["type"] == "reply.delta" and first is None:
                first = time.perf_counter() - start
            elif event["type"] == "reply.done":
                total = time.perf_counter() - start
                break
        assert first is not None and started is not None
        tokens = event["usage"]["completion_tokens"]
        return {
            "ttft_ms": first * 1000,
            # The server's answer began (reply.started, sent before the model is asked).
            "head_ms": started * 1000,
            "tps": (tokens - 1) / (total - first),
            "tokens": tokens,
            "prompt_tokens": event["usage"]["prompt_tokens"],
        }


async def through_http(session: aiohttp.ClientSession, port: int, prompt: str) -> dict[str, float]:
    """One streamed chat completion; the first content delta is the first token."""
    body = {
        "model": "chinwag",  # the default persona: the same system prompt as the others
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    first = head = None
    tokens = prompt_tokens = 0
    async with session.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body) as reply:
        reply.raise_for_status()
        async for line in reply.content:
            if not line.startswith(b"data: {"):
                continue
            if head is None:  # the role chunk, sent just before the model is asked
                head = time.perf_counter() - start
            chunk = json.loads(line[6:])
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content") and first is None:
                first = time.perf_counter() - start
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
                prompt_tokens = chunk["usage"]["prompt_tokens"]
    total = time.perf_counter() - start
    assert first is not None and head is not None and tokens
    return {
        "ttft_ms": first * 1000,
        "head_ms": head * 1000,
        "tps": (tokens - 1) / (total - first),
        "tokens": tokens,
        "prompt_tokens": prompt_tokens,
    }


async def http_rounds(
    port: int, prompts: list[str], direct: Any, rows: dict[str, list[dict[str, float]]]
) -> None:
    """Every prompt through the three paths in turn; one kept-alive HTTP connection, as an
    SDK client keeps one. The server's two paths must not find each other's prompt in the
    model's KV cache (the second of two identical prompts evaluates almost nothing: that
    made HTTP 0.42x the WebSocket in one run): each asks with its own one-word lead-in
    ("Question:" / "Query:"), and they swap places from prompt to prompt."""
    async with aiohttp.ClientSession() as session:
        await through_http(session, port, PROMPTS[0])  # untimed: opens the connection
        for i, prompt in enumerate(prompts):
            rows["direct"].append(direct(prompt))
            websocket = through_server(port, f"Question: {prompt}")
            http = through_http(session, port, f"Query: {prompt}")
            for name, call in (("http", http), ("server", websocket))[:: 1 if i % 2 else -1]:
                rows[name].append(await call)


def stream_summary(samples: list[dict[str, float]]) -> dict[str, Any]:
    """Time to first token (p50, p95) and tokens per second (p50) of one path's replies."""
    ttft = [s["ttft_ms"] for s in samples]
    tps = [s["tps"] for s in samples]
    return {
        "ttft_ms_p50": round(median(ttft), 1),
        "ttft_ms_p95": round(percentile(ttft, 95), 1),
        "tokens_per_s_p50": round(median(tps), 1),
        "samples": len(samples),
    }


def print_table(summary: dict[str, Any], names: tuple[str, ...]) -> None:
    print(f"{'path':<8} {'TTFT p50 ms':>12} {'TTFT p95 ms':>12} {'tok/s p50':>10} {'n':>4}")
    for name in names:
        s = summary[name]
        print(
            f"{name:<8} {s['ttft_ms_p50']:>12} {s['ttft_ms_p95']:>12} "
            f"{s['tokens_per_s_p50']:>10} {s['samples']:>4}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3, help="passes over the prompts")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results-text.json")
    args = parser.parse_args()

    settings = load_settings()
    persona = PersonaLibrary.load(settings.prompts.directory, settings.prompts.default_persona)
    system = persona.get(None).system_prompt
    direct = direct_baseline(settings.llm.model_path, system, settings.llm.context_size)
    rows: dict[str, list[dict[str, float]]] = {"server": [], "http": [], "direct": []}
    with server_process() as port:
        # One untimed round each: page in the weights, fill the system prompt's KV cache.
        direct(PROMPTS[0])
        asyncio.run(through_server(port, PROMPTS[0]))
        asyncio.run(http_rounds(port, PROMPTS * args.rounds, direct, rows))

    summary = {name: stream_summary(samples) for name, samples in rows.items()}
    for name, samples in rows.items():
        if name != "direct":
            # Where the time to first token goes: until the server began its answer (request
            # read, parsed, the stream opened), then until the model's first token arrived.
            head = [s["head_ms"] for s in samples]
            rest = [s["ttft_ms"] - s["head_ms"] for s in samples]
            summary[name]["head_ms_p50"] = round(median(head), 1)
            summary[name]["after_head_ms_p50"] = round(median(rest), 1)
        if name != "direct":  # the lead-ins must not make one path's prompts longer
            summary[name]["prompt_tokens_mean"] = round(
                sum(s["prompt_tokens"] for s in samples) / len(samples), 1
            )
    ratio_ttft = summary["server"]["ttft_ms_p50"] / summary["direct"]["ttft_ms_p50"]
    ratio_tps = summary["server"]["tokens_per_s_p50"] / summary["direct"]["tokens_per_s_p50"]
    ratio_http = summary["http"]["ttft_ms_p50"] / summary["server"]["ttft_ms_p50"]
    result: dict[str, Any] = {
        "benchmark": "text_latency",
        "hardware": hardware(),
        "model": settings.llm.model_path.name,
        "max_tokens": MAX_TOKENS,
        "results": summary,
        "ratio_server_over_direct": {
            "ttft_p50": round(ratio_ttft, 3),
            "tokens_per_s_p50": round(ratio_tps, 3),
        },
        "ratio_http_over_websocket": {"ttft_p50": round(ratio_http, 3)},
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    hw = result["hardware"]
    print(f"text chat latency, {hw['cpu']} x{hw['cores']}, model {result['model']}")
    print_table(summary, ("direct", "server", "http"))
    print(f"ratio server/direct: TTFT p50 {ratio_ttft:.2f}, tokens/s p50 {ratio_tps:.2f}")
    print(f"ratio http/server (WebSocket): TTFT p50 {ratio_http:.2f}")
    for name in ("server", "http"):
        s = summary[name]
        print(
            f"{name}: answer began after {s['head_ms_p50']} ms p50, first token "
            f"{s['after_head_ms_p50']} ms p50 after that"
        )
    print(
        "prompt tokens (mean): server "
        f"{summary['server']['prompt_tokens_mean']}, http {summary['http']['prompt_tokens_mean']}"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
