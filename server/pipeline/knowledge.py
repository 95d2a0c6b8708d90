"""Site knowledge: a persona's facts (Markdown or TOML), indexed once, searched every turn.

A knowledge file holds a venue's own facts: opening hours, where things are, Wi-Fi, parking,
contact, FAQs. It is cut into passages (one per section, one per FAQ) and indexed with BM25
(`bm25s`, with the Snowball English stemmer) when the persona loads. Each turn, `search` ranks
the passages against the user's words in well under a millisecond for a venue-sized file
(docs/performance.md) and says how much of the question the best passage covers, which is what
decides between answering from the facts and saying honestly that the facts do not say.

Lexical retrieval misses paraphrases ("restroom" for "toilets"), so the question's words are
expanded with a small list of venue synonyms before matching; with a sentence encoder
(embedding.py), a word also matches a fact word of close meaning, and a passage that holds
only part of the question must also mean much the same as it (`KnowledgeBase.covers`). With
the encoder a search costs about 15 ms of CPU (embedding the question), without it well under
one. Pure code: no I/O after loading, no asyncio.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import tomllib
import unicodedata
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import bm25s
import numpy as np
import Stemmer

from server.errors import ChinwagException
from server.pipeline.answer_types import ASKING_WORDS, AnswerType, expected_type, holds

if TYPE_CHECKING:
    from server.pipeline.embedding import SentenceEncoder, Vector

log = logging.getLogger(__name__)

# bm25s sets its own logger to DEBUG; its progress lines are not ours to print.
logging.getLogger("bm25s").setLevel(logging.WARNING)


class KnowledgeFileError(ChinwagException):
    """A knowledge file is missing or malformed (a deployment error, reported at start-up)."""


Kind = Literal["fact", "faq"]

# Words that carry no topic. Question words matter to the caller (honesty.py), not here.
STOPWORDS = frozenset(
    """
    a about above after again all also am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is
    it its itself just me more most my myself no nor not of off on once only or other our
    ours ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we
    were what when where which while who whom why will with would you your yours yourself
    yourselves please tell know need want like get got go going find let lets us thanks thank
    hi hello hey ok okay today tonight now may might must shall much many way one anyone
    someone something anything somewhere anywhere also still yes really actually kind sort
    excuse sorry near nearby nearest around building place venue centre center leave
    ve ll re um uh er erm hmm mm wondering wonder wondered quick quickly question moment currently
    don didn doesn isn aren wasn weren won wouldn couldn shouldn haven hasn hadn ain
    thing things stuff bit lot lots even supposed round
    """.split()  # noqa: SIM905 (a list of 150 words reads better as text)
)

# Everyday verbs and adverbs that name no topic ("grab a coffee", "bring my dog", "keep a DVD").
# Unmatched, one does not count against a passage's coverage of the question; a noun the
# passage does not hold ("a 3D printer", "e-books") still does: that is what the facts do not
# say. Matched, they count like any word.
GENERIC_WORDS = frozenset(
    """
    grab bring brought lock take took taken keep kept give gave given put use used make made come
    came see saw look looking try stay hang pick drop back bit able allowed mind fine good
    best quick easy usually normally exactly long often every also again else ever
    people person mum mom mother dad father parent parents brother sister son daughter wife
    husband partner gran granny grandma nan grandad grandpa grandparents friend friends
    """.split()  # noqa: SIM905
)

# Venue vocabulary people say in different words. Each group is one topic; a question word in
# a group also matches the group's other words. Kept short and general on purpose.
SYNONYM_GROUPS: tuple[tuple[str, ...], ...] = (
    ("toilet", "toilets", "restroom", "restrooms", "bathroom", "bathrooms", "loo", "loos", "wc",
     "lavatory", "washroom", "ladies", "gents"),
    ("lift", "lifts", "elevator", "elevators"),
    ("stairs", "staircase", "stairway", "steps"),
    ("cafe", "coffee", "canteen", "restaurant", "food", "eat", "drink", "drinks", "snack",
     "snacks", "lunch", "breakfast", "tea"),
    ("wifi", "internet", "wireless"),
    ("parking", "park", "car", "cars", "carpark", "garage"),
    ("bike", "bikes", "bicycle", "bicycles", "cycle", "cycles"),
    ("open", "opens", "opening", "close", "closes", "closing", "closed", "shut", "hours"),
    ("contact", "phone", "call", "telephone", "number", "email", "ring", "reach"),
    ("address", "located", "location", "postcode", "directions"),
    ("accessible", "accessibility", "wheelchair", "wheelchairs", "disabled", "disability",
     "step-free", "mobility"),
    ("dog", "dogs", "pet", "pets", "animal", "animals"),
    ("print", "printing", "printer", "photocopy", "photocopying", "copy", "copies", "scan"),
    ("lost", "property", "found", "left", "lose", "lost-and-found"),
    # Not "book": a library's books are not bookings (a stem cannot tell them apart).
    ("reserve", "reservation", "hire", "rent", "rental"),
    ("atm", "cashpoint", "cashmachine"),
    ("price", "prices", "cost", "costs", "fee", "fees", "charge", "charges", "expensive",
     "cheap", "pay", "paying", "free"),
    ("photo", "photos", "photograph", "photographs", "photography", "picture", "pictures",
     "pic", "pics", "camera", "cameras", "film", "filming", "video", "videos", "selfie"),
    ("bus", "buses", "train", "trains", "station", "tram", "trams", "taxi", "taxis",
     "transport"),
    ("first", "aid", "injury", "injured", "hurt", "medical"),
    ("room", "rooms", "hall", "studio"),
    ("child", "children", "kid", "kids"),
    ("borrow", "borrowing", "loan", "loans", "lend"),
    ("locker", "lockers", "lock"),
    ("saturday", "weekend", "weekends"),
    ("sunday", "weekend", "weekends"),
    ("monday", "weekday", "weekdays", "day", "days"),
    ("tuesday", "weekday", "weekdays", "day", "days"),
    ("wednesday", "weekday", "weekdays", "day", "days"),
    ("thursday", "weekday", "weekdays", "day", "days"),
    ("friday", "weekday", "weekdays", "day", "days"),
)  # fmt: skip

# One way only: a question about "any day" is answered by a fact about Thursday, but a question
# about Thursday is not answered by "20p per day"; "what time" asks about opening hours, but
# "up to 3 times" is not about them.
BROADER: dict[str, tuple[str, ...]] = {
    "day": ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday",
            "weekend", "weekday"),
    "time": ("open", "opening", "close", "closing", "hours", "start", "starts"),
}  # fmt: skip

_WORD = re.compile(r"[a-z0-9]+")
_JOINS = (
    (re.compile(r"\bwi[\s-]?fi\b"), "wifi"),
    (re.compile(r"\bcar[\s-]park\b"), "carpark"),
    (re.compile(r"\be[\s-]?mail\b"), "email"),
    (re.compile(r"\be-(book|reader|magazine)"), r"e\1"),
    (re.compile(r"\bcash[\s-]?(?:machine|point)s?\b"), "cashpoint"),
    # Spoken phrasings of a venue's everyday topics, said in the facts' words: closing time,
    # entry, an entrance, a stop (general English, not any one venue's).
    (re.compile(r"\b(?:kick|throw|chuck|turf)(?:s|ing|ed)?\s+(?:\w+\s+){0,2}?out\b"), "close"),
    (re.compile(r"\blet\s+(?:me|us|them|people|anyone|you)\s+in\b"), "entry"),
    (re.compile(r"\bway\s+in(?!to)\b"), "entrance"),
    (re.compile(r"\bway\s+out\b"), "exit"),
    (re.compile(r"\b(?:come|comes|go|goes)\s+(?:past|by)\b"), "stop"),
    (
        re.compile(r"\b(?:left|leave|leaves|leaving|forgot|forgotten)\s+(?:\w+\s+){0,3}?behind\b"),
        "lost",
    ),
    # "Charge my phone" is not a price.
    (re.compile(r"\bcharg(?:e|ing)(?=\s+(?:my|your|our|his|her|the|a|an)\b)"), "recharge"),
)
_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY_RANGE = re.compile(
    rf"\b({'|'.join(_DAYS)})s?\s*(?:to|-|\u2013|until|through|till)\s*({'|'.join(_DAYS)})s?\b"
)
# A price in the facts ("£15 an hour", "10p a page") answers "how much does it cost".
_PRICE = re.compile(r"[£$€]\s?\d|\b\d+(?:\.\d+)?\s?p\b")
# A street address or a postcode in the facts answers "what's your address?" without the word.
_ADDRESS = re.compile(
    r"\b\d+[a-z]?\s+(?:[A-Z][\w']+\s+){1,3}(?:Street|St|Road|Rd|Lane|Avenue|Ave|Way|Square|"
    r"Place|Row|Hill|Quay|Close|Drive|Terrace|Walk|Yard|Gardens|Parade|Crescent|Green)\b|"
    r"\b[A-Z]{1,2}\d[A-Z\d]?\s\d[A-Z]{2}\b"
)


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    return Stemmer.Stemmer("english")


def _fold(text: str) -> str:
    """Lower case without accents ("Café" -> "cafe"), common compounds joined."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    folded = "".join(c for c in decomposed if not unicodedata.combining(c))
    for pattern, joined in _JOINS:
        folded = pattern.sub(joined, folded)
    return folded


