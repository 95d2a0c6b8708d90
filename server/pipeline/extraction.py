"""Extractive answers: the lines of a passage that answer a question, in the passage's own
words (knowledge.py finds the passage; grounding.py says the answer). Pure code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import lru_cache

from server.pipeline.answer_types import ASKING_WORDS, AnswerType, holds
from server.pipeline.passages import Passage
from server.pipeline.site_words import expand, fact_terms, terms


def extract_answer(
    question: str,
    passage: Passage,
    max_words: int = 40,
    *,
    in_title: Callable[[str], bool] | None = None,
    in_unit: Callable[[str, int], bool] | None = None,
    expect: AnswerType | None = None,
) -> str | None:
    """The passage's own words that answer the question: an FAQ's answer, the sentences or
    list items that share the most words with the question, or the whole (short) section.
    `in_title` and `in_unit` say whether a term matches by meaning (embeddings). With
    `expect` (answer_types.py) only units that state such a value can answer; None when no
    unit does, or when the unit the question is about does not."""
    if passage.kind == "faq":
        answer = passage.text.strip()
        return answer if expect is None or holds(expect, answer) else None
    units = passage.units()
    if not units:
        return passage.render() if expect is None or holds(expect, passage.text) else None
    asked = [t for t in dict.fromkeys(terms(question))]
    title_terms = set(terms(passage.title))
    specific = [
        t
        for t in asked
        if not (expand(t) & title_terms) and not (in_title is not None and in_title(t))
    ]
    unit_terms = [set(fact_terms(u)) for u in units]  # "Monday to Friday" holds Tuesday

    def overlap(index: int) -> tuple[int, int]:
        # Shared words first, then words of the same meaning: "Sunday" is close to "Monday"
        # by meaning, but only the line that says Sunday answers it.
        shared = [t for t in specific if expand(t) & unit_terms[index]]
        similar = [
            t for t in specific if in_unit is not None and t not in shared and in_unit(t, index)
        ]
        return len(shared), len(similar)

    scored = {i: overlap(i) for i in range(len(units))}
    candidates = list(scored)
    if expect is not None:
        # Only a line that states such a value answers; and when the question's topic words
        # point at a line that states none ("the Riverside Room... available to hire"),
        # another line's value is about something else.
        candidates = [i for i in candidates if holds(expect, units[i])]
        asking = _asking_terms(expect)
        topic = [t for t in specific if not (expand(t) & asking)]

        def about(index: int) -> int:
            return sum(1 for t in topic if expand(t) & unit_terms[index])

        if not candidates or max(about(i) for i in candidates) < max(map(about, scored)):
            return None
    best = max(scored[i] for i in candidates)
    if best == (0, 0):
        # The question names only the topic ("the opening hours?"): the section, if short,
        # else its first lines. (Not the lines closest in meaning to the question: measured,
        # a section's first lines answered more often; docs/performance.md.)
        text_words = len(" ".join(units[i] for i in candidates).split())
        chosen_index = candidates if text_words <= max_words else candidates[:2]
    else:
        chosen_index = [i for i in candidates if scored[i] == best][:2]
    text = " ".join(_sentence(units[i]) for i in chosen_index)
    if not (set(terms(text)) & title_terms) and passage.title:
        text = f"{passage.title}: {text[0].lower() + text[1:] if _lower_ok(text) else text}"
    return text


@lru_cache(maxsize=16)
def _asking_terms(kind: AnswerType) -> frozenset[str]:
    return frozenset(terms(" ".join(ASKING_WORDS.get(kind, ()))))


def _lower_ok(text: str) -> bool:
    first = text.split(" ", 1)[0]
    return first[:1].isupper() and first[1:].islower() and first.lower() in {"the", "a", "an"}


def _sentence(unit: str) -> str:
    unit = unit.strip()
    return unit if unit[-1:] in ".!?" else unit + "."


_CONTACT_TITLES = re.compile(r"contact|reception|front desk|information|enquir|help|ask", re.I)


def contact_line(passages: Sequence[Passage]) -> str | None:
    """The first lines of a contact section: where to ask what the facts do not say."""
    for passage in passages:
        if passage.kind == "fact" and _CONTACT_TITLES.search(passage.title):
            return " ".join(_sentence(u) for u in passage.units()[:2]) or None
    return None
