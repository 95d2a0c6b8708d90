"""A session waiting for a wake word, with fake engines: the wake word is a 1 kHz tone
(FakeWakeWordEngine), speech is a 220 Hz tone (FakeVad: loud is speech). Milliseconds each;
tests/e2e/test_wake_word.py does the same with real speech and models."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from server.app import App
from server.engines.base import Float32Audio, Transcript
from server.engines.fakes import FakeChatModel, FakeSynthesizer, FakeWakeWordEngine
from server.pipeline.session import Session
from server.pipeline.state import SessionState, StateTracker
from server.pipeline.wake import WakePlan
from server.prompts import PersonaLibrary
from server.protocol import native as proto
from tests.conftest import fake_engines, make_settings
from tests.unit.test_session_turns import RATE, Harness, RecordingSink, silence, tone

WAKE_HZ = 1000.0


def wake_tone(seconds: float = 0.4) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (8000 * np.sin(2 * np.pi * WAKE_HZ * t)).astype(np.int16)


class RecordingTranscriber:
    """Records the audio of each call; says what it was told."""

    sample_rate = RATE

    def __init__(self, text: str) -> None:
        self.text = text
        self.audio: list[Float32Audio] = []

    def transcribe(self, audio: Float32Audio, *, prompt: str | None = None) -> Transcript:
        self.audio.append(audio.copy())
        return Transcript(self.text, "en", 0.01, -0.1, len(audio) / RATE)


def share_at(audio: Float32Audio, hz: float) -> float:
    """The share of the audio's energy within 50 Hz of `hz`."""
    spectrum = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(audio.size, 1 / RATE)
    return float(spectrum[np.abs(freqs - hz) < 50].sum() / spectrum.sum())


@pytest.fixture
async def make() -> AsyncIterator[Callable[..., Any]]:
    harnesses: list[Harness] = []

    async def factory(asked: dict[str, Any] | None = None, **settings: Any) -> Harness:
        config = make_settings(
            vad={"speculate": False, "silence_ms": 500, "min_speech_ms": 100},
            llm={"prefill_while_speaking": False},
            **settings,
        )
        personas = PersonaLibrary.load(config.prompts.directory, config.prompts.default_persona)
        app = App(settings=config, personas=personas)
        engines = fake_engines(
            FakeChatModel("It is noon."), synthesizer=FakeSynthesizer(seconds_per_char=0.001)
        )
        engines.transcriber = RecordingTranscriber("what time is it")
        engines.wake = FakeWakeWordEngine({"hey_jarvis": WAKE_HZ}, min_s=0.4)
        app.attach(engines)
        sink = RecordingSink()
        session = Session(app, sink)
        await session.start()
        if asked is not None:
            await session.handle(proto.SessionStart(wake=proto.WakeOptions(**asked)))
        await session.handle(proto.AudioStart(sample_rate=RATE))
        harness = Harness(session, sink, engines)
        harnesses.append(harness)
        return harness

    yield factory
    for harness in harnesses:
        await harness.session.close()
        harness.session.app.close()


def recorded(h: Harness) -> list[Float32Audio]:
    transcriber = h.engines.transcriber
    assert isinstance(transcriber, RecordingTranscriber)
    return transcriber.audio


async def test_nothing_is_heard_before_the_wake_word(make: Callable[..., Any]) -> None:
    h: Harness = await make({"words": ["hey_jarvis"]})
    await h.speak(np.concatenate([tone(1.0), silence(1.0), tone(1.5), silence(1.0)]))
    assert h.sink.types() == ["session.started", "session.started", "wake.waiting"]
    assert recorded(h) == []
    assert h.session.history == []
    assert h.session.state is SessionState.WAITING_FOR_WAKE_WORD


