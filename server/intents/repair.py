"""Misheard commands, repaired by one word. Pure code, no asyncio.

Whisper `tiny.en` gets a word of a short command wrong often enough to matter ("start at 3
minute timer", "and 5 minutes to the timer", "set the brightest in the living room", "place
turn off the kitchen light"). A command template then no longer matches the whole sentence
and the command goes to the chat model, which cannot act.

`one_edit_candidates` lists the sentences one word away from what was heard, best first: one
word replaced by a word of the templates' vocabulary (or of the home's names) that is spelled
alike, or the first word dropped. The recognizer (server/intents/recognizer.py) tries them
with the strict template matcher and takes a repair only when exactly one command comes out
(one intent, one set of devices): a word that could be corrected two ways is not guessed.

Why not Home Assistant's own fuzzy matcher: hassil's n-gram matcher (`hassil.fuzzy`) came and
went (hassil 3.1 to 3.8); Home Assistant removed it in May 2026 (home-assistant/core#170653)
because it "ended up causing confusion and incorrect matching", and hassil 3.10 dropped it.
Matching the transcript against every sentence the templates generate is not practical
either: the demo home's templates expand to about 66 million sentences (hassil's sampler).
One edit on a short sentence, checked by the strict matcher, keeps the templates as the only
judge of what a command is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rapidfuzz.distance import Levenshtein

# Words a repair never writes or erases: a guess must not flip what a command does.
POLARITY = frozenset(
    {
        "on",
        "off",
        "lock",
        "unlock",
        "locked",
        "unlocked",
        "open",
        "close",
        "closed",
        "shut",
        "mute",
        "unmute",
        "pause",
        "unpause",
        "resume",
        "stop",
        "start",
        "up",
        "down",
        "cancel",
        "not",
        "no",
        "don't",
    }
)
# How alike (Levenshtein similarity, 0-1) a heard word must be to the word put in its place.
MIN_WORD_SIMILARITY = 0.6
# A repair is tried only on short sentences: commands are short, chit-chat often is not.
MAX_WORDS = 10
MIN_WORDS = 3  # "then stop" is not "stop"
# Words inside a sentence that may be dropped as a stray sound ("start at 3 minute timer").
STRAY_WORDS = frozenset({"at", "an", "uh", "um", "ah", "oh", "er"})
MIN_WORD_CHARS = 2  # words put in place are at least this long ("a" is not guessed in)
_WORD = re.compile(r"[a-z][a-z']*")
_NUMBER = re.compile(r"^\d+(?:[.,]\d+)?%?$")


@dataclass(frozen=True)
class Candidate:
    text: str
    similarity: float  # of the replaced word to its replacement (1.0: a word dropped)
    edit: str  # what changed, for the log: "at -> a"


def template_vocabulary(data: Mapping[str, Any], intent_names: Iterable[str]) -> frozenset[str]:
    """Every word the sentence templates of these intents can say, with the expansion rules
    and the packaged lists' spoken values (Home Assistant's `intents` data as a dict)."""
    texts: list[str] = []
    intents = data.get("intents", {})
    for name in intent_names:
        for block in intents.get(name, {}).get("data", []):
            texts.extend(block.get("sentences", []))
    texts.extend(str(rule) for rule in data.get("expansion_rules", {}).values())
    for values in data.get("lists", {}).values():
        for value in values.get("values", []) if isinstance(values, dict) else []:
            texts.append(str(value.get("in", "")) if isinstance(value, dict) else str(value))
    words: set[str] = set()
    for text in texts:
        # {list} and <rule> references are not words; their words come from the lists/rules.
        plain = re.sub(r"\{[^}]*\}|<[^>]*>", " ", text.lower())
        words.update(_WORD.findall(plain))
    return frozenset(words)


def one_edit_candidates(
    said: str,
    vocabulary: frozenset[str],
    *,
    limit: int = 24,
) -> list[Candidate]:
    """Sentences one word away from `said` (lower case, no punctuation), most alike first."""
    words = said.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return []
    found: list[Candidate] = []
    for i, word in enumerate(words):
        # A word too many: the first ("place turn off ...", "the next track"), or a sound
        # heard as a short word ("start at 3 minute timer"). Not "are" or "is": "the kitchen
        # lights are on" is not "the kitchen lights on".
        if (i == 0 or word in STRAY_WORDS) and word not in POLARITY and not _NUMBER.match(word):
            rest = " ".join([*words[:i], *words[i + 1 :]])
            found.append(Candidate(rest, 1.0 if i == 0 else 0.9, f"drop {word}"))
    for i, word in enumerate(words):
        if word in POLARITY or _NUMBER.match(word):
            continue
        for other in vocabulary:
            if other == word or other in POLARITY or len(other) < MIN_WORD_CHARS:
                continue
            if word.startswith(other):
                # "turned on the kitchen light" is the confirmation said back, not a command
                continue
            similarity = Levenshtein.normalized_similarity(word, other)
            if similarity >= MIN_WORD_SIMILARITY:
                text = " ".join([*words[:i], other, *words[i + 1 :]])
                found.append(Candidate(text, similarity, f"{word} -> {other}"))
    found.sort(key=lambda c: -c.similarity)
    return found[:limit]
