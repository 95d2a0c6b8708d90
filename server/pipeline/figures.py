"""Figures a model's reply may not invent: for a persona with site knowledge, a number the
model writes (a time, a price, a count, a phone number, a code) must be one the question or the
facts it was given hold.

A 135M model asked something its persona's facts do not cover answers anyway, and the specifics
are what it gets wrong and what a visitor acts on: "The pool opens at 6 am", "The Wi-Fi password
is 1234", "The moon is 2,170,956 miles away". Words can be loosely right; a figure that nobody
gave the model is made up. `FigureCheck` reads the reply as it streams: text goes out at once
until a digit appears, then the rest of that sentence is held until it ends; a sentence whose
every run of digits is in the question or the facts goes out, the first one that is not ends
the reply with the honest line instead (docs/personas.md, "How a reply uses it"). A reply with
no digits is never delayed. Pure code.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_DIGITS = re.compile(r"\d+")
# A sentence ends at . ! ? or a line break followed by a space or the end of the text; "3.5" and
# "10.30" are not ends (a digit follows the point).
_SENTENCE_END = re.compile(r"[.!?](?=\s)|\n")
# Where a held figure starts: the word that holds the first digit ("£1,200", "(01632").
_WORD_START = re.compile(r"[^\s]*\d")


def digit_runs(texts: Iterable[str]) -> frozenset[str]:
    """Every run of digits in the texts: "10:30" gives 10 and 30, "£1,200" gives 1 and 200,
    so a figure written another way ("10.30", "1200"?) is matched run by run."""
    return frozenset(run for text in texts for run in _DIGITS.findall(text))


def unsupported(sentence: str, allowed: frozenset[str]) -> bool:
    return any(run not in allowed for run in _DIGITS.findall(sentence))


class FigureCheck:
    """Streams a reply, holding back each sentence from its first digit to its end."""

    def __init__(self, allowed: frozenset[str]) -> None:
        self.allowed = allowed
        self.held = ""
        self.said = ""  # what has gone out
        self.stopped = False  # a figure was not in the facts: the rest is not said

    def feed(self, delta: str) -> str:
        """The part of `delta` (with what was held) that can be said now."""
        if self.stopped:
            return ""
        text, self.held = self.held + delta, ""
        out: list[str] = []
        while True:
            figure = _WORD_START.search(text)
            if figure is None:
                out.append(text)
                break
            end = _SENTENCE_END.search(text, figure.end())
            if end is None:  # the sentence is not over: hold it from the figure's word on
                out.append(text[: figure.start()])
                self.held = text[figure.start() :]
                break
            sentence = text[: end.end()]
            if unsupported(sentence, self.allowed):
                out.append(text[: figure.start()])
                self.stopped = True
                break
            out.append(sentence)
            text = text[end.end() :]
        said = "".join(out)
        self.said += said
        return said

    def flush(self) -> str:
        """At the end of the reply: the held sentence, if its figures are in the facts."""
        held, self.held = self.held, ""
        if self.stopped or not held:
            return ""
        if unsupported(held, self.allowed):
            self.stopped = True
            return ""
        self.said += held
        return held

    def honest_line(self, line: str) -> str:
        """What to say in place of the figure: the honest line, after a break when the
        sentence it cut was already under way."""
        tail = self.said.rstrip()
        if not tail:
            return line
        space = "" if self.said[-1].isspace() else " "
        return f"{space}\u2026 {line}" if tail[-1] not in ".!?" else f"{space}{line}"
