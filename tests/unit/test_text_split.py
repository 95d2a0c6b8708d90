import random
from typing import Any

import pytest

from server.pipeline.text_split import PhraseSplitter, speakable


def whole(text: str, **kwargs: Any) -> list[str]:
    splitter = PhraseSplitter(**kwargs)
    return splitter.feed(text) + splitter.flush()


def by_chunks(text: str, sizes: list[int], **kwargs: Any) -> list[str]:
    splitter = PhraseSplitter(**kwargs)
    phrases: list[str] = []
    pos = 0
    for size in sizes:
        phrases += splitter.feed(text[pos : pos + size])
        pos += size
    phrases += splitter.feed(text[pos:])
    return phrases + splitter.flush()


def by_chars(text: str, **kwargs: Any) -> list[str]:
    return by_chunks(text, [1] * len(text), **kwargs)


def alnum(texts: list[str]) -> str:
    return "".join(ch for t in texts for ch in t if ch.isalnum())


# --- sentence ends -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "phrases"),
    [
        ("Hello. How are you?", ["Hello.", "How are you?"]),
        ("Great! Let's go. Ready?", ["Great!", "Let's go.", "Ready?"]),
        ("Really?! Yes.", ["Really?!", "Yes."]),
        ("Wait\u2026 What?", ["Wait\u2026", "What?"]),
        ("Line one\nLine two", ["Line one", "Line two"]),
        ("One.\n\n\nTwo.", ["One.", "Two."]),
        ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
        ("(That was it.) Next one.", ["(That was it.)", "Next one."]),
        ("**Done.** Next.", ["**Done.**", "Next."]),
        ("No punctuation at all", ["No punctuation at all"]),
    ],
)
def test_sentence_ends(text: str, phrases: list[str]) -> None:
    assert whole(text) == phrases
    assert by_chars(text) == phrases


@pytest.mark.parametrize(
    "sentence",
    [
        "Pi is about 3.14 and e is 2.718 today.",
        "It costs 1,000 dollars or 2,500.50 euros now.",
        "Version v2.0 beat v1.9.3 easily here.",
        "Dr. Who met Mr. Smith and Mrs. Jones at St. Paul's Cathedral.",
        "Bring fruit, e.g. apples, i.e. the red ones, etc. to the party.",
        "We meet at 9 a.m. and leave at 5 p.m. every day.",
        "The U.S. and the U.K. signed it in Washington.",
        "Lions vs. tigers is an old debate.",
        "J. R. R. Tolkien and J.K. Rowling wrote books.",
        "Go to https://example.com/a.b?c=d for details.",
        "Visit example.org or write to bob@mail.example.com with questions.",
        "I was thinking... maybe we should wait.",
        "Well\u2026 it depends on the weather.",
        "Yahoo! is a company and so is Google.",
        "What? no way, that is wrong.",
        'She asked "why?" and walked away.',
        "It is 10:30 now and the ratio is 3:2 here.",
    ],
)
def test_no_cut_inside_numbers_abbreviations_urls(sentence: str) -> None:
    # Later phrases only end at sentence ends, so each sentence must come out whole.
    text = "Okay. " + sentence + " The end."
    assert whole(text) == ["Okay.", sentence, "The end."]
    assert by_chars(text) == ["Okay.", sentence, "The end."]


def test_url_or_number_at_sentence_end_still_cuts() -> None:
    text = "Okay. See example.com. Pi is 3.14. Then stop."
    assert whole(text) == ["Okay.", "See example.com.", "Pi is 3.14.", "Then stop."]


def test_numbered_list() -> None:
    text = "Steps:\n1. Open the app.\n2. Click Save.\n10. Close it."
    assert whole(text) == ["Steps:", "1. Open the app.", "2. Click Save.", "10. Close it."]


def test_waits_for_the_character_after_a_dot() -> None:
    splitter = PhraseSplitter()
    assert splitter.feed("Okay. It is 3.") == ["Okay."]
    assert splitter.feed("14 exactly") == []
    assert splitter.feed(". ") == []  # the next word could still be lower-case
    assert splitter.feed("N") == ["It is 3.14 exactly."]
    assert splitter.flush() == ["N"]


def test_abbreviation_waits_too() -> None:
    splitter = PhraseSplitter()
    assert splitter.feed("Okay. Ask Dr") == ["Okay."]
    assert splitter.feed(".") == []
    assert splitter.feed(" Smith. ") == []
    assert splitter.feed("He") == ["Ask Dr. Smith."]


