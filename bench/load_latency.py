"""Concurrent conversations: latency and fairness with N = 1, 2, 4, 8 sessions at once.

A real `chinwag serve` (its own process, the default models, WebSocket on loopback). For each
N, one scenario after another on the same server:

- voice: N sessions, each speaking `--turns` recordings of tests/data/human one after another
  (a different recording per session and turn), streamed at real-time pace in 20 ms frames with
  silence after, as a live microphone sends (clients/talk.py). Session i starts i x `--stagger`
  seconds after the first. After each answer the session listens to it (waits for as long as its
  audio lasts, at most 4 s) before speaking again. The clock of a turn starts at the end of the
  last voiced frame (DESIGN.md) and stops at the first reply audio frame received.
- text: N sessions, each asking `--turns` short questions one after another (60 tokens, greedy),
  staggered the same way: time to first token and tokens per second of each reply.
- mixed: both at once (N voice and N text sessions), to see that speech keeps priority over
  text under load.

Per N and scenario: p50/p95 over all turns, and fairness: the slowest session's p50 over the
fastest session's. A turn refused with `overloaded` (admission control, `[limits]
max_reply_wait_s`) is counted, not timed. Writes bench/results-load.json with the hardware and
prints a table; docs/scaling.md has the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect

from bench.common import BENCH_DIR, SHORT_QUESTIONS, hardware, median, percentile, server_process
from clients.talk import read_wav, talk_turn
from tests.speech import recordings

QUESTIONS = [
    *SHORT_QUESTIONS,
    "What colour is grass?",
    "How many days are in a week?",
    "What do bees make?",
    "Where does the sun rise?",
]
GENERATION = {"max_tokens": 60, "temperature": 0.0}
LISTEN_MAX_S = 4.0  # a session listens to at most this much of an answer before speaking again
TEXT_GAP_S = 0.5  # between a text reply and the next question (reading it)
SCENARIOS = ("voice", "text", "mixed")


@dataclass
class Turn:
    """One turn of one session; latency_ms is None when the turn was refused or failed."""

    session: int
    latency_ms: float | None
    error: str | None = None
    stages_ms: dict[str, float] = field(default_factory=dict)
    tokens: int = 0
    tokens_per_s: float | None = None


async def open_session(port: int) -> ClientConnection:
    ws = await connect(f"ws://127.0.0.1:{port}/", max_size=None)
    json.loads(await ws.recv())  # session.started
    await ws.send(json.dumps({"type": "session.update", "generation": GENERATION}))
    while json.loads(await ws.recv())["type"] != "session.updated":
        pass
    return ws


def error_code(exc: Exception) -> str:
    """The server's `error` code from talk_turn's RuntimeError("code: message")."""
    return str(exc).split(":", 1)[0]


async def voice_session(
    port: int, index: int, delay: float, paths: list[Path], timeout: float
) -> list[Turn]:
    await asyncio.sleep(delay)
    turns: list[Turn] = []
    ws = await open_session(port)
    try:
        for path in paths:
            pcm, rate = read_wav(path)
            try:
                result = await talk_turn(ws, pcm, rate, timeout=timeout)
            except RuntimeError as exc:
                turns.append(Turn(index, None, error=error_code(exc)))
                await asyncio.sleep(1.0)
                continue
            except TimeoutError:
                turns.append(Turn(index, None, error="timeout"))
                continue
            t = result.timings_ms
            if "speech_end_to_first_audio" not in t:
                turns.append(Turn(index, None, error="no audio"))
                continue
            queued = [
                e["timings"]["queued_ms"]
                for e in result.events
                if e["type"] == "reply.done" and e.get("timings")
            ]
            turn_end = t.get("speech_end_to_turn_end", 0.0)
            transcript = t.get("speech_end_to_transcript", turn_end)
            first_token = t.get("speech_end_to_first_token", transcript)
            turns.append(
                Turn(
                    index,
                    t["speech_end_to_first_audio"],
                    stages_ms={
                        # As in voice_latency: with speculation the transcript and even the
                        # first token may be ready when the turn ends (then a stage is <= 0).
                        "end_of_turn": turn_end,
                        "asr_after_turn_end": transcript - turn_end,
                        "llm_first_token": first_token - transcript,
                        "tts_first_phrase": t["speech_end_to_first_audio"] - first_token,
                        "llm_queued": float(queued[-1]) if queued else 0.0,
                    },
                )
            )
            heard_s = len(result.audio) / 2 / result.audio_rate if result.audio_rate else 0.0
            await asyncio.sleep(min(heard_s, LISTEN_MAX_S))
    finally:
        await ws.close()
    return turns


async def ask(ws: ClientConnection, text: str, index: int, timeout: float) -> Turn:
    start = time.perf_counter()
    await ws.send(json.dumps({"type": "user.message", "text": text}))
    first: float | None = None
    error: str | None = None
    async with asyncio.timeout(timeout):
        while True:
            frame = await ws.recv()
            if isinstance(frame, bytes):
                continue
            event = json.loads(frame)
            kind = event["type"]
            if kind == "reply.delta" and first is None:
                first = time.perf_counter() - start
            elif kind == "error":
                error = event["code"]
            elif kind == "reply.done":
                if event["status"] != "completed" or first is None:
                    return Turn(index, None, error=error or event["status"])
                tokens = int((event.get("usage") or {}).get("completion_tokens", 0))
                tps = (event.get("timings") or {}).get("tokens_per_second")
                queued = (event.get("timings") or {}).get("queued_ms") or 0.0
                return Turn(
                    index,
                    first * 1000,
                    stages_ms={"llm_queued": float(queued)},
                    tokens=tokens,
                    tokens_per_s=float(tps) if tps else None,
                )


async def text_session(
    port: int, index: int, delay: float, questions: list[str], timeout: float
) -> list[Turn]:
    await asyncio.sleep(delay)
    turns: list[Turn] = []
    ws = await open_session(port)
    try:
        for question in questions:
            try:
                turns.append(await ask(ws, question, index, timeout))
            except TimeoutError:
                turns.append(Turn(index, None, error="timeout"))
            await asyncio.sleep(TEXT_GAP_S)
    finally:
        await ws.close()
    return turns


async def run_scenario(
    port: int, scenario: str, n: int, args: argparse.Namespace, paths: list[Path]
) -> dict[str, list[Turn]]:
    """N sessions of the scenario at once; the turns of each kind."""
    jobs: dict[str, list[Any]] = {"voice": [], "text": []}
    for i in range(n):
        delay = i * args.stagger
        if scenario in ("voice", "mixed"):
            mine = [paths[(i + t * n) % len(paths)] for t in range(args.turns)]
            jobs["voice"].append(voice_session(port, i, delay, mine, args.timeout))
        if scenario in ("text", "mixed"):
            mine_q = [QUESTIONS[(i + t * n) % len(QUESTIONS)] for t in range(args.turns)]
            jobs["text"].append(text_session(port, i, delay, mine_q, args.timeout))
    kinds = [k for k in jobs if jobs[k]]
    results = await asyncio.gather(*(asyncio.gather(*jobs[k]) for k in kinds))
    return {k: [t for session in r for t in session] for k, r in zip(kinds, results, strict=True)}


SPEECH_METRICS = ("chinwag_speech_queue_wait_seconds", "chinwag_speech_run_seconds")


def scrape_speech_jobs(port: int) -> dict[tuple[str, str, str], float]:
    """The speech workers' histograms from /metrics: (metric, job, le or "sum"/"count")."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        text = response.read().decode()
    found: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "chinwag_speech_late_phrases":
            found[("late", "", "count")] = family.samples[0].value
        if family.name not in SPEECH_METRICS:
            continue
        for sample in family.samples:
            job = sample.labels.get("job", "")
            if sample.name.endswith("_bucket"):
                found[(family.name, job, sample.labels["le"])] = sample.value
            elif sample.name.endswith(("_sum", "_count")):
                found[(family.name, job, sample.name.rsplit("_", 1)[1])] = sample.value
    return found


