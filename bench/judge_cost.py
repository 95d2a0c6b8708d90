"""The cost of one judgement, the chat model (SmolLM2-135M) against another judge model (Gemma 3
270M) side by side (docs/performance.md, "Gemma 3 270M as the judge").

For questions taken evenly from a feature file of bench/judge.py (its rows hold each question
and its top passage), one passage evaluation (`upr_passage`: the passage and the question
after "Passage: ...\\nA visitor asks:") is timed with each model, the order alternating from
one question to the next, one thread each. Reports wall and CPU time p50 per model and the
paired ratio, with the load average. Writes bench/results-judge-gemma-cost.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from bench.common import BENCH_DIR, hardware, median, percentile
from bench.judge import ASKS
from server.config import load_settings


def evaluate(scorer: Any, question: str, passage: str, bos: bool) -> tuple[float, float]:
    """Wall and CPU ms of one passage evaluation (log P of the question after it)."""
    lead = [scorer.bos] if bos else []
    asked = scorer.tokenize(" " + question.strip())
    prompt = lead + scorer.tokenize(f"Passage: {passage}\n{ASKS}")
    wall, cpu = time.perf_counter(), time.process_time()
    scorer.logprobs(prompt, asked)
    return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000


def main() -> None:
    from bench.llm_scores import LlamaScorer
    from server.engines.llama_cpp import LlamaCppChatModel

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--features", type=Path, required=True, help="a bench/judge.py file")
    parser.add_argument("--judge-model", type=Path, required=True, help="the other GGUF")
    parser.add_argument("--questions", type=int, default=40)
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results-judge-gemma-cost.json")
    args = parser.parse_args()
    rows = [r for r in json.loads(args.features.read_text())["rows"] if "passage" in r]
    rows = rows[:: max(1, len(rows) // args.questions)][: args.questions]
    settings = load_settings(None)
    paths = {"chat": settings.llm.model_path, "judge": args.judge_model}
    models = {
        name: LlamaCppChatModel(path, context_size=1024, threads=1, parallel=1)
        for name, path in paths.items()
    }
    scorers = {name: LlamaScorer(model, threads=1) for name, model in models.items()}
    for name, scorer in scorers.items():  # one untimed evaluation each
        evaluate(scorer, rows[0]["question"], rows[0]["passage"], name == "judge")
    load = [os.getloadavg()[0]]
    times: dict[str, dict[str, list[float]]] = {n: {"wall": [], "cpu": []} for n in scorers}
    for i, row in enumerate(rows):
        order = list(scorers) if i % 2 == 0 else list(reversed(scorers))
        for name in order:
            wall, cpu = evaluate(scorers[name], row["question"], row["passage"], name == "judge")
            times[name]["wall"].append(wall)
            times[name]["cpu"].append(cpu)
        load.append(os.getloadavg()[0])
    ratios = [j / c for j, c in zip(times["judge"]["wall"], times["chat"]["wall"], strict=True)]
    report: dict[str, Any] = {
        "hardware": hardware(),
        "questions": len(rows),
        "models": {"chat": settings.llm.model_path.name, "judge": args.judge_model.name},
        "load_average_1min": {"min": min(load), "max": max(load)},
        "paired_wall_ratio_judge_to_chat_p50": round(median(ratios), 2),
    }
    for name, kinds in times.items():
        for kind, values in kinds.items():
            report[f"{name}_{kind}_ms_p50"] = round(median(values), 1)
            report[f"{name}_{kind}_ms_p90"] = round(percentile(values, 90), 1)
    print(json.dumps(report, indent=1))
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
