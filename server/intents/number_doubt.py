"""A number Whisper may have misheard in a command: asked about, not guessed. Pure code.

Whisper `tiny.en` hears "forty percent" as "4%" and "thirty" as "13" on some voices
(docs/performance.md, "Voices nobody tuned for"): the command is then whole and would be
carried out with the wrong number, a wrong action. For a command heard with a number, the same
sentence with the number's usual confusions (4 <-> 40, 14 <-> 40, 30 -> 3, ...) is scored
against the same audio (rescore.py's teacher-forced score). Greedy decoding makes the heard
sentence the likelier one; when a confusion scores within `MAX_DOUBT` of it, the audio does
not tell them apart and the speaker is asked ("Sorry, did you say 4 or 40?").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

# Chosen on 141 spoken commands heard with such a number (three sets, eight voices;
# bench/number_doubt_probe.py): the 5 misheard numbers had the right one 0.14-2.93 below the
# heard sentence, the 136 heard right their closest confusion 0.79 below at the nearest.
MAX_DOUBT = 1.0

_WORDS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_VALUE = {word: n for n, word in enumerate(_WORDS)} | {w: 20 + 10 * i for i, w in enumerate(_TENS)}
_NUMBER = re.compile(r"(?<![\d.,])\b(\d+|" + "|".join(_VALUE) + r")(?![\d.,]\d)\b", re.IGNORECASE)
_TEEN_TY = {n: 10 * (n - 10) for n in range(13, 20)}
_TEEN_TY |= {ty: teen for teen, ty in _TEEN_TY.items()}


@dataclass(frozen=True)
class Doubt:
    heard: int
    other: int
    other_text: str = field(default="", compare=False)  # the sentence with `other`

    @property
    def question(self) -> str:
        return f"Sorry, did you say {self.heard} or {self.other}?"


def spelled(number: int) -> str:
    """0 to 99 in words ("twenty one")."""
    if number < 20:
        return _WORDS[number]
    tens, units = divmod(number, 10)
    return _TENS[tens - 2] + (f" {_WORDS[units]}" if units else "")


def confusions(n: int) -> list[int]:
    """The numbers `n` is heard for: a teen for a ten and back, a digit for its ten and
    back."""
    found: list[int] = []
    if n in _TEEN_TY:
        found.append(_TEEN_TY[n])
    if 2 <= n <= 9:  # "forty" heard as "4"; "one" is not "ten"
        found.append(10 * n)
    if 20 <= n <= 90 and n % 10 == 0:
        found.append(n // 10)
    return found


def _value(said: str) -> int:
    return int(said) if said.isdigit() else _VALUE[said.lower()]


def numbers_in(text: str) -> list[int]:
    """The whole numbers of `text`, in digits or words ("two minutes", "15 seconds")."""
    return [_value(m.group(1)) for m in _NUMBER.finditer(text)]


def with_other_numbers(heard: str) -> list[tuple[str, Doubt]]:
    """`heard` with one of its numbers replaced by a confusion, written the way it was."""
    found: list[tuple[str, Doubt]] = []
    for match in _NUMBER.finditer(heard):
        said = match.group(1)
        value = _value(said)
        for other in confusions(value):
            if said.isdigit():
                written = str(other)
            else:
                written = spelled(other)
                written = written.capitalize() if said[0].isupper() else written
            text = heard[: match.start(1)] + written + heard[match.end(1) :]
            found.append((text, Doubt(value, other, text)))
    return found


def doubt(heard: str, score: Callable[[Sequence[str]], Sequence[float]]) -> Doubt | None:
    """The confusion of a number in `heard` the audio does not rule out, if any (`score`:
    each sentence's log-probability against the audio)."""
    others = with_other_numbers(heard)
    if not others:
        return None
    scores = score([heard, *(text for text, _ in others)])
    close = [
        (scores[0] - s, d) for (_, d), s in zip(others, scores[1:], strict=True)
        if scores[0] - s <= MAX_DOUBT
    ]  # fmt: skip
    return min(close, key=lambda c: c[0])[1] if close else None