def speech_jobs(
    before: dict[tuple[str, str, str], float], after: dict[tuple[str, str, str], float]
) -> dict[str, dict[str, float]]:
    """Per job kind, over one scenario: count, mean and median (interpolated within the
    histogram's buckets, as Prometheus' histogram_quantile) of queue wait and run time, ms."""
    delta = {key: value - before.get(key, 0.0) for key, value in after.items()}
    out: dict[str, dict[str, float]] = {}
    if ("late", "", "count") in delta:
        # Later phrases ready only after playback reached them: gaps the listener heard.
        out["late_phrases"] = {"count": delta.pop(("late", "", "count"))}
    for metric, short in zip(SPEECH_METRICS, ("queued", "ran"), strict=True):
        jobs = {job for (m, job, _) in delta if m == metric}
        for job in sorted(jobs):
            count = delta.get((metric, job, "count"), 0.0)
            if count <= 0:
                continue
            row = out.setdefault(job, {"count": count})
            row[f"{short}_mean_ms"] = round(delta[(metric, job, "sum")] / count * 1000, 1)
            buckets = sorted(
                (float(le), n) for (m, j, le), n in delta.items()
                if m == metric and j == job and le not in ("sum", "count")
            )  # fmt: skip
            row[f"{short}_p50_ms"] = round(bucket_quantile(buckets, 0.5) * 1000, 1)
    return out


