"""chinwag's own sentence templates, typed, side by side with another checkout (the code before
them): which sentences each recognises as a command, and how fast.

    python -m bench.intent_phrasings --compare ../main-checkout

Groups: the labelled sets' commands, paraphrases and chit-chat (bench/intent_set.py ITEMS and
HELD_OUT), the everyday PHRASINGS and TEMPTING lines, the polite forms of commands and
TEMPTING_TAILS, and the repository's other sentences
(quoted sentences of docs/, bench/ and tests/: questions, requests and remarks, as in
docs/performance.md "Misheard commands"). A chit-chat line or other sentence that becomes a
command is a false action; each one is listed. Each checkout runs in its own process, twice,
alternating, on the same machine; match times are the median of the two warm passes.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import BENCH_DIR, hardware
from bench.intent_set import (
    HELD_OUT,
    ITEMS,
    PHRASINGS,
    SITE,
    TEMPTING,
    TEMPTING_TAILS,
    Item,
    polite_forms,
)

ROOT = Path(__file__).resolve().parent.parent
_QUOTED = re.compile(r"[\"“]([A-Za-z][A-Za-z0-9' ,-]{6,118}[.?!]?)[\"”]")

# Run inside a checkout (its own `server` package): reads texts (JSON) on stdin, writes what
# each is understood as, and the time of a warm pass.
WORKER = """
import json, sys, time
from server.config import load_settings
from server.intents.recognizer import Recognized, Refused
from server.pipeline.intents import load_recognizer
texts = json.load(sys.stdin)
recognizer = load_recognizer(load_settings(environ={}).intents)
out = []
for warm in (False, True):
    for text in texts:
        began = time.perf_counter()
        found = recognizer.understand(text, SITE)
        ms = (time.perf_counter() - began) * 1000
        if not warm:
            continue
        row = {"text": text, "ms": ms, "intent": None, "slots": {}, "targets": []}
        if isinstance(found, Recognized):
            row["intent"] = found.intent
            row["slots"] = {s.name: s.value for s in found.slots}
            row["targets"] = sorted(t.entity_id for t in found.targets)
        elif isinstance(found, Refused):
            row["intent"] = "refused:" + found.reason
        out.append(row)
json.dump(out, sys.stdout)
"""


def repository_sentences(labelled: set[str]) -> list[str]:
    """Quoted sentences of the docs, benchmarks and tests that no labelled set lists."""
    files = [*ROOT.glob("docs/*.md"), *ROOT.glob("bench/*.py"), *ROOT.glob("bench/*.toml")]
    files += [*ROOT.glob("prompts/*.toml"), ROOT / "README.md"]
    files += [p for p in ROOT.glob("tests/**/*.py") if "vendor" not in p.parts]
    found: set[str] = set()
    for path in files:
        if path.name in ("intent_set.py", "intent_phrasings.py"):
            continue
        for text in _QUOTED.findall(path.read_text(encoding="utf-8", errors="replace")):
            if 3 <= len(text.split()) <= 16 and text not in labelled:
                found.add(text)
    return sorted(found)


def run(checkout: Path, texts: list[str]) -> list[dict[str, Any]]:
    python = checkout / ".venv" / "bin" / "python"
    code = f"SITE = {SITE!r}\n" + WORKER
    done = subprocess.run(
        [str(python), "-c", code],
        cwd=checkout,
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        check=True,
    )
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


def right(item: Item, row: dict[str, Any]) -> bool:
    if item.intent is None:
        return row["intent"] is None or str(row["intent"]).startswith("refused")
    if row["intent"] != item.intent:
        return False
    slots = {k: str(v).lower() for k, v in row["slots"].items()}
    return all(slots.get(k) == str(v).lower() for k, v in item.slots.items()) and (
        not item.targets or set(row["targets"]) == set(item.targets)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--compare", required=True, type=Path, help="the other checkout")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results-intents-phrasings.json")
    args = parser.parse_args()
    sets = [*ITEMS, *HELD_OUT]
    groups: dict[str, list[Item]] = {
        "commands (sets)": [i for i in sets if i.intent is not None and i.kind == "command"],
        "paraphrases (sets)": [i for i in sets if i.kind == "paraphrase"],
        "phrasings (new)": PHRASINGS,
        "chit-chat (sets)": [i for i in sets if i.intent is None],
        "tempting (new)": TEMPTING,
        "polite forms": polite_forms(),
        "tempting tails": TEMPTING_TAILS,
    }
    labelled = {i.text for group in groups.values() for i in group}
    groups["repository sentences"] = [Item(t, None) for t in repository_sentences(labelled)]
    items = [i for group in groups.values() for i in group]
    texts = [i.text for i in items]
    runs: dict[str, list[list[dict[str, Any]]]] = {"after": [], "before": []}
    for _ in range(2):  # alternating, so both see the same machine
        runs["after"].append(run(ROOT, texts))
        runs["before"].append(run(args.compare.resolve(), texts))
    results: dict[str, Any] = {"hardware": hardware(), "compare": str(args.compare), "groups": {}}
    print(
        f"{'group':24} {'n':>4} {'right before':>13} {'right after':>12} {'false before':>13}"
        f" {'false after':>12} {'p50 before':>11} {'p50 after':>10} {'p90 before':>11}"
        f" {'p90 after':>10}"
    )
    start = 0
    for name, group in groups.items():
        span = slice(start, start + len(group))
        start += len(group)
        entry: dict[str, Any] = {"n": len(group)}
        for way in ("before", "after"):
            rows = runs[way][0][span]
            ms = [statistics.median(r[span][k]["ms"] for r in runs[way]) for k in range(len(group))]
            entry[way] = {
                "right": sum(right(i, r) for i, r in zip(group, rows, strict=True)),
                "false_actions": [
                    r["text"] + " -> " + str(r["intent"])
                    for i, r in zip(group, rows, strict=True)
                    if i.intent is None and not right(i, r)
                ],
                "wrong": [
                    r["text"] + " -> " + str(r["intent"]) + " " + json.dumps(r["slots"])
                    for i, r in zip(group, rows, strict=True)
                    if i.intent is not None and not right(i, r)
                ],
                "match_p50_ms": round(statistics.median(ms), 2),
                "match_p90_ms": round(statistics.quantiles(ms, n=10)[-1], 2),
            }
        entry["new_commands_after"] = [
            a["text"] + " -> " + str(a["intent"])
            for a, b in zip(runs["after"][0][span], runs["before"][0][span], strict=True)
            if a["intent"] is not None
            and not str(a["intent"]).startswith("refused")
            and (a["intent"], a["targets"]) != (b["intent"], b["targets"])
        ]
        results["groups"][name] = entry
        b, a = entry["before"], entry["after"]
        print(
            f"{name:24} {len(group):>4} {b['right']:>13} {a['right']:>12}"
            f" {len(b['false_actions']):>13} {len(a['false_actions']):>12}"
            f" {b['match_p50_ms']:>11} {a['match_p50_ms']:>10} {b['match_p90_ms']:>11}"
            f" {a['match_p90_ms']:>10}"
        )
        for text in entry["new_commands_after"] if name == "repository sentences" else []:
            print("   a command after, not before:", text)
        for text in a["false_actions"] if name != "repository sentences" else []:
            print("   false action after:", text)
        for text in a["wrong"]:
            print("   wrong after:", text)
    results["hardware_after"] = {"load_average": hardware()["load_average"]}
    args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(f"written {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