def words(text: str) -> list[str]:
    """Content words of a text, folded, before stemming."""
    return [w for w in _WORD.findall(_fold(text)) if len(w) > 1 and w not in STOPWORDS]


def terms(text: str) -> list[str]:
    """Stemmed content words: what the index holds."""
    return [_singular(t) for t in _stemmer().stemWords(words(text))]


def _singular(stem: str) -> str:
    # Snowball keeps the plural of short or unusual words ("dvds", "cds"): one form for both.
    if len(stem) > 3 and stem.endswith("s") and not stem.endswith(("ss", "us", "is")):
        return stem[:-1]
    return stem


def fact_terms(text: str) -> list[str]:
    """A fact's terms, with what it says without naming it: the days inside a range ("Monday
    to Friday" holds Thursday), "price" when it states one, "address" when it gives one."""
    found = terms(text)
    folded = _fold(text)
    for first, last in _DAY_RANGE.findall(folded):
        start, end = _DAYS.index(first), _DAYS.index(last)
        span = _DAYS[start : end + 1] if start <= end else _DAYS[start:] + _DAYS[: end + 1]
        found.extend(terms(" ".join(span)))
    if _PRICE.search(folded):
        found.extend(terms("price"))
    if _ADDRESS.search(text):
        found.extend(terms("address"))
    return found


