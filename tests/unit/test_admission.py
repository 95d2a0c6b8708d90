"""Admission control (issue 13) on fake engines: a turn that cannot start within
`[limits] max_reply_wait_s` is refused with `overloaded`; work that can start at once never is.

The fakes' delays only make work overlap; the assertions are about outcomes and order, never
milliseconds, so they hold on a loaded machine."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from typing import Any

import numpy as np
import pytest

from server.app import App
from server.engines.base import ChatMessage, Float32Audio, Transcript
from server.engines.fakes import FakeChatModel, FakeSynthesizer, FakeTranscriber, FakeVad
from server.errors import ChinwagError, ErrorCode
from server.pipeline.admission import APOLOGY, WaitLimit
from server.pipeline.chat import ChatOutcome, ChatRunner
from server.pipeline.session import Session
from server.pipeline.speech import SpeechRunner
from server.prompts import GenerationSettings, PersonaLibrary
from server.protocol import native as proto
from tests.conftest import fake_engines, make_settings
from tests.unit.test_session_turns import RATE, RecordingSink, silence, tone

LONG = " ".join(f"w{i}" for i in range(300))


def by_question(messages: Sequence[ChatMessage]) -> str:
    return LONG if "long" in messages[-1].content else "A short answer."


async def nothing(_delta: str) -> None:
    return None


async def ask(
    runner: ChatRunner, text: str, *, urgent: bool = False, max_tokens: int = 300
) -> ChatOutcome:
    outcome = ChatOutcome()
    settings = GenerationSettings(max_tokens=max_tokens)
    history = [ChatMessage("user", text)]
    await runner.reply("s", history, settings, nothing, outcome, urgent=urgent)
    return outcome


async def until_streaming(runner: ChatRunner, count: int = 1) -> None:
    """Wait until `count` replies are under way on the model."""
    async with asyncio.timeout(10):
        while len(runner._active) < count:  # noqa: ASYNC110 - a worker thread's list
            await asyncio.sleep(0.002)


# --- the rule ----------------------------------------------------------------------------------


def test_the_rule_without_clocks() -> None:
    off = WaitLimit(0.0)
    assert off.deadline(100.0) is None
    assert not off.expired(None, 1e9)
    limit = WaitLimit(2.5)
    assert limit.deadline(100.0) == 102.5
    assert not limit.expired(102.5 - 1e-6, 102.4)
    assert limit.expired(102.5, 102.5)
    error = limit.error("the reply")
    assert error.code is ErrorCode.OVERLOADED
    assert "2.5 s" in error.message


# --- the model's queue ---------------------------------------------------------------------------


async def test_a_reply_waiting_for_a_place_past_the_limit_is_refused_and_others_go_on() -> None:
    model = FakeChatModel(by_question, token_delay_s=0.005, parallel=1)
    runner = ChatRunner(model, max_wait_s=0.05)
    try:
        long = asyncio.create_task(ask(runner, "a long one"))
        await until_streaming(runner)
        with pytest.raises(ChinwagError) as refused:
            await ask(runner, "hi")
        assert refused.value.code is ErrorCode.OVERLOADED
        # Refused while the long reply was still under way, and that one is unharmed.
        assert not long.done()
        done = await long
        assert done.stats is not None and done.stats.completion_tokens == 300
        # The model is free again: the next reply starts at once and is answered.
        after = await ask(runner, "hi")
        assert after.stats is not None and after.stats.finish_reason == "stop"
        # The worker thread lets go of the model just after handing over the last token.
        await until(lambda: not runner.busy)
    finally:
        runner.close()


async def test_a_reply_that_can_start_at_once_is_never_refused() -> None:
    runner = ChatRunner(FakeChatModel("A short answer.", parallel=2), max_wait_s=1e-9)
    try:
        for _ in range(5):
            outcome = await ask(runner, "hi")
            assert outcome.stats is not None and outcome.stats.finish_reason == "stop"
    finally:
        runner.close()


async def test_a_voice_reply_takes_the_kept_place_while_text_is_refused() -> None:
    # Two places: one for text, one kept for a reply someone waits to hear.
    model = FakeChatModel(by_question, token_delay_s=0.005, parallel=2)
    runner = ChatRunner(model, max_wait_s=0.05)
    try:
        long = asyncio.create_task(ask(runner, "a long one"))
        await until_streaming(runner)
        with pytest.raises(ChinwagError) as refused:
            await ask(runner, "a text question")
        assert refused.value.code is ErrorCode.OVERLOADED
        voice = await ask(runner, "a spoken question", urgent=True)
        assert voice.stats is not None and voice.stats.finish_reason == "stop"
        assert not long.done()  # the voice reply did not wait for the long one
        await long
    finally:
        runner.close()


async def test_no_limit_waits_as_long_as_it_takes() -> None:
    model = FakeChatModel(by_question, token_delay_s=0.002, parallel=1)
    runner = ChatRunner(model, max_wait_s=0.0)
    try:
        long = asyncio.create_task(ask(runner, "a long one"))
        await until_streaming(runner)
        short = await ask(runner, "hi")
        assert short.stats is not None and short.stats.finish_reason == "stop"
        assert long.done()  # it waited for the whole long reply
        assert short.queued_s > 0
    finally:
        runner.close()


# --- the speech recognizer's queue ---------------------------------------------------------------


class GatedTranscriber(FakeTranscriber):
    """Each transcription waits until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__("hello there")
        self.gate = threading.Event()
        self.started = threading.Event()

    def transcribe(self, audio: Float32Audio, *, prompt: str | None = None) -> Transcript:
        self.started.set()
        self.gate.wait(10)
        return super().transcribe(audio)


