"""The answer-quality benchmark's scoring (bench/quality.py): expected words and numbers."""

from __future__ import annotations

import pytest

from bench.quality import has_facts


@pytest.mark.parametrize(
    ("reply", "expect", "right"),
    [
        ("A spider has 8 legs.", [["8", "eight"]], True),
        ("Sorry, I don't know. Call 01632 960 418.", [["8", "eight"]], False),  # a phone number
        ("We open at 8 am on Saturdays.", [["8 am", "8am"]], True),
        ("Parking is free for two hours.", [["park"]], True),  # words still match inside words
        ("The café opens at 9.", [["cafe"], ["9", "nine"]], True),
        ("The café opens at 19:00.", [["9", "nine"]], False),
    ],
)
def test_expected_facts(reply: str, expect: list[list[str]], right: bool) -> None:
    assert has_facts(reply, expect) is right
