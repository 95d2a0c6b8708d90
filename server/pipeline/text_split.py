"""Cut a streamed LLM reply into phrases for TTS, each as soon as it is complete.

The decision at a candidate cut (a '.', a ',') depends on the characters after it, so the
splitter holds text until they arrive. Every decision depends only on the text, never on how
it was fragmented: feeding a reply character by character gives the same phrases as feeding
it whole.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import Enum

_TERMINALS = ".!?…"
# May follow a sentence's final punctuation: quotes, brackets, markdown emphasis.
_CLOSERS = "\"')]}*_`\u201d\u2019\u00bb"
# May precede a word: stripped before looking the word up as an abbreviation.
_OPENERS = "\"'([{*_`\u201c\u2018\u00ab"
# Lower-case, with their final dot. Splitting after these is rarely right.
_ABBREVIATIONS = frozenset(
    {
        "mr.", "mrs.", "ms.", "dr.", "prof.", "sr.", "jr.", "st.", "mt.", "ft.",
        "vs.", "etc.", "approx.", "incl.", "dept.", "est.", "fig.",
        "inc.", "ltd.", "co.", "corp.",
        "jan.", "feb.", "apr.", "aug.", "sep.", "sept.", "oct.", "nov.", "dec.",
    }
)  # fmt: skip
# Initials and dotted abbreviations: "J.", "U.S.", "e.g.", "i.e.", "a.m.", "Ph.D.".
_DOTTED = re.compile(r"(?:[A-Za-z]{1,2}\.)*[A-Za-z]\.")
# Clause boundaries for a forced cut: ", " "; " ": ", a spaced dash, an em dash.
_CLAUSE = re.compile("[,;:](?=\\s)|\\s[-\u2013\u2014](?=\\s)|\u2014")


# Words that open a new prosodic phrase (a noun or prepositional phrase, a clause): cutting the
# first phrase just before one keeps its intonation whole ("Turned on | the kitchen light"),
# where cutting after a word count can split "Paris | is" and blur both halves.
_PHRASE_OPENERS = frozenset(
    """
    the a an this that these those my your his her its our their to for in on at of with from
    by about into onto over under after before until and but or so because if when while
    which who where
    """.split()  # noqa: SIM905
)


class _Decision(Enum):
    CUT = 1
    NO = 2
    WAIT = 3  # needs characters that have not arrived yet


@dataclass(frozen=True)
class _Cut:
    end: int  # the phrase is buf[:end]
    resume: int  # the rest of the reply starts at buf[resume:]


class PhraseSplitter:
    """Turns LLM text deltas into speakable phrases; one instance per reply.

    Phrases end at sentence ends and newlines. The first phrase may also end at a clause
    boundary (", " "; " ": " " - " "—") once it has `first_phrase_min_words` words, so the
    first audio needs the least synthesis; with `first_phrase_max_words` it also ends at the
    space after that many words when no boundary came sooner (a sentence-long first phrase
    costs a sentence of synthesis before the first sound). With `prosodic_cut`, it also ends
    before a word that opens a new phrase ("the", "to", "and"...) once it has
    `first_phrase_min_words` words. A phrase longer than `max_chars` is
    cut at its last clause boundary or space, so TTS never waits on a huge phrase.
    """

    def __init__(
        self,
        *,
        first_phrase_min_words: int = 3,
        max_chars: int = 200,
        first_phrase_max_words: int | None = None,
        prosodic_cut: bool = False,
    ) -> None:
        if first_phrase_min_words < 1 or max_chars < 2:
            raise ValueError("first_phrase_min_words must be >= 1 and max_chars >= 2")
        if first_phrase_max_words is not None and first_phrase_max_words < first_phrase_min_words:
            raise ValueError("first_phrase_max_words must be >= first_phrase_min_words")
        self._min_words = first_phrase_min_words
        self._max_words = first_phrase_max_words
        self._prosodic_cut = prosodic_cut
        self._max_chars = max_chars
        self._buf = ""
        self._scan = 0  # buf[:scan] holds no cut: decisions there are final
        self._first = True  # no phrase emitted yet

    def feed(self, delta: str) -> list[str]:
        """Add a fragment of the reply; return the phrases it completed."""
        self._buf += delta
        if self._buf[:1].isspace():
            self._buf = self._buf.lstrip()
        return self._drain(final=False)

    def flush(self) -> list[str]:
        """End of reply: return the phrases still held back."""
        phrases = self._drain(final=True)
        self._emit(self._buf, phrases)
        self._buf = ""
        self._scan = 0
        return phrases

    def _drain(self, *, final: bool) -> list[str]:
        phrases: list[str] = []
        while (cut := self._find_cut(final)) is not None:
            self._emit(self._buf[: cut.end], phrases)
            self._buf = self._buf[cut.resume :].lstrip()
            self._scan = 0
        return phrases

    def _emit(self, text: str, phrases: list[str]) -> None:
        phrase = text.strip()
        # Nothing to say in "---" or "**": drop it, and keep the first-phrase rule for later.
        if any(ch.isalnum() for ch in phrase):
            phrases.append(phrase)
            self._first = False

    def _find_cut(self, final: bool) -> _Cut | None:
        buf = self._buf
        limit = min(len(buf), self._max_chars)
        i = self._scan
        while i < limit:
            ch = buf[i]
            if ch == "\n":
                return _Cut(i, i + 1)
            if ch in _TERMINALS:
                decision, after = _sentence_end(buf, i, final, self._max_chars)
                if decision is _Decision.CUT:
                    return _Cut(after, after)
                if decision is _Decision.WAIT:
                    self._scan = i
                    return None
                i = after
                continue
            if self._first and self._word_limit_at(buf, i):
                return _Cut(i, i + 1)
            if self._first and self._prosodic_cut:
                before = self._before_phrase_opener(buf, i, final)
                if before is _Decision.CUT:
                    return _Cut(i, i + 1)
                if before is _Decision.WAIT:
                    self._scan = i
                    return None
            if self._first:
                clause = self._clause_end(buf, i, final)
                if isinstance(clause, _Cut):
                    return clause
                if clause is _Decision.WAIT:
                    self._scan = i
                    return None
            i += 1
        self._scan = i
        if len(buf) > self._max_chars:
            return _forced_cut(buf, self._max_chars)
        return None

    def _word_limit_at(self, buf: str, i: int) -> bool:
        """buf[i] is the space after the first phrase's last allowed word."""
        if not self._max_words or buf[i] != " " or i == 0 or buf[i - 1] == " ":
            return False
        return len(buf[:i].split()) >= self._max_words

    def _before_phrase_opener(self, buf: str, i: int, final: bool) -> _Decision:
        """buf[i] is a space before a word that opens a phrase, after enough words."""
        if buf[i] != " " or i == 0 or buf[i - 1] == " " or not buf[i - 1].isalnum():
            return _Decision.NO
        if len(buf[:i].split()) < self._min_words:
            return _Decision.NO
        match = re.match(r"[A-Za-z']+", buf[i + 1 :])
        if match is None:
            return _Decision.NO if (final or i + 1 < len(buf)) else _Decision.WAIT
        end = i + 1 + match.end()
        if end == len(buf) and not final:
            return _Decision.WAIT  # "th" may become "the" or "then"
        return _Decision.CUT if match.group().lower() in _PHRASE_OPENERS else _Decision.NO

    def _clause_end(self, buf: str, i: int, final: bool) -> _Cut | _Decision:
        ch = buf[i]
        if ch in ",;:" or (ch in "-\u2013" and i > 0 and buf[i - 1] == " "):
            if i + 1 == len(buf):
                # At the end of the reply the rest is one phrase anyway.
                return _Decision.NO if final else _Decision.WAIT
            if not buf[i + 1].isspace():
                return _Decision.NO  # "1,000", "10:30", "https://", "-5"
            cut = _Cut(i + 1, i + 1) if ch in ",;:" else _Cut(i, i + 1)
        elif ch == "\u2014":
            cut = _Cut(i, i + 1)
        else:
            return _Decision.NO
        if len(buf[: cut.end].split()) < self._min_words:
            return _Decision.NO
        return cut