async def test_the_request_in_the_same_breath_is_one_turn_without_the_wake_word(
    make: Callable[..., Any],
) -> None:
    h: Harness = await make({"words": ["hey_jarvis"]})
    await h.speak(np.concatenate([tone(1.0), silence(0.6), wake_tone(), tone(1.0), silence(1.0)]))
    (done,) = await h.reply_done()
    assert done.text == "It is noon."
    (detected,) = h.sink.of(proto.WakeDetected)
    assert detected.wake_word_id == "hey_jarvis"
    # The detection fires at the end of the wake tone (1.6 s + 0.4 s).
    assert abs(detected.at_ms - 2000) <= 80
    (audio,) = recorded(h)
    # The request (1 s of 220 Hz) is all there; the wake tone and what came before are not.
    assert 1.0 <= audio.size / RATE <= 1.0 + 0.5
    assert share_at(audio, 220) > 0.9 and share_at(audio, WAKE_HZ) < 0.05
    (started,) = h.sink.of(proto.SpeechStarted)
    assert 1990 <= started.at_ms <= 2100  # stream time, the unheard audio counted
    assert [m.content for m in h.session.history] == ["what time is it", "It is noon."]
    # One turn, then waiting again: the next request is not heard.
    types = h.sink.types()
    assert types.index("wake.detected") < types.index("speech.started")
    assert types[types.index("speech.stopped") + 1] == "wake.waiting"
    await h.speak(np.concatenate([tone(1.0), silence(1.0)]))
    assert len(recorded(h)) == 1
    await h.until(lambda: h.session.state is SessionState.WAITING_FOR_WAKE_WORD)


async def test_a_pause_after_the_wake_word_then_the_request(make: Callable[..., Any]) -> None:
    h: Harness = await make({"words": ["hey_jarvis"], "listen_s": 3.0})
    await h.speak(np.concatenate([wake_tone(), silence(1.5), tone(1.0), silence(1.0)]))
    await h.reply_done()
    (audio,) = recorded(h)
    assert share_at(audio, WAKE_HZ) < 0.05


async def test_nothing_said_after_the_wake_word_waits_again(make: Callable[..., Any]) -> None:
    h: Harness = await make({"words": ["hey_jarvis"], "listen_s": 1.0})
    await h.speak(np.concatenate([wake_tone(), silence(1.5), tone(1.0), silence(1.0)]))
    assert h.sink.types()[-2:] == ["wake.detected", "wake.waiting"]
    assert recorded(h) == []


async def test_follow_up_turns_need_no_wake_word(make: Callable[..., Any]) -> None:
    h: Harness = await make({"words": ["hey_jarvis"], "follow_up_s": 2.0})
    await h.speak(np.concatenate([wake_tone(), tone(1.0), silence(1.0)]))
    await h.reply_done()
    await h.speak(np.concatenate([tone(1.0), silence(0.8)]))  # within 2 s: heard
    await h.reply_done(2)
    await h.speak(np.concatenate([silence(2.5), tone(1.0), silence(1.0)]))  # too late
    assert len(recorded(h)) == 2
    assert h.sink.types().count("wake.waiting") == 2


async def test_config_default_and_session_opt_out(make: Callable[..., Any]) -> None:
    h: Harness = await make(None, wake={"wake_words": ["hey_jarvis"]})
    assert "wake.waiting" in h.sink.types()
    await h.speak(np.concatenate([tone(1.0), silence(1.0)]))
    assert recorded(h) == []
    # words [] turns it off for this session: the open stream restarts without it.
    await h.session.handle(proto.SessionUpdate(wake=proto.WakeOptions(words=[])))
    await h.speak(np.concatenate([tone(1.0), silence(1.0)]))
    await h.reply_done()
    assert len(recorded(h)) == 1


async def test_unknown_wake_word_is_an_error_and_changes_nothing(
    make: Callable[..., Any],
) -> None:
    h: Harness = await make({"words": ["hey_jarvis"]})
    await h.session.handle(proto.SessionUpdate(wake=proto.WakeOptions(words=["hey_siri"])))
    (error,) = h.sink.of(proto.Error)
    assert error.code == "unknown_wake_word" and "hey_siri" in error.message
    assert h.session.wake is not None and h.session.wake.words == ["hey_jarvis"]


