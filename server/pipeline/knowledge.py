"""Site knowledge: a persona's facts (Markdown or TOML), indexed once, searched every turn.

A knowledge file holds a venue's own facts: opening hours, where things are, Wi-Fi, parking,
contact, FAQs. It is cut into passages (one per section, one per FAQ: passages.py) and
indexed with BM25 (`bm25s`, on the words' Snowball English stems: site_words.py) when the
persona loads. Each turn, `search` ranks
the passages against the user's words in well under a millisecond for a venue-sized file
(docs/performance.md) and says how much of the question the best passage covers, which is what
decides between answering from the facts and saying honestly that the facts do not say.

Lexical retrieval misses paraphrases ("restroom" for "toilets"), so the question's words are
expanded with a small list of venue synonyms before matching; with a sentence encoder
(embedding.py), a word also matches a fact word of close meaning, and a passage that holds
only part of the question must also mean much the same as it (`KnowledgeBase.covers`). With
the encoder a search costs about 15 ms of CPU (embedding the question), without it well under
one. The answer is then the passage's own lines that answer the question (extraction.py).
Pure code: no I/O after loading, no asyncio.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bm25s
import numpy as np

from server.pipeline.answer_types import expected_type
from server.pipeline.extraction import contact_line, extract_answer
from server.pipeline.passages import (
    KnowledgeFileError,
    Passage,
    parse_markdown,
    parse_toml,
)
from server.pipeline.site_words import expand, fact_terms, generic_terms, terms, words

if TYPE_CHECKING:
    from server.pipeline.embedding import SentenceEncoder, Vector

log = logging.getLogger(__name__)

# bm25s sets its own logger to DEBUG; its progress lines are not ours to print.
logging.getLogger("bm25s").setLevel(logging.WARNING)

# What callers import from here: the files' passages and the words come from passages.py and
# site_words.py, extractive answers from extraction.py.
__all__ = [
    "ANSWER_COVERAGE_WEIGHT",
    "ANSWER_THRESHOLD",
    "RANK_BM25",
    "RANK_COVERAGE",
    "RANK_TITLE",
    "WORD_MATCH",
    "Hit",
    "KnowledgeBase",
    "KnowledgeFileError",
    "Passage",
    "Search",
    "answer_score",
    "extract_answer",
    "fused_score",
    "load_knowledge",
    "parse_markdown",
    "parse_toml",
    "words",
]


@dataclass(frozen=True)
class Hit:
    passage: Passage
    score: float  # BM25
    coverage: float  # share of the question's content terms (or synonyms) in the passage
    similarity: float = 0.0  # best cosine of the question and one of its units (embeddings)
    title: float = 0.0  # share of the question's counted terms its title names (or synonyms)


@dataclass(frozen=True)
class Search:
    question_terms: tuple[str, ...]
    hits: tuple[Hit, ...]  # best first, only passages that share a term with the question
    elapsed_ms: float
    # Each question term's word vectors (with embeddings), for choosing what to extract.
    term_vectors: dict[str, Vector] = field(default_factory=dict, repr=False, compare=False)
    # The question's sentence vector (with embeddings).
    sentence: Vector | None = field(default=None, repr=False, compare=False)

    @property
    def best(self) -> Hit | None:
        return self.hits[0] if self.hits else None


def _passage_terms(passage: Passage) -> list[str]:
    # The title counts twice: it names the topic.
    text = f"{passage.title} {passage.title} {' '.join(passage.keywords)} {passage.text}"
    return fact_terms(text)


# With embeddings (all-MiniLM-L6-v2; docs/performance.md, "Site knowledge"):
# - a question word matches a fact word it does not share when their contextual vectors are
#   this close (cosine): "toddlers" and "children", "shut" and "closed" (chosen on the tuned
#   set and the first held-out set);
WORD_MATCH = 0.65
# - the best passage answers the question when one score clears a threshold: how nearly its
#   best line means what the whole question asks (sentence cosine) plus a weight times how far
#   the share of the question's words it holds is above the persona's min_coverage. One line
#   through (similarity, coverage) space, chosen leave-one-venue-out on three venues: the
#   weight and threshold that scored best on any two venues scored as well on the third
#   (docs/performance.md, "Site knowledge"); the threshold is the middle of the plateau
#   (0.49 to 0.53) where all three score the same. With min_coverage 0.6: similarity + 0.6 x
#   coverage >= 0.87 ("My lad's twelve, what's it cost for him to have a swim?" against
#   "Junior swim (under 16) £3.10": half the words held, cosine 0.71: answered; "Can I borrow
#   a badminton racket in the sports hall?" against "Sports hall: badminton, basketball...":
#   60 %, cosine 0.49: not). A passage holding all the question's words answers it whatever
#   the cosine (`covers`).
ANSWER_COVERAGE_WEIGHT = 0.6
ANSWER_THRESHOLD = 0.51


# Ranking with embeddings: the passage whose best line means most nearly what the question asks,
# helped by the share of the question's words it holds and by BM25 (scaled to the question's
# best). Weights from a flat optimum on three venues (docs/performance.md, "Site knowledge"):
# any of 0.1-0.3 and 0.05-0.1 ranks the same passages first on all three.
RANK_COVERAGE = 0.2
RANK_BM25 = 0.05
RANK_TITLE = 0.1


def answer_score(hit: Hit, min_coverage: float) -> float:
    """How surely a hit answers its question (with embeddings; see ANSWER_THRESHOLD)."""
    return hit.similarity + ANSWER_COVERAGE_WEIGHT * (hit.coverage - min_coverage)


def fused_score(hit: Hit, best_bm25: float) -> float:
    bm25 = hit.score / best_bm25 if best_bm25 > 0 else 0.0
    return hit.similarity + RANK_COVERAGE * hit.coverage + RANK_BM25 * bm25 + RANK_TITLE * hit.title


@dataclass(frozen=True)
class _PassageVectors:
    """A passage's words as vectors (title and units), and each unit's sentence vector."""

    title: Vector  # (words, dims)
    units: tuple[Vector, ...]  # each unit's own words, without the title
    sentences: Vector  # (units, dims): "title: unit" as one sentence
    everything: Vector  # title and unit words together


@dataclass
class KnowledgeBase:
    """A persona's facts, indexed once; `search` is pure and thread-safe after loading.

    With a sentence encoder (server/pipeline/embedding.py) a question word also matches a fact
    word of the same meaning, not only one of the same stem or a listed synonym."""

    name: str
    passages: list[Passage]
    source: str = ""
    ask: str | None = None  # where to ask what the facts do not say
    encoder: SentenceEncoder | None = field(default=None, repr=False)
    _index: Any = field(init=False, repr=False)
    _terms: list[frozenset[str]] = field(init=False, repr=False)
    _titles: list[frozenset[str]] = field(init=False, repr=False)
    _vectors: list[_PassageVectors] = field(init=False, repr=False)
    _prepared: threading.Lock = field(init=False, repr=False)
    vocabulary: frozenset[str] = field(init=False, repr=False)
    load_ms: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        if not self.passages:
            raise KnowledgeFileError(f"{self.source or self.name}: no passages")
        corpus = [_passage_terms(p) for p in self.passages]
        self._terms = [frozenset(t) for t in corpus]
        self._titles = [
            frozenset(terms(p.title)) if p.kind == "fact" else frozenset() for p in self.passages
        ]
        self.vocabulary = frozenset().union(*self._terms)
        self._index = bm25s.BM25()
        # An empty passage would break the index; it still gets a placeholder term.
        self._index.index([t or ["_"] for t in corpus], show_progress=False)
        if self.ask is None:
            self.ask = contact_line(self.passages)
        self._vectors = []
        self._prepared = threading.Lock()

    def prepare(self) -> None:
        """Embed the passages (once; thread-safe). Done on the first search, in the worker
        thread that runs it, so a server starts as fast as without embeddings; call it at
        start-up to pay the cost then. A model that fails to load leaves word matching."""
        if self.encoder is None or self._vectors:
            return
        with self._prepared:
            if self.encoder is None or self._vectors:
                return
            began = time.perf_counter()
            try:
                self._vectors = [_passage_vectors(self.encoder, p) for p in self.passages]
            except Exception as exc:  # the weights unreadable: answer with words alone
                log.warning("sentence embeddings off for %s: %s", self.source or self.name, exc)
                self.encoder = None
            self.load_ms = (time.perf_counter() - began) * 1000

    def search(self, question: str, k: int = 3) -> Search:
        self.prepare()
        began = time.perf_counter()
        asked = terms(question)
        unique = list(dict.fromkeys(asked))
        hits: list[Hit] = []
        vectors: dict[str, Vector] = {}
        sentence: Vector | None = None
        if unique:
            expanded = sorted({s for t in unique for s in expand(t)})
            scores = self._index.get_scores(expanded)
            generic = generic_terms()
            if self.encoder is not None:
                sentence, vectors = _question_vectors(self.encoder, question, unique)
            for i, score in enumerate(scores):
                matched = [t for t in unique if self._matches(t, i, vectors)]
                # With embeddings every passage is a candidate: one can answer in other words
                # ("childcare" for "crèche").
                if score <= 0 and not matched and sentence is None:
                    continue
                # An everyday verb names no topic: not a miss.
                counted = [t for t in unique if t in matched or t not in generic]
                # A question of everyday verbs alone ("Is he allowed up there?") names no topic.
                coverage = len(matched) / len(counted) if counted else 0.0
                titled = (
                    sum(1 for t in counted if expand(t) & self._titles[i]) / len(counted)
                    if counted
                    else 0.0
                )
                similarity = 0.0
                if sentence is not None:
                    similarity = float((self._vectors[i].sentences @ sentence).max())
                hits.append(Hit(self.passages[i], float(score), coverage, similarity, titled))
            if sentence is not None:
                top = max((h.score for h in hits), default=0.0)
                hits.sort(key=lambda h: -fused_score(h, top))
            else:
                # Most of the question covered first; then a question word naming the
                # passage's topic (its title); then BM25.
                hits.sort(key=lambda h: (-h.coverage, -self._title_matches(h, unique), -h.score))
            del hits[k:]
        elapsed = (time.perf_counter() - began) * 1000
        return Search(tuple(unique), tuple(hits), elapsed, vectors, sentence)

    def search_turn(self, text: str, min_coverage: float, k: int = 3) -> Search:
        """`search` for a spoken turn that may say more than its question ("My mum can't
        manage steps. Is there an elevator?", or run on with a comma as speech is transcribed:
        "We're on the second floor, is there an elevator?"): the turn as a whole, and its
        last question alone; whichever is answered more surely. A turn of one question is
        searched once."""
        whole = self.search(text, k)
        if self.encoder is None:
            return whole
        best = whole
        for question in _asked_parts(text):
            alone = self.search(question, k)
            if alone.best is None or not alone.question_terms:
                continue
            if best.best is None or answer_score(alone.best, min_coverage) > answer_score(
                best.best, min_coverage
            ):
                best = alone
        return best

    def covers(self, hit: Hit, min_coverage: float) -> bool:
        """Whether `hit` answers the question it was found for."""
        if self.encoder is None:
            return hit.coverage >= min_coverage
        # A passage that holds every word of the question answers it, however loosely its
        # lines read as the question ("where's the loo?": the encoder does not know "loo").
        return hit.coverage >= 1.0 or answer_score(hit, min_coverage) >= ANSWER_THRESHOLD

    def _matches(self, term: str, index: int, vectors: dict[str, Vector]) -> bool:
        if expand(term) & self._terms[index]:
            return True
        found = vectors.get(term)
        return found is not None and _close(found, self._vectors[index].everything)

    def _title_matches(self, hit: Hit, asked: Sequence[str]) -> int:
        title = set(terms(hit.passage.title))
        return sum(1 for t in asked if expand(t) & title)

    def extract(self, question: str, search: Search, passage: Passage) -> str | None:
        """The passage's own words that answer the question (see `extract_answer`), matching
        words by meaning too when the search had embeddings; None when the question asks for
        a kind of value (a price, a time...) that no line of the passage states."""
        expect = expected_type(question)
        if search.sentence is None or not self._vectors or passage not in self.passages:
            return extract_answer(question, passage, expect=expect)
        vectors = self._vectors[self.passages.index(passage)]

        def in_title(term: str) -> bool:
            found = search.term_vectors.get(term)
            return found is not None and _close(found, vectors.title)

        def in_unit(term: str, unit: int) -> bool:
            found = search.term_vectors.get(term)
            return found is not None and _close(found, vectors.units[unit])

        return extract_answer(
            question,
            passage,
            in_title=in_title,
            in_unit=in_unit,
            expect=expect,
        )

    def known(self, term: str) -> bool:
        return bool(expand(term) & self.vocabulary)


# Per encoder (weakly held: a test's throwaway encoder takes its vectors with it).
_vector_cache: weakref.WeakKeyDictionary[SentenceEncoder, dict[Passage, _PassageVectors]] = (
    weakref.WeakKeyDictionary()
)
_VECTOR_CACHE_SIZE = 4096  # passages per encoder; a venue has tens


def _passage_vectors(encoder: SentenceEncoder, passage: Passage) -> _PassageVectors:
    """A passage embedded once per process: the same file loaded again (every persona load,
    every test) costs nothing."""
    cache = _vector_cache.setdefault(encoder, {})
    cached = cache.get(passage)
    if cached is not None:
        return cached
    title = encoder.encode_words(passage.title)[2]
    units: list[Vector] = []
    sentences: list[Vector] = []
    for unit in _answer_units(passage):
        sentence, _, unit_words = encoder.encode_words(f"{passage.title}: {unit}")
        # The unit's own words: those after the title's in the sentence.
        units.append(unit_words[len(title) :])
        sentences.append(sentence)
    vectors = _PassageVectors(
        title, tuple(units), np.stack(sentences), np.concatenate([title, *units])
    )
    if len(cache) >= _VECTOR_CACHE_SIZE:
        cache.clear()
    cache[passage] = vectors
    return vectors


# A clause that asks: what a run-on spoken turn's question starts with.
_ASKING_CLAUSE = re.compile(
    r"^(?:is|are|was|were|do|does|did|can|could|will|would|should|may|might|have|has|"
    r"what|what's|where|where's|when|which|who|how|any)\b",
    re.IGNORECASE,
)


def _asked_parts(text: str) -> list[str]:
    """The parts of a turn that may be its question said alone: its last question, when the
    turn has more sentences, and that question's last clause after a comma, when it asks."""
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]
    asked = [s for s in sentences if s.endswith("?")]
    if not asked:
        return []
    parts = [asked[-1]] if len(sentences) > 1 else []
    clauses = [c for c in re.split(r",\s+", asked[-1]) if c]
    if len(clauses) > 1 and _ASKING_CLAUSE.match(clauses[-1]):
        parts.append(clauses[-1])
    return parts