@lru_cache(maxsize=1)
def _generic() -> frozenset[str]:
    return frozenset(terms(" ".join(sorted(GENERIC_WORDS))))


@lru_cache(maxsize=1)
def _synonyms() -> dict[str, frozenset[str]]:
    table: dict[str, set[str]] = {}

    def stem(word: str) -> str:
        return _singular(_stemmer().stemWord(word))

    for group in SYNONYM_GROUPS:
        stems = {stem(w) for word in group for w in _WORD.findall(_fold(word))}
        for s in stems:
            table.setdefault(s, set()).update(stems)
    for broad, narrower in BROADER.items():
        table.setdefault(stem(broad), {stem(broad)}).update(stem(w) for w in narrower)
    return {k: frozenset(v) for k, v in table.items()}


def expand(term: str) -> frozenset[str]:
    """A stemmed term and its venue synonyms."""
    return _synonyms().get(term, frozenset((term,)))


@dataclass(frozen=True)
class Passage:
    """One section, FAQ entry or fact of a knowledge file."""

    title: str
    text: str
    kind: Kind = "fact"
    keywords: tuple[str, ...] = ()

    def render(self) -> str:
        """How the passage is shown to the model."""
        if self.kind == "faq":
            return f"Q: {self.title}\nA: {self.text}"
        return f"{self.title}: {self.text}" if self.title else self.text

    def units(self) -> list[str]:
        """The passage cut into sentences and list items, for extractive answers."""
        out: list[str] = []
        for line in self.text.splitlines():
            line = line.strip().lstrip("-*• ").strip()
            if not line:
                continue
            out.extend(s.strip() for s in re.split(r"(?<=[.!?])\s+(?=[A-Z0-9])", line) if s)
        return out


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
            self.ask = _contact_line(self.passages)
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
            generic = _generic()
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


