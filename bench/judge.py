"""Can the chat model judge whether a passage answers a question? (docs/performance.md,
"A judge from the chat model").

For every site and unknown question of the labelled sets, the reply plan's top passage, its
answer score (knowledge.answer_score) and the lines it would say are recorded, and the chat
model (SmolLM2-135M-Instruct, through bench/llm_scores.py) scores them:

- `upr_passage`: query likelihood (UPR, Sachan et al. 2022): mean log P(question | "Passage:
  <passage>\\nA visitor asks:") minus mean log P(question | "A visitor asks:");
- `upr_lines`: the same with only the lines the plan would say;
- `answer_pmi`: mean log P(lines | "A visitor asks: <question>\\nThe answer:") minus mean log
  P(lines | "The answer:"): how much the question makes the answer likelier;
- `yes_passage`, `yes_lines`: log P("Yes") - log P("No") after "Does this passage answer the
  question? Answer Yes or No." in the chat template.

Another model can be the judge (`--judge-model PATH`); a base model without a chat template
takes `--prompt-style base` (docs/performance.md, "Gemma 3 270M as the judge"): every prompt
starts with the model's BOS token, the yes/no judges are a plain few-shot completion (four
worked examples written for this, none from the venue sets; log P(" yes") - log P(" no")
after "Answer:"), and each question token's log-probability after the top passage, the
second and none is kept, so the per-token judges (`derived`) come with the same run.

With `--per-token`, each token's log-probability is kept instead, for judges read from them
(`derived`): the least-explained question token, the top passage against the second, the
answer's summed support.

`--collect` writes the features (bench/.cache/judge-features.json); the analysis reads them and
reports each feature's AUC (answerable with the right lines against unknown questions, and
against the wrong lines) per set, and a grey-zone rule (answer a question scored just under
today's threshold when the judge says yes; say "I don't know" to one just over it when the
judge says no) with its thresholds chosen leave-one-venue-out. Writes bench/results-judge.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import BENCH_DIR, hardware, median, percentile
from bench.quality import has_facts, load_set
from server.config import load_settings
from server.engines.base import ChatMessage
from server.pipeline.grounding import plan_reply
from server.pipeline.knowledge import ANSWER_THRESHOLD, answer_score, load_knowledge
from server.prompts import PersonaLibrary

SETS = {
    "riverside": BENCH_DIR / "quality_set.toml",
    "library": BENCH_DIR / "heldout" / "quality_heldout.toml",
    "leisure": BENCH_DIR / "heldout2" / "quality_heldout.toml",
    "museum": BENCH_DIR / "blind3" / "quality_heldout.toml",
    "hotel": BENCH_DIR / "blind4" / "quality_heldout.toml",
    "pool": BENCH_DIR / "blind5" / "quality_heldout.toml",
}
FEATURES = ("upr_passage", "upr_lines", "answer_pmi", "yes_passage", "yes_lines")
BASE_FEATURES = ("stated_passage", "stated_lines")
CACHE = BENCH_DIR / ".cache" / "judge-features.json"
ASKS = "A visitor asks:"
YES_NO = "Does this passage answer the question? Answer Yes or No."
# The base model's yes/no judge: worked examples of an invented garden centre, bike hire and
# café (not from any venue set), half of them a question next to a fact that the passage
# does not answer, the kind of trap the sets hold.
# Not "Answer:", which after a yes/no question reads as the answer to the question itself.
ANSWERED = "Does the passage answer it?"
FEW_SHOT = (
    "Does the passage answer the visitor's question? Answer yes or no.\n\n"
    "Passage: Opening hours: The garden centre is open Monday to Saturday 9am to 5.30pm "
    "and Sunday 10am to 4pm.\n"
    "Question: what time do you shut on a Sunday\n"
    "Does the passage answer it? yes\n\n"
    "Passage: Parking: There is a free car park for 40 cars behind the shop. Blue badge "
    "bays are next to the main entrance.\n"
    "Question: Can I charge my electric car in your car park?\n"
    "Does the passage answer it? no\n\n"
    "Passage: Bike hire: Adult bikes cost 15 pounds a day and children's bikes 8 pounds a "
    "day. Helmets and locks are included.\n"
    "Question: do I have to bring my own helmet or do you lend them\n"
    "Does the passage answer it? yes\n\n"
    "Passage: Cafe: The cafe serves breakfast until 11.30am and lunch from 12 to 2.30pm. "
    "Cakes are baked on site every morning.\n"
    "Question: Do you have gluten-free cakes?\n"
    "Does the passage answer it? no\n\n"
)
# The reading-comprehension judge (SQuAD 2.0's form): the same examples answered from the
# passage, or "not stated"; the judge is how unlikely " not stated" is as the answer.
NOT_STATED = " not stated"
FEW_SHOT_QA = (
    "Answer the visitor's question from the passage. If the passage does not say, answer \"not "
    'stated".\n\n'
    "Passage: Opening hours: The garden centre is open Monday to Saturday 9am to 5.30pm "
    "and Sunday 10am to 4pm.\n"
    "Question: what time do you shut on a Sunday\n"
    "Answer: 4pm\n\n"
    "Passage: Parking: There is a free car park for 40 cars behind the shop. Blue badge "
    "bays are next to the main entrance.\n"
    "Question: Can I charge my electric car in your car park?\n"
    f"Answer:{NOT_STATED}\n\n"
    "Passage: Bike hire: Adult bikes cost 15 pounds a day and children's bikes 8 pounds a "
    "day. Helmets and locks are included.\n"
    "Question: do I have to bring my own helmet or do you lend them\n"
    "Answer: Helmets are included\n\n"
    "Passage: Cafe: The cafe serves breakfast until 11.30am and lunch from 12 to 2.30pm. "
    "Cakes are baked on site every morning.\n"
    "Question: Do you have gluten-free cakes?\n"
    f"Answer:{NOT_STATED}\n\n"
)


def collect(
    out: Path,
    venues: list[str],
    per_token: bool = False,
    judge_model: Path | None = None,
    style: str = "chat",
) -> None:
    from bench.llm_scores import LlamaScorer
    from server.engines.llama_cpp import LlamaCppChatModel

    settings = load_settings(None)
    personas = PersonaLibrary.load(
        settings.prompts.directory, settings.prompts.default_persona, settings.models.directory
    )
    if judge_model is None:
        chat = LlamaCppChatModel(settings.llm.model_path, threads=settings.llm.threads, seed=7)
    else:  # only its weights and tokenizer are used: one sequence, a small cache
        chat = LlamaCppChatModel(judge_model, context_size=1024, threads=1, parallel=1, seed=7)
    # One thread: on a loaded machine two threads of one small decode spin at their barrier.
    scorer = LlamaScorer(chat, threads=1)
    # The few-shot judges in a context of their own, so their long shared prefix stays cached.
    yes_scorer = LlamaScorer(chat, threads=1) if style == "base" else None
    qa_scorer = LlamaScorer(chat, threads=1) if style == "base" else None
    rows: list[dict[str, Any]] = []
    for venue in venues:
        # A set of the six by name, or another as name=path (a new blind venue).
        name, _, path = venue.partition("=")
        labelled = load_set(Path(path) if path else SETS[name])
        venue = name
        persona = personas.get(labelled.persona)
        if labelled.knowledge is not None:
            encoder = persona.knowledge.encoder if persona.knowledge is not None else None
            persona = dataclasses.replace(
                persona, knowledge=load_knowledge(labelled.knowledge, encoder=encoder)
            )
        knowledge = persona.knowledge
        assert knowledge is not None
        knobs = persona.knowledge_settings
        for item in labelled.items:
            if item.category not in ("site", "unknown"):
                continue
            plan = plan_reply(persona.system_prompt, item.question, knowledge, knobs)
            search = knowledge.search_turn(item.question, knobs.min_coverage, k=knobs.passages)
            best = search.best
            row: dict[str, Any] = {
                "venue": venue,
                "category": item.category,
                "question": item.question,
                "route": plan.route,
                "answer": plan.answer,
            }
            if best is not None:
                lines = knowledge.extract(item.question, search, best.passage)
                row |= {
                    "passage": best.passage.render(),
                    "score": answer_score(best, knobs.min_coverage),
                    "coverage": best.coverage,
                    "lines": lines,
                    "lines_right": lines is not None and has_facts(lines, item.expect),
                    "passage_right": has_facts(best.passage.render(), item.expect),
                }
                if item.category == "site":
                    row["expect"] = item.expect
                began = time.process_time()
                second = search.hits[1].passage.render() if len(search.hits) > 1 else None
                if yes_scorer is not None:
                    row |= base_judge(
                        (scorer, yes_scorer, qa_scorer),
                        item.question,
                        best.passage.render(),
                        second,
                        lines,
                    )
                elif per_token:
                    row |= token_scores(scorer, item.question, best.passage.render(), second, lines)
                else:
                    row |= judge(scorer, item.question, best.passage.render(), lines)
                row["judge_cpu_ms"] = (time.process_time() - began) * 1000
            rows.append(row)
            print(venue, item.category, row.get("score"), row.get("upr_passage"), flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"hardware": hardware(), "rows": rows}, indent=1) + "\n")


def judge(scorer: Any, question: str, passage: str, lines: str | None) -> dict[str, Any]:
    """Every judge's score of one question and its top passage (and the lines said)."""
    asked = scorer.tokenize(" " + question.strip())
    said = lines if lines is not None else passage

    def mean(prompt: str, text: list[int]) -> float:
        return float(scorer.logprobs(scorer.tokenize(prompt), text).mean())

    alone = mean(ASKS, asked)
    answer = scorer.tokenize(" " + said)

    def yes(text: str) -> float:
        prompt = scorer.chat_prompt(
            [ChatMessage("user", f"Passage: {text}\nQuestion: {question.strip()}\n{YES_NO}")]
        )
        logprobs = scorer.next_token_logprobs(prompt)
        return float(logprobs[scorer.tokenize("Yes")[0]] - logprobs[scorer.tokenize("No")[0]])

    timings: dict[str, float] = {}
    began = time.process_time()
    upr_passage = mean(f"Passage: {passage}\n{ASKS}", asked) - alone
    timings["upr_passage_cpu_ms"] = (time.process_time() - began) * 1000
    return {
        "upr_passage": upr_passage,
        "upr_lines": mean(f"Passage: {said}\n{ASKS}", asked) - alone,
        "answer_pmi": mean(f"{ASKS} {question.strip()}\nThe answer:", answer)
        - mean("The answer:", answer),
        "yes_passage": yes(passage),
        "yes_lines": yes(said),
        "question_tokens": len(asked),
        **timings,
    }  # fmt: skip


