"""What chinwag adds in front of a remote LLM server: time to first token and tokens/s of a
text reply through chinwag (`[llm] backend = "openai"`, native WebSocket) against the same
request sent straight to the server, side by side.

The server is llama-cpp-python's `llama_cpp.server` with the default GGUF, on loopback; chinwag
runs as its own process (`chinwag serve --llm-url ...`). Each prompt goes both ways, the order
swapping from prompt to prompt (the second finds the prompt in the server's cache). The
difference is chinwag's own cost on the path: its token count (history trimming), the request
from its engine thread, the SSE decoding and the hop to the session.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import BENCH_DIR, hardware, median, server_process
from bench.text_latency import MAX_TOKENS, PROMPTS, print_table, stream_summary, through_server
from server.config import load_settings
from server.prompts import PersonaLibrary

_LISTENING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")


@contextmanager
def llama_cpp_server(model: Path, threads: int) -> Iterator[str]:
    """`python -m llama_cpp.server` on a free loopback port; yields its API root."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
         "--port", "0", "--n_ctx", "2048", "--n_threads", str(threads),
         "--n_threads_batch", str(threads), "--interrupt_requests", "false"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        port = None
        for line in proc.stdout:
            if match := _LISTENING.search(line):
                port = int(match[1])
                break
        if port is None:
            raise RuntimeError("llama_cpp.server did not start")
        # Keep reading its output so that it never blocks on a full pipe.
        output = proc.stdout
        threading.Thread(target=lambda: [None for _ in output], daemon=True).start()
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(15)


async def direct(
    session: aiohttp.ClientSession, base_url: str, system: str, prompt: str
) -> dict[str, float]:
    """The request chinwag would send, straight to the server."""
    body = {
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": prompt}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0.0,
        "stream": True,
    }
    start = time.perf_counter()
    first = None
    tokens = 0
    async with session.post(f"{base_url}/chat/completions", json=body) as reply:
        reply.raise_for_status()
        async for line in reply.content:
            if not line.startswith(b"data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                tokens += 1
                if first is None:
                    first = time.perf_counter() - start
    total = time.perf_counter() - start
    assert first is not None
    return {"ttft_ms": first * 1000, "tps": (tokens - 1) / (total - first), "tokens": tokens}


async def rounds(
    port: int, base_url: str, system: str, prompts: list[str]
) -> dict[str, list[dict[str, float]]]:
    rows: dict[str, list[dict[str, float]]] = {"direct": [], "chinwag": []}
    async with aiohttp.ClientSession() as session:
        await direct(session, base_url, system, PROMPTS[0])  # untimed: warm-up
        await through_server(port, PROMPTS[0])
        for i, prompt in enumerate(prompts):
            if i % 2:
                rows["chinwag"].append(await through_server(port, prompt))
                rows["direct"].append(await direct(session, base_url, system, prompt))
            else:
                rows["direct"].append(await direct(session, base_url, system, prompt))
                rows["chinwag"].append(await through_server(port, prompt))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2, help="passes over the prompts")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results-remote.json")
    args = parser.parse_args()

    settings = load_settings()
    persona = PersonaLibrary.load(settings.prompts.directory, settings.prompts.default_persona)
    system = persona.get(None).system_prompt
    threads = os.cpu_count() or 1
    with (
        llama_cpp_server(settings.llm.model_path, threads) as base_url,
        server_process("--llm-url", base_url) as port,
    ):
        rows = asyncio.run(rounds(port, base_url, system, PROMPTS * args.rounds))

    summary = {name: stream_summary(samples) for name, samples in rows.items()}
    added = [
        c["ttft_ms"] - d["ttft_ms"] for c, d in zip(rows["chinwag"], rows["direct"], strict=True)
    ]
    result: dict[str, Any] = {
        "benchmark": "remote_llm",
        "hardware": hardware(),
        "server": "llama_cpp.server",
        "model": settings.llm.model_path.name,
        "max_tokens": MAX_TOKENS,
        "results": summary,
        "chinwag_added_ttft_ms_p50": round(median(added), 1),
        "ratio_chinwag_over_direct": {
            "ttft_p50": round(
                summary["chinwag"]["ttft_ms_p50"] / summary["direct"]["ttft_ms_p50"], 3
            ),
            "tokens_per_s_p50": round(
                summary["chinwag"]["tokens_per_s_p50"] / summary["direct"]["tokens_per_s_p50"], 3
            ),
        },
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    hw = result["hardware"]
    print(f"remote LLM (llama_cpp.server), {hw['cpu']} x{hw['cores']}, model {result['model']}")
    print_table(summary, ("direct", "chinwag"))
    ratios = result["ratio_chinwag_over_direct"]
    added_p50 = result["chinwag_added_ttft_ms_p50"]
    print(f"chinwag adds {added_p50} ms to the first token (p50 of pairs); ratio TTFT "
          f"{ratios['ttft_p50']}, tokens/s {ratios['tokens_per_s_p50']}")  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