async def test_a_transcription_queued_past_the_limit_is_refused_and_not_run() -> None:
    transcriber = GatedTranscriber()
    speech = SpeechRunner(transcriber, FakeSynthesizer(), FakeVad(), max_wait_s=0.05)
    audio = np.zeros(16000, dtype=np.float32)
    try:
        first = asyncio.create_task(speech.transcribe(audio))
        await asyncio.to_thread(transcriber.started.wait, 10)
        second = asyncio.create_task(speech.transcribe(audio))
        await asyncio.sleep(0.1)  # past the limit, still behind the first
        transcriber.gate.set()
        assert (await first).text == "hello there"
        with pytest.raises(ChinwagError) as refused:
            await second
        assert refused.value.code is ErrorCode.OVERLOADED
        assert len(transcriber.calls) == 1  # the refused one never ran
        # Nothing ahead: the next one runs however small the limit.
        assert (await speech.transcribe(audio)).text == "hello there"
    finally:
        speech.close()


# --- a whole session -----------------------------------------------------------------------------


class Sessions:
    def __init__(self, app: App) -> None:
        self.app = app
        self.opened: list[tuple[Session, RecordingSink]] = []

    async def open(self) -> tuple[Session, RecordingSink]:
        sink = RecordingSink()
        session = Session(self.app, sink)
        await session.start()
        self.opened.append((session, sink))
        return session, sink


@pytest.fixture
async def busy_server() -> AsyncIterator[Sessions]:
    """One place on the model and a 50 ms limit: a long reply keeps the next one waiting."""
    settings = make_settings(
        limits={"max_reply_wait_s": 0.05},
        vad={"speculate": False, "silence_ms": 500, "min_speech_ms": 100},
        llm={"prefill_while_speaking": False},
    )
    personas = PersonaLibrary.load(settings.prompts.directory, settings.prompts.default_persona)
    app = App(settings=settings, personas=personas)
    app.attach(
        fake_engines(
            FakeChatModel(by_question, token_delay_s=0.005, parallel=1),
            transcriber=FakeTranscriber("what time is it"),
            synthesizer=FakeSynthesizer(seconds_per_char=0.001),
        )
    )
    sessions = Sessions(app)
    yield sessions
    for session, _ in sessions.opened:
        await session.close()
    app.close()


async def until(check: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110 - the checks read plain attributes
            await asyncio.sleep(0.002)


async def speak(session: Session, pcm: np.ndarray) -> None:
    for i in range(0, len(pcm), 320):
        await session.handle_audio(pcm[i : i + 320].astype("<i2").tobytes())
    await session.listener.drained()


async def test_refused_turns_say_overloaded_a_voice_turn_hears_an_apology(
    busy_server: Sessions,
) -> None:
    hog, hog_sink = await busy_server.open()
    texter, text_sink = await busy_server.open()
    talker, voice_sink = await busy_server.open()
    await hog.handle(proto.UserMessage(text="a long one please"))
    assert busy_server.app.chat is not None
    await until(lambda: busy_server.app.chat is not None and busy_server.app.chat._active)

    # Text: an `overloaded` error and a failed reply.done, nothing kept in the history.
    await texter.handle(proto.UserMessage(text="hi"))
    await until(lambda: text_sink.of(proto.ReplyDone))
    (error,) = text_sink.of(proto.Error)
    assert error.code == ErrorCode.OVERLOADED.value
    (done,) = text_sink.of(proto.ReplyDone)
    assert done.status == "failed" and done.text == ""
    assert texter.history == []

    # Voice: the same error, and the apology is spoken as the reply's audio.
    await talker.handle(proto.AudioStart(sample_rate=RATE))
    await speak(talker, tone(1.0))
    await speak(talker, silence(0.7))
    # The apology's audio ends before its reply.done is sent: wait for both.
    await until(lambda: voice_sink.of(proto.OutputAudioDone) and voice_sink.of(proto.ReplyDone))
    assert [e.code for e in voice_sink.of(proto.Error)] == [ErrorCode.OVERLOADED.value]
    (started,) = voice_sink.of(proto.OutputAudioStart)
    (done,) = voice_sink.of(proto.ReplyDone)
    assert started.stream_id == done.reply_id and done.status == "failed"
    synth = busy_server.app.speech.synthesizer if busy_server.app.speech else None
    assert isinstance(synth, FakeSynthesizer)
    assert " ".join(t.strip() for t in synth.texts) == APOLOGY
    assert voice_sink.audio_bytes > 0
    assert talker.history == []

    # The long reply was never disturbed; once it is done everyone is answered again.
    await until(lambda: hog_sink.of(proto.ReplyDone))
    assert hog_sink.of(proto.ReplyDone)[0].status == "completed"
    await texter.handle(proto.UserMessage(text="hi"))
    await until(lambda: len(text_sink.of(proto.ReplyDone)) == 2)
    assert text_sink.of(proto.ReplyDone)[1].status == "completed"
    await speak(talker, tone(1.0))
    await speak(talker, silence(0.7))
    await until(lambda: len(voice_sink.of(proto.ReplyDone)) == 2)
    assert voice_sink.of(proto.ReplyDone)[1].status == "completed"
    assert [m.role for m in talker.history] == ["user", "assistant"]