def bucket_quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """histogram_quantile over cumulative (upper bound, count) buckets."""
    total = buckets[-1][1] if buckets else 0.0
    rank = q * total
    lower, below = 0.0, 0.0
    for upper, cumulative in buckets:
        if cumulative >= rank:
            if upper == float("inf"):
                return lower
            inside = cumulative - below
            return lower + (upper - lower) * ((rank - below) / inside if inside else 0.0)
        lower, below = upper, cumulative
    return lower


def summarise(turns: list[Turn]) -> dict[str, Any]:
    timed = [t for t in turns if t.latency_ms is not None]
    values = [t.latency_ms for t in timed if t.latency_ms is not None]
    per_session: dict[int, list[float]] = {}
    for t in timed:
        assert t.latency_ms is not None
        per_session.setdefault(t.session, []).append(t.latency_ms)
    session_p50 = [median(v) for v in per_session.values()]
    errors: dict[str, int] = {}
    for t in turns:
        if t.error is not None:
            errors[t.error] = errors.get(t.error, 0) + 1
    out: dict[str, Any] = {
        "turns": len(turns),
        "timed": len(values),
        "errors": errors,
        "p50_ms": round(median(values), 1),
        "p95_ms": round(percentile(values, 95), 1),
        "max_ms": round(max(values), 1) if values else None,
        "session_p50_ms": sorted(round(v, 1) for v in session_p50),
        "fairness": round(max(session_p50) / min(session_p50), 2) if session_p50 else None,
    }
    stage_names = sorted({name for t in timed for name in t.stages_ms})
    out["stage_p50_ms"] = {
        name: round(median([t.stages_ms[name] for t in timed if name in t.stages_ms]), 1)
        for name in stage_names
    }
    rates = [t.tokens_per_s for t in timed if t.tokens_per_s]
    if rates:
        out["tokens_per_s_p50"] = round(median(rates), 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", default="1,2,4,8", help="the N to run, comma-separated")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="voice,text,mixed")
    parser.add_argument("--turns", type=int, default=3, help="turns per session")
    parser.add_argument("--stagger", type=float, default=0.4, help="seconds between starts")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per turn")
    parser.add_argument("--config", type=Path, help="server config file")
    parser.add_argument("--label", default="default settings")
    parser.add_argument(
        "--compare", type=Path, help="a second server config, run alternately in the same run"
    )
    parser.add_argument(
        "--compare-checkout",
        type=Path,
        help="another source tree (a git worktree of an older commit), its server run "
        "alternately with this one in the same run",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="times each scenario runs on each server, alternately (the turns are pooled)",
    )
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results-load.json")
    args = parser.parse_args()
    levels = [int(n) for n in args.sessions.split(",")]
    scenarios = [s for s in args.scenarios.split(",") if s]
    for s in scenarios:
        if s not in SCENARIOS:
            parser.error(f"unknown scenario {s!r}")
    paths = [r.path for r in recordings()]

    load_before = hardware()["load_average"]
    names = ["server"] + (["compare"] if args.compare or args.compare_checkout else [])
    results: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in names}
    extra = ("--config", str(args.config)) if args.config else ()
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        ports = {"server": stack.enter_context(server_process(*extra))}
        if args.compare:
            ports["compare"] = stack.enter_context(server_process("--config", str(args.compare)))
        elif args.compare_checkout:
            ports["compare"] = stack.enter_context(
                server_process(*extra, checkout=args.compare_checkout)
            )
        warm_up = argparse.Namespace(**{**vars(args), "turns": 1})
        for port in ports.values():
            # Untimed: a voice turn and a text reply page the models in.
            asyncio.run(run_scenario(port, "mixed", 1, warm_up, paths))
        for n in levels:
            for scenario in scenarios:
                # Each server in turn, scenario by scenario, `--rounds` times (the order
                # flipped every round), so machine noise hits both alike.
                collected: dict[str, dict[str, list[Turn]]] = {name: {} for name in ports}
                round_p50: dict[str, dict[str, list[float]]] = {name: {} for name in ports}
                round_load: list[float] = []
                jobs_before = {name: scrape_speech_jobs(port) for name, port in ports.items()}
                for r in range(args.rounds):
                    round_load.append(round(os.getloadavg()[0], 2))
                    order = list(ports) if r % 2 == 0 else list(reversed(ports))
                    for name in order:
                        turns = asyncio.run(run_scenario(ports[name], scenario, n, args, paths))
                        for kind, kind_turns in turns.items():
                            key = scenario if scenario != "mixed" else f"mixed_{kind}"
                            collected[name].setdefault(key, []).extend(kind_turns)
                            p50 = summarise(kind_turns)["p50_ms"]
                            round_p50[name].setdefault(key, []).append(p50)
                        elapsed = time.perf_counter() - started
                        print(
                            f"N={n} {scenario} {name} round {r + 1} done ({elapsed:.0f} s)",
                            flush=True,
                        )
                for name, port in ports.items():
                    # Between its rounds a server is idle: the difference is its own rounds'.
                    jobs = speech_jobs(jobs_before[name], scrape_speech_jobs(port))
                    for key, kind_turns in collected[name].items():
                        row = results[name].setdefault(str(n), {})[key] = summarise(kind_turns)
                        row["round_p50_ms"] = round_p50[name][key]
                        row["round_load_average"] = round_load
                        if "voice" in key:
                            # The speech workers over the scenario (docs/scaling.md).
                            row["speech_jobs"] = jobs
    hw = hardware()
    hw["load_average_before"] = load_before
    result = {
        "benchmark": "load_latency",
        "labels": {
            "server": args.label,
            "compare": str(args.compare or args.compare_checkout or ""),
        },
        "hardware": hw,
        "measure": {
            "voice": "end of the last voiced 20 ms frame -> first reply audio frame received",
            "text": "user.message sent -> first reply.delta received",
            "fairness": "slowest session's p50 / fastest session's p50",
        },
        "settings": {
            "turns_per_session": args.turns,
            "rounds": args.rounds,
            "stagger_s": args.stagger,
            "generation": GENERATION,
            "config": str(args.config or ""),
        },
        "goals": {"voice_4_p50_ms": 1000, "voice_4_fairness": 2.0},
        "results": results,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"wrote {args.out}")


