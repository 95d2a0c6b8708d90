"""Turn taking through a whole Session with fake engines and a fake VAD: milliseconds each.

Audio goes in faster than real time: the VAD counts time in samples, so a second of tone
then half a second of zeros is a one-second utterance and the pause that ends it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest

from server.app import App, Engines
from server.engines.fakes import FakeChatModel, FakeSynthesizer, FakeTranscriber
from server.pipeline.session import Session
from server.pipeline.state import SessionState
from server.pipeline.turns import TurnPhase
from server.prompts import PersonaLibrary
from server.protocol import native as proto
from tests.conftest import fake_engines, make_settings

RATE = 16000
FRAME = 320  # 20 ms


class RecordingSink:
    def __init__(self) -> None:
        self.events: list[proto.ServerEvent] = []
        self.audio_bytes = 0

    async def send(self, event: proto.ServerEvent) -> None:
        self.events.append(event)

    async def send_audio(self, pcm: bytes) -> None:
        self.audio_bytes += len(pcm)

    def types(self) -> list[str]:
        return [e.type for e in self.events]

    def of(self, kind: type[proto.ServerEvent]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (8000 * np.sin(2 * np.pi * 220 * t)).astype(np.int16)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.int16)


class Harness:
    def __init__(self, session: Session, sink: RecordingSink, engines: Engines) -> None:
        self.session = session
        self.sink = sink
        self.engines = engines

    @property
    def transcriber(self) -> FakeTranscriber:
        assert isinstance(self.engines.transcriber, FakeTranscriber)
        return self.engines.transcriber

    async def speak(self, pcm: np.ndarray) -> None:
        """Push audio in 20 ms frames and wait until the VAD has acted on all of it."""
        for i in range(0, len(pcm), FRAME):
            await self.session.handle_audio(pcm[i : i + FRAME].astype("<i2").tobytes())
        await self.session.listener.drained()

    async def until(self, check: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not check():  # noqa: ASYNC110 - the checks read plain attributes
                await asyncio.sleep(0.002)

    async def reply_done(self, count: int = 1) -> list[proto.ReplyDone]:
        await self.until(lambda: len(self.sink.of(proto.ReplyDone)) >= count)
        done: list[proto.ReplyDone] = self.sink.of(proto.ReplyDone)
        return done


def build(
    *,
    reply: str = "Sure thing. I can help with that today.",
    token_delay_s: float = 0.0,
    seconds_per_char: float = 0.01,
    speculate: bool = True,
    transcript: str = "what time is it",
    prefill: bool = False,
) -> tuple[App, Engines]:
    settings = make_settings(
        vad={"speculate": speculate, "silence_ms": 500, "min_speech_ms": 100},
        llm={"prefill_while_speaking": prefill},
    )
    personas = PersonaLibrary.load(settings.prompts.directory, settings.prompts.default_persona)
    app = App(settings=settings, personas=personas)
    engines = fake_engines(
        FakeChatModel(reply, token_delay_s=token_delay_s),
        transcriber=FakeTranscriber(transcript),
        synthesizer=FakeSynthesizer(seconds_per_char=seconds_per_char),
    )
    app.attach(engines)
    return app, engines


@pytest.fixture
async def make() -> AsyncIterator[Callable[..., Any]]:
    harnesses: list[Harness] = []

    async def factory(**options: Any) -> Harness:
        app, engines = build(**options)
        sink = RecordingSink()
        session = Session(app, sink)
        await session.start()
        harness = Harness(session, sink, engines)
        harnesses.append(harness)
        return harness

    yield factory
    for harness in harnesses:
        await harness.session.close()
        harness.session.app.close()
        # Nothing of the session may outlive close().
        assert harness.session.turns.phase is TurnPhase.IDLE
        assert not harness.session.listener.open


async def test_text_turn_commits_the_exchange(make: Callable[..., Any]) -> None:
    h: Harness = await make(reply="Hello there.")
    await h.session.handle(proto.UserMessage(text="hi"))
    (done,) = await h.reply_done()
    assert done.status == "completed" and done.text == "Hello there."
    assert [(m.role, m.content) for m in h.session.history] == [
        ("user", "hi"),
        ("assistant", "Hello there."),
    ]
    assert h.session.state is SessionState.IDLE


async def test_cancelled_text_reply_keeps_what_was_written_and_reraises(
    make: Callable[..., Any],
) -> None:
    h: Harness = await make(reply="one two three four five six seven eight", token_delay_s=0.02)
    await h.session.handle(proto.UserMessage(text="count"))
    await h.until(lambda: len(h.sink.of(proto.ReplyDelta)) >= 2)
    turn = h.session.turns.turn
    assert turn is not None
    await h.session.handle(proto.Cancel())
    (done,) = await h.reply_done()
    assert done.status == "cancelled"
    assert turn.task.cancelled()  # cancellation propagates out of the turn task
    kept = h.session.history[-1]
    assert kept.role == "assistant" and kept.content == done.text
    assert 0 < len(done.text.split()) < 8


async def test_a_new_message_supersedes_the_running_one(make: Callable[..., Any]) -> None:
    h: Harness = await make(reply="a b c d e f g h i j", token_delay_s=0.02)
    await h.session.handle(proto.UserMessage(text="first"))
    await h.until(lambda: len(h.sink.of(proto.ReplyDelta)) >= 1)
    await h.session.handle(proto.UserMessage(text="second"))
    first, second = await h.reply_done(2)
    assert (first.status, second.status) == ("cancelled", "completed")
    started = h.sink.of(proto.ReplyStarted)
    assert [s.reply_id for s in started] == [first.reply_id, second.reply_id]


async def test_voice_turn_speculation_is_kept_when_the_pause_ends_the_turn(
    make: Callable[..., Any],
) -> None:
    h: Harness = await make()
    await h.session.handle(proto.AudioStart(sample_rate=RATE))
    await h.speak(tone(1.0))
    await h.speak(silence(0.1))  # a pause: the reply is prepared, its output held
    speculation = h.session.turns.speculation
    assert speculation is not None
    assert h.session.turns.phase is TurnPhase.PREPARING
    await h.until(lambda: speculation.turn.task.done())
    assert "reply.started" not in h.sink.types()  # held, unseen
    await h.speak(silence(0.6))  # the turn ends where they paused
    (done,) = await h.reply_done()
    assert done.status == "completed"
    assert len(h.transcriber.calls) == 1  # the speculation's transcription was the turn's
    types = h.sink.types()
    assert types.index("speech.stopped") < types.index("transcript") < types.index("reply.done")
    assert h.sink.audio_bytes > 0
    await h.until(lambda: h.session.state is not SessionState.THINKING)


async def test_speculation_is_dropped_unseen_when_the_person_goes_on(
    make: Callable[..., Any],
) -> None:
    h: Harness = await make(transcript="turn on the light")
    await h.session.handle(proto.AudioStart(sample_rate=RATE))
    await h.speak(tone(0.8))
    await h.speak(silence(0.2))
    first = h.session.turns.speculation
    assert first is not None
    await h.until(lambda: first.turn.task.done())
    await h.speak(tone(0.8))  # they go on: the prepared reply is thrown away
    assert first.turn.context.out.discarded
    assert h.session.turns.speculation is None
    await h.speak(silence(0.7))
    (done,) = await h.reply_done()
    assert done.status == "completed"
    # One transcript, one reply: the first speculation never reached the client.
    assert len(h.sink.of(proto.Transcript)) == 1
    assert len(h.sink.of(proto.ReplyStarted)) == 1
    # The whole utterance (both stretches of tone) was transcribed for the kept reply.
    assert h.transcriber.calls[-1] > 1.6
    assert [m.role for m in h.session.history] == ["user", "assistant"]


async def test_a_pause_withdraws_a_partial_transcription_still_queued(
    make: Callable[..., Any],
) -> None:
    """A partial made for the prefill waits while urgent speech work runs; if the person
    pauses meanwhile, the speculative reply has the turn so far, and the partial never runs
    (it would take the second core from the reply's model and first phrase)."""
    h: Harness = await make(prefill=True)
    speech = h.session.speech
    await h.session.handle(proto.AudioStart(sample_rate=RATE))
    with speech.priority.urgent():  # e.g. another turn's transcription
        await h.speak(tone(0.7))  # past 0.5 s of speech: a partial is asked for, and waits
        assert speech.partial_busy
        assert h.transcriber.calls == []
        await h.speak(silence(0.1))  # the pause: the speculation transcribes the turn so far
        await h.until(lambda: not speech.partial_busy)
    speculation = h.session.turns.speculation
    assert speculation is not None
    await h.until(lambda: speculation.turn.task.done())
    await asyncio.sleep(0.05)  # a partial not withdrawn would have run by now
    assert h.transcriber.calls == [pytest.approx(0.7 + 0.032, abs=0.04)]  # the pause's only


async def test_pause_carry_joins_an_unanswered_utterance_to_the_next(
    make: Callable[..., Any],
) -> None:
    # A slow model: the first turn has said nothing when the person speaks again.
    h: Harness = await make(reply="w1 w2 w3 w4 w5 w6 w7 w8 w9", token_delay_s=0.05)
    await h.session.handle(proto.AudioStart(sample_rate=RATE))
    await h.speak(tone(0.6))
    await h.speak(silence(0.6))
    await h.until(lambda: "reply.started" in h.sink.types())
    first_transcript = h.sink.of(proto.Transcript)[0]
    await h.speak(tone(0.6))  # only a pause: barge-in, and the first utterance is carried
    (cancelled,) = await h.reply_done()
    assert cancelled.status == "cancelled" and cancelled.heard_text == ""
    carry = h.session.turns.carry
    assert carry is not None and carry.id == first_transcript.utterance_id
    await h.speak(silence(0.6))
    done = (await h.reply_done(2))[1]
    assert done.status == "completed"
    joined = h.sink.of(proto.Transcript)[-1]
    assert joined.joins == first_transcript.utterance_id
    assert h.transcriber.calls[-1] >= 1.2  # both utterances, transcribed as one
    assert h.session.turns.carry is None
    # The interrupted exchange left nothing behind: only the joined one is in the history.
    assert [m.role for m in h.session.history] == ["user", "assistant"]
    assert h.session.history[0].id == joined.utterance_id


async def test_barge_in_keeps_only_what_was_heard(make: Callable[..., Any]) -> None:
    # Long audio (0.1 s a character), so it is still playing when the person speaks.
    h: Harness = await make(
        reply="This is a long answer. It goes on and on for quite a while.",
        seconds_per_char=0.1,
        speculate=False,
    )
    await h.session.handle(proto.AudioStart(sample_rate=RATE))
    await h.speak(tone(0.6))
    await h.speak(silence(0.6))
    await h.until(lambda: "output_audio.start" in h.sink.types())
    await asyncio.sleep(0.3)
    await h.speak(tone(0.3))  # the person talks over the reply
    await h.until(lambda: "output_audio.clear" in h.sink.types())
    await h.until(lambda: bool(h.sink.of(proto.ReplyDone) or h.sink.of(proto.ReplyTruncated)))
    truncated = h.sink.of(proto.ReplyTruncated)
    done = h.sink.of(proto.ReplyDone)
    heard = truncated[0].heard_text if truncated else done[0].heard_text
    assert heard is not None
    full = "This is a long answer. It goes on and on for quite a while."
    assert len(heard) < len(full)
    assistant = [m for m in h.session.history if m.role == "assistant"]
    assert [m.content for m in assistant] in ([heard], [])


async def test_playback_reports_move_what_was_heard(make: Callable[..., Any]) -> None:
    h: Harness = await make(seconds_per_char=0.2, speculate=False)
    await h.session.handle(proto.Say(text="Hello there. How are you today?"))
    await h.until(lambda: "output_audio.start" in h.sink.types())
    stream_id = h.sink.of(proto.OutputAudioStart)[0].stream_id
    await h.session.handle(proto.Playback(stream_id=stream_id, played_ms=0))
    current = h.session.speaker.current
    assert current is not None and current.stream_id == stream_id
    assert current.reported_ms == 0
    # A report about another stream is stale: ignored.
    await h.session.handle(proto.Playback(stream_id="s-old", played_ms=500))
    assert current.reported_ms == 0


async def test_audio_before_start_is_an_error_and_the_session_goes_on(
    make: Callable[..., Any],
) -> None:
    h: Harness = await make(reply="Fine.")
    await h.session.handle_audio(b"\x00\x00" * 160)
    (error,) = h.sink.of(proto.Error)
    assert error.code == "audio_not_started"
    await h.session.handle(proto.UserMessage(text="still there?"))
    (done,) = await h.reply_done()
    assert done.status == "completed"


async def test_close_mid_reply_ends_every_task(make: Callable[..., Any]) -> None:
    h: Harness = await make(reply="a b c d e f g h", token_delay_s=0.05)
    await h.session.handle(proto.AudioStart(sample_rate=RATE))
    await h.session.handle(proto.UserMessage(text="go on"))
    await h.until(lambda: len(h.sink.of(proto.ReplyDelta)) >= 1)
    before = len(asyncio.all_tasks())
    await h.session.close()
    (done,) = h.sink.of(proto.ReplyDone)
    assert done.status == "cancelled"
    assert len(asyncio.all_tasks()) < before


class StateLog:
    """A hub observer that records the session's published states."""

    def __init__(self) -> None:
        self.states: list[SessionState] = []

    def on_event(self, session: Session, event: proto.ServerEvent) -> None:
        pass

    def on_state(self, session: Session, previous: SessionState, state: SessionState) -> None:
        assert previous is not state
        self.states.append(state)


async def test_the_session_publishes_its_state_through_a_barge_in(
    make: Callable[..., Any],
) -> None:
    # A slow model: the reply is still being written when the person talks over it.
    h: Harness = await make(
        reply="This is a long answer. It goes on and on for quite a while.",
        token_delay_s=0.15,
        seconds_per_char=0.1,
        speculate=False,
    )
    log = StateLog()
    h.session.app.hub.add_observer(log)
    await h.session.handle(proto.AudioStart(sample_rate=RATE))
    await h.speak(tone(0.6))
    await h.speak(silence(0.6))
    await h.until(lambda: SessionState.SPEAKING in log.states)
    await h.speak(tone(0.4))  # talking over the reply: listening, never idle in between
    await h.until(lambda: "output_audio.clear" in h.sink.types())
    await h.speak(silence(0.6))
    await h.reply_done(2)
    await h.until(lambda: log.states[-1] is SessionState.IDLE)
    first_speaking = log.states.index(SessionState.SPEAKING)
    assert log.states[: first_speaking + 2] == [
        SessionState.LISTENING,
        SessionState.THINKING,
        SessionState.SPEAKING,
        SessionState.LISTENING,
    ]
    assert h.session.state is SessionState.IDLE


async def test_transcription_only_keeps_every_utterance(make: Callable[..., Any]) -> None:
    """A transcribe stream answers nothing, so a new utterance never cancels the last one's
    transcription, however slow it is."""
    h: Harness = await make(transcript="one more thing")
    await h.session.handle(proto.AudioStart(sample_rate=RATE, task="transcribe"))
    for _ in range(3):
        await h.speak(tone(0.4))
        await h.speak(silence(0.6))
    await h.until(lambda: len(h.sink.of(proto.Transcript)) == 3)
    stopped = [e.utterance_id for e in h.sink.of(proto.SpeechStopped)]
    assert [t.utterance_id for t in h.sink.of(proto.Transcript)] == stopped
    assert not h.sink.of(proto.ReplyStarted)
