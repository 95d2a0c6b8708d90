"""Fairness under load: time to first token while other sessions use the model.

A real `chinwag serve` process with the real models (or two, `--compare-checkout`, run
alternately scenario by scenario so that machine noise hits both alike):

- idle: one short question at a time, nothing else running (the reference);
- beside a long reply: one session streams a long reply (max_tokens 700) while another asks
  short questions one after another; that session's time to first token;
- eight at once: eight sessions send a question at the same moment; time to first token of
  each;
- voice beside a long reply: a recorded question spoken at real-time pace while a long text
  reply streams; end of speech to first audio (and the same with nothing else running).

Writes bench/results-fairness.json and prints a table; docs/performance.md ("Several replies at
once") has the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from bench.common import BENCH_DIR, SHORT_QUESTIONS, hardware, median, percentile, server_process
from clients.talk import read_wav, talk_turn

SHORT = SHORT_QUESTIONS
LONG = "Write a very long story about a dragon who learns to bake bread, with many details."
SHORT_GEN = {"max_tokens": 32, "temperature": 0.0}
LONG_GEN = {"max_tokens": 700, "temperature": 0.7, "seed": 1}
VOICE = Path(__file__).resolve().parent.parent / "tests" / "data" / "human" / "spk1_snt1.wav"


async def session(port: int, generation: dict[str, Any]) -> ClientConnection:
    ws = await connect(f"ws://127.0.0.1:{port}/", max_size=None)
    json.loads(await ws.recv())  # session.started
    await ws.send(json.dumps({"type": "session.update", "generation": generation}))
    while json.loads(await ws.recv())["type"] != "session.updated":
        pass
    return ws


async def ask(ws: ClientConnection, text: str) -> dict[str, float]:
    """Send one message; time to its first delta and to its reply.done."""
    start = time.perf_counter()
    await ws.send(json.dumps({"type": "user.message", "text": text}))
    first: float | None = None
    while True:
        frame = await ws.recv()
        if isinstance(frame, bytes):
            continue
        event = json.loads(frame)
        if event["type"] == "reply.delta" and first is None:
            first = time.perf_counter() - start
        elif event["type"] == "reply.done":
            total = time.perf_counter() - start
            return {
                "ttft_ms": (first if first is not None else total) * 1000,
                "total_ms": total * 1000,
                "tokens": float(event.get("usage", {}).get("completion_tokens", 0)),
            }
        elif event["type"] == "error":
            raise RuntimeError(event["code"])


@contextlib.asynccontextmanager
async def long_reply(port: int) -> Any:
    """A session streaming a long reply for as long as the block runs (restarted if done)."""
    ws = await session(port, LONG_GEN)
    stop = asyncio.Event()
    stats: dict[str, float] = {"replies": 0, "tokens": 0}

    async def run() -> None:
        while not stop.is_set():
            result = await ask(ws, LONG)
            stats["replies"] += 1
            stats["tokens"] += result["tokens"]

    task = asyncio.create_task(run())
    # Wait until it streams.
    await asyncio.sleep(1.0)
    try:
        yield stats
    finally:
        stop.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await ws.close()


async def idle(port: int, rounds: int) -> list[float]:
    ws = await session(port, SHORT_GEN)
    try:
        return [(await ask(ws, q))["ttft_ms"] for q in SHORT[:rounds]]
    finally:
        await ws.close()


async def beside_long(port: int, rounds: int) -> list[float]:
    ws = await session(port, SHORT_GEN)
    try:
        async with long_reply(port):
            return [(await ask(ws, q))["ttft_ms"] for q in SHORT[:rounds]]
    finally:
        await ws.close()


async def eight_at_once(port: int) -> list[float]:
    clients = [await session(port, SHORT_GEN) for _ in range(8)]
    try:
        results = await asyncio.gather(*(ask(ws, q) for ws, q in zip(clients, SHORT, strict=True)))
        return [r["ttft_ms"] for r in results]
    finally:
        for ws in clients:
            await ws.close()


async def voice_first_audio(port: int, *, beside: bool) -> float:
    pcm, rate = read_wav(VOICE)
    ws = await session(port, {"max_tokens": 60, "temperature": 0.0})
    try:
        if beside:
            async with long_reply(port):
                result = await talk_turn(ws, pcm, rate, timeout=180)
        else:
            result = await talk_turn(ws, pcm, rate, timeout=180)
        return float(result.timings_ms["speech_end_to_first_audio"])
    finally:
        await ws.close()


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(median(values), 1),
        "p95_ms": round(percentile(values, 95), 1),
        "max_ms": round(max(values), 1) if values else float("nan"),
        "n": len(values),
    }


async def one_pass(port: int, rounds: int, rows: dict[str, list[float]]) -> None:
    # A first untimed question pages the weights in.
    await idle(port, 1)
    rows["idle_ttft"] += await idle(port, rounds)
    rows["beside_long_ttft"] += await beside_long(port, rounds)
    rows["eight_at_once_ttft"] += await eight_at_once(port)
    rows["voice_idle_first_audio"].append(await voice_first_audio(port, beside=False))
    rows["voice_beside_long_first_audio"].append(await voice_first_audio(port, beside=True))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=6, help="short questions per scenario")
    parser.add_argument("--passes", type=int, default=2, help="passes over all scenarios")
    parser.add_argument(
        "--compare-checkout", type=Path, help="another source tree's server, run alternately"
    )
    parser.add_argument("--label", default="this checkout")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results-fairness.json")
    args = parser.parse_args()

    names = ["server"] + (["compare"] if args.compare_checkout else [])
    keys = [
        "idle_ttft",
        "beside_long_ttft",
        "eight_at_once_ttft",
        "voice_idle_first_audio",
        "voice_beside_long_first_audio",
    ]
    rows: dict[str, dict[str, list[float]]] = {n: {k: [] for k in keys} for n in names}
    load_before = hardware()["load_average"]
    with contextlib.ExitStack() as stack:
        ports = {"server": stack.enter_context(server_process())}
        if args.compare_checkout:
            ports["compare"] = stack.enter_context(server_process(checkout=args.compare_checkout))
        for _ in range(args.passes):
            for name in names:
                asyncio.run(one_pass(ports[name], args.rounds, rows[name]))

    results: dict[str, Any] = {}
    for name in names:
        results[name] = {key: summary(values) for key, values in rows[name].items()}
        r = results[name]
        r["ratios"] = {
            "beside_long_over_idle_ttft_p50": round(
                r["beside_long_ttft"]["p50_ms"] / r["idle_ttft"]["p50_ms"], 2
            ),
            "eight_at_once_over_idle_ttft_p50": round(
                r["eight_at_once_ttft"]["p50_ms"] / r["idle_ttft"]["p50_ms"], 2
            ),
            "voice_beside_long_over_idle_first_audio_p50": round(
                r["voice_beside_long_first_audio"]["p50_ms"]
                / r["voice_idle_first_audio"]["p50_ms"],
                2,
            ),
        }
    hw = hardware()
    hw["load_average_before"] = load_before
    result: dict[str, Any] = {
        "benchmark": "load_latency",
        "hardware": hw,
        "labels": {"server": args.label, "compare": str(args.compare_checkout or "")},
        "goals": {"beside_long_ttft_p50_ms": 1000, "eight_at_once_ttft_p95_ms": 3000},
        "long_reply": LONG_GEN,
        "short_question": SHORT_GEN,
        "results": results,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"load latency, {hw['cpu']} x{hw['cores']}, load average {hw['load_average']}")
    header = f"{'scenario':<30}" + "".join(f"{n + ' p50':>14}{n + ' p95':>14}" for n in names)
    print(header)
    for key in keys:
        line = f"{key:<30}"
        for name in names:
            s = results[name][key]
            line += f"{s['p50_ms']:>14.0f}{s['p95_ms']:>14.0f}"
        print(line)
    for name in names:
        print(f"{name}: ratios {results[name]['ratios']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
