"""Scoring the home's command sentences against the audio, side by side with today's hearing.

    python -m bench.rescore_ab [--held-out | --blind6] [--out FILE]

Every command and chit-chat item of the set, spoken by Piper and espeak-ng, heard in one
process the server's way ([intents] settings: the home's prompt, hearing again without it,
n-best when unsure), then, when that is no command, the home's sentences close to it
(server/intents/rescore.py `candidates`) and the transcript itself are scored by Whisper
against the same encoder output. Every score is written down, so acceptance thresholds can be
chosen afterwards on the main set (`--choose`) and applied unchanged to the others.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soxr

from bench.common import BENCH_DIR, hardware, median, percentile
from bench.intent_accuracy import Voices, _outcome, score
from bench.intent_set import BLIND6, HELD_OUT, ITEMS, SITE, Item
from server.config import IntentsSettings, load_settings
from server.engines.base import MoreReadings, Reconsider, Transcript
from server.engines.faster_whisper import (
    _HOP,
    _SHORT_WINDOW_MIN_PAD,
    _SHORT_WINDOWS,
    WhisperTranscriber,
)
from server.intents import hearing, rescore
from server.intents.home import Home, load_home
from server.intents.recognizer import IntentRecognizer


@dataclass
class Hearing:
    """Whisper (one thread), the demo home and its recognizer as the server has them, in
    this process: what bench/rescore_ab.py and bench/number_doubt_probe.py hear with."""

    whisper: WhisperTranscriber
    settings: IntentsSettings
    home: Home
    recognizer: IntentRecognizer
    prompt: str | None

    @classmethod
    def load(cls) -> Hearing:
        settings = load_settings(environ={})
        asr, cfg = settings.asr, settings.intents
        whisper = WhisperTranscriber(
            asr.model_path, language=asr.language, short_window=asr.short_window, cpu_threads=1
        )
        whisper.warm_up()
        home = load_home(cfg.devices)
        recognizer = IntentRecognizer(home, cfg.language, repair=True)
        recognizer.warm_up()
        return cls(whisper, cfg, home, recognizer, home.asr_prompt())

    def reconsider(self, readings: int, rescoring: bool = False) -> Reconsider:
        """The server's hearing (hearing.py `reconsidered`) with `readings` readings."""
        cfg = self.settings

        def reconsider(first: Transcript, more: MoreReadings) -> Transcript:
            return hearing.reconsidered(
                first, more, self.recognizer, SITE, prompt=self.prompt, readings=readings,
                max_gap=cfg.n_best_gap, unsure_below=cfg.n_best_unsure_below,
                rescoring=rescoring,
            )  # fmt: skip

        return reconsider


def audio_16k(pcm: Any, rate: int) -> Any:
    """16-bit PCM at `rate` as Whisper's 16 kHz float samples."""
    return soxr.resample(pcm.astype(np.float32) / 32768, rate, 16000).astype(np.float32)