def base_judge(
    scorers: tuple[Any, Any, Any],
    question: str,
    passage: str,
    second: str | None,
    lines: str | None,
) -> dict[str, Any]:
    """The judges of `judge` and `token_scores` for a base model: plain prompts after its BOS
    token, the few-shot judges (FEW_SHOT, FEW_SHOT_QA) each in a context of its own."""
    scorer, yes_scorer, qa_scorer = scorers
    bos = [scorer.bos]
    asked = scorer.tokenize(" " + question.strip())
    said = lines if lines is not None else passage
    answer = scorer.tokenize(" " + said)

    def each(prompt: str, text: list[int]) -> list[float]:
        return [float(x) for x in scorer.logprobs(bos + scorer.tokenize(prompt), text)]

    yes_token, no_token = yes_scorer.tokenize(" yes")[0], yes_scorer.tokenize(" no")[0]

    def yes(text: str) -> float:
        prompt = f"{FEW_SHOT}Passage: {text}\nQuestion: {question.strip()}\n{ANSWERED}"
        logprobs = yes_scorer.next_token_logprobs(bos + yes_scorer.tokenize(prompt))
        return float(logprobs[yes_token] - logprobs[no_token])

    unstated = qa_scorer.tokenize(NOT_STATED)

    def stated(text: str) -> float:
        prompt = f"{FEW_SHOT_QA}Passage: {text}\nQuestion: {question.strip()}\nAnswer:"
        return -float(qa_scorer.logprobs(bos + qa_scorer.tokenize(prompt), unstated).sum())

    began = time.process_time()
    top = each(f"Passage: {passage}\n{ASKS}", asked)
    spent = (time.process_time() - began) * 1000
    null = each(ASKS, asked)
    a_question = each(f"{ASKS} {question.strip()}\nThe answer:", answer)
    a_null = each("The answer:", answer)
    began = time.process_time()
    yes_passage = yes(passage)
    yes_spent = (time.process_time() - began) * 1000
    began = time.process_time()
    stated_passage = stated(passage)
    stated_spent = (time.process_time() - began) * 1000
    return {
        "q_top": top,
        "q_null": null,
        "q_second": each(f"Passage: {second}\n{ASKS}", asked) if second else None,
        "upr_passage": float(np.mean(top) - np.mean(null)),
        "upr_lines": float(np.mean(each(f"Passage: {said}\n{ASKS}", asked)) - np.mean(null)),
        "a_question": a_question,
        "a_null": a_null,
        "answer_pmi": float(np.mean(a_question) - np.mean(a_null)),
        "yes_passage": yes_passage,
        "yes_lines": yes(said),
        # Contextual calibration (Zhao et al. 2021): the same question after a passage with
        # nothing in it, for how much "yes" the question alone draws.
        "yes_null": yes("N/A"),
        "stated_passage": stated_passage,
        "stated_lines": stated(said),
        "question_tokens": len(asked),
        "upr_passage_cpu_ms": spent,
        "yes_passage_cpu_ms": yes_spent,
        "stated_passage_cpu_ms": stated_spent,
    }


