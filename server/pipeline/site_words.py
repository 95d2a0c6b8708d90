"""The words of site questions and facts: folded, stop words dropped, stemmed (Snowball
English), and expanded with a small list of venue synonyms, as the knowledge index holds them
and a question is matched against it (knowledge.py). Pure code, no I/O.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Any

import Stemmer

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
def generic_terms() -> frozenset[str]:
    """The stems of everyday verbs that name no topic (GENERIC_WORDS)."""
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
