"""The intent stage: accuracy on typed and spoken commands, false actions on chit-chat, and end
of speech -> first audio for commands (`make bench-intents`; docs/performance.md).

Typed: every item of bench/intent_set.py through the recognizer in this process (what the
server runs on its worker thread), timed. Spoken: every item synthesized with Piper (the voice
in models/) and espeak-ng, streamed at real-time pace in 20 ms frames through a real
`chinwag serve` (its own process) on a fresh session at site "kitchen" with the smart_home
persona, then silence; what counts is what the server did: the `intent` event (name, slots,
devices), a refusal (answered without the model, no event) or the model's reply.

A false action is an `intent` event (or a recognised intent, typed) for chit-chat: something
published for the home that nobody asked for. Writes bench/results-intents.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import subprocess
import time
import wave
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import soxr
from websockets.asyncio.client import connect

from bench.common import BENCH_DIR, hardware, median, percentile, server_process
from bench.intent_set import BLIND6, HELD_OUT, ITEMS, PHRASINGS, REFUSED, SITE, TEMPTING, Item
from clients.talk import talk_turn
from server.config import load_settings
from server.intents.recognizer import IntentRecognizer, Recognized, Refused
from server.pipeline.intents import load_recognizer

Pcm = np.ndarray
SESSION = {
    "type": "session.start",
    "persona": "smart_home",
    "site": SITE,
    "generation": {"max_tokens": 24, "temperature": 0.0},
}


# --- voices ------------------------------------------------------------------------------------


def espeak(text: str, voice: str = "en-us") -> tuple[Pcm, int]:
    """espeak-ng (Debian package) speaking `text`, as 16-bit PCM."""
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", "165", "--stdout", text],
        check=True,
        capture_output=True,
    ).stdout
    with wave.open(io.BytesIO(wav)) as f:
        rate = f.getframerate()
        pcm = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2").copy()
    return pcm, rate


class Voices:
    def __init__(self, names: list[str]) -> None:
        self.names = names
        self._piper: Any = None

    def say(self, voice: str, text: str) -> tuple[Pcm, int]:
        if voice == "piper":
            if self._piper is None:
                from server.engines.piper import PiperSynthesizer

                self._piper = PiperSynthesizer(load_settings(environ={}).tts.voice_path)
            chunks = list(self._piper.synthesize(text))
            pcm = np.concatenate([np.asarray(c, dtype=np.int16) for c in chunks])
            return pcm, int(self._piper.sample_rate)
        return espeak(text, voice.removeprefix("espeak:"))


# --- scoring -----------------------------------------------------------------------------------


def _same(expected: Any, got: Any) -> bool:
    if isinstance(expected, int | float):
        try:
            return float(got) == float(expected)
        except (TypeError, ValueError):
            return False
    return str(got).strip().lower() == str(expected).strip().lower()


def score(
    item: Item, intent: str | None, slots: dict[str, Any], targets: set[str]
) -> dict[str, Any]:
    """intent_ok: the right intent (or refusal, or none for chit-chat); slots_ok: the expected
    slot values and devices (None when the intent was wrong or nothing is expected)."""
    intent_ok = intent == item.intent
    slots_ok = None
    if intent_ok and item.intent not in (None, REFUSED) and (item.slots or item.targets):
        slots_ok = all(_same(v, slots.get(k)) for k, v in item.slots.items()) and (
            not item.targets or targets == set(item.targets)
        )
    false_action = item.intent is None and intent not in (None, REFUSED)
    return {"intent_ok": intent_ok, "slots_ok": slots_ok, "false_action": false_action}


def typed(recognizer: IntentRecognizer, items: list[Item]) -> list[dict[str, Any]]:
    rows = []
    for item in items:
        began = time.perf_counter()
        found = recognizer.understand(item.text, SITE)
        match_ms = (time.perf_counter() - began) * 1000
        intent: str | None = None
        slots: dict[str, Any] = {}
        targets: set[str] = set()
        if isinstance(found, Recognized):
            intent = found.intent
            slots = {s.name: s.value for s in found.slots}
            targets = {t.entity_id for t in found.targets}
        elif isinstance(found, Refused) and found.reason in ("unknown_device", "unknown_area"):
            intent = REFUSED
        rows.append(
            {
                "text": item.text,
                "kind": item.kind,
                "expected": item.intent,
                "got": intent,
                "match_ms": round(match_ms, 2),
                **score(item, intent, slots, targets),
            }
        )
    return rows


async def spoken_one(port: int, item: Item, pcm: Pcm, rate: int) -> dict[str, Any]:
    async with connect(f"ws://127.0.0.1:{port}/", max_size=None) as ws:
        json.loads(await ws.recv())  # session.started
        await ws.send(json.dumps(SESSION))
        while json.loads(await ws.recv())["type"] != "session.started":
            pass
        if item.setup is not None:
            await ws.send(json.dumps({"type": "user.message", "text": item.setup}))
            while True:
                frame = await ws.recv()
                if isinstance(frame, str) and json.loads(frame)["type"] == "reply.done":
                    break
        result = await talk_turn(ws, pcm, rate, timeout=120)
    intents = [e for e in result.events if e["type"] == "intent"]
    done = [e for e in result.events if e["type"] == "reply.done"]
    by_stage = bool(done) and done[-1].get("finish_reason") == "intent"
    intent: str | None = None
    slots: dict[str, Any] = {}
    targets: set[str] = set()
    if intents:
        last = intents[-1]
        intent = last["name"]
        slots = {s["name"]: s["value"] for s in last["slots"]}
        targets = {t["entity_id"] for t in last["targets"]}
    elif by_stage and item.intent == REFUSED:
        intent = REFUSED
    return {
        "text": item.text,
        "kind": item.kind,
        "expected": item.intent,
        "got": intent,
        "transcript": result.transcript,
        "reply": result.reply,
        "answered_by": "intent stage" if by_stage else "model",
        "first_audio_ms": result.timings_ms.get("speech_end_to_first_audio"),
        **score(item, intent, slots, targets),
    }


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by_kind: dict[str, Any] = {}
    for kind in ("command", "refusal", "paraphrase", "chit-chat"):
        chosen = [r for r in rows if r["kind"] == kind]
        if not chosen:
            continue
        slotted = [r for r in chosen if r["slots_ok"] is not None]
        entry: dict[str, Any] = {
            "n": len(chosen),
            "intent_accuracy": round(sum(r["intent_ok"] for r in chosen) / len(chosen), 3),
        }
        if slotted:
            entry["slot_accuracy"] = round(sum(r["slots_ok"] for r in slotted) / len(slotted), 3)
            entry["slot_n"] = len(slotted)
        if kind == "chit-chat":
            entry["false_actions"] = sum(r["false_action"] for r in chosen)
        latencies = [r["first_audio_ms"] for r in chosen if r.get("first_audio_ms") is not None]
        if latencies:
            entry["first_audio_ms_p50"] = round(median(latencies), 1)
            entry["first_audio_ms_p90"] = round(percentile(latencies, 90), 1)
        matches = [r["match_ms"] for r in chosen if "match_ms" in r]
        if matches:
            entry["match_ms_p50"] = round(median(matches), 2)
            entry["match_ms_p90"] = round(percentile(matches, 90), 2)
        by_kind[kind] = entry
    return by_kind


def paired_ratios(rows: list[dict[str, Any]], other: list[dict[str, Any]]) -> dict[str, Any]:
    """End of speech -> first audio of each item through this server over the other's (the
    two said one after the other): the median ratio per set, and how many pairs."""
    theirs = {(r["voice"], r["text"]): r["first_audio_ms"] for r in other}
    found: dict[str, Any] = {}
    for kind in ("command", "refusal", "paraphrase", "chit-chat"):
        ratios = [
            r["first_audio_ms"] / theirs[(r["voice"], r["text"])]
            for r in rows
            if r["kind"] == kind and r["first_audio_ms"] and theirs.get((r["voice"], r["text"]))
        ]
        if ratios:
            found[kind] = {"median_ratio": round(median(ratios), 3), "pairs": len(ratios)}
    return found


def table(title: str, summaries: dict[str, Any]) -> str:
    lines = [f"{title}", "| set | n | intent acc. | slot acc. | false actions | p50 ms | p90 ms |"]
    lines.append("| --- | --- | --- | --- | --- | --- | --- |")
    for kind, s in summaries.items():
        p50 = s.get("first_audio_ms_p50", s.get("match_ms_p50", ""))
        p90 = s.get("first_audio_ms_p90", s.get("match_ms_p90", ""))
        lines.append(
            f"| {kind} | {s['n']} | {s['intent_accuracy']:.1%} | "
            f"{s.get('slot_accuracy', float('nan')):.1%} | {s.get('false_actions', '')} | "
            f"{p50} | {p90} |"
        )
    return "\n".join(lines)


@contextlib.contextmanager
def _servers(server_log: Path | None, compare: str | None) -> Iterator[dict[str, int]]:
    """One `chinwag serve`, or two when `compare` is given: "KEY=VALUE", an environment
    setting such as CHINWAG_LLM__PREFILL_WHILE_SPEAKING=false, for the second; or a directory,
    another checkout (an older commit) whose server runs second."""
    # Both servers log alike: the debug log costs time (13-14 % at p50 for the one that wrote
    # it, docs/performance.md#several-readings-n-best), so only one logging skews a compare.
    other_log = server_log.with_name(server_log.name + ".compare") if server_log else None
    with contextlib.ExitStack() as stack:
        ports = {"default": stack.enter_context(server_process(log_file=server_log))}
        if compare is not None and "=" not in compare:
            ports[compare] = stack.enter_context(
                server_process(checkout=Path(compare), log_file=other_log)
            )
        elif compare is not None:
            key, _, value = compare.partition("=")
            before = os.environ.get(key)
            os.environ[key] = value  # the server process inherits it at its start
            try:
                ports[compare] = stack.enter_context(server_process(log_file=other_log))
            finally:
                if before is None:
                    del os.environ[key]
                else:
                    os.environ[key] = before
        yield ports


async def spoken(
    voices: Voices,
    items_set: list[Item],
    limit: int | None,
    kinds: set[str],
    every: int,
    server_log: Path | None = None,
    compare: str | None = None,
) -> list[dict[str, Any]]:
    """Each item through the server; with `compare`, through both servers one after the
    other (the order alternating), so that both meet the same load."""
    rows: list[dict[str, Any]] = []
    items = [
        item
        for kind in ("command", "refusal", "paraphrase", "chit-chat")
        if kind in kinds
        for item in [i for i in items_set if i.kind == kind][::every]
    ][:limit]
    with _servers(server_log, compare) as ports:
        for voice in voices.names:
            for n, item in enumerate(items):
                pcm, rate = await asyncio.to_thread(voices.say, voice, item.text)
                order = list(ports.items()) if n % 2 == 0 else list(reversed(ports.items()))
                for label, port in order:
                    row = await spoken_one(port, item, pcm, rate)
                    row["voice"] = voice
                    row["server"] = label
                    mark = "ok" if row["intent_ok"] else "XX"
                    print(
                        f"{mark} {label[:12]:12} {voice:14} {item.text!r} -> {row['got']} / "
                        f"{row['transcript']!r} {row['first_audio_ms']} ms"
                    )
                    rows.append(row)
    return rows


STRATEGIES = {
    "no prompt, strict": "without the home's prompt, whole templates only (before issue 14's work)",
    "prompt, strict": "with the home's prompt, whole templates only",
    "prompt, repair": "with the prompt, and one misheard word repaired (repair.py)",
    "prompt, repair, hear again": "and transcribed again without the prompt when it came back",
    "n-best on a miss": "and, when that is no command, several readings (hearing.py)",
    "n-best on a miss, however sure": "the same, also when Whisper was sure of what it heard",
    "n-best on a miss, no hearing again": "the same without the hearing again without the prompt",
    "n-best always": "beam search for every utterance: its likeliest reading is the first hearing",
}


def _outcome(
    recognizer: IntentRecognizer, item: Item, heard: str
) -> tuple[str | None, dict[str, Any]]:
    found = recognizer.understand(heard, SITE)
    intent, slots, targets = None, {}, set()
    if isinstance(found, Recognized):
        intent = found.intent
        slots = {s.name: s.value for s in found.slots}
        targets = {t.entity_id for t in found.targets}
    return intent, score(item, intent, slots, targets)


def hearing_ab(
    voices: Voices,
    every: int,
    items_set: list[Item],
    readings: int,
    max_gap: float,
    unsure_below: float = 0.0,
) -> dict[str, Any]:
    """Every command and chit-chat item, synthesized and transcribed by Whisper in this
    process with and without the home's prompt ([intents] asr_prompt), then understood
    several ways side by side (STRATEGIES): the n-best ones through the server's own code
    (server/intents/hearing.py `reconsidered`, on the engine's shared encoder pass), each
    timed (one Whisper thread, as the server). No server, no real-time pacing: accuracy does
    not depend on the load (the times do). A wrong action: a command recognised with the
    wrong intent, slots or devices; a false action: chit-chat recognised as a command."""
    from server.engines.base import Hypothesis, MoreReadings, Transcript
    from server.engines.faster_whisper import WhisperTranscriber
    from server.intents import hearing
    from server.intents.home import load_home

    settings = load_settings(environ={})
    asr = settings.asr
    whisper = WhisperTranscriber(
        asr.model_path, language=asr.language, short_window=asr.short_window, cpu_threads=1
    )
    whisper.warm_up()
    home = load_home(settings.intents.devices)
    strict = IntentRecognizer(home, settings.intents.language, repair=False)
    repairing = IntentRecognizer(home, settings.intents.language, repair=True)
    strict.warm_up()
    repairing.warm_up()
    prompt = home.asr_prompt()
    items = [i for i in items_set if i.kind in ("command", "chit-chat")][::every]
    tally: dict[str, dict[str, Any]] = {
        name: {"commands_right": 0, "wrong_actions": 0, "false_actions": 0, "by_voice": {}}
        for name in STRATEGIES
    }
    misses: dict[str, list[str]] = {name: [] for name in STRATEGIES}
    repair_ms: list[float] = []
    hear_ms: dict[str, dict[str, list[float]]] = {
        name: {"command": [], "chit-chat": []}
        for name in ("first hearing", "hear again", "n-best on a miss", "n-best always")
    }
    rows: list[dict[str, Any]] = []
    commands = chat = heard_again = 0

    def reconsider(n: int, again: bool = True, unsure: float = unsure_below) -> Any:
        def run(first: Transcript, more: MoreReadings) -> Transcript:
            return hearing.reconsidered(
                first, more, repairing, SITE, prompt=prompt if again else None, readings=n,
                max_gap=max_gap, unsure_below=unsure,
            )  # fmt: skip

        return run

    def always(first: Transcript, more: MoreReadings) -> Transcript:
        found = more(readings, prompt)
        if not found:
            return first
        likeliest = Transcript(
            found[0].text, first.language, first.no_speech_prob, found[0].avg_logprob,
            first.audio_s,
        )  # fmt: skip

        def kept(n: int, other: str | None) -> list[Hypothesis]:
            return found if (n, other) == (readings, prompt) else more(n, other)

        return hearing.reconsidered(
            likeliest, kept, repairing, SITE, prompt=prompt, readings=readings, max_gap=max_gap,
            unsure_below=unsure_below,
        )  # fmt: skip

    def timed(kind: str, name: str, audio: Any, run: Any, use: str | None) -> Transcript:
        began = time.perf_counter()
        if run is None:
            heard = whisper.transcribe(audio, prompt=use)
        else:
            heard = whisper.transcribe_reconsidered(audio, prompt=use, reconsider=run)
        hear_ms[name][kind].append((time.perf_counter() - began) * 1000)
        return heard

    for item in items:
        for voice in voices.names:
            pcm, rate = voices.say(voice, item.text)
            audio = soxr.resample(pcm.astype(np.float32) / 32768, rate, 16000)
            audio = audio.astype(np.float32)
            kind = "chit-chat" if item.intent is None else "command"
            without = whisper.transcribe(audio, prompt=None).text
            first = timed(kind, "first hearing", audio, None, prompt)
            with_prompt = first.text
            again = timed(kind, "hear again", audio, reconsider(0), prompt).text
            heard_again += again != with_prompt
            n_best = timed(kind, "n-best on a miss", audio, reconsider(readings), prompt).text
            n_best_sure = whisper.transcribe_reconsidered(
                audio, prompt=prompt, reconsider=reconsider(readings, unsure=0.0)
            ).text
            n_best_only = whisper.transcribe_reconsidered(
                audio, prompt=prompt, reconsider=reconsider(readings, again=False)
            ).text
            n_best_always = timed(kind, "n-best always", audio, always, prompt).text
            began = time.perf_counter()
            repaired = _outcome(repairing, item, with_prompt)
            repair_ms.append((time.perf_counter() - began) * 1000)
            outcomes = {
                "no prompt, strict": (without, _outcome(strict, item, without)),
                "prompt, strict": (with_prompt, _outcome(strict, item, with_prompt)),
                "prompt, repair": (with_prompt, repaired),
                "prompt, repair, hear again": (again, _outcome(repairing, item, again)),
                "n-best on a miss": (n_best, _outcome(repairing, item, n_best)),
                "n-best on a miss, however sure": (
                    n_best_sure,
                    _outcome(repairing, item, n_best_sure),
                ),
                "n-best on a miss, no hearing again": (
                    n_best_only,
                    _outcome(repairing, item, n_best_only),
                ),
                "n-best always": (n_best_always, _outcome(repairing, item, n_best_always)),
            }
            rows.append(
                {
                    "text": item.text,
                    "voice": voice,
                    "expected": item.intent,
                    "first_avg_logprob": round(first.avg_logprob, 3),
                    "heard": {name: heard for name, (heard, _) in outcomes.items()},
                    "right": {
                        name: bool(row["intent_ok"] and row["slots_ok"] is not False)
                        for name, (_, (_, row)) in outcomes.items()
                    },
                }
            )
            if item.intent is None:
                chat += 1
            else:
                commands += 1
            for name, (heard, (intent, row)) in outcomes.items():
                entry = tally[name]
                voice_entry = entry["by_voice"].setdefault(voice, {"right": 0, "n": 0})
                if item.intent is None:
                    if row["false_action"]:
                        entry["false_actions"] += 1
                        misses[name].append(f"FALSE ACTION {voice}: {item.text!r} -> {heard!r}")
                    continue
                voice_entry["n"] += 1
                if row["intent_ok"] and row["slots_ok"] is not False:
                    entry["commands_right"] += 1
                    voice_entry["right"] += 1
                else:
                    wrong = intent is not None
                    entry["wrong_actions"] += wrong
                    mark = "WRONG " if wrong else ""
                    misses[name].append(f"{mark}{voice}: {item.text!r} -> {heard!r} ({intent})")
    print(
        f"| strategy | commands right (of {commands}) | wrong actions "
        f"| false actions (of {chat} chit-chat) |"
    )
    print("| --- | ---: | ---: | ---: |")
    for name, entry in tally.items():
        right = entry["commands_right"]
        print(
            f"| {name} | {right} ({right / max(commands, 1):.1%}) | {entry['wrong_actions']} "
            f"| {entry['false_actions']} |"
        )
    repair_ms.sort()
    print(
        f"transcribed again without the prompt: {heard_again} of {commands + chat}; "
        f"understanding with repair: p50 {median(repair_ms):.1f} ms, "
        f"p90 {percentile(repair_ms, 90):.1f} ms"
    )
    timing = {
        name: {
            kind: {"p50": round(median(ms), 1), "p90": round(percentile(ms, 90), 1)}
            for kind, ms in by_kind.items()
        }
        for name, by_kind in hear_ms.items()
    }
    print("hearing (Whisper and the choice), ms p50 / p90:")
    for name, by_kind in timing.items():
        print(
            f"  {name:20} " + "  ".join(f"{k}: {v['p50']} / {v['p90']}" for k, v in by_kind.items())
        )
    for name in ("n-best on a miss", "n-best always"):
        for line in misses[name]:
            print(f"  {name}: {line}")
    return {
        "prompt": prompt,
        "readings": readings,
        "max_gap": max_gap,
        "unsure_below": unsure_below,
        "strategies": STRATEGIES,
        "commands": commands,
        "chit_chat": chat,
        "results": tally,
        "heard_again": heard_again,
        "understand_with_repair_ms_p50": round(median(repair_ms), 2),
        "understand_with_repair_ms_p90": round(percentile(repair_ms, 90), 2),
        "hearing_ms": timing,
        "misses": misses,
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--voices", default="piper,espeak:en-us", help="comma-separated")
    parser.add_argument("--limit", type=int, help="spoken: at most this many items per voice")
    parser.add_argument(
        "--kinds", default="command,refusal,paraphrase,chit-chat", help="spoken: which sets"
    )
    parser.add_argument(
        "--every", type=int, default=1, help="spoken: every Nth item of each set (a sample)"
    )
    parser.add_argument("--typed-only", action="store_true")
    parser.add_argument(
        "--held-out",
        action="store_true",
        help="the held-out set (bench/intent_set.py HELD_OUT) instead of the main one; "
        "results go to *-held-out.json",
    )
    parser.add_argument(
        "--blind6",
        action="store_true",
        help="the blind6 commands and chit-chat (bench/intent_set.py BLIND6, bench/blind6/); "
        "results go to *-blind6.json",
    )
    parser.add_argument(
        "--phrasings",
        action="store_true",
        help="the everyday phrasings and tempting chit-chat (bench/intent_set.py PHRASINGS, "
        "TEMPTING) instead of the main set; results go to *-phrasings.json",
    )
    parser.add_argument(
        "--server-log", type=Path, help="spoken: the server's debug log (each step's time)"
    )
    parser.add_argument(
        "--compare",
        metavar="KEY=VALUE or DIR",
        help="spoken: a second server with this environment setting, the items alternating "
        "between the two (e.g. CHINWAG_LLM__PREFILL_WHILE_SPEAKING=false), or the server of "
        "another checkout (a directory: the code before a change)",
    )
    parser.add_argument(
        "--hearing-ab",
        "--asr-prompt-ab",
        action="store_true",
        help="only: spoken commands and chit-chat, transcribed with and without the home's "
        "Whisper prompt, understood with and without repairs, side by side",
    )
    parser.add_argument("--n-best", type=int, help="hearing-ab: readings ([intents] n_best)")
    parser.add_argument(
        "--n-best-gap", type=float, help="hearing-ab: [intents] n_best_gap, for the n-best ways"
    )
    parser.add_argument(
        "--n-best-unsure-below", type=float, help="hearing-ab: [intents] n_best_unsure_below"
    )
    parser.add_argument("--out", type=Path, help="the JSON (default: bench/results-intents*.json)")
    args = parser.parse_args()
    items = HELD_OUT if args.held_out else [*PHRASINGS, *TEMPTING] if args.phrasings else ITEMS
    set_name = "held-out" if args.held_out else "phrasings" if args.phrasings else "main"
    if args.blind6:
        items, set_name = BLIND6, "blind6"
    suffix = "" if set_name == "main" else f"-{set_name}"

    if args.hearing_ab:
        intents_settings = load_settings(environ={}).intents
        found = hearing_ab(
            Voices(args.voices.split(",")),
            args.every,
            items,
            args.n_best if args.n_best is not None else intents_settings.n_best,
            args.n_best_gap if args.n_best_gap is not None else intents_settings.n_best_gap,
            args.n_best_unsure_below
            if args.n_best_unsure_below is not None
            else intents_settings.n_best_unsure_below,
        )
        found["hardware"] = hardware()
        out = BENCH_DIR / f"results-intents-hearing{suffix}.json"
        out.write_text(json.dumps(found, indent=1) + "\n", encoding="utf-8")
        print(f"written {out}")
        return
    recognizer = load_recognizer(load_settings(environ={}).intents)
    assert recognizer is not None
    typed_rows = typed(recognizer, items)
    typed_rows += typed(recognizer, items)  # twice: the second pass is the warm one that counts
    typed_rows = typed_rows[len(items) :]
    results: dict[str, Any] = {
        "hardware": hardware(),
        "set": set_name,
        "items": Counter(i.kind for i in items),
        "typed": {"summary": summary(typed_rows), "rows": typed_rows},
    }
    print(table("typed (match time, ms)", results["typed"]["summary"]))
    if not args.typed_only:
        voices = Voices(args.voices.split(","))
        rows = asyncio.run(
            spoken(
                voices,
                items,
                args.limit,
                set(args.kinds.split(",")),
                args.every,
                args.server_log,
                args.compare,
            )
        )
        results["spoken"] = {
            "voices": voices.names,
            "every": args.every,
            "summary": summary([r for r in rows if r["server"] == "default"]),
            "rows": rows,
        }
        for voice in voices.names:
            mine = [r for r in rows if r["voice"] == voice and r["server"] == "default"]
            results["spoken"][f"summary_{voice}"] = summary(mine)
        default = [r for r in rows if r["server"] == "default"]
        print(table("spoken, all voices (end of speech -> first audio, ms)", summary(default)))
        if args.compare:
            other = [r for r in rows if r["server"] == args.compare]
            results["spoken"]["compare"] = args.compare
            results["spoken"]["summary_compare"] = summary(other)
            results["spoken"]["paired_ratios"] = paired_ratios(default, other)
            print(table(f"the same, with {args.compare}", summary(other)))
            print("first audio, this server / the other, median of paired ratios:")
            print(results["spoken"]["paired_ratios"])
    results["hardware_after"] = {"load_average": hardware()["load_average"]}
    out = args.out or BENCH_DIR / f"results-intents{suffix}.json"
    out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(f"written {out}")


if __name__ == "__main__":
    main()
