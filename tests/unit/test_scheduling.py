"""The speech workers' order (pipeline/scheduling.py): earliest deadline first, no starvation,
nothing left queued after a cancellation. Fakes only; no timing assertions."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import numpy as np

from server.engines.base import ChatMessage, Float32Audio, Generation, Transcript
from server.engines.fakes import FakeChatModel, FakeSynthesizer, FakeTranscriber, FakeVad
from server.pipeline.chat import ChatOutcome, ChatRunner
from server.pipeline.priority import CpuPriority
from server.pipeline.scheduling import DeadlineWorker, JobTrace
from server.pipeline.speech import SpeechRunner
from server.prompts import GenerationSettings


class Gate:
    """A job that holds the worker until released, so the test can queue jobs behind it."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> str:
        self.started.set()
        self.release.wait(10)
        return "gate"


async def started(event: threading.Event) -> None:
    assert await asyncio.to_thread(event.wait, 10)


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110 (the condition is another thread's state)
            await asyncio.sleep(0.005)


def job(ran: list[str], name: str) -> Callable[[], str]:
    def run() -> str:
        ran.append(name)
        return name

    return run


async def test_the_earliest_deadline_runs_first_whatever_the_order_of_arrival() -> None:
    traces: list[JobTrace] = []
    worker = DeadlineWorker("test", traces.append)
    gate = Gate()
    ran: list[str] = []
    try:
        holding = asyncio.create_task(worker.run(gate, kind="gate"))
        await started(gate.started)
        now = time.monotonic()
        later = asyncio.create_task(worker.run(job(ran, "later"), deadline=now + 3, kind="b"))
        soon = asyncio.create_task(worker.run(job(ran, "soon"), deadline=now + 1, kind="b"))
        first = asyncio.create_task(worker.run(job(ran, "first"), kind="a"))  # deadline: now
        await until(lambda: worker.waiting() == 3)
        assert worker.waiting(due_by=now + 1.5) == 2
        gate.release.set()
        assert list(await asyncio.gather(holding, later, soon, first)) == [
            "gate",
            "later",
            "soon",
            "first",
        ]
        assert ran == ["first", "soon", "later"]
        await until(lambda: len(traces) == 4)
        assert [t.kind for t in traces] == ["gate", "a", "b", "b"]
        assert all(t.worker == "test" and t.queued_s >= 0 and t.run_s >= 0 for t in traces)
    finally:
        gate.release.set()
        worker.close()


async def test_a_waiting_job_is_not_starved_by_newer_urgent_ones() -> None:
    """A later phrase's deadline stays put: first phrases that arrive after it has come due
    (their deadline is their arrival) go behind it."""
    worker = DeadlineWorker("test")
    ran: list[str] = []
    gate = Gate()
    try:
        holding = asyncio.create_task(worker.run(gate))
        await started(gate.started)
        due = time.monotonic() + 0.05
        waiting = asyncio.create_task(worker.run(job(ran, "later phrase"), deadline=due))
        early = asyncio.create_task(worker.run(job(ran, "first phrase before it")))
        await until(lambda: worker.waiting() == 2)
        await asyncio.sleep(max(0.0, due - time.monotonic()) + 0.01)
        newer = [asyncio.create_task(worker.run(job(ran, f"first phrase {i}"))) for i in range(3)]
        await until(lambda: worker.waiting() == 5)
        gate.release.set()
        await asyncio.gather(holding, waiting, early, *newer)
        assert ran == [
            "first phrase before it",
            "later phrase",
            "first phrase 0",
            "first phrase 1",
            "first phrase 2",
        ]
    finally:
        gate.release.set()
        worker.close()


async def test_a_cancelled_job_leaves_nothing_queued_and_never_runs() -> None:
    worker = DeadlineWorker("test")
    gate = Gate()
    ran: list[str] = []
    try:
        holding = asyncio.create_task(worker.run(gate))
        await started(gate.started)
        queued = [asyncio.create_task(worker.run(job(ran, f"phrase {i}"))) for i in range(3)]
        await until(lambda: worker.waiting() == 3)
        for task in queued:
            task.cancel()
        await asyncio.gather(*queued, return_exceptions=True)
        assert worker.waiting() == 0
        gate.release.set()
        assert await holding == "gate"
        assert await worker.run(job(ran, "after")) == "after"
        assert ran == ["after"]
    finally:
        gate.release.set()
        worker.close()


async def test_an_exception_reaches_the_caller_and_the_worker_goes_on() -> None:
    worker = DeadlineWorker("test")

    def broken() -> str:
        raise ValueError("bad input")

    try:
        try:
            await worker.run(broken)
        except ValueError as exc:
            assert str(exc) == "bad input"
        else:
            raise AssertionError("the job's exception was not raised")
        assert await worker.run(lambda: "still working") == "still working"
    finally:
        worker.close()


async def test_closing_cancels_what_is_queued() -> None:
    worker = DeadlineWorker("test")
    gate = Gate()
    holding = asyncio.create_task(worker.run(gate))
    await started(gate.started)
    queued = asyncio.create_task(worker.run(lambda: "never"))
    await until(lambda: worker.waiting() == 1)
    worker.close()
    gate.release.set()
    assert await holding == "gate"
    assert isinstance((await asyncio.gather(queued, return_exceptions=True))[0], BaseException)
    assert worker.waiting() == 0


class Recording(FakeSynthesizer):
    """Holds the first phrase it is given until released; records what it synthesized."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = Gate()
        self.said: list[str] = []

    def synthesize(self, text: str):  # type: ignore[no-untyped-def]
        if not self.said and not self.gate.release.is_set():
            self.gate()
        self.said.append(text)
        yield from super().synthesize(text)


async def test_a_first_phrase_goes_before_other_replies_later_phrases() -> None:
    synthesizer = Recording()
    runner = SpeechRunner(FakeTranscriber(), synthesizer, FakeVad())
    try:
        now = time.monotonic()
        busy = asyncio.create_task(runner.synthesize("Already running.", needed_at=now + 5))
        await started(synthesizer.gate.started)
        # Two replies' later phrases, needed when their earlier phrases have played...
        later_a = asyncio.create_task(runner.synthesize("A, later.", needed_at=now + 2.0))
        later_b = asyncio.create_task(runner.synthesize("B, later.", needed_at=now + 1.0))
        await until(lambda: runner._tts.waiting() == 2)
        assert not runner.urgent_pending  # only phrases with time to spare are queued
        # ...and a new reply's first phrase, which someone waits for in silence.
        first = asyncio.create_task(runner.synthesize("C first.", urgent=True))
        await until(lambda: runner._tts.waiting() == 3)
        assert runner.urgent_pending
        synthesizer.gate.release.set()
        await asyncio.gather(busy, later_a, later_b, first)
        assert synthesizer.said == ["Already running.", "C first.", "B, later.", "A, later."]
        assert not runner.urgent_pending
    finally:
        synthesizer.gate.release.set()
        runner.close()


class HeldTurns(FakeTranscriber):
    def __init__(self) -> None:
        super().__init__("hello there")
        self.gate = Gate()

    def transcribe(self, audio: Float32Audio, *, prompt: str | None = None) -> Transcript:
        if not self.gate.release.is_set():
            self.gate()
        return super().transcribe(audio)


async def test_a_turns_transcription_makes_speech_work_urgent_until_done() -> None:
    transcriber = HeldTurns()
    runner = SpeechRunner(transcriber, FakeSynthesizer(), FakeVad())
    try:
        assert not runner.urgent_pending
        turn = asyncio.create_task(runner.transcribe(np.zeros(16000, np.float32)))
        await started(transcriber.gate.started)
        assert runner.urgent_pending
        transcriber.gate.release.set()
        assert (await turn).text == "hello there"
        assert not runner.urgent_pending
    finally:
        transcriber.gate.release.set()
        runner.close()


async def test_a_job_with_time_to_spare_waits_while_urgent_work_runs() -> None:
    urgent = threading.Event()
    worker = DeadlineWorker("test", defer_while=urgent.is_set, defer_slack_s=1.0)
    ran: list[str] = []
    try:
        urgent.set()
        spare = asyncio.create_task(
            worker.run(job(ran, "due in 60 s"), deadline=time.monotonic() + 60)
        )
        # Due within the slack: it runs even while urgent work runs (it would be late).
        assert await worker.run(job(ran, "due now")) == "due now"
        assert ran == ["due now"] and not spare.done() and worker.waiting() == 1
        urgent.clear()
        assert await spare == "due in 60 s"
        assert ran == ["due now", "due in 60 s"]
    finally:
        worker.close()


async def test_a_deferred_job_still_runs_when_its_time_comes() -> None:
    """Urgent work that never ends does not starve it: it starts once due within the slack."""
    worker = DeadlineWorker("test", defer_while=lambda: True, defer_slack_s=0.0)
    try:
        due = time.monotonic() + 0.1
        assert await worker.run(lambda: "ran", deadline=due) == "ran"
        assert time.monotonic() >= due
    finally:
        worker.close()


class CountingThreads(FakeChatModel):
    """A model on the machine's cores: records the threads each step ran on."""

    def __init__(self) -> None:
        super().__init__("one two three four five six", token_delay_s=0.01)
        self.threads = 2
        self.now = 2
        self.step_threads: list[int] = []

    def use_threads(self, n: int) -> None:
        self.now = n

    def step(self, generations: Sequence[Generation]) -> None:
        self.step_threads.append(self.now)
        super().step(generations)


async def reply_once(runner: ChatRunner) -> None:
    async def ignore(_: str) -> None:
        pass

    await runner.reply(
        "system", [ChatMessage("user", "hi")], GenerationSettings(), ignore, ChatOutcome()
    )


@contextlib.contextmanager
def counting_runner(
    *, share_cores: bool
) -> Iterator[tuple[CpuPriority, CountingThreads, ChatRunner]]:
    """A chat runner on a model that records the threads of each step; closed after."""
    priority = CpuPriority()
    model = CountingThreads()
    runner = ChatRunner(model, priority, share_cores=share_cores)
    try:
        yield priority, model, runner
    finally:
        runner.close()


async def test_the_model_gives_a_core_back_while_speech_work_runs_beside_it() -> None:
    with counting_runner(share_cores=True) as (priority, model, runner):
        with priority.beside():  # e.g. a later phrase on the TTS worker
            await reply_once(runner)
        assert model.step_threads and set(model.step_threads) == {1}
        model.step_threads.clear()
        await reply_once(runner)
        assert model.step_threads and set(model.step_threads) == {2}


async def test_without_sharing_the_model_keeps_its_threads() -> None:
    with counting_runner(share_cores=False) as (priority, model, runner):
        with priority.beside():
            await reply_once(runner)
        assert model.step_threads and set(model.step_threads) == {2}


async def test_partials_and_later_phrases_count_as_speech_work_beside_the_model() -> None:
    priority = CpuPriority()
    seen: list[bool] = []
    voice = FakeSynthesizer(on_phrase=lambda _: seen.append(priority.sharing))
    with contextlib.closing(
        SpeechRunner(FakeTranscriber(), voice, FakeVad(), priority=priority)
    ) as runner:
        await runner.synthesize("later phrase", needed_at=time.monotonic())
        assert seen == [True] and not priority.sharing and not priority.busy


async def first_chunk(runner: SpeechRunner, text: str, **how: Any) -> int:
    """Pull the phrase's audio chunk by chunk (as the Speaker does); its length."""
    total = 0
    chunks = runner.synthesize_chunks(text, **how)
    async with contextlib.aclosing(chunks):
        async for chunk in chunks:
            total += len(chunk)
    return total


@contextlib.asynccontextmanager
async def held_tts() -> AsyncIterator[
    tuple[SpeechRunner, FakeSynthesizer, Gate, asyncio.Task[str]]
]:
    """A speech runner (no phrase cache) whose TTS worker a gate job holds, so that phrases
    queue behind it until the test releases the gate; closed after."""
    synthesizer = FakeSynthesizer()
    runner = SpeechRunner(FakeTranscriber(), synthesizer, FakeVad(), phrase_cache_entries=0)
    gate = Gate()
    try:
        holding = asyncio.create_task(runner._tts.run(gate))
        await started(gate.started)
        yield runner, synthesizer, gate, holding
    finally:
        gate.release.set()
        runner.close()


async def test_chunk_by_chunk_a_first_phrase_goes_before_a_later_one() -> None:
    async with held_tts() as (runner, synthesizer, gate, holding):
        later = asyncio.create_task(
            first_chunk(runner, "Later words.", needed_at=lambda: time.monotonic() + 5)
        )
        await until(lambda: runner._tts.waiting() == 1)
        first = asyncio.create_task(first_chunk(runner, "First words.", urgent=True))
        await until(lambda: runner._tts.waiting() == 2)
        gate.release.set()
        await holding
        assert await first > 0 and await later > 0
        assert synthesizer.texts == ["First words.", "Later words."]


async def test_a_phrase_cancelled_while_queued_leaves_nothing_on_the_tts_worker() -> None:
    """A barge-in cancels the reply's speaking: its queued synthesis must not run later."""
    async with held_tts() as (runner, synthesizer, gate, holding):
        phrases = [
            asyncio.create_task(first_chunk(runner, f"Phrase {i}.", urgent=i == 0))
            for i in range(3)
        ]
        await until(lambda: runner._tts.waiting() == 3)
        for task in phrases:
            task.cancel()
        await asyncio.gather(*phrases, return_exceptions=True)
        assert runner._tts.waiting() == 0
        gate.release.set()
        await holding
        assert await first_chunk(runner, "After.", urgent=True) > 0
        assert synthesizer.texts == ["After."]
