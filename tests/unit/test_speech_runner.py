import asyncio
import contextlib
import threading

import numpy as np

from server.engines.base import Float32Audio, Transcript
from server.engines.fakes import FakeSynthesizer, FakeTranscriber, FakeVad
from server.pipeline.priority import CpuPriority
from server.pipeline.speech import SpeechRunner

PARTIAL = 1600  # samples: how the test transcriber tells a partial from a turn


class BlockingPartials(FakeTranscriber):
    def __init__(self, priority: CpuPriority) -> None:
        super().__init__("hello there")
        self.priority = priority
        self.release = threading.Event()
        self.urgent_seen: list[bool] = []

    def transcribe(self, audio: Float32Audio, *, prompt: str | None = None) -> Transcript:
        self.urgent_seen.append(self.priority.busy)
        if audio.size == PARTIAL:
            self.release.wait(10)
        return super().transcribe(audio)


async def test_a_partial_in_progress_never_holds_up_a_turns_transcription() -> None:
    priority = CpuPriority()
    transcriber = BlockingPartials(priority)
    runner = SpeechRunner(transcriber, FakeSynthesizer(), FakeVad(), priority=priority)
    try:
        partial = asyncio.create_task(runner.transcribe_partial(np.zeros(PARTIAL, np.float32)))
        await asyncio.sleep(0.05)
        assert runner.partial_busy
        turn = await asyncio.wait_for(runner.transcribe(np.zeros(16000, np.float32)), 5)
        assert turn.text == "hello there"
        assert not partial.done()
        transcriber.release.set()
        await partial
        assert not runner.partial_busy
        # The turn's transcription was urgent (LLM tokens wait); the partial was not.
        assert transcriber.urgent_seen == [False, True]
    finally:
        transcriber.release.set()
        runner.close()


async def test_only_a_first_phrase_is_urgent() -> None:
    priority = CpuPriority()
    seen: list[bool] = []
    voice = FakeSynthesizer(on_phrase=lambda _: seen.append(priority.busy))
    with contextlib.closing(
        SpeechRunner(FakeTranscriber(), voice, FakeVad(), priority=priority)
    ) as runner:
        await runner.synthesize("First words", urgent=True)
        await runner.synthesize("and the rest.")
        assert seen == [True, False]


async def test_a_short_phrase_said_again_is_not_synthesized_again() -> None:
    from server.pipeline import speech

    synthesizer = FakeSynthesizer()
    runner = SpeechRunner(FakeTranscriber(), synthesizer, FakeVad())
    try:
        first = await runner.synthesize("Turned off the kitchen light")
        again = await runner.synthesize("Turned off the kitchen light")
        assert synthesizer.texts == ["Turned off the kitchen light"]
        assert np.array_equal(first, again) and len(again) > 0
        assert not again.flags.writeable  # shared: nobody may change it
        long = "x" * (speech.PHRASE_CACHE_MAX_CHARS + 1)
        await runner.synthesize(long)
        await runner.synthesize(long)
        assert synthesizer.texts.count(long) == 2  # long phrases are not kept
        for n in range(speech.PHRASE_CACHE_ENTRIES + 1):
            await runner.synthesize(f"phrase {n}")
        await runner.synthesize("Turned off the kitchen light")  # the oldest went first
        assert synthesizer.texts.count("Turned off the kitchen light") == 2
    finally:
        runner.close()


class Pieces(FakeSynthesizer):
    """A voice that yields a phrase in pieces (as Piper with stream_decoder), noting each
    piece made, whether it was urgent, and whether its generator was closed."""

    def __init__(self, priority: CpuPriority, pieces: int) -> None:
        super().__init__()
        self.priority = priority
        self.pieces = pieces
        self.made: list[bool] = []
        self.closed = threading.Event()

    def synthesize(self, text: str):  # type: ignore[no-untyped-def]
        try:
            for i in range(self.pieces):
                self.made.append(self.priority.busy)
                yield np.full(100, i, dtype=np.int16)
        finally:
            self.closed.set()


async def test_a_phrase_comes_chunk_by_chunk_each_urgent_if_asked() -> None:
    priority = CpuPriority()
    voice = Pieces(priority, pieces=4)
    runner = SpeechRunner(FakeTranscriber(), voice, FakeVad(), priority=priority)
    try:
        chunks = [c async for c in runner.synthesize_chunks("First words", urgent=True)]
        assert [int(c[0]) for c in chunks] == [0, 1, 2, 3]
        assert voice.made == [True] * 4 and voice.closed.wait(5)
        voice.made.clear()
        assert len([c async for c in runner.synthesize_chunks("and the rest.")]) == 4
        assert voice.made == [False] * 4
    finally:
        runner.close()


async def test_the_speakers_chunked_synthesis_keeps_short_phrases_too() -> None:
    synthesizer = FakeSynthesizer()
    runner = SpeechRunner(FakeTranscriber(), synthesizer, FakeVad())
    try:
        first = [c async for c in runner.synthesize_chunks("Turned on the heater")]
        again = [c async for c in runner.synthesize_chunks("Turned on the heater")]
        assert synthesizer.texts == ["Turned on the heater"]
        assert np.array_equal(np.concatenate(first), np.concatenate(again))
        # ... and the whole-phrase call finds it as well
        assert np.array_equal(await runner.synthesize("Turned on the heater"), again[0])
        assert synthesizer.texts == ["Turned on the heater"]
    finally:
        runner.close()


async def test_closing_the_chunks_early_stops_the_synthesis() -> None:
    voice = Pieces(CpuPriority(), pieces=1000)
    runner = SpeechRunner(FakeTranscriber(), voice, FakeVad())
    try:
        chunks = runner.synthesize_chunks("A long phrase")
        async for _ in chunks:
            break
        await chunks.aclose()
        assert await asyncio.to_thread(voice.closed.wait, 5)
        assert len(voice.made) < 1000  # the rest was never made
    finally:
        runner.close()


async def test_no_phrase_cache_synthesizes_every_time() -> None:
    """[tts] phrase_cache_entries = 0 (the Wyoming benchmark, which repeats its texts)."""
    synthesizer = FakeSynthesizer()
    runner = SpeechRunner(FakeTranscriber(), synthesizer, FakeVad(), phrase_cache_entries=0)
    try:
        await runner.synthesize("Turned on the heater")
        _ = [c async for c in runner.synthesize_chunks("Turned on the heater")]
        assert synthesizer.texts == ["Turned on the heater"] * 2
    finally:
        runner.close()
