"""Several readings of a spoken command (server/intents/hearing.py): which reading is taken,
and the safety rules, on the demo home's recognizer (strict templates) and fake readings."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from server import PROJECT_ROOT
from server.engines.base import Float32Audio, Hypothesis, Reconsider, Transcript
from server.engines.fakes import FakeTranscriber
from server.intents.hearing import choose, worth_reading_again
from server.intents.home import load_home
from server.intents.recognizer import IntentRecognizer, Understanding, deciding_words
from server.protocol import native as proto
from tests.unit.test_asr_prompt import spoken_turn_events

DEMO = PROJECT_ROOT / "prompts" / "devices.example.toml"


@pytest.fixture(scope="module")
def strictly() -> Callable[[str], Understanding]:
    recognizer = IntentRecognizer(load_home(DEMO), repair=False)

    def understand(text: str) -> Understanding:
        return recognizer.understand(text, "kitchen")

    return understand


def readings(*pairs: tuple[str, float]) -> list[Hypothesis]:
    return [Hypothesis(text, score) for text, score in pairs]


def test_the_likeliest_reading_that_is_a_command_is_taken(
    strictly: Callable[[str], Understanding],
) -> None:
    heard = "Set a Tyler for well-hour."
    chosen = choose(
        heard,
        readings(
            (heard, -0.40),
            ("Set a Tyler for one hour.", -0.45),
            ("Set a timer for one hour.", -0.55),
            ("Set a timer for 1 hour.", -0.60),  # the same command: no disagreement
        ),
        strictly,
    )
    assert chosen is not None
    assert chosen.rank == 2 and chosen.reading.text == "Set a timer for one hour."
    assert chosen.understood.intent == "HassStartTimer"


def test_a_reading_far_below_the_likeliest_does_not_count(
    strictly: Callable[[str], Understanding],
) -> None:
    heard = "The new thirty weeks."
    far = readings((heard, -0.30), ("Mute the TV.", -1.20))
    assert choose(heard, far, strictly, max_gap=0.5) is None
    chosen = choose(heard, far, strictly, max_gap=1.0)
    assert chosen is not None and chosen.understood.intent == "HassMediaPlayerMute"


def test_readings_that_make_different_commands_make_none(
    strictly: Callable[[str], Understanding],
) -> None:
    heard = "Walk the front door."
    both = readings((heard, -0.3), ("Lock the front door.", -0.4), ("Unlock the front door.", -0.5))
    assert choose(heard, both, strictly) is None
    # Other devices or other slots disagree as much as other intents.
    heard = "Set the brightest to 40 percent."
    rooms = readings(
        ("Set the bedroom light to 40 percent.", -0.3),
        ("Set the desk lamp to 40 percent.", -0.35),
    )
    assert choose(heard, rooms, strictly) is None
    values = readings(
        ("Set a timer for 15 minutes.", -0.3),
        ("Set a timer for 50 minutes.", -0.35),
    )
    assert choose("Set a time of 15 minutes.", values, strictly) is None


def test_lock_or_unlock_in_any_reading_makes_none(
    strictly: Callable[[str], Understanding],
) -> None:
    heard = "I'm locked the front door."
    found = readings((heard, -0.3), ("Lock the front door.", -0.35), ("And lock the door.", -0.4))
    assert choose(heard, found, strictly) is None


def test_a_word_that_decides_the_action_is_never_changed(
    strictly: Callable[[str], Understanding],
) -> None:
    heard = "Turn on the kitchen lie."  # heard "on": a reading saying "off" is not taken
    assert (
        choose(heard, readings((heard, -0.3), ("Turn off the kitchen light.", -0.35)), strictly)
        is None
    )
    chosen = choose(heard, readings(("Turn on the kitchen light.", -0.35)), strictly)
    assert chosen is not None and chosen.understood.intent == "HassTurnOn"
    assert deciding_words("Please turn ON the light, then off.") == ("on", "off")
    # Heard none: a reading may say one, when no other reading says otherwise.
    heard = "The new TV."
    chosen = choose(heard, readings((heard, -0.3), ("Mute the TV.", -0.4)), strictly)
    assert chosen is not None and chosen.understood.intent == "HassMediaPlayerMute"


def test_chit_chat_readings_make_no_command(strictly: Callable[[str], Understanding]) -> None:
    for heard, other in [
        ("The light in this painting is lovely.", "The light in this painting is lovely!"),
        ("Turn the page and keep reading.", "Turn the page and keep reading!"),
        ("What time does the sun set?", "What time does the sunset?"),
        ("Should I lock my bike at night?", "Should I lock my bike tonight?"),
    ]:
        assert choose(heard, readings((heard, -0.2), (other, -0.3)), strictly) is None


def test_readings_are_understood_once_each(strictly: Callable[[str], Understanding]) -> None:
    asked: list[str] = []

    def understand(text: str) -> Understanding:
        asked.append(text)
        return strictly(text)

    same = readings(("Mute the TV.", -0.3), ("Mute the TV!", -0.31), ("mute the tv", -0.32))
    chosen = choose("The new TV", same, understand)
    assert chosen is not None and chosen.rank == 0
    assert asked == ["Mute the TV."]
    assert choose("The new TV", [], understand) is None


def test_only_short_sentences_are_read_again() -> None:
    assert worth_reading_again("Set a Tyler for well-hour.")
    assert not worth_reading_again("")
    assert not worth_reading_again(
        "Tell me a long story about a dragon who lived in a castle by the sea."
    )


# --- in a session, on fake engines ------------------------------------------------------------


class ReadingTranscriber(FakeTranscriber):
    """Hears `text` first; `readings` are what a beam search would read again."""

    def __init__(self, text: str, *readings: str, avg_logprob: float = -0.6) -> None:
        super().__init__(text, avg_logprob=avg_logprob)
        self.readings = [Hypothesis(r, -0.3 - 0.05 * i) for i, r in enumerate(readings)]
        self.asked: list[tuple[int, str | None]] = []

    def transcribe_reconsidered(
        self, audio: Float32Audio, *, prompt: str | None, reconsider: Reconsider
    ) -> Transcript:
        def more(n: int, other: str | None) -> list[Hypothesis]:
            self.asked.append((n, other))
            return self.readings[:n]

        return reconsider(self.transcribe(audio, prompt=prompt), more)


async def test_a_command_misheard_is_acted_on_from_another_reading() -> None:
    transcriber = ReadingTranscriber(
        "Set a Tyler for well-hour.", "Set a Tyler for well-hour.", "Set a timer for one hour."
    )
    _, events = await spoken_turn_events("smart_home", transcriber)
    assert transcriber.asked == [(5, load_home(DEMO).asr_prompt())]
    transcripts = [e.text for e in events if isinstance(e, proto.Transcript)]
    assert transcripts == ["Set a timer for one hour."]  # the reading taken is what was heard
    intents = [(e.name, e.text) for e in events if isinstance(e, proto.Intent)]
    assert intents == [("HassStartTimer", "Set a timer for one hour.")]


async def test_readings_are_asked_only_when_the_first_hearing_is_no_command() -> None:
    transcriber = ReadingTranscriber("Mute the TV.", "Unmute the TV.")
    _, events = await spoken_turn_events("smart_home", transcriber)
    assert transcriber.asked == []
    assert [e.name for e in events if isinstance(e, proto.Intent)] == ["HassMediaPlayerMute"]
    chat = ReadingTranscriber("Tell me a joke.", "Tell me a joke!", "Tell me a job.")
    _, events = await spoken_turn_events("smart_home", chat)
    assert len(chat.asked) == 1
    assert not [e for e in events if isinstance(e, proto.Intent)]
    assert [e for e in events if isinstance(e, proto.ReplyDone)][-1].text == "It is noon."


async def test_a_first_hearing_whisper_was_sure_of_is_not_read_again() -> None:
    chat = ReadingTranscriber("Tell me a joke.", "Tell me a job.", avg_logprob=-0.1)
    _, events = await spoken_turn_events("smart_home", chat)
    assert chat.asked == []
    assert [e for e in events if isinstance(e, proto.ReplyDone)][-1].text == "It is noon."


async def test_no_readings_when_switched_off_or_for_other_personas() -> None:
    for persona, settings in [("smart_home", {"n_best": 0}), ("assistant", {})]:
        transcriber = ReadingTranscriber("The new TV.", "Mute the TV.")
        _, events = await spoken_turn_events(persona, transcriber, **settings)
        assert transcriber.asked == []
        assert not [e for e in events if isinstance(e, proto.Intent)]