def token_scores(
    scorer: Any, question: str, passage: str, second: str | None, lines: str | None
) -> dict[str, Any]:
    """Each token's log-probability, for the per-token judges (`derived`): the question
    after no passage, the top passage and the second; the lines said after the question
    and after nothing."""
    asked = scorer.tokenize(" " + question.strip())
    answer = scorer.tokenize(" " + (lines if lines is not None else passage))

    def each(prompt: str, text: list[int]) -> list[float]:
        return [float(x) for x in scorer.logprobs(scorer.tokenize(prompt), text)]

    began = time.process_time()
    top = each(f"Passage: {passage}\n{ASKS}", asked)
    spent = (time.process_time() - began) * 1000
    return {
        "q_top": top,
        "q_null": each(ASKS, asked),
        "q_second": each(f"Passage: {second}\n{ASKS}", asked) if second else None,
        "a_question": each(f"{ASKS} {question.strip()}\nThe answer:", answer),
        "a_null": each("The answer:", answer),
        "upr_passage_cpu_ms": spent,
    }


def derived(row: dict[str, Any]) -> None:
    """Per-token judges from `token_scores`: the least-explained question token (a trap
    asks about one thing the passage does not hold), the top passage against the second,
    and the least-supported answer token."""
    if "q_top" not in row:
        return
    gain = np.asarray(row["q_top"]) - np.asarray(row["q_null"])
    row["upr_mean"] = float(gain.mean())
    row["upr_min"] = float(gain.min())
    row["upr_low3"] = float(np.sort(gain)[:3].mean())
    row["upr_last_half"] = float(gain[len(gain) // 2 :].mean())
    if row["q_second"] is not None:
        row["upr_vs_second"] = float(np.mean(row["q_top"]) - np.mean(row["q_second"]))
    else:
        row["upr_vs_second"] = 5.0
    support = np.asarray(row["a_question"]) - np.asarray(row["a_null"])
    row["pmi_mean"] = float(support.mean())
    row["pmi_sum"] = float(support.sum())
    if "yes_null" in row:
        row["yes_calibrated"] = row["yes_passage"] - row["yes_null"]
        row["yes_lines_calibrated"] = row["yes_lines"] - row["yes_null"]


TOKEN_FEATURES = (
    "yes_calibrated",
    "yes_lines_calibrated",
    "upr_mean",
    "upr_min",
    "upr_low3",
    "upr_last_half",
    "upr_vs_second",
    "pmi_mean",
    "pmi_sum",
)


# --- analysis -----------------------------------------------------------------------------


def auc(positives: list[float], negatives: list[float]) -> float | None:
    """P(a positive scores above a negative), ties counted half."""
    if not positives or not negatives:
        return None
    pos = np.asarray(positives)[:, None]
    neg = np.asarray(negatives)[None, :]
    return float(((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size))


def flippable(row: dict[str, Any]) -> bool:
    """A question the rule can change: the plan answered it from the facts or said it does
    not know, and it has lines to say (an answer-type mismatch stays "I don't know")."""
    return row["route"] in ("fact", "unknown") and row.get("lines") is not None


def outcome(row: dict[str, Any], answered: bool) -> bool:
    """Right (site) or honest (unknown) if the plan answers with its lines, or not."""
    if row["category"] == "site":
        return answered and bool(row["lines_right"])
    return not answered


def today(row: dict[str, Any]) -> bool:
    return bool(row["route"] == "fact")


@dataclasses.dataclass(frozen=True)
class Rule:
    """Today's rule, with a grey zone [threshold - below, threshold + above) in which the
    judge's feature decides: answer when it (times `sign`: a judge may point the other way)
    is at least `cut`."""

    feature: str
    below: float
    above: float
    cut: float
    sign: float = 1.0

    def answers(self, row: dict[str, Any]) -> bool:
        if not flippable(row):
            return today(row)
        score = row["score"]
        if row["coverage"] >= 1.0 or score >= ANSWER_THRESHOLD + self.above:
            return today(row)
        if score < ANSWER_THRESHOLD - self.below:
            return today(row)
        return bool(self.sign * row[self.feature] >= self.cut)


@dataclasses.dataclass(frozen=True)
class Linear:
    """Today's score plus `weight` times the judge's feature against one threshold `cut`
    (a question holding every word of the passage is answered as today)."""

    feature: str
    weight: float
    cut: float

    def answers(self, row: dict[str, Any]) -> bool:
        if not flippable(row) or row["coverage"] >= 1.0:
            return today(row)
        return bool(row["score"] + self.weight * row[self.feature] >= self.cut)


def tally(rows: list[dict[str, Any]], rule: Rule | Linear | None) -> tuple[int, int]:
    site = unknown = 0
    for row in rows:
        answered = today(row) if rule is None or not flippable(row) else rule.answers(row)
        if row["route"] not in ("fact", "unknown"):
            continue  # the model's reply: unchanged, counted from the quality run
        good = outcome(row, answered)
        if row["category"] == "site":
            site += good
        else:
            unknown += good
    return site, unknown


def rules(rows: list[dict[str, Any]], feature: str) -> list[Rule]:
    zones = (0.0, 0.03, 0.06, 0.1, 0.15, 0.2, 0.3, 0.4)
    found = []
    for sign in (1.0, -1.0):
        values = sorted({round(sign * float(r[feature]), 3) for r in rows if feature in r})
        cuts = [values[i] for i in range(0, len(values), max(1, len(values) // 25))]
        if feature == "none":  # the control: the whole zone answered, or none of it
            cuts = [-1.0, 1.0]
        found += [
            Rule(feature, below, above, cut, sign)
            for below, above in itertools.product(zones, (0.0, 0.03, 0.06, 0.1, 0.2, 0.3))
            for cut in cuts
            if below or above
        ]
    return found


def linear_rules(feature: str) -> list[Linear]:
    weights = tuple(s * w for s in (1, -1) for w in (0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12))
    cuts = [round(0.3 + 0.01 * i, 2) for i in range(50)]
    return [Linear(feature, w, c) for w in weights for c in cuts]


def choose(rows: list[dict[str, Any]], feature: str, linear: bool = False) -> Rule | Linear | None:
    """The rule with the best sum of site facts and honest answers on these rows; among
    equals, the narrowest grey zone. None when no rule beats today's."""
    base = sum(tally(rows, None))
    best: tuple[int, float] = (base, 0.0)
    chosen: Rule | Linear | None = None
    candidates: list[Rule] | list[Linear] = (
        linear_rules(feature) if linear else rules(rows, feature)
    )
    for rule in candidates:
        gain = sum(tally(rows, rule))
        width = rule.below + rule.above if isinstance(rule, Rule) else abs(rule.cut - 0.51)
        key = (gain, -width)
        if key > best:
            best, chosen = key, rule
    return chosen


def analyse(files: list[Path]) -> dict[str, Any]:
    """The report on the rows of these feature files (one analysis; features all rows have)."""
    rows = [r for f in files for r in json.loads(f.read_text())["rows"] if "score" in r]
    for row in rows:
        derived(row)
        # A perfect judge, for the ceiling: 1 exactly when the lines said are right.
        row["oracle"] = float(row["category"] == "site" and bool(row["lines_right"]))
        # No judge: the grey zone all answered or all not, i.e. today's threshold moved.
        row["none"] = 0.0
    names = [f for f in (*FEATURES, *BASE_FEATURES, *TOKEN_FEATURES) if all(f in r for r in rows)]
    names += ["oracle", "none"]
    venues = list(dict.fromkeys(r["venue"] for r in rows))
    report: dict[str, Any] = {"features": [str(f) for f in files], "auc": {}, "misses": {}}
    for venue in venues:
        mine = [r for r in rows if r["venue"] == venue]
        report["misses"][venue] = {
            # Site questions said "I don't know" whose top passage's lines are right.
            "false_dont_know_right_lines": sum(
                r["category"] == "site" and r["route"] == "unknown" and bool(r["lines_right"])
                for r in mine
            ),
            "false_dont_know": sum(
                r["category"] == "site" and r["route"] == "unknown" for r in mine
            ),
            "site_wrong_lines": sum(
                r["category"] == "site" and r["route"] == "fact" and not r["lines_right"]
                for r in mine
            ),
            "traps_answered": sum(
                r["category"] == "unknown" and r["route"] == "fact" for r in mine
            ),
        }
    print("misses:", json.dumps(report["misses"]))
    print("AUC, right lines (site) against unknown questions | against wrong lines (site)")
    for feature in ("score", *names):
        per: dict[str, Any] = {}
        for venue in venues:
            chosen = [r for r in rows if r["venue"] == venue]
            right = [r[feature] for r in chosen if r["category"] == "site" and r["lines_right"]]
            wrong = [r[feature] for r in chosen if r["category"] == "site" and not r["lines_right"]]
            unknown = [r[feature] for r in chosen if r["category"] == "unknown"]
            per[venue] = {"vs_unknown": auc(right, unknown), "vs_wrong": auc(right, wrong)}
        report["auc"][feature] = per
        print(
            f"{feature:<12} "
            + " ".join(
                f"{v}={_fmt(per[v]['vs_unknown'])}|{_fmt(per[v]['vs_wrong'])}" for v in venues
            )
        )
    # In the grey zone only: does the judge add to today's score there?
    report["grey_zone_auc"] = {}
    for feature in ("score", *names):
        near = [r for r in rows if flippable(r) and abs(r["score"] - ANSWER_THRESHOLD) < 0.15]
        right = [r[feature] for r in near if r["category"] == "site" and r["lines_right"]]
        other = [r[feature] for r in near if not (r["category"] == "site" and r["lines_right"])]
        report["grey_zone_auc"][feature] = {
            "auc": auc(right, other),
            "right": len(right),
            "other": len(other),
        }
    print("grey zone (|score - threshold| < 0.15), right lines against everything else:")
    print(json.dumps(report["grey_zone_auc"]))
    report["leave_one_venue_out"] = {}
    for feature, linear in itertools.product(names, (False, True)):
        table: list[dict[str, Any]] = []
        for venue in venues:
            train = [r for r in rows if r["venue"] != venue]
            test = [r for r in rows if r["venue"] == venue]
            rule = choose(train, feature, linear)
            before, after = tally(test, None), tally(test, rule)
            table.append(
                {
                    "venue": venue,
                    "rule": dataclasses.asdict(rule) if rule else None,
                    "site_before": before[0],
                    "site_after": after[0],
                    "honest_before": before[1],
                    "honest_after": after[1],
                }
            )
        name = f"{feature}{'_linear' if linear else '_grey_zone'}"
        report["leave_one_venue_out"][name] = table
        print(
            f"LOVO {name:<24} "
            + " ".join(
                f"{t['venue']}: site {t['site_after'] - t['site_before']:+d} "
                f"honest {t['honest_after'] - t['honest_before']:+d}"
                for t in table
            )
        )
    cpu = [r["judge_cpu_ms"] for r in rows if "judge_cpu_ms" in r]
    upr = [r["upr_passage_cpu_ms"] for r in rows if "upr_passage_cpu_ms" in r] or [0.0]
    report["cpu_ms"] = {
        "all_judges_p50": round(median(cpu), 1),
        "all_judges_p90": round(percentile(cpu, 90), 1),
        "upr_passage_p50": round(median(upr), 1),
        "upr_passage_p90": round(percentile(upr, 90), 1),
    }
    for name in ("yes_passage", "stated_passage"):  # the few-shot judges, prefix cached
        spent = [r[f"{name}_cpu_ms"] for r in rows if f"{name}_cpu_ms" in r]
        if spent:
            report["cpu_ms"][f"{name}_p50"] = round(median(spent), 1)
            report["cpu_ms"][f"{name}_p90"] = round(percentile(spent, 90), 1)
    print("CPU ms per question:", report["cpu_ms"])
    return report


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--collect", action="store_true", help="score with the model first")
    parser.add_argument(
        "--features",
        type=Path,
        nargs="+",
        action="append",
        help=f"feature files analysed together (default {CACHE}); repeat for another analysis",
    )
    parser.add_argument("--per-token", action="store_true", help="collect per-token scores")
    parser.add_argument(
        "--judge-model",
        type=Path,
        help="GGUF file of the judge (default: the chat model of the settings)",
    )
    parser.add_argument(
        "--prompt-style",
        choices=("chat", "base"),
        default="chat",
        help="chat: the chat template (SmolLM2); base: few-shot completion for a base model",
    )
    parser.add_argument(
        "--venues",
        default=",".join(SETS),
        help="sets to collect: names of the six, or name=path for another labelled set",
    )
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results-judge.json")
    args = parser.parse_args()
    groups: list[list[Path]] = args.features or [[CACHE]]
    if args.collect:
        collect(
            groups[0][0],
            args.venues.split(","),
            args.per_token,
            args.judge_model,
            args.prompt_style,
        )
    report = {"hardware": hardware(), "analyses": [analyse(files) for files in groups]}
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
