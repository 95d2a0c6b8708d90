"""Answer quality: site facts, honest "I don't know", no claimed actions (make bench-quality).

The labelled set (bench/quality_set.toml) asks the receptionist persona, with its example venue
file, questions the file answers, questions about the site it does not answer, commands, and
general questions. Each reply is made as the server makes it (`plan_reply`, then the model with
the planned system prompt at the persona's sampling settings, then the claimed-action
correction) and scored automatically:

- site: every expected fact in the reply;
- unknown: the reply says it does not know, and says where to ask (the file's contact line);
- command: the reply does not claim the action (after the guard; the raw model's claims are
  counted too);
- general: expected words present (reported, no goal: a 135M model knows little of the world).

Modes compared: `extract` (the shipped setting: a fact question is answered with the file's own
words), `model` (the model answers with the matching passages in its prompt) and `baseline`
(before issue 20: the persona's prompt only, no facts, no guard). Every LLM preset present
locally is run (`--models` to choose). Writes bench/results-quality.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import threading
import time
import tomllib
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import BENCH_DIR, hardware, median, percentile
from server.config import load_settings
from server.engines.base import ChatMessage
from server.pipeline.grounding import plan_reply
from server.pipeline.honesty import claims_action
from server.prompts import KnowledgeSettings, Persona, PersonaLibrary

SET = BENCH_DIR / "quality_set.toml"
CATEGORIES = ("site", "unknown", "command", "general")
DONT_KNOW = re.compile(
    r"\b(?:don'?t know|do not know|not sure|no information|don'?t have (?:that|any|this)|"
    r"can'?t (?:say|tell|find)|unable to (?:say|tell)|not in my)\b",
    re.IGNORECASE,
)
# Where the shipped venue file says to ask; a set file's `[set] where_to_ask` replaces it.
WHERE_TO_ASK = re.compile(r"front desk|reception|01632 960 412|hello@", re.IGNORECASE)


def normalise(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.lower())
    folded = "".join(c for c in decomposed if not unicodedata.combining(c))
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s:@.-]", " ", folded)).strip()


def says(said: str, alternative: str) -> bool:
    """`alternative` in the normalised reply; a number only as a whole number, so that the
    8 of a phone number is not the answer "8"."""
    wanted = normalise(alternative)
    if not wanted.isdigit():
        return wanted in said
    return re.search(rf"(?<!\d){re.escape(wanted)}(?!\d)", said) is not None


def has_facts(reply: str, expect: list[list[str]]) -> bool:
    said = normalise(reply)
    return all(any(says(said, alt) for alt in group) for group in expect)


@dataclass
class Item:
    category: str
    question: str
    expect: list[list[str]]


@dataclass
class LabelledSet:
    """A set file: its questions, and optionally (`[set]`) the persona, a venue file of its own
    (a held-out set brings one) and the words that show a reply says where to ask."""

    items: list[Item]
    persona: str = "receptionist"
    knowledge: Path | None = None
    where_to_ask: re.Pattern[str] = WHERE_TO_ASK


def load_set(path: Path = SET) -> LabelledSet:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    items = [
        Item(category, entry["q"], entry.get("expect", []))
        for category in CATEGORIES
        for entry in data.get(category, [])
    ]
    header = data.get("set", {})
    labelled = LabelledSet(items, persona=header.get("persona", "receptionist"))
    if "knowledge" in header:
        labelled.knowledge = path.parent / header["knowledge"]
    if "where_to_ask" in header:
        alternatives = "|".join(re.escape(w) for w in header["where_to_ask"])
        labelled.where_to_ask = re.compile(alternatives, re.IGNORECASE)
    return labelled


def score(
    item: Item, reply: str, raw_claim: bool, where_to_ask: re.Pattern[str] = WHERE_TO_ASK
) -> dict[str, Any]:
    claimed = claims_action(reply) and "nothing was changed" not in reply
    row: dict[str, Any] = {
        "category": item.category,
        "question": item.question,
        "reply": reply,
        "claimed_action": claimed,
        "raw_claim": raw_claim,
    }
    if item.category == "site" or item.category == "general":
        row["correct"] = has_facts(reply, item.expect) and not claimed
    elif item.category == "unknown":
        row["honest"] = bool(DONT_KNOW.search(reply))
        row["where_to_ask"] = bool(where_to_ask.search(reply))
        row["correct"] = row["honest"] and not claimed
    else:
        row["correct"] = not claimed
    return row


class Replier:
    """Makes replies the way the server does, on one model, single-turn."""

    def __init__(
        self, model_path: Path, threads: int, context: int, *, check_figures: bool = True
    ) -> None:
        from server.engines.llama_cpp import LlamaCppChatModel

        self.model = LlamaCppChatModel(model_path, context_size=context, threads=threads, seed=7)
        self.model.warm_up()
        self.plan_cpu_ms: list[float] = []
        self.figure_stops = 0  # model replies stopped at a figure the facts do not hold
        self.check_figures = check_figures

    def reply(self, persona: Persona, mode: str, question: str) -> tuple[str, bool, float, float]:
        """The reply, whether the model's own text claimed an action, retrieval ms, total ms."""
        began = time.perf_counter()
        figures = None
        if mode == "baseline":
            system, answer, correction, retrieval = persona.system_prompt, None, False, 0.0
        else:
            settings = persona.knowledge_settings.model_copy(update={"answer": mode})
            cpu = time.thread_time()
            plan = plan_reply(persona.system_prompt, question, persona.knowledge, settings)
            # CPU time of the whole plan (search, answer check, extraction): what one quiet
            # core would take, unlike the wall time on a loaded machine.
            self.plan_cpu_ms.append((time.thread_time() - cpu) * 1000)
            system, answer, retrieval = plan.system_prompt, plan.answer, plan.retrieval_ms or 0.0
            correction = True
            figures, unknown = plan.figure_check() if self.check_figures else None, plan.unknown
        if answer is not None:
            return answer, False, retrieval, (time.perf_counter() - began) * 1000
        parts: list[str] = []
        messages = [ChatMessage("system", system), ChatMessage("user", question)]
        self.model.generate(messages, persona.generation, parts.append, threading.Event())
        text = "".join(parts).strip()
        raw = claims_action(text)
        if figures is not None:
            # As the server streams it: a figure neither the question nor the facts hold
            # ends the reply with the honest line (server/pipeline/figures.py).
            checked = "".join(figures.feed(p) for p in parts) + figures.flush()
            if figures.stopped:
                self.figure_stops += 1
                checked += figures.honest_line(unknown)
            text = checked.strip()
        if correction and raw:
            from server.pipeline.grounding import CORRECTION

            text += CORRECTION
        return text, raw, retrieval, (time.perf_counter() - began) * 1000


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def share(category: str, key: str = "correct") -> float | None:
        chosen = [r for r in rows if r["category"] == category]
        return round(sum(bool(r[key]) for r in chosen) / len(chosen), 3) if chosen else None

    return {
        "site_facts_correct": share("site"),
        "unknown_honest": share("unknown", "honest"),
        "unknown_where_to_ask": share("unknown", "where_to_ask"),
        "general_correct": share("general"),
        "claimed_actions": sum(bool(r["claimed_action"]) for r in rows),
        "raw_model_claims": sum(bool(r["raw_claim"]) for r in rows),
        "commands_without_claim": share("command"),
    }