def test_state_waits_for_the_wake_word_when_idle() -> None:
    tracker = StateTracker()
    seen = [
        tracker.feed(kind)
        for kind in (
            "wake.waiting",
            "wake.detected",
            "speech.started",
            "speech.stopped",
            "wake.waiting",
            "transcript",
            "output_audio.start",
            "reply.done",
            "output_audio.done",
        )
    ]
    assert seen == [
        SessionState.WAITING_FOR_WAKE_WORD,
        SessionState.LISTENING,
        None,
        None,
        SessionState.WAITING_FOR_WAKE_WORD,
        SessionState.THINKING,
        SessionState.SPEAKING,
        SessionState.WAITING_FOR_WAKE_WORD,
        None,
    ]


def test_mqtt_topics_and_hermes_hotword_payload() -> None:
    import json

    from server.protocol import mqtt as wire

    event = proto.WakeDetected(wake_word_id="hey_jarvis", at_ms=2000.0, probability=0.93)
    assert wire.event_leaf(event) == "event/wake"
    assert wire.event_leaf(proto.WakeWaiting(wake_words=["alexa"])) == "event/wake_waiting"
    assert wire.hermes_hotword_topic("hey_jarvis") == "hermes/hotword/hey_jarvis/detected"
    payload = json.loads(wire.hotword_detected_payload(event, "kitchen", "s1"))
    assert payload["modelId"] == "hey_jarvis" and payload["siteId"] == "kitchen"
    assert payload["sessionId"] == "s1" and payload["currentSensitivity"] == 0.93


def test_realtime_session_extension_is_checked_and_shown() -> None:
    from server.protocol import realtime as rt
    from server.protocol.realtime_config import RealtimeConfig

    config = RealtimeConfig(model="m", instructions="i")
    words = ("hey_jarvis", "alexa")

    def update(chinwag: object) -> dict[str, object]:
        return {"type": "session.update", "session": {"type": "realtime", "chinwag": chinwag}}

    assert "chinwag" not in config.session_object("s")
    config.apply(update({"wake": {"words": ["alexa"], "follow_up_s": 5}}), words)
    assert config.wake == proto.WakeOptions(words=["alexa"], follow_up_s=5)
    assert config.session_object("s")["chinwag"] == {
        "wake": {"words": ["alexa"], "listen_s": None, "follow_up_s": 5.0}
    }
    for bad, param in (
        ({"wake": {"words": ["hey_siri"]}}, "session.chinwag.wake.words"),
        ({"wake": {"words": ["alexa"], "listen_s": -1}}, "session.chinwag.wake"),
        ({"wake": {"word": "alexa"}}, "session.chinwag.wake"),
        ({"sleep": True}, "session.chinwag"),
    ):
        with pytest.raises(rt.RealtimeError) as raised:
            config.apply(update(bad), words)
        assert raised.value.param == param
        assert config.wake is not None and config.wake.words == ["alexa"]  # unchanged
    config.apply(update({"wake": None}), words)
    assert config.wake == proto.WakeOptions(words=[])


def test_persona_wake_words_and_precedence(tmp_path: Path) -> None:
    from server.config import WakeSettings
    from server.pipeline.wake import wake_plan
    from server.prompts import PersonaFileError, load_persona_file

    kiosk = tmp_path / "kiosk.toml"
    kiosk.write_text('system_prompt = "Hi."\nwake_words = ["okay_nabu"]\n', encoding="utf-8")
    persona = load_persona_file(kiosk)
    assert persona.wake_words == ("okay_nabu",)
    bad = tmp_path / "bad.toml"
    bad.write_text('system_prompt = "Hi."\nwake_words = "okay_nabu"\n', encoding="utf-8")
    with pytest.raises(PersonaFileError, match="wake_words"):
        load_persona_file(bad)

    defaults = WakeSettings(wake_words=["alexa"], listen_s=3.0, follow_up_s=1.0)
    assert wake_plan(None, None, WakeSettings()) is None
    assert wake_plan(None, None, defaults) == WakePlan(("alexa",), 3.0, 1.0)
    assert wake_plan(None, persona.wake_words, defaults) == WakePlan(("okay_nabu",), 3.0, 1.0)
    asked = proto.WakeOptions(words=["hey_jarvis"], follow_up_s=0)
    assert wake_plan(asked, persona.wake_words, defaults) == WakePlan(("hey_jarvis",), 3.0, 0.0)
    assert wake_plan(proto.WakeOptions(words=[]), persona.wake_words, defaults) is None
