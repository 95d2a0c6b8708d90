"""What kind of answer a question asks for, and whether a fact holds one.

"How much does it cost to hire the Riverside Room?" asks for a price; a fact that names the
room and says it can be hired ("available to hire by the hour") shares every topic word with the
question and means much the same, yet does not answer it. Neither word matching nor sentence
similarity sees that (docs/performance.md, "Site knowledge"); the question's form does: a
price, a time, a duration, a count, a measure of one dimension, a web address, a phone number.
When the question asks for one of these and the lines chosen to answer it hold none, the
honest answer is "I don't know" (the classic answer-type check of question answering).

The patterns are about English question forms and value formats, not about any venue: they hold
for a library, a leisure centre or an office alike. A question of no recognised form (most
yes/no and "where" questions) has no expected type, and nothing is checked. Pure functions.
"""

from __future__ import annotations

import re
from enum import Enum


class AnswerType(Enum):
    PRICE = "price"
    TIME = "time"
    DURATION = "duration"
    COUNT = "count"
    DEPTH = "depth"
    WIDTH = "width"
    HEIGHT = "height"
    DISTANCE = "distance"
    TEMPERATURE = "temperature"
    WEBSITE = "website"
    PHONE = "phone"
    EMAIL = "email"


# Fillers a spoken question may start with before its question word.
_LEAD = r"(?:^|[.?!,;]\s*|\b(?:and|so|but|um|erm|er|uh|like|sorry|ok|okay|right|well)\s+)"
_AUX = r"(?:'s|\s+(?:is|are|was|were|do|does|did|will|would|can|could|should|shall|might|must))\b"

# In order: the first that matches names the type (a price question "how much is it" is not
# also a count).
_ASKS: tuple[tuple[AnswerType, re.Pattern[str]], ...] = (
    (AnswerType.WEBSITE, re.compile(r"\b(?:website|web\s*site|web\s+address|web\s*page|url)\b")),
    (AnswerType.EMAIL, re.compile(
        r"\be-?mail\s+address\b|\bwhat(?:'s|\s+is)\s+(?:the|your)\s+e-?mail\b"
    )),
    (AnswerType.PHONE, re.compile(r"\b(?:phone|telephone|contact)\s+number\b")),
    (AnswerType.PRICE, re.compile(
        r"\bhow\s+much\b(?!\s+(?:time|longer|further|more\s+time|notice))|\bcost(?:s|ing)?\b|"
        r"\bprices?\b|\bfees?\b|\bhow\s+expensive\b|\bwhat\s+(?:do|does)\s+\w+(?:\s+\w+)?\s+charge\b"
    )),
    (AnswerType.TEMPERATURE, re.compile(
        r"\bwhat\s+temperature\b|\bhow\s+(?:hot|warm|cold)\b"
    )),
    (AnswerType.DEPTH, re.compile(r"\bhow\s+deep\b|\bwhat\s+depth\b")),
    (AnswerType.WIDTH, re.compile(r"\bhow\s+wide\b|\bwhat\s+width\b")),
    (AnswerType.HEIGHT, re.compile(r"\bhow\s+(?:tall|high)\b|\bwhat\s+height\b")),
    # "How far ahead do we book?" asks how long before, not how far away.
    (AnswerType.DURATION, re.compile(
        r"\bhow\s+(?:far|long)\s+(?:ahead|in\s+advance|beforehand|before)\b|"
        r"\bhow\s+much\s+notice\b"
    )),
    (AnswerType.DISTANCE, re.compile(r"\bhow\s+far\b")),
    (AnswerType.DURATION, re.compile(
        r"\bhow\s+long\b|\bfor\s+how\s+many\s+(?:days|weeks|hours|minutes|months)\b"
    )),
    (AnswerType.COUNT, re.compile(r"\bhow\s+many\b")),
    (AnswerType.TIME, re.compile(
        _LEAD + r"(?:what\s+time|when" + _AUX + r"|how\s+(?:late|early)|until\s+when|"
        r"what\s+(?:are|is)\s+(?:the\s+|your\s+)?(?:opening\s+)?(?:hours|times))"
    )),
)  # fmt: skip

