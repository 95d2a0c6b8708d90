"""Whisper is told the home's names in sessions that take commands (and only there), on fake
engines; tests/e2e/test_intents.py and `make bench-intents` hear the difference for real."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from server import PROJECT_ROOT
from server.app import App, Engines
from server.engines.fakes import FakeChatModel, FakeTranscriber
from server.intents.home import load_home
from server.pipeline.session import Session
from server.prompts import PersonaLibrary
from server.protocol import native as proto
from tests.conftest import fake_engines, make_settings
from tests.unit.test_session_turns import RATE, Harness, RecordingSink, silence, tone

DEMO = PROJECT_ROOT / "prompts" / "devices.example.toml"


def test_the_home_prompt_names_its_devices_and_rooms_once() -> None:
    prompt = load_home(DEMO).asr_prompt()
    assert prompt is not None and prompt.startswith("Turn on the ")
    for name in ("kitchen light", "ceiling fan", "living room", "garage"):
        assert name in prompt
    assert prompt.count("garage door") == 1
    assert load_home(None).asr_prompt() is None  # no home, nothing to expect


async def spoken_turn(
    persona: str, transcriber: FakeTranscriber | None = None, **intents: Any
) -> list[str | None]:
    """One spoken turn in a session with `persona`; the prompts Whisper was given."""
    prompts, _ = await spoken_turn_events(persona, transcriber, **intents)
    return prompts


@contextlib.asynccontextmanager
async def in_the_demo_home(
    persona: str, engines: Engines, *, prefill: bool, **intents: Any
) -> AsyncIterator[tuple[Session, Harness, RecordingSink]]:
    """A session of `persona` at the demo home on `engines`, its audio started."""
    settings = make_settings(
        vad={"speculate": False, "silence_ms": 500, "min_speech_ms": 100},
        llm={"prefill_while_speaking": prefill},
        intents={"devices": str(DEMO), **intents},
    )
    personas = PersonaLibrary.load(settings.prompts.directory, settings.prompts.default_persona)
    app = App(settings=settings, personas=personas)
    app.attach(engines)
    sink = RecordingSink()
    session = Session(app, sink)
    try:
        await session.start()
        await session.handle(proto.SessionStart(persona=persona))
        await session.handle(proto.AudioStart(sample_rate=RATE))
        yield session, Harness(session, sink, engines), sink
    finally:
        await session.close()
        app.close()


async def speak_in_the_demo_home(
    persona: str, engines: Engines, *, speech_s: float, prefill: bool, **intents: Any
) -> RecordingSink:
    """One spoken turn (a tone of `speech_s`, then silence) in a session of `persona` at the
    demo home, on `engines`; what the session sent."""
    async with in_the_demo_home(persona, engines, prefill=prefill, **intents) as (_, harness, sink):
        await harness.speak(np.concatenate([tone(speech_s), silence(1.0)]))
        await harness.reply_done()
        return sink


async def spoken_turn_events(
    persona: str, transcriber: FakeTranscriber | None = None, **intents: Any
) -> tuple[list[str | None], list[proto.ServerEvent]]:
    transcriber = transcriber or FakeTranscriber("hello")
    engines = fake_engines(FakeChatModel("It is noon."), transcriber=transcriber)
    sink = await speak_in_the_demo_home(persona, engines, speech_s=1.0, prefill=False, **intents)
    return transcriber.prompts, sink.events


async def test_a_session_that_takes_commands_prompts_whisper_with_its_home() -> None:
    prompts = await spoken_turn("smart_home")
    assert prompts and set(prompts) == {load_home(DEMO).asr_prompt()}


async def test_other_sessions_and_the_switched_off_setting_prompt_nothing() -> None:
    assert set(await spoken_turn("assistant")) == {None}
    assert set(await spoken_turn("smart_home", asr_prompt=False)) == {None}


class EchoingTranscriber(FakeTranscriber):
    """Whisper writing the prompt's list back when prompted (seen with espeak-ng's voice)."""

    def transcribe(self, audio: Any, *, prompt: str | None = None) -> Any:
        self.text = (
            "Turn on the light, ceiling fan, room,"
            if prompt
            else "Turn on the lights in the bedroom."
        )
        return super().transcribe(audio, prompt=prompt)


async def test_a_prompt_heard_back_is_transcribed_again_without_it() -> None:
    prompts, events = await spoken_turn_events("smart_home", EchoingTranscriber())
    assert prompts == [load_home(DEMO).asr_prompt(), None]
    transcripts = [e for e in events if isinstance(e, proto.Transcript)]
    assert [t.text for t in transcripts] == ["Turn on the lights in the bedroom."]
    intents = [e for e in events if isinstance(e, proto.Intent)]
    assert [(i.name, [t.entity_id for t in i.targets]) for i in intents] == [
        ("HassTurnOn", ["light.bedroom"])
    ]


def test_what_looks_like_the_prompt_heard_back() -> None:
    from server.pipeline.intents import heard_the_prompt

    assert heard_the_prompt("Set the desk lamp, toilet, room, and,")
    assert heard_the_prompt("and lock the front door.")
    assert not heard_the_prompt("Turn off the kitchen light,")
    assert not heard_the_prompt("Well, I think so.")
