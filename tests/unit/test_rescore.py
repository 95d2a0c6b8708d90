"""Scoring the home's command sentences against the audio (server/intents/rescore.py): which
sentences are built, which one is taken, and the safety rules, on the demo home's recognizer
and fake scores (the real Whisper: tests/e2e/test_intents.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from server import PROJECT_ROOT
from server.engines.base import (
    Float32Audio,
    Hypothesis,
    MoreReadings,
    Reconsider,
    Rereading,
    Transcript,
)
from server.engines.fakes import FakeTranscriber
from server.intents import rescore
from server.intents.hearing import reconsidered
from server.intents.home import Home, load_home
from server.intents.recognizer import IntentRecognizer, Understanding
from server.protocol import native as proto
from tests.unit.test_asr_prompt import spoken_turn_events

DEMO = PROJECT_ROOT / "prompts" / "devices.example.toml"


@pytest.fixture(scope="module")
def home() -> Home:
    return load_home(DEMO)


@pytest.fixture(scope="module")
def recognizer(home: Home) -> IntentRecognizer:
    return IntentRecognizer(home)


@pytest.fixture(scope="module")
def strictly(recognizer: IntentRecognizer) -> Callable[[str], Understanding]:
    return lambda text: recognizer.understand(text, "kitchen", repair=False)


def scores_of(table: dict[str, float], asked: list[str] | None = None) -> rescore.Score:
    """A fake Whisper: the score of each sentence from `table` (-50 for any other)."""

    def score(texts: Sequence[str]) -> list[float]:
        if asked is not None:
            asked.extend(texts)
        return [table.get(t, -50.0) for t in texts]

    return score


def test_the_names_heard_are_the_ones_spelled_alike(home: Home) -> None:
    assert rescore.names_heard("Walk the front door.", home)[0] == ("device", "front door")
    assert rescore.names_heard("Set the thermostad to 20.", home)[0] == ("device", "thermostat")
    assert ("area", "kitchen") in rescore.names_heard("I love my new kitchen.", home)
    assert rescore.names_heard("Tell me a joke.", home) == []
    assert rescore.names_heard("", home) == []
    # A name shorter than MIN_NAME_CHARS ("fan", "tv") counts only when heard as spelled.
    assert rescore.names_heard("Taught off the fan.", home) == [("device", "fan")]
    assert rescore.names_heard("New to the TV.", home) == [("device", "tv")]
    assert rescore.names_heard("Turn off the van.", home) == []
    assert rescore.sentences("Taught off the fan.", home)


def test_candidates_are_the_domains_phrasings_with_only_the_numbers_heard(
    home: Home, strictly: Callable[[str], Understanding]
) -> None:
    texts = [c.text for c in rescore.candidates("Walk the front door.", home, strictly)]
    assert texts == ["Lock the front door.", "Unlock the front door."]
    heating = rescore.candidates("And the heating to 22 degrees.", home, strictly)
    assert [c.text for c in heating] == ["Set the heating to 22 degrees."]
    assert heating[0].understood.intent == "HassClimateSetTemperature"
    # No number heard: no sentence with a number is built.
    assert rescore.candidates("Set the thermostat to hunting degrees.", home, strictly) == []
    tv = [c.text for c in rescore.candidates("The television.", home, strictly)]
    assert "Mute the television." in tv and "Unmute the television." in tv
    assert all(any(ch.isdigit() for ch in t) is False for t in tv)


def test_the_candidate_clearly_likeliest_and_close_to_the_hearing_is_taken(
    home: Home, strictly: Callable[[str], Understanding]
) -> None:
    heard = "Walk the front door."
    table = {heard: -2.0, "Lock the front door.": -5.5, "Unlock the front door.": -11.0}
    taken = rescore.rescored(heard, home, strictly, scores_of(table))
    assert taken is not None and taken.text == "Lock the front door."
    assert taken.understood.intent == "HassTurnOn"  # Home Assistant locks with "turn on"
    assert taken.below_heard == pytest.approx(3.5) and taken.lead == pytest.approx(5.5)


@pytest.mark.parametrize(
    ("table", "why"),
    [
        ({"Lock the front door.": -8.0, "Unlock the front door.": -20.0}, "far below the hearing"),
        ({"Lock the front door.": -5.0, "Unlock the front door.": -6.0}, "not clearly ahead"),
    ],
)
def test_no_candidate_is_taken_when_the_scores_do_not_say_so(
    home: Home, strictly: Callable[[str], Understanding], table: dict[str, float], why: str
) -> None:
    heard = "Walk the front door."
    assert rescore.rescored(heard, home, strictly, scores_of({heard: -2.0, **table})) is None, why


def test_the_words_that_decide_and_the_numbers_are_never_changed() -> None:
    stand = rescore.could_stand_for
    assert stand("Walk the front door.", "Lock the front door.")
    assert not stand("I'm off the front door.", "Unlock the front door.")  # "off" heard
    assert not stand("Off the front door.", "Unlock the front door.")
    assert stand("Off the front door.", "Unlock the front door.", same_deciding_words=False)
    assert not stand("Set the heating to 22 degrees.", "Set the heating to 21 degrees.")
    assert not stand("Set the desk lamp, tidy percent.", "Turn on the desk lamp.")
    assert not stand("Set the floor lamp, right as to 60%.", "Turn on the floor lamp.")
    # More than one word of what was heard missing: another sentence, not a misheard word.
    assert not stand("And the bedroom light, the green.", "Turn on the bedroom light.")
    assert stand("And the heating to 22 degrees.", "Set the heating to 22 degrees.")


def test_nothing_is_scored_when_no_candidate_could_stand_for_the_hearing(
    home: Home, strictly: Callable[[str], Understanding]
) -> None:
    asked: list[str] = []
    for chat in ("I love my new kitchen.", "The kitchen light is pretty.", "Tell me a joke."):
        assert rescore.rescored(chat, home, strictly, scores_of({}, asked)) is None
    assert asked == []


def test_a_number_misheard_is_never_guessed(
    home: Home, strictly: Callable[[str], Understanding]
) -> None:
    heard = "Set the desk lamp, tidy percent."
    table = {heard: -3.0, "Turn on the desk lamp.": -4.0}
    assert rescore.rescored(heard, home, strictly, scores_of(table)) is None


# --- in the hearing, on fake engines ----------------------------------------------------------


def first(text: str, avg_logprob: float = -0.1) -> Transcript:
    return Transcript(text, "en", 0.01, avg_logprob, 1.0)


def no_readings(n: int, prompt: str | None) -> list[Hypothesis]:
    return []


def test_the_hearing_rescores_only_with_an_engine_that_can_and_when_asked(
    recognizer: IntentRecognizer,
) -> None:
    heard = "Walk the front door."
    table = {heard: -2.0, "Lock the front door.": -4.0, "Unlock the front door.": -9.0}

    def score(texts: Sequence[str], prompt: str | None) -> list[float]:
        assert prompt == "the prompt"
        return scores_of(table)(texts)

    more = Rereading(no_readings, score)

    def hear(said: Transcript, more: MoreReadings, rescoring: bool = True) -> Transcript:
        return reconsidered(
            said, more, recognizer, "kitchen", prompt="the prompt", rescoring=rescoring
        )

    taken = hear(first(heard), more)
    assert taken.text == "Lock the front door." and taken.avg_logprob == -0.1
    assert hear(first(heard), more, rescoring=False).text == heard
    assert hear(first(heard), no_readings).text == heard  # an engine that cannot score
    command = first("Lock the front door.")
    assert hear(command, more) == command


class ScoringTranscriber(FakeTranscriber):
    """Hears `text`; scores sentences from `table`, as Whisper on the same encoder output."""

    def __init__(self, text: str, table: dict[str, float]) -> None:
        super().__init__(text, avg_logprob=-0.1)
        self.table = table
        self.scored: list[str] = []

    def transcribe_reconsidered(
        self, audio: Float32Audio, *, prompt: str | None, reconsider: Reconsider
    ) -> Transcript:
        def score(texts: Sequence[str], other: str | None) -> list[float]:
            return scores_of(self.table, self.scored)(texts)

        return reconsider(self.transcribe(audio, prompt=prompt), Rereading(no_readings, score))


async def test_a_spoken_command_misheard_is_acted_on_from_the_homes_sentences() -> None:
    heard = "Walk the front door."
    table = {heard: -2.0, "Lock the front door.": -4.0, "Unlock the front door.": -9.0}
    transcriber = ScoringTranscriber(heard, table)
    _, events = await spoken_turn_events("smart_home", transcriber)
    assert transcriber.scored[0] == heard
    transcripts = [e.text for e in events if isinstance(e, proto.Transcript)]
    assert transcripts == ["Lock the front door."]  # the sentence taken is what was heard
    assert [e.name for e in events if isinstance(e, proto.Intent)] == ["HassTurnOn"]
    switched_off = ScoringTranscriber(heard, table)
    _, events = await spoken_turn_events("smart_home", switched_off, rescore=False)
    assert switched_off.scored == []
    assert not [e for e in events if isinstance(e, proto.Intent)]
