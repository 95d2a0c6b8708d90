"""The home's command sentences scored against the audio (closed-vocabulary rescoring).

Pure code, no asyncio. When what Whisper heard is no command ("Walk the front door", "I mock
the front door"), the home is finite: its devices, areas and what their domains do. So the
command sentences close to what was heard (a device or area named in it, spelled alike,
times the plain phrasings its domain has; a number only when one was heard) are built
(`candidates`) and Whisper scores each against the same audio (the caller's `score`: the
log-probability of the sentence's tokens, teacher-forced, on the same encoder output). A
candidate is taken (`choose`) only when it is not far below the free transcript's own
score and clearly ahead of every other candidate that makes another command.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rapidfuzz import fuzz

from server.intents.home import Home, spoken
from server.intents.recognizer import (
    Recognized,
    Understanding,
    command_key,
    deciding_words,
    normalise,
)

log = logging.getLogger(__name__)

# A name counts as heard when some words of the transcript spell it this alike (rapidfuzz
# ratio, 0-100) and the name is at least `MIN_NAME_CHARS` long ("tv" is too short to guess:
# a shorter name counts only when heard as it is spelled, "Taught off the fan.").
NAME_SIMILARITY = 75.0
MIN_NAME_CHARS = 4
EXACT_SHORT_NAMES = True  # False: shorter names never count (before 3 Dec 2026; the bench)
# At most this many names (the most alike) make candidates: each candidate costs a
# teacher-forced decoder pass (~20-30 ms on one thread).
MAX_NAMES = 2
# Acceptance (log-probability, natural log, summed over the sentence's tokens and its end):
# the best candidate at most `MAX_BELOW_HEARD` below the free transcript, and at least
# `MIN_LEAD` above the best candidate that makes another command. Measured:
# docs/performance.md#scoring-the-homes-sentences.
MAX_BELOW_HEARD = 5.0
MIN_LEAD = 2.0
# At most this many words of what was heard may be missing from the candidate: Whisper
# misheard one word ("Walk the front door"), not a whole sentence ("And the bedroom light,
# the green" is no "Turn on the bedroom light").
MAX_WORDS_UNSAID = 1

_NUMBER = re.compile(r"\b\d+\b")
# Words that want a number: a transcript with one of them and no number heard is a number
# misheard ("Set the desk lamp, tidy percent"), and no candidate may stand in for it.
_WANTS_NUMBER = re.compile(r"%|\b(?:percent|per cent|degrees?)\b", re.IGNORECASE)

# The plain phrasings of each domain ({x}: the device's name, {n}: a number heard).
ON_OFF = ("Turn on the {x}.", "Turn off the {x}.")
PHRASINGS: dict[str, tuple[str, ...]] = {
    "light": ON_OFF,
    "switch": ON_OFF,
    "fan": ON_OFF,
    "input_boolean": ON_OFF,
    "media_player": (
        *ON_OFF,
        "Mute the {x}.",
        "Unmute the {x}.",
        "Pause the {x}.",
        "Resume the {x}.",
    ),
    "lock": ("Lock the {x}.", "Unlock the {x}."),
    "cover": ("Open the {x}.", "Close the {x}."),
    "valve": ("Open the {x}.", "Close the {x}."),
}
WITH_NUMBER: dict[str, tuple[str, ...]] = {
    "light": ("Set the {x} brightness to {n}%.",),
    "media_player": ("Set the {x} volume to {n}%.",),
    "climate": ("Set the {x} to {n} degrees.",),
}
AREA_PHRASINGS = ("Turn on the lights in the {x}.", "Turn off the lights in the {x}.")
AREA_WITH_NUMBER = ("Set the brightness in the {x} to {n}%.",)

# Log-probabilities of sentences given the same audio, in order.
Score = Callable[[Sequence[str]], list[float]]


@dataclass(frozen=True)
class Candidate:
    text: str
    understood: Recognized


@dataclass(frozen=True)
class Rescored:
    text: str  # the candidate taken
    understood: Recognized
    below_heard: float  # how far below the free transcript's score (>= 0: below)
    lead: float  # ahead of the next other command


def _windows(words: list[str], size: int) -> list[str]:
    return [" ".join(words[i : i + size]) for i in range(max(1, len(words) - size + 1))]


def names_heard(heard: str, home: Home, *, limit: int = MAX_NAMES) -> list[tuple[str, str]]:
    """(kind, name) of the devices ("device") and areas ("area") spelled alike in `heard`,
    the most alike first: at most `limit`."""
    words = normalise(heard, fillers=False).split()
    if not words:
        return []
    found: dict[tuple[str, str], float] = {}
    named: list[tuple[str, str]] = [
        *(("device", spoken(n)) for d in home.devices for n in (d.name, *d.aliases)),
        *(("area", spoken(n)) for a in home.areas for n in (a.name, *a.aliases)),
    ]
    for kind, name in named:
        if len(name) < MIN_NAME_CHARS:
            if EXACT_SHORT_NAMES and name in words:
                found[(kind, name)] = 100.0
            continue
        size = len(name.split())
        best = max(
            fuzz.ratio(window, name)
            for n in {size - 1, size, size + 1}
            if n >= 1
            for window in _windows(words, n)
        )
        if best >= NAME_SIMILARITY:
            key = (kind, name)
            found[key] = max(found.get(key, 0.0), best)
    return [k for k, _ in sorted(found.items(), key=lambda kv: -kv[1])][:limit]


def sentences(heard: str, home: Home) -> list[str]:
    """The home's command sentences close to `heard` (numbers only as heard), not yet
    understood: cheap, string work only."""
    numbers = list(dict.fromkeys(_NUMBER.findall(heard)))
    texts: list[str] = []
    for kind, name in names_heard(heard, home):
        if kind == "area":
            texts += [p.format(x=name) for p in AREA_PHRASINGS]
            texts += [p.format(x=name, n=n) for p in AREA_WITH_NUMBER for n in numbers]
            continue
        domains = {d.domain for d in home.named(name)}
        for domain in sorted(domains):
            texts += [p.format(x=name) for p in PHRASINGS.get(domain, ())]
            texts += [p.format(x=name, n=n) for p in WITH_NUMBER.get(domain, ()) for n in numbers]
    return list(dict.fromkeys(texts))


def worth_scoring(heard: str, home: Home) -> bool:
    """Whether some sentence of the home could stand for `heard` (before any matching)."""
    return any(could_stand_for(heard, text) for text in sentences(heard, home))


def candidates(
    heard: str, home: Home, understand: Callable[[str], Understanding]
) -> list[Candidate]:
    """The home's command sentences close to `heard`, each understood (strict templates) as a
    command; one sentence per command, numbers only as heard."""
    found: dict[tuple[object, ...], Candidate] = {}
    for text in sentences(heard, home):
        understood = understand(text)
        if isinstance(understood, Recognized):
            found.setdefault(command_key(understood), Candidate(text, understood))
    return list(found.values())


def unsaid(heard: str, candidate: str) -> set[str]:
    """The words of `heard` that `candidate` does not have."""
    said = set(normalise(candidate, fillers=False).split())
    return set(normalise(heard, fillers=False).split()) - said


def could_stand_for(heard: str, text: str, *, same_deciding_words: bool = True) -> bool:
    """Whether the command sentence `text` may be taken for `heard` at all, whatever the
    scores: the same words that decide the action (on, off, lock, ...) when `heard` has
    any, the same numbers (a number misheard is never guessed), and at most
    MAX_WORDS_UNSAID of its words missing."""
    said = deciding_words(heard)
    if same_deciding_words and said and deciding_words(text) != said:
        return False
    if set(_NUMBER.findall(text)) != set(_NUMBER.findall(heard)):
        return False
    if _WANTS_NUMBER.search(heard) and not _NUMBER.search(heard):
        return False
    return len(unsaid(heard, text)) <= MAX_WORDS_UNSAID


def choose(
    heard: str,
    heard_score: float,
    found: Sequence[Candidate],
    scores: Sequence[float],
    *,
    max_below: float = MAX_BELOW_HEARD,
    min_lead: float = MIN_LEAD,
    same_deciding_words: bool = True,
) -> Rescored | None:
    """The candidate to act on instead of `heard` (no command), or None: the likeliest, at
    most `max_below` below the free transcript and `min_lead` ahead of every other candidate
    (each a different command), and one that could stand for what was heard."""
    if not found:
        return None
    ranked = sorted(zip(scores, found, strict=True), key=lambda sc: -sc[0])
    best_score, best = ranked[0]
    runner_up = ranked[1][0] if len(ranked) > 1 else float("-inf")
    below, lead = heard_score - best_score, best_score - runner_up
    if below > max_below or lead < min_lead:
        return None
    if not could_stand_for(heard, best.text, same_deciding_words=same_deciding_words):
        return None
    return Rescored(best.text, best.understood, below, lead)


def rescored(
    heard: str,
    home: Home,
    understand: Callable[[str], Understanding],
    score: Score,
) -> Rescored | None:
    """`heard` (no command) rescored: when some candidate could stand for it, the candidates
    and the free transcript are scored on the same audio in one call, then `choose`. (The
    others are scored too: the one taken must be clearly ahead of them.)"""
    found = candidates(heard, home, understand)
    if not any(could_stand_for(heard, c.text) for c in found):
        return None
    scores = score([heard, *(c.text for c in found)])
    if len(scores) != len(found) + 1:
        return None
    chosen = choose(heard, scores[0], found, scores[1:])
    if chosen is not None:
        log.debug(
            "heard %r; the home's %r scored %.2f below it", heard, chosen.text, chosen.below_heard
        )
    return chosen