def print_table(result: dict[str, Any]) -> None:
    hw = result["hardware"]
    print(
        f"load latency, {hw['cpu']} x{hw['cores']}, load average "
        f"{hw['load_average_before']} before, {hw['load_average']} after"
    )
    for name, by_n in result["results"].items():
        print(f"{name}: {result['labels'][name]}")
        print(
            f"{'N':>2} {'scenario':<11} {'p50 ms':>8} {'p95 ms':>8} {'fair':>5} {'tok/s':>6} "
            f"{'refused':>7}  stage p50 (ms)"
        )
        for n, rows in by_n.items():
            for key, s in rows.items():
                stages = ", ".join(f"{k} {v:.0f}" for k, v in s["stage_p50_ms"].items())
                tps = f"{s['tokens_per_s_p50']:.0f}" if "tokens_per_s_p50" in s else "-"
                fair = f"{s['fairness']:.2f}" if s["fairness"] is not None else "-"
                refused = sum(s["errors"].values())
                print(
                    f"{n:>2} {key:<11} {s['p50_ms']:>8.0f} {s['p95_ms']:>8.0f} {fair:>5} "
                    f"{tps:>6} {refused:>7}  {stages}"
                )
                for job, row in s.get("speech_jobs", {}).items():
                    if job == "late_phrases":
                        print(f"{'':>15} later phrases late (a gap): {row['count']:.0f}")
                        continue
                    print(
                        f"{'':>15} {job:<12} x{row['count']:<4.0f} queued p50 "
                        f"{row['queued_p50_ms']:.0f} (mean {row['queued_mean_ms']:.0f}) ms, "
                        f"ran p50 {row['ran_p50_ms']:.0f} (mean {row['ran_mean_ms']:.0f}) ms"
                    )
    if "compare" in result["results"]:
        print("compare / server, p50 (and round by round, with the load average):")
        for n, rows in result["results"]["server"].items():
            for key, s in rows.items():
                other = result["results"]["compare"][n][key]
                pairs = zip(
                    other["round_p50_ms"], s["round_p50_ms"], s["round_load_average"], strict=True
                )
                rounds = ", ".join(f"{a / b:.2f} (load {load:.1f})" for a, b, load in pairs)
                print(f"{n:>2} {key:<11} {other['p50_ms'] / s['p50_ms']:.2f}   rounds: {rounds}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