def _contact_line(passages: Sequence[Passage]) -> str | None:
    for passage in passages:
        if passage.kind == "fact" and _CONTACT_TITLES.search(passage.title):
            return " ".join(_sentence(u) for u in passage.units()[:2]) or None
    return None


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


def parse_markdown(text: str) -> tuple[str | None, list[Passage]]:
    """`#` names the venue; each `##` section is a passage, and each `###` under it one more
    (a question heading makes an FAQ entry). HTML comments are left out."""
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    title: str | None = None
    passages: list[Passage] = []
    section: str | None = None
    heading: str | None = None
    body: list[str] = []

    def close() -> None:
        content = "\n".join(body).strip()
        if heading is not None and content:
            is_faq = heading.endswith("?")
            passages.append(Passage(heading, content, "faq" if is_faq else "fact"))
        body.clear()

    for line in text.splitlines():
        match = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if match is None:
            if heading is not None or section is not None:
                body.append(line)
            continue
        level, name = len(match.group(1)), match.group(2).strip()
        close()
        if level == 1:
            title, section, heading = name, None, None
        elif level == 2:
            section, heading = name, name
        else:
            heading = name if name.endswith("?") or section is None else f"{section}, {name}"
    close()
    return title, passages


def parse_toml(text: str, source: str) -> tuple[str | None, str | None, list[Passage]]:
    """`name` and `ask` at the top (or under [venue]); `[[facts]]` with title, text and
    optional keywords; `[[faq]]` with question and answer; any other table of strings becomes
    one passage per table (key: value lines)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise KnowledgeFileError(f"{source}: {exc}") from exc
    venue = data.get("venue", {}) if isinstance(data.get("venue"), dict) else {}
    title = _str(data.get("name") or venue.get("name"))
    ask = _str(data.get("ask") or venue.get("ask"))
    passages: list[Passage] = []
    for entry in _tables(data.get("facts", []), source, "facts"):
        passages.append(
            Passage(
                _required(entry, "title", source),
                _required(entry, "text", source),
                "fact",
                tuple(str(k) for k in entry.get("keywords", [])),
            )
        )
    for entry in _tables(data.get("faq", []), source, "faq"):
        passages.append(
            Passage(
                _required(entry, "question", source),
                _required(entry, "answer", source),
                "faq",
                tuple(str(k) for k in entry.get("keywords", [])),
            )
        )
    for key, value in data.items():
        if key in {"facts", "faq"} or not isinstance(value, dict):
            continue
        lines = [f"{k.replace('_', ' ')}: {v}" for k, v in value.items() if isinstance(v, str)]
        if key == "venue":
            lines = [
                line for line in lines if not line.startswith(("name:", "ask:"))
            ]  # fmt: skip
        if lines:
            passages.append(Passage(key.replace("_", " ").capitalize(), "\n".join(lines)))
    return title, ask, passages


def _str(value: object) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _tables(value: object, source: str, key: str) -> Iterable[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise KnowledgeFileError(f"{source}: [[{key}]] must be an array of tables")
    return value


def _required(entry: dict[str, Any], key: str, source: str) -> str:
    value = _str(entry.get(key))
    if value is None:
        raise KnowledgeFileError(f"{source}: every entry needs a non-empty {key!r}")
    return value
