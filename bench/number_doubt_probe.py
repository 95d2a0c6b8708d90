"""Numbers heard in spoken commands, scored against their usual confusions.

    python -m bench.number_doubt_probe [--voices piper,espeak:en-us,...] [--out FILE]

Every covered command with a number of the main, held-out and blind6 sets (bench/intent_set.py)
is spoken by each voice and heard the server's way (hearing.py `reconsidered`, in one
process); when what was heard is a command with a number, the heard sentence and the same
sentence with each usual confusion of its numbers (server/intents/number_doubt.py) are scored
by Whisper against the same encoder output. The scores are written down, so the margin
below which the speaker is asked (number_doubt.MAX_DOUBT) can be judged: how close the right
number comes when the heard one is wrong, and how close a wrong one comes when it is right.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any

from bench.common import BENCH_DIR, hardware, median
from bench.intent_accuracy import Voices
from bench.intent_set import BLIND6, HELD_OUT, ITEMS, SITE
from bench.rescore_ab import Hearing, audio_16k, short_window
from server.intents import number_doubt
from server.intents.recognizer import Recognized

VOICES = (
    "piper,espeak:en-us,espeak:en-029,espeak:en-gb-x-rp,espeak:en-us-nyc,espeak:en-gb,"
    "espeak:en-us+f3,espeak:en-gb-scotland"
)


def run(voices: Voices) -> list[dict[str, Any]]:
    heard_by = Hearing.load()
    whisper, recognizer, prompt = heard_by.whisper, heard_by.recognizer, heard_by.prompt
    reconsider = heard_by.reconsider(heard_by.settings.n_best, rescoring=True)

    items = [
        i
        for i in (*ITEMS, *HELD_OUT, *BLIND6)
        if i.intent is not None and i.kind == "command" and re.search(r"\d", i.text)
    ]
    rows: list[dict[str, Any]] = []
    for item in items:
        for voice in voices.names:
            audio = audio_16k(*voices.say(voice, item.text))
            heard = whisper.transcribe_reconsidered(audio, prompt=prompt, reconsider=reconsider)
            found = recognizer.understand(heard.text, SITE)
            row: dict[str, Any] = {
                "text": item.text,
                "voice": voice,
                "heard": heard.text,
                "command": isinstance(found, Recognized),
            }
            others = number_doubt.with_other_numbers(heard.text)
            frames, window = short_window(audio)
            if isinstance(found, Recognized) and others and window is not None:
                encoded = whisper._encode_window(audio, window)
                began = time.perf_counter()
                scores = whisper.score_sentences(
                    encoded, frames, prompt, [heard.text, *(t for t, _ in others)]
                )
                row["score_ms"] = round((time.perf_counter() - began) * 1000, 1)
                row["heard_score"] = round(scores[0], 3)
                expected = number_doubt.numbers_in(item.text)
                row["heard_right"] = number_doubt.numbers_in(heard.text) == expected
                row["others"] = [
                    {
                        "text": text,
                        "below": round(scores[0] - score, 3),
                        "right": number_doubt.numbers_in(text) == expected,
                    }
                    for (text, _), score in zip(others, scores[1:], strict=True)
                ]
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    scored = [r for r in rows if "others" in r]
    wrong = [r for r in scored if not r["heard_right"]]
    right = [r for r in scored if r["heard_right"]]

    def closest(r: dict[str, Any], want_right: bool | None = None) -> float:
        mine = [o for o in r["others"] if want_right is None or o["right"] == want_right]
        return float(min(o["below"] for o in mine))

    out = {
        "heard_with_numbers": len(scored),
        "heard_wrong": len(wrong),
        "wrong_right_number_below": sorted(
            closest(r, True) for r in wrong if any(o["right"] for o in r["others"])
        ),
        "wrong_asked": sum(closest(r) <= number_doubt.MAX_DOUBT for r in wrong),
        "right_asked": sum(closest(r) <= number_doubt.MAX_DOUBT for r in right),
        "right_closest_below_lowest": sorted(closest(r) for r in right)[:8],
        "score_ms_p50": median([r["score_ms"] for r in scored]) if scored else None,
        "max_doubt": number_doubt.MAX_DOUBT,
    }
    print(json.dumps(out, indent=1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--voices", default=VOICES)
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results-intents-number-doubt.json")
    args = parser.parse_args()
    load_before = hardware()["load_average"]
    rows = run(Voices(args.voices.split(",")))
    found = {
        "hardware": hardware(),
        "load_before": load_before,
        "summary": summarise(rows),
        "rows": rows,
    }
    args.out.write_text(json.dumps(found, indent=1) + "\n", encoding="utf-8")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