def short_window(audio: Any) -> tuple[int, int | None]:
    """The audio's length in encoder frames, and the short encoder window it fits (None: too
    long to be scored), as the server picks it."""
    frames = int(audio.size // _HOP)
    return frames, next((w for w in _SHORT_WINDOWS if frames + _SHORT_WINDOW_MIN_PAD <= w), None)


def _score_row(item: Item, recognizer: IntentRecognizer, text: str) -> dict[str, Any]:
    return _outcome(recognizer, item, text)[1]


def run(items: list[Item], voices: Voices) -> dict[str, Any]:
    heard_by = Hearing.load()
    whisper, cfg, home, prompt = heard_by.whisper, heard_by.settings, heard_by.home, heard_by.prompt
    repairing = heard_by.recognizer

    def strictly(text: str) -> Any:
        return repairing.understand(text, SITE, repair=False)

    kept = heard_by.reconsider

    def timed(audio: Any, reconsider: Any) -> tuple[Transcript, float]:
        began = time.perf_counter()
        heard = whisper.transcribe_reconsidered(audio, prompt=prompt, reconsider=reconsider)
        return heard, (time.perf_counter() - began) * 1000

    rows: list[dict[str, Any]] = []
    turn = 0
    for item in items:
        if item.intent is not None and item.kind != "command":
            continue  # covered phrasings only
        for voice in voices.names:
            audio = audio_16k(*voices.say(voice, item.text))
            # The server's hearing without and with rescoring, the order alternating.
            turn += 1
            if turn % 2:
                heard, hear_ms = timed(audio, kept(cfg.n_best))
                new, new_ms = timed(audio, kept(cfg.n_best, rescoring=True))
            else:
                new, new_ms = timed(audio, kept(cfg.n_best, rescoring=True))
                heard, hear_ms = timed(audio, kept(cfg.n_best))
            # Hearing again without the prompt only (no n-best): rescoring instead of n-best.
            plain = whisper.transcribe_reconsidered(audio, prompt=prompt, reconsider=kept(0))
            frames, window = short_window(audio)
            row: dict[str, Any] = {
                "text": item.text,
                "voice": voice,
                "expected": item.intent,
                "hear_ms": round(hear_ms, 1),
                "rescored_hear_ms": round(new_ms, 1),
                "rescored": new.text,
                "rescored_outcome": _outcome(repairing, item, new.text)[1],
                "rescored_intent": _outcome(repairing, item, new.text)[0],
            }
            for way, text, avg in (
                ("kept", heard.text, heard.avg_logprob),
                ("no n-best", plain.text, plain.avg_logprob),
            ):
                before = _score_row(item, repairing, text)
                entry: dict[str, Any] = {
                    "heard": text,
                    "avg_logprob": round(avg, 3),
                    "right": bool(before["intent_ok"] and before["slots_ok"] is not False),
                    "false_action": bool(before["false_action"]),
                    "command": repairing.understand(text, SITE) is not None,
                }
                entry["intent_before"] = _outcome(repairing, item, text)[0]
                if (
                    not entry["command"]
                    and window is not None
                    and hearing.worth_reading_again(text)
                ):
                    began = time.perf_counter()
                    found = rescore.candidates(text, home, strictly)
                    if found:
                        encoding = time.perf_counter()
                        encoded = whisper._encode_window(audio, window)
                        began += time.perf_counter() - encoding  # the server has it already
                        scores = whisper.score_sentences(
                            encoded, frames, prompt, [text, *(c.text for c in found)]
                        )
                        entry["heard_score"] = round(scores[0], 3)
                        entry["candidates"] = []
                        for c, s in zip(found, scores[1:], strict=True):
                            slots = {x.name: x.value for x in c.understood.slots}
                            targets = {t.entity_id for t in c.understood.targets}
                            r = score(item, c.understood.intent, slots, targets)
                            entry["candidates"].append(
                                {
                                    "text": c.text,
                                    "score": round(s, 3),
                                    "right": bool(r["intent_ok"] and r["slots_ok"] is not False),
                                }
                            )
                    entry["rescore_ms"] = round((time.perf_counter() - began) * 1000, 1)
                row[way] = entry
            rows.append(row)
            print(
                f"{voice[:6]:6} {item.text!r:45} -> {row['kept']['heard']!r} "
                f"{len(row['kept'].get('candidates', []))} cand",
                flush=True,
            )
    return {"prompt": prompt, "rows": rows}


def long_names_only(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows as rescoring saw them before short names heard as spelled counted
    (rescore.EXACT_SHORT_NAMES): the candidates only the short names brought, taken out."""

    home = load_home(load_settings(environ={}).intents.devices)
    rescore.EXACT_SHORT_NAMES = False
    try:
        out = []
        for row in rows:
            row = {**row}
            for way in ("kept", "no n-best"):
                entry = row[way]
                if entry.get("candidates"):
                    before = set(rescore.sentences(entry["heard"], home))
                    kept = [c for c in entry["candidates"] if c["text"] in before]
                    row[way] = {**entry, "candidates": kept}
            out.append(row)
        return out
    finally:
        rescore.EXACT_SHORT_NAMES = True


def evaluate(
    rows: list[dict[str, Any]], way: str, max_below: float, min_lead: float, same: bool = True
) -> dict[str, Any]:
    """Commands right, wrong actions and false actions with rescoring at these thresholds."""
    right = wrong = false = commands = chat = rescued = lost = 0
    changed: list[str] = []
    for row in rows:
        entry = row[way]
        is_cmd = row["expected"] is not None
        commands += is_cmd
        chat += not is_cmd
        ok, action = entry["right"], entry["intent_before"] is not None
        cands = entry.get("candidates")
        if cands:
            found = [
                rescore.Candidate(c["text"], None)  # type: ignore[arg-type]
                for c in cands
            ]
            chosen = rescore.choose(
                entry["heard"], entry["heard_score"], found, [c["score"] for c in cands],
                max_below=max_below, min_lead=min_lead, same_deciding_words=same,
            )  # fmt: skip
            if chosen is not None:
                pick = next(c for c in cands if c["text"] == chosen.text)
                mark = "right" if pick["right"] else "WRONG"
                changed.append(f"{row['voice']} {row['text']!r}: {entry['heard']!r} -> {mark}")
                action = True
                rescued += pick["right"] and not ok
                lost += ok and not pick["right"]
                ok = pick["right"]
        if is_cmd:
            right += ok
            wrong += (not ok) and action
        else:
            false += action
    return {
        "commands": commands,
        "commands_right": right,
        "wrong_actions": wrong,
        "chit_chat": chat,
        "false_actions": false,
        "changed": changed,
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Before and after rescoring (the module's thresholds), for both ways; printed."""
    out: dict[str, Any] = {}
    long_only = long_names_only(rows)
    for way in ("kept", "no n-best"):
        for name, below, which in (
            ("before", -1e9, rows),
            ("rescored, long names only", rescore.MAX_BELOW_HEARD, long_only),
            ("rescored", rescore.MAX_BELOW_HEARD, rows),
        ):
            e = evaluate(which, way, below, rescore.MIN_LEAD)
            out[f"{way}, {name}"] = e
            print(
                f"| {way}, {name} | {e['commands_right']} of {e['commands']} "
                f"| {e['wrong_actions']} | {e['false_actions']} of {e['chit_chat']} |"
            )
            if name != "before":
                for line in e["changed"]:
                    print("    ", line)
    # Through the server's own code (hearing.reconsidered, rescoring on and off, timed).
    for kind, is_command in (("command", True), ("chit-chat", False)):
        mine = [r for r in rows if (r["expected"] is not None) == is_command]
        if not mine or "rescored_hear_ms" not in mine[0]:
            continue
        right = sum(
            bool(
                r["rescored_outcome"]["intent_ok"]
                and r["rescored_outcome"]["slots_ok"] is not False
            )
            for r in mine
        )
        acted = sum(r["rescored_intent"] is not None for r in mine)
        extra = [r["rescored_hear_ms"] - r["hear_ms"] for r in mine]
        ratios = [r["rescored_hear_ms"] / r["hear_ms"] for r in mine]
        changed = sum(r["rescored"] != r["kept"]["heard"] for r in mine)
        out[f"server_code_{kind}"] = {
            "n": len(mine),
            "right" if is_command else "false_actions": right if is_command else acted,
            "wrong_actions": acted - right if is_command else None,
            "changed": changed,
            "hearing_ms_p50": round(median([r["hear_ms"] for r in mine]), 1),
            "rescored_hearing_ms_p50": round(median([r["rescored_hear_ms"] for r in mine]), 1),
            "extra_ms_p50": round(median(extra), 1),
            "extra_ms_p90": round(percentile(extra, 90), 1),
            "extra_ms_mean": round(sum(extra) / len(extra), 1),
            "paired_ratio_p50": round(median(ratios), 3),
        }
        print(kind, "server code:", out[f"server_code_{kind}"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--held-out", action="store_true")
    parser.add_argument("--blind6", action="store_true")
    parser.add_argument("--voices", default="piper,espeak:en-us")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--choose", type=Path, help="a written run: print the threshold grid")
    parser.add_argument("--evaluate", type=Path, help="a written run: the module's thresholds")
    args = parser.parse_args()
    if args.evaluate:
        found = json.loads(args.evaluate.read_text())
        found["evaluation"] = summarise(found["rows"])
        args.evaluate.write_text(json.dumps(found, indent=1) + "\n", encoding="utf-8")
        return
    if args.choose:
        found = json.loads(args.choose.read_text())
        for way in ("kept", "no n-best"):
            for same in (True, False):
                for below in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0):
                    for lead in (0.5, 1.0, 2.0, 3.0, 4.0):
                        e = evaluate(found["rows"], way, below, lead, same)
                        print(
                            way,
                            same,
                            below,
                            lead,
                            e["commands_right"],
                            e["wrong_actions"],
                            e["false_actions"],
                        )
        return
    items = HELD_OUT if args.held_out else BLIND6 if args.blind6 else ITEMS
    suffix = "-held-out" if args.held_out else "-blind6" if args.blind6 else ""
    load_before = hardware()["load_average"]
    found = run(items, Voices(args.voices.split(",")))
    found["hardware"] = hardware()
    found["load_before"] = load_before
    ms = sorted(
        e["rescore_ms"]
        for r in found["rows"]
        for w in ("kept",)
        for e in [r[w]]
        if "rescore_ms" in e
    )
    if ms:
        p50, p90 = median(ms), percentile(ms, 90)
        print(f"rescoring: {len(ms)} utterances, p50 {p50:.1f} ms, p90 {p90:.1f} ms")
    out = args.out or BENCH_DIR / f"results-intents-rescore{suffix}.json"
    out.write_text(json.dumps(found, indent=1) + "\n", encoding="utf-8")
    print(f"written {out}")


if __name__ == "__main__":
    main()