def _answer_units(passage: Passage) -> list[str]:
    """What an answer is made of: an FAQ's whole answer, else the passage's units."""
    if passage.kind == "faq":
        return [passage.text.strip()]
    return passage.units() or [passage.render()]


def _question_vectors(
    encoder: SentenceEncoder, question: str, asked: Sequence[str]
) -> tuple[Vector, dict[str, Vector]]:
    """The question's sentence vector and, for each of its terms, the vectors of the words
    that make it (a term the tokeniser splits differently, like "wi-fi", gets none)."""
    sentence, found, matrix = encoder.encode_words(question)
    rows: dict[str, list[int]] = {}
    for row, word in enumerate(found):
        stems = terms(word)
        if len(stems) == 1 and stems[0] in asked:
            rows.setdefault(stems[0], []).append(row)
    return sentence, {term: matrix[r] for term, r in rows.items()}


def _close(question_words: Vector, fact_words: Vector) -> bool:
    if not len(fact_words):
        return False
    return bool((question_words @ fact_words.T).max() >= WORD_MATCH)


# --- loading --------------------------------------------------------------------------------


def load_knowledge(
    path: Path, name: str | None = None, encoder: SentenceEncoder | None = None
) -> KnowledgeBase:
    """A knowledge file (.md, .markdown, .toml) or a folder of them, sorted by name; with an
    encoder, its passages are embedded too."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in {".md", ".markdown", ".toml"})
        if not files:
            raise KnowledgeFileError(f"{path}: no .md or .toml knowledge files")
    elif path.is_file():
        files = [path]
    else:
        raise KnowledgeFileError(f"knowledge file {path} not found")
    passages: list[Passage] = []
    title: str | None = None
    ask: str | None = None
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise KnowledgeFileError(f"{file}: {exc}") from exc
        if file.suffix == ".toml":
            file_title, file_ask, found = parse_toml(text, str(file))
        else:
            file_title, found = parse_markdown(text)
            file_ask = None
        title = title or file_title
        ask = ask or file_ask
        passages.extend(found)
    return KnowledgeBase(name or title or path.stem, passages, str(path), ask, encoder)