# --- the first phrase ----------------------------------------------------------------------


def test_first_phrase_may_end_at_a_clause() -> None:
    text = "Sure thing, my friend, here is the answer, and it is long. More, and more, text."
    assert whole(text) == [
        "Sure thing, my friend,",
        "here is the answer, and it is long.",
        "More, and more, text.",
    ]


@pytest.mark.parametrize(
    ("text", "first"),
    [
        ("Sure! Here you go, my friend.", "Sure!"),
        ("Well, I think the answer is yes.", "Well, I think the answer is yes."),
        ("Here is the plan: first we eat.", "Here is the plan:"),
        ("It has three parts; each one is big.", "It has three parts;"),
        ("That is a hard one - let me think.", "That is a hard one"),
        ("That is a hard one\u2014let me think.", "That is a hard one"),
        (
            "About 1,000 or 2,000 people came here today.",
            "About 1,000 or 2,000 people came here today.",
        ),
        ("A well-known fact is true.", "A well-known fact is true."),
    ],
)
def test_first_phrase(text: str, first: str) -> None:
    assert whole(text)[0] == first
    assert by_chars(text)[0] == first


def test_first_phrase_min_words_is_configurable() -> None:
    assert whole("Well, I think so.", first_phrase_min_words=1) == ["Well,", "I think so."]
    text = "One two three, four five six."
    assert whole(text, first_phrase_min_words=4) == [text]


def test_first_phrase_without_letters_does_not_count() -> None:
    # A markdown rule is dropped, so the clause rule still applies to the real first phrase.
    assert whole("---\nYes of course, here it is.") == ["Yes of course,", "here it is."]


# --- long phrases --------------------------------------------------------------------------


def test_long_phrase_cut_at_clause_boundary() -> None:
    text = "Okay. Now " + "word " * 20 + "then, " + "more " * 40 + "end."
    phrases = whole(text, max_chars=200)
    assert phrases[1] == "Now " + ("word " * 20 + "then,").strip()
    assert all(len(p) <= 200 for p in phrases)
    assert by_chars(text, max_chars=200) == phrases


def test_long_phrase_cut_at_space() -> None:
    text = "Okay. Now " + "word " * 100
    phrases = whole(text, max_chars=50)
    assert phrases[0] == "Okay."
    assert all(len(p) <= 50 for p in phrases)
    assert " ".join(phrases[1:]).split() == ["Now"] + ["word"] * 100
    assert by_chars(text, max_chars=50) == phrases


def test_one_huge_word_is_cut_hard() -> None:
    text = "x" * 450
    assert whole(text, max_chars=200) == ["x" * 200, "x" * 200, "x" * 50]


# --- streaming equivalence and flush -------------------------------------------------------

SAMPLES = [
    "Sure! Dr. Smith said 3.14 is pi, e.g. in math. Visit https://example.com/a.b?c=d now.",
    "Here is a list:\n1. Eggs.\n2. Milk, 1,000 ml.\n\n**Note:** buy it at 9 a.m. today\u2026 okay?",
    'Hmm\u2026 well - I guess so. "Really?" she said. Yes! It\'s in the U.S. Or not.',
    "Write to bob@mail.example.com; he knows. Version v2.0 (beta). The end",
]

TOKENS = [
    "word", "Word", "the", "I", "Dr.", "Mr.", "e.g.", "i.e.", "U.S.", "a.m.", "etc.", "3.14",
    "1,000", "v2.0", "x.io/a.b?c=d", "bob@a.b.com", ".", ",", "!", "?", "...", "\u2026", ";", ":",
    " - ", "\u2014", "\n", "\n\n", '"', ")", "(", "**", "1.", "J.", "  ",
]  # fmt: skip


def random_text(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(0, 120)):
        parts.append(rng.choice(TOKENS))
        parts.append(rng.choice([" ", " ", " ", ""]))
    return "".join(parts)


@pytest.mark.parametrize("text", SAMPLES)
def test_char_by_char_equals_whole(text: str) -> None:
    assert by_chars(text) == whole(text)