_NUMBER_WORDS = (
    r"one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|thirty|"
    r"forty|fifty|hundred|a\s+dozen|half|a\s+couple"
)
_NUMBER = rf"(?:\d|\b(?:{_NUMBER_WORDS})\b)"
# Not "may": far more often "you may bring..." than the month.
_MONTHS = r"january|february|march|april|june|july|august|september|october|november|december"
_DAYS = r"monday|tuesday|wednesday|thursday|friday|saturday|sunday|weekdays?|weekends?"

# What a fact must hold to answer a question of each type.
_HOLDS: dict[AnswerType, re.Pattern[str]] = {
    AnswerType.PRICE: re.compile(
        r"[£$€]\s?\d|\b\d+(?:\.\d+)?\s?(?:p|pence|pounds?|dollars?|euros?|cents?)\b|"
        r"\bfree\b|\bno\s+charge\b|\bcosts?\s+nothing\b"
    ),
    AnswerType.TIME: re.compile(
        r"\b\d{1,2}(?:[.:]\d{2})?\s?(?:am|pm|a\.m\.|p\.m\.)|\b\d{1,2}[.:]\d{2}\b|\b(?:noon|midday|"
        rf"midnight|closed|open|{_DAYS}|{_MONTHS}|morning|afternoon|evening|night|daily|"
        r"24\s+hours)\b"
    ),
    AnswerType.DURATION: re.compile(
        rf"{_NUMBER}[\w\s-]{{0,12}}\b(?:seconds?|minutes?|mins?|hours?|hrs?|days?|weeks?|"
        r"fortnights?|months?|years?|metres?|meters?|m|km|miles?|feet|ft|yards?)\b|"
        r"\b(?:a|an)\s+(?:minute|hour|day|week|fortnight|month|year)\b|\b(?:metres?|meters?)\s+long\b"
    ),
    AnswerType.COUNT: re.compile(_NUMBER + r"|\b(?:no|none|unlimited|any\s+number)\b"),
    AnswerType.DEPTH: re.compile(r"\b(?:deep|depth)"),
    AnswerType.WIDTH: re.compile(r"\b(?:wide|wider|widest|width)\b"),
    AnswerType.HEIGHT: re.compile(r"\b(?:tall|high|height)"),
    AnswerType.DISTANCE: re.compile(
        rf"{_NUMBER}[\w\s-]{{0,12}}\b(?:minutes?|mins?|metres?|meters?|km|miles?|yards?|"
        r"steps?)\b|\b(?:next\s+door|opposite|right\s+outside|across\s+the\s+road|nearby)\b"
    ),
    AnswerType.TEMPERATURE: re.compile(r"°|\bdegrees?\b|\b\d+\s?(?:c|f)\b"),
    AnswerType.WEBSITE: re.compile(
        r"\bwww\.|https?://|\b[a-z0-9-]+\.(?:com|org|net|co\.uk|org\.uk|gov\.uk|uk|io|example)"
        r"(?:/\S*)?(?![@\w])"
    ),
    AnswerType.PHONE: re.compile(r"\+?\d[\d\s()-]{6,}\d"),
    AnswerType.EMAIL: re.compile(r"\b\S+@\S+\.\w+"),
}


# The words a question uses to ask for a kind of value ("what time... open", "how much...
# cost"): they say what kind of value, not what it is about, so they do not point at a line.
ASKING_WORDS: dict[AnswerType, tuple[str, ...]] = {
    AnswerType.PRICE: ("cost", "price", "fee", "charge", "pay", "much", "expensive"),
    AnswerType.TIME: ("time", "open", "close", "hours", "late", "early", "when"),
    AnswerType.DURATION: ("long", "keep"),
    AnswerType.COUNT: ("many", "number"),
}


def expected_type(question: str) -> AnswerType | None:
    """The kind of value the question asks for, or None (a yes/no, where or what question)."""
    text = question.lower().replace("\u2019", "'")
    for kind, pattern in _ASKS:
        if pattern.search(text):
            return kind
    return None


def holds(kind: AnswerType, text: str) -> bool:
    """Whether `text` states a value of that kind."""
    folded = text.lower().replace("\u2019", "'")
    if kind is AnswerType.WEBSITE:
        # An e-mail address names a domain, not a web page.
        folded = re.sub(r"\S+@\S+", " ", folded)
    return bool(_HOLDS[kind].search(folded))
