"""A number the audio does not tell from its usual confusion is asked about (number_doubt.py)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from server.engines.fakes import FakeTranscriber
from server.intents.number_doubt import (
    MAX_DOUBT,
    Doubt,
    confusions,
    doubt,
    numbers_in,
    with_other_numbers,
)
from server.protocol import native as proto


def test_the_usual_confusions() -> None:
    assert confusions(4) == [40]
    assert confusions(40) == [14, 4] and confusions(14) == [40]
    assert confusions(30) == [13, 3]
    assert confusions(50) == [15, 5]
    assert confusions(21) == [] and confusions(100) == [] and confusions(0) == []
    assert confusions(1) == [] and confusions(10) == []


def test_the_numbers_of_a_sentence() -> None:
    assert numbers_in("Set a timer for two minutes and 30 seconds.") == [2, 30]
    assert numbers_in("Set the heating to 21.5 degrees.") == []
    assert numbers_in("Someone said it.") == []  # "one" inside a word is no number


def test_each_number_replaced_as_it_was_written() -> None:
    assert with_other_numbers("Set the kitchen light to 4%.") == [
        ("Set the kitchen light to 40%.", Doubt(4, 40))
    ]
    assert [t for t, _ in with_other_numbers("Set a timer for fifteen minutes.")] == [
        "Set a timer for fifty minutes."
    ]
    assert [t for t, _ in with_other_numbers("Forty percent")] == [
        "Fourteen percent",
        "Four percent",
    ]
    # Decimals and numbers with no usual confusion are left alone.
    assert with_other_numbers("Set the heating to 21.5 degrees.") == []
    assert with_other_numbers("Turn off the kitchen light.") == []


def scores(by_text: dict[str, float]) -> object:
    def score(texts: Sequence[str]) -> list[float]:
        return [by_text[t] for t in texts]

    return score


def test_asked_only_when_the_audio_does_not_rule_the_confusion_out() -> None:
    heard, other = "Set the kitchen light to 4%.", "Set the kitchen light to 40%."
    close = scores({heard: -5.0, other: -5.0 - MAX_DOUBT / 2})
    found = doubt(heard, close)  # type: ignore[arg-type]
    assert found == Doubt(4, 40) and found.question == "Sorry, did you say 4 or 40?"
    far = scores({heard: -5.0, other: -5.0 - MAX_DOUBT * 3})
    assert doubt(heard, far) is None  # type: ignore[arg-type]
    # Nothing to score: no call at all.
    assert doubt("Turn off the fan.", lambda texts: 1 / 0) is None  # type: ignore[arg-type,return-value]


async def test_a_spoken_command_with_a_doubtful_number_is_asked_about() -> None:
    """Through a session (fake engines, the demo home): asked, nothing published, when the
    audio scores the confusion close; carried out as heard when it does not."""
    from server.protocol import native as proto
    from tests.unit.test_asr_prompt import spoken_turn_events
    from tests.unit.test_rescore import ScoringTranscriber

    heard, other = "Set the kitchen light to 4%.", "Set the kitchen light to 40%."
    close = ScoringTranscriber(heard, {heard: -3.0, other: -3.0 - MAX_DOUBT / 2})
    _, events = await spoken_turn_events("smart_home", close)
    assert close.scored == [heard, other]
    assert not [e for e in events if isinstance(e, proto.Intent)]
    (done,) = [e for e in events if isinstance(e, proto.ReplyDone)]
    assert done.text == "Sorry, did you say 4 or 40?"
    far = ScoringTranscriber(heard, {heard: -3.0, other: -3.0 - MAX_DOUBT * 4})
    _, events = await spoken_turn_events("smart_home", far)
    (intent,) = [e for e in events if isinstance(e, proto.Intent)]
    assert intent.name == "HassLightSet"
    assert {s.name: s.value for s in intent.slots}["brightness"] == 4
    # Switched off with the rescoring: as heard, nothing scored.
    off = ScoringTranscriber(heard, {heard: -3.0, other: -3.0})
    _, events = await spoken_turn_events("smart_home", off, rescore=False)
    assert off.scored == [] and [e.name for e in events if isinstance(e, proto.Intent)]


async def spoken_then_typed(
    transcriber: FakeTranscriber, typed: Sequence[str]
) -> list[proto.ServerEvent]:
    """One spoken turn in a smart_home session at the demo home (fake engines), then the
    typed messages, each to its reply's end; what the session sent."""
    from server.engines.fakes import FakeChatModel
    from tests.conftest import fake_engines
    from tests.unit.test_asr_prompt import in_the_demo_home
    from tests.unit.test_session_turns import silence, tone

    engines = fake_engines(FakeChatModel("It is noon."), transcriber=transcriber)
    async with in_the_demo_home("smart_home", engines, prefill=False) as (session, harness, sink):
        await harness.speak(np.concatenate([tone(1.0), silence(1.0)]))
        await harness.reply_done()
        for turn, text in enumerate(typed, start=2):
            await session.handle(proto.UserMessage(text=text))
            await harness.reply_done(turn)
        return sink.events


async def test_the_answer_to_the_question_carries_the_command_out() -> None:
    """ "Sorry, did you say 4 or 40?" -> "forty percent": set to 40; an answer that names
    neither, or comes a turn too late, is no command."""
    from server.protocol import native as proto
    from tests.unit.test_rescore import ScoringTranscriber

    heard, other = "Set the kitchen light to 4%.", "Set the kitchen light to 40%."
    table = {heard: -3.0, other: -3.0 - MAX_DOUBT / 2}
    events = await spoken_then_typed(ScoringTranscriber(heard, table), ["Forty percent, please."])
    (intent,) = [e for e in events if isinstance(e, proto.Intent)]
    assert intent.name == "HassLightSet"
    assert {s.name: s.value for s in intent.slots}["brightness"] == 40
    events = await spoken_then_typed(ScoringTranscriber(heard, table), ["What a nice day.", "40"])
    assert not [e for e in events if isinstance(e, proto.Intent)]
    # "... lock or unlock?" -> "Unlock it.": unlocked.
    events = await spoken_then_typed(FakeTranscriber("and lock the front door."), ["Unlock it."])
    (intent,) = [e for e in events if isinstance(e, proto.Intent)]
    assert intent.name == "HassTurnOff"
    assert [t.entity_id for t in intent.targets] == ["lock.front_door"]


def test_a_short_answer_settles_the_question() -> None:
    from server.intents.recognizer import settled_by

    numbers = (("4", "Set it to 4%."), ("40", "Set it to 40%."))
    assert settled_by("forty", numbers) == "Set it to 40%."
    assert settled_by("No, I said 4 percent.", numbers) == "Set it to 4%."
    assert settled_by("4 or 40, I don't know", numbers) is None  # both named
    assert settled_by("Tell me about the moon and the stars tonight please", numbers) is None
    locks = (("lock", "lock the door"), ("unlock", "unlock the door"))
    assert settled_by("unlock", locks) == "unlock the door"
    assert settled_by("Lock it.", locks) == "lock the door"
    assert settled_by("the door", locks) is None