def test_any_fragmentation_gives_the_same_phrases() -> None:
    rng = random.Random(1234)
    for _ in range(400):
        text = random_text(rng)
        options: dict[str, Any] = {
            "max_chars": rng.choice([20, 60, 200]),
            "first_phrase_min_words": rng.choice([1, 2, 3, 5]),
            "prosodic_cut": rng.choice([False, True]),
        }
        max_chars = options["max_chars"]
        expected = whole(text, **options)
        sizes = [rng.randint(1, 8) for _ in range(len(text))]
        assert by_chunks(text, sizes, **options) == expected, text
        assert by_chars(text, **options) == expected
        # Nothing spoken is lost or repeated, and no phrase is over the limit.
        assert alnum(expected) == alnum([text])
        assert all(len(p) <= max_chars for p in expected)
        assert all(p == p.strip() and p for p in expected)


def test_flush_returns_the_rest_and_resets() -> None:
    splitter = PhraseSplitter()
    assert splitter.feed("All good. The rest") == ["All good."]
    assert splitter.flush() == ["The rest"]
    assert splitter.flush() == []
    assert splitter.feed("Again. ") == []
    assert splitter.flush() == ["Again."]


def test_held_back_sentence_end_is_released_by_flush() -> None:
    splitter = PhraseSplitter()
    assert splitter.feed("Done.") == []
    assert splitter.flush() == ["Done."]


def test_empty_and_whitespace() -> None:
    assert whole("") == []
    assert whole("   \n\n  ") == []
    assert whole("  **  ") == []
    assert by_chars("  Hi.  ") == ["Hi."]


def test_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        PhraseSplitter(first_phrase_min_words=0)
    with pytest.raises(ValueError):
        PhraseSplitter(max_chars=1)


# --- speakable -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("**Bold** and *italic* and __under__", "Bold and italic and under"),
        ("# Heading", "Heading"),
        ("### Sub heading", "Sub heading"),
        ("- a bullet", "a bullet"),
        ("* a star bullet", "a star bullet"),
        ("> a quote", "a quote"),
        ("Run `ls -l` now", "Run ls -l now"),
        ("```python", ""),
        ("See [the docs](https://example.com/docs) here", "See the docs here"),
        ("Great job \U0001f44d\U0001f3fd!", "Great job !"),
        ("It is 25\u00b0C in C# and #1", "It is 25\u00b0C in C# and #1"),
        ("Dr. Smith paid $3.14, e.g. today.", "Dr. Smith paid $3.14, e.g. today."),
        ("  spaced   out  ", "spaced out"),
    ],
)
def test_speakable(text: str, spoken: str) -> None:
    assert speakable(text) == spoken


def test_first_phrase_max_words_cuts_a_long_first_sentence_at_a_space() -> None:
    text = "The birch canoe slid on the smooth planks of the old dock. It was calm."
    whole = PhraseSplitter(first_phrase_max_words=4)
    phrases = whole.feed(text) + whole.flush()
    assert phrases == [
        "The birch canoe slid",
        "on the smooth planks of the old dock.",
        "It was calm.",
    ]
    by_char = PhraseSplitter(first_phrase_max_words=4)
    pieces = [p for ch in text for p in by_char.feed(ch)] + by_char.flush()
    assert pieces == phrases
    # A clause boundary before the limit still wins; later phrases are whole sentences.
    early = PhraseSplitter(first_phrase_max_words=6)
    assert early.feed("Well, in that case, we open at nine tomorrow morning. ") + early.flush() == [
        "Well, in that case,",
        "we open at nine tomorrow morning.",
    ]


@pytest.mark.parametrize(
    ("text", "first"),
    [
        ("Turned on the kitchen light.", "Turned on"),
        ("Paris is the capital of France.", "Paris is"),
        ("Glue the sheet to the dark blue background.", "Glue the sheet"),
        ("The kitchen lights are on.", "The kitchen lights are"),  # no opener: the word limit
        ("Then there was one.", "Then there was one."),  # "Then" is not "the"
        ("Sure, the lights are on.", "Sure, the lights are"),  # "Sure," alone is too short
    ],
)
def test_prosodic_cut_ends_the_first_phrase_before_a_phrase_opener(text: str, first: str) -> None:
    options: dict[str, Any] = {
        "first_phrase_min_words": 2,
        "first_phrase_max_words": 4,
        "prosodic_cut": True,
    }
    phrases = whole(text, **options)
    assert phrases[0] == first
    assert by_chars(text, **options) == phrases
    assert alnum(phrases) == alnum([text])
