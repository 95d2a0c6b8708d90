"""Is the sentence so far complete? Lets a turn end after a shorter silence when it is."""

from __future__ import annotations

import re

from server.config import VadSettings

# A sentence that ends on one of these words is almost always going on ("I went to the").
_CONTINUING = frozenset(
    {
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "nor",
        "so",
        "because",
        "if",
        "than",
        "that",
        "which",
        "who",
        "whose",
        "whom",
        "when",
        "while",
        "where",
        "to",
        "of",
        "in",
        "on",
        "at",
        "for",
        "with",
        "from",
        "by",
        "about",
        "into",
        "onto",
        "over",
        "under",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "am",
        "do",
        "does",
        "did",
        "have",
        "has",
        "had",
        "will",
        "would",
        "can",
        "could",
        "should",
        "shall",
        "may",
        "might",
        "must",
        "not",
        "my",
        "your",
        "his",
        "her",
        "its",
        "our",
        "their",
        "this",
        "these",
        "those",
        "i",
        "you",
        "he",
        "she",
        "we",
        "they",
        "um",
        "uh",
        "er",
        "like",
        "very",
        "really",
        "just",
        "some",
        "any",
        "no",
        "every",
        "each",
        "then",
    }
)
_WORD = re.compile(r"[a-z']+")


def looks_complete(text: str) -> bool:
    """True when the transcript reads as a finished sentence: at least two words, ending in
    sentence punctuation, and not on a word that needs a continuation."""
    stripped = text.strip()
    if not stripped or stripped[-1] not in ".!?":
        return False
    if stripped.endswith("..."):
        return False  # Whisper writes a trailing ellipsis for speech that trails off
    words = _WORD.findall(stripped.lower())
    return len(words) >= 2 and words[-1] not in _CONTINUING


def end_of_turn_silence_ms(text: str, settings: VadSettings) -> int:
    """The silence after which a turn whose transcript so far is `text` ends: shorter when it
    reads as a finished sentence (measured on the pause corpus, docs/performance.md)."""
    if looks_complete(text):
        return min(settings.complete_silence_ms, settings.silence_ms)
    return settings.silence_ms
