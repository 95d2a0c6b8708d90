"""bench/judge.py's analysis: AUC and the grey-zone rule, on hand-made rows (no model)."""

from __future__ import annotations

from typing import Any

import pytest

from bench.judge import Linear, Rule, auc, choose, derived, tally
from server.pipeline.knowledge import ANSWER_THRESHOLD


def row(
    category: str, route: str, score: float, judged: float, right: bool = True
) -> dict[str, Any]:
    return {
        "venue": "v",
        "category": category,
        "question": "q",
        "route": route,
        "score": score,
        "coverage": 0.5,
        "lines": "The lines.",
        "lines_right": right,
        "upr_mean": judged,
    }


def test_auc_counts_pairs_and_ties() -> None:
    assert auc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert auc([1.0], [2.0]) == 0.0
    assert auc([1.0], [1.0]) == 0.5
    assert auc([], [1.0]) is None


def test_the_grey_zone_rule_changes_only_questions_near_the_threshold() -> None:
    below = ANSWER_THRESHOLD - 0.05
    rows = [
        row("site", "unknown", below, 2.0),  # a false "I don't know" the judge rescues
        row("unknown", "unknown", below, 0.1),  # a trap the judge leaves alone
        row("site", "unknown", ANSWER_THRESHOLD - 0.5, 2.0),  # far below: unchanged
        row("site", "model", below, 2.0),  # the model's reply: not counted
    ]
    assert tally(rows, None) == (0, 1)
    rule = Rule("upr_mean", below=0.1, above=0.0, cut=1.0)
    assert tally(rows, rule) == (1, 1)
    # A lower cut answers the trap too: an honest answer lost.
    assert tally(rows, Rule("upr_mean", below=0.1, above=0.0, cut=0.0)) == (1, 0)


def test_wrong_lines_said_are_not_a_right_answer() -> None:
    rows = [row("site", "unknown", ANSWER_THRESHOLD - 0.05, 2.0, right=False)]
    assert tally(rows, Rule("upr_mean", below=0.1, above=0.0, cut=1.0)) == (0, 0)


def test_choose_keeps_todays_rule_when_nothing_beats_it() -> None:
    below = ANSWER_THRESHOLD - 0.05
    # The judge cannot tell the answer from the trap: any rule trades one for the other.
    rows = [row("site", "unknown", below, 1.0), row("unknown", "unknown", below, 1.0)]
    assert choose(rows, "upr_mean") is None
    assert choose(rows, "upr_mean", linear=True) is None
    assert Linear("upr_mean", 0.1, 0.3).answers(rows[1])
    # A judge pointing the other way is used the other way round.
    rows = [row("site", "unknown", below, 0.5), row("unknown", "unknown", below, 2.0)]
    chosen = choose(rows, "upr_mean")
    assert isinstance(chosen, Rule) and chosen.sign == -1.0
    assert tally(rows, chosen) == (1, 1)


def test_per_token_judges() -> None:
    found: dict[str, Any] = {
        "q_top": [-1.0, -2.0, -5.0],
        "q_null": [-2.0, -2.0, -4.0],
        "q_second": [-3.0, -3.0, -3.0],
        "a_question": [-1.0, -1.0],
        "a_null": [-2.0, -3.0],
    }
    derived(found)
    assert found["upr_mean"] == pytest.approx(0.0)
    assert found["upr_min"] == pytest.approx(-1.0)
    assert found["upr_vs_second"] == pytest.approx(-8 / 3 + 3)
    assert found["pmi_sum"] == pytest.approx(3.0)