def _sentence_end(buf: str, i: int, final: bool, max_chars: int) -> tuple[_Decision, int]:
    """Whether the terminal punctuation run at buf[i] ends a sentence, and where it ends."""
    n = len(buf)
    run_end = i
    while run_end < n and buf[run_end] in _TERMINALS:
        run_end += 1
    after = run_end
    while after < n and buf[after] in _CLOSERS:
        after += 1
    if after > max_chars:
        return _Decision.NO, after  # would be over-long: left to the forced cut
    if after == n:
        return (_Decision.CUT if final else _Decision.WAIT), after
    if not buf[after].isspace():
        return _Decision.NO, after  # "3.14", "v2.0", "example.com", "a.b?c=d"
    if run_end == i + 1 and buf[i] == "." and _is_abbreviation(buf, i):
        return _Decision.NO, after
    k = after
    while k < n and buf[k].isspace():
        if buf[k] == "\n":
            return _Decision.CUT, after
        k += 1
    if k == n:
        return (_Decision.CUT if final else _Decision.WAIT), after
    if buf[k].islower():
        return _Decision.NO, after  # "... and so on", "Yahoo! is"
    return _Decision.CUT, after


def _is_abbreviation(buf: str, dot: int) -> bool:
    start = dot
    while start > 0 and not buf[start - 1].isspace():
        start -= 1
    word = buf[start : dot + 1].lstrip(_OPENERS)
    if word.lower() in _ABBREVIATIONS or _DOTTED.fullmatch(word):
        return True
    # "1. First step": a list number opening the phrase.
    return word[:-1].isdigit() and not buf[:start].strip()


def _forced_cut(buf: str, max_chars: int) -> _Cut:
    """Cut an over-long phrase within its first max_chars characters."""
    best: _Cut | None = None
    for m in _CLAUSE.finditer(buf, 0, max_chars + 1):
        cut = _Cut(m.end(), m.end()) if m.group()[0] in ",;:" else _Cut(m.start(), m.end())
        if 0 < cut.end <= max_chars:
            best = cut
    if best is not None:
        return best
    for i in range(max_chars, 0, -1):
        if buf[i].isspace():
            return _Cut(i, i + 1)
    return _Cut(max_chars, max_chars)  # one huge word, such as a long URL


_FENCE = re.compile(r"```[^\n]*")
_LINK = re.compile(r"\[([^\]\n]+)\]\([^)\s]+\)")
_HEADING = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+", re.MULTILINE)
_BULLET = re.compile(r"^[ \t]*(?:[-*+•]|>+)[ \t]+", re.MULTILINE)
_MARKUP = re.compile(r"\*\*|__|~~|[*`]")


def speakable(text: str) -> str:
    """Text with the markdown and emoji that should not be read aloud removed."""
    text = _FENCE.sub(" ", text)
    text = _LINK.sub(r"\1", text)
    text = _HEADING.sub("", text)
    text = _BULLET.sub("", text)
    text = _MARKUP.sub("", text)
    text = "".join(ch for ch in text if not _is_pictograph(ch))
    return " ".join(text.split())


def _is_pictograph(ch: str) -> bool:
    # Emoji, dingbats, arrows and their joiners; Latin-1 symbols such as "°" stay.
    if ch in "\u200d\ufe0f":
        return True
    return ord(ch) >= 0x2190 and unicodedata.category(ch) in ("So", "Sk")