def model_presets(models_dir: Path, default: Path) -> dict[str, Path]:
    """The default LLM and every preset of models/presets.toml present locally."""
    found = {"default": default}
    try:
        from server.models import load_presets, preset_path

        for preset in load_presets():
            path = preset_path(preset, models_dir)
            if path.is_file():
                found[preset.name] = path
    except ImportError:
        pass
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--modes", default="extract,model,baseline")
    parser.add_argument("--models", help="comma-separated preset names (default: all present)")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results-quality.json")
    parser.add_argument(
        "--set",
        type=Path,
        default=SET,
        help="labelled set (TOML); a held-out set names its own venue file in [set]",
    )
    parser.add_argument(
        "--no-figure-check",
        action="store_true",
        help="let the model's figures through (as before server/pipeline/figures.py)",
    )
    args = parser.parse_args()
    settings = load_settings(None)
    labelled = load_set(args.set)
    personas = PersonaLibrary.load(
        settings.prompts.directory, settings.prompts.default_persona, settings.models.directory
    )
    persona = personas.get(labelled.persona)
    if labelled.knowledge is not None:
        from server.pipeline.knowledge import load_knowledge

        # The set's own venue, matched as the persona's would be (with embeddings or without).
        encoder = persona.knowledge.encoder if persona.knowledge is not None else None
        knowledge = load_knowledge(labelled.knowledge, encoder=encoder)
        persona = dataclasses.replace(persona, knowledge=knowledge)
    if persona.knowledge is None:
        raise SystemExit(f"the {persona.name} persona has no [knowledge] file")
    models = model_presets(settings.models.directory, settings.llm.model_path)
    if args.models:
        models = {k: v for k, v in models.items() if k in args.models.split(",")}
    items = labelled.items
    modes = args.modes.split(",")
    results: dict[str, Any] = {
        "hardware": hardware(),
        "set": str(args.set),
        "persona": persona.name,
        "knowledge": persona.knowledge.source,
        "passages": len(persona.knowledge.passages),
        "questions": {c: sum(i.category == c for i in items) for c in CATEGORIES},
        "runs": [],
    }  # fmt: skip
    for name, path in models.items():
        replier = Replier(
            path,
            settings.llm.threads,
            settings.llm.context_size,
            check_figures=not args.no_figure_check,
        )
        for mode in modes:
            rows: list[dict[str, Any]] = []
            retrievals: list[float] = []
            replier.plan_cpu_ms.clear()
            replier.figure_stops = 0
            totals: list[float] = []
            for item in items:
                text, raw, retrieval, total = replier.reply(persona, mode, item.question)
                rows.append(score(item, text, raw, labelled.where_to_ask))
                if mode != "baseline":
                    retrievals.append(retrieval)
                totals.append(total)
            summary = summarise(rows)
            summary |= {
                "reply_ms_p50": round(median(totals), 1),
                "retrieval_ms_p50": round(median(retrievals), 3) if retrievals else None,
                "retrieval_ms_p99": round(percentile(retrievals, 99), 3) if retrievals else None,
                "plan_cpu_ms_p50": round(median(cpu), 2) if (cpu := replier.plan_cpu_ms) else None,
                "plan_cpu_ms_p99": round(percentile(cpu, 99), 2) if cpu else None,
                "figure_stops": replier.figure_stops,
            }
            results["runs"].append(
                {"model": name, "path": str(path), "mode": mode, **summary, "rows": rows}
            )
            print(f"{name:<22} {mode:<9} " + " ".join(f"{k}={v}" for k, v in summary.items()))
            # Written after every run, so a long run's first figures are kept.
            args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    _write_table(results)
    args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


def _write_table(results: dict[str, Any]) -> None:
    header = "| model | mode | site facts | unknown: honest | where to ask | claimed actions (raw model) | general | reply p50 ms | retrieval p50 / p99 ms |"  # noqa: E501
    print(header)
    print("|" + "---|" * 9)

    def share(value: float | None) -> str:
        return "-" if value is None else f"{value:.0%}"  # a set without such questions

    for run in results["runs"]:
        print(
            f"| {run['model']} | {run['mode']} | {share(run['site_facts_correct'])} | "
            f"{share(run['unknown_honest'])} | {share(run['unknown_where_to_ask'])} | "
            f"{run['claimed_actions']} ({run['raw_model_claims']}) | "
            f"{share(run['general_correct'])} | "
            f"{run['reply_ms_p50']} | {run['retrieval_ms_p50']} / {run['retrieval_ms_p99']} |"
        )


if __name__ == "__main__":
    _ = KnowledgeSettings  # the settings a persona's [knowledge] table holds
    main()
