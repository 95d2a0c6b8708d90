"""Speech engines on their own worker threads: VAD, ASR and TTS never run on the event loop.

One thread per stage: the models are thread-confined, and separate threads let the first
phrase be synthesized while the LLM is still writing the second.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from server.audio.vad import VadModel
from server.engines.base import (
    FileTranscriber,
    Float32Audio,
    Hypothesis,
    Int16Audio,
    PacedSynthesizer,
    Reconsider,
    Reconsiders,
    Segment,
    Synthesizer,
    Transcriber,
    Transcript,
)
from server.pipeline.admission import WaitLimit
from server.pipeline.priority import CpuPriority
from server.pipeline.scheduling import DeadlineWorker, JobTrace

T = TypeVar("T")
# A partial transcription (words so far) waits at most this long for urgent work to end.
PARTIAL_DEFER_S = 0.5

# Short phrases said again are not synthesized again: a home hears the same confirmations
# ("Turned off the kitchen light") day after day, and a command's answer waits on its one
# Piper call (docs/performance.md#the-intent-stage). Bounded: at most this many phrases
# (about 100 KB each at 22 kHz), each at most this long.
PHRASE_CACHE_ENTRIES = 64
PHRASE_CACHE_MAX_CHARS = 80


@dataclass(frozen=True)
class TranscribedFile:
    language: str
    duration_s: float
    segments: list[Segment]

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments)


class SpeechRunner:
    def __init__(
        self,
        transcriber: Transcriber,
        synthesizer: Synthesizer,
        vad: VadModel,
        *,
        priority: CpuPriority | None = None,
        max_wait_s: float = 0.0,
        phrase_cache_entries: int = PHRASE_CACHE_ENTRIES,
        on_job: Callable[[JobTrace], None] | None = None,
    ) -> None:
        self.transcriber = transcriber
        self._cache_entries = phrase_cache_entries  # 0: every phrase is synthesized
        self.limit = WaitLimit(max_wait_s)
        self._turn_jobs = 0  # turn transcriptions submitted and not finished
        self.priority = priority or CpuPriority(enabled=False)
        self.synthesizer = synthesizer
        self.vad = vad
        self._vad_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vad")
        # Wake word detection for streams waiting for one (pipeline/wake.py): a thread of its
        # own, so that the VAD of a turn under way never queues behind idle devices.
        self._wake_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wake")
        # Turns' transcriptions in the order they are needed (pipeline/scheduling.py).
        self._asr = DeadlineWorker("asr", on_job)
        # Partial transcriptions have their own thread, so that one in progress never holds
        # up a turn's transcription (the Whisper model runs two at once); one does not start
        # while a turn's transcription or a first phrase runs, for up to PARTIAL_DEFER_S.
        self._partial = DeadlineWorker(
            "asr-partial", on_job, defer_while=lambda: self.priority.busy, defer_slack_s=0.0
        )
        # Phrases in the order their listeners need them: a first phrase before other
        # replies' later phrases, which have the earlier phrases' playing time to spare.
        # (Holding later phrases back while a turn's transcription runs was measured and
        # dropped: they then ran just as that turn's first phrase came, which waited for
        # them; docs/performance.md.)
        self._tts = DeadlineWorker("tts", on_job)
        self._partial_jobs = 0
        # (synthesizer, text, speed) -> audio; touched on the event loop only.
        self._said: OrderedDict[tuple[int, str, float], Int16Audio] = OrderedDict()

    def close(self) -> None:
        for pool in (self._vad_pool, self._wake_pool):
            pool.shutdown(wait=False, cancel_futures=True)
        for worker in (self._asr, self._partial, self._tts):
            worker.close()

    @property
    def partial_busy(self) -> bool:
        return self._partial_jobs > 0

    @property
    def urgent_pending(self) -> bool:
        """Someone waits for speech work now: a turn's transcription, or a phrase due by now
        (a first phrase, or a later one whose playback would otherwise run dry), is queued or
        running. Work that merely prepares (a partial for the prefill) should not compete."""
        return (
            self._turn_jobs > 0
            or self._tts.running_kind() == "tts_first"
            or self._tts.waiting(due_by=time.monotonic()) > 0
        )

    def _beside(self, func: Callable[[], T]) -> T:
        with self.priority.beside():
            return func()

    async def on_vad_thread(self, func: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._vad_pool, func)

    async def on_wake_thread(self, func: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._wake_pool, func)

    async def transcribe(
        self,
        audio: Float32Audio,
        *,
        prompt: str | None = None,
        reconsider: Reconsider | None = None,
    ) -> Transcript:
        """A turn's transcription: someone waits for it, so LLM tokens wait instead.
        `reconsider` may read the utterance again, in the same job (engines/base.py).
        Raises ChinwagError(OVERLOADED) if it waited behind other sessions' turns for longer
        than the limit (pipeline/admission.py); one that can start at once always runs."""
        deadline = self.limit.deadline(time.monotonic()) if self._turn_jobs else None

        def run() -> Transcript:
            if self.limit.expired(deadline, time.monotonic()):
                raise self.limit.error("the transcription")
            with self.priority.urgent():
                if reconsider is None:
                    return self.transcriber.transcribe(audio, prompt=prompt)
                return _reconsidered(self.transcriber, audio, prompt, reconsider)

        self._turn_jobs += 1
        try:
            return await self._asr.run(run, kind="asr_turn")
        finally:
            self._turn_jobs -= 1

    async def transcribe_partial(
        self,
        audio: Float32Audio,
        *,
        prompt: str | None = None,
        started: threading.Event | None = None,
    ) -> Transcript:
        """The words so far of a turn still going on; in the background. `started` is set
        when the transcription leaves the queue (cancelled before that, it never runs)."""

        def run() -> Transcript:
            if started is not None:
                started.set()
            return self._beside(lambda: self.transcriber.transcribe(audio, prompt=prompt))

        self._partial_jobs += 1
        try:
            return await self._partial.run(
                run, deadline=time.monotonic() + PARTIAL_DEFER_S, kind="asr_partial"
            )
        finally:
            self._partial_jobs -= 1

    async def transcribe_file(
        self, audio: Float32Audio, *, language: str | None = None, prompt: str | None = None
    ) -> TranscribedFile:
        """A whole file (OpenAI's transcription API), in the background: on the partial
        transcriptions' worker, one 30 s window per job, so a long file never delays a
        turn's transcription and partials may run between its windows. Cancelling stops
        at the next window."""
        transcriber = self.transcriber
        worker = self._partial
        self._partial_jobs += 1  # the listener skips partials meanwhile, not queue them
        try:
            if not isinstance(transcriber, FileTranscriber):
                whole = await worker.run(lambda: transcriber.transcribe(audio), kind="asr_file")
                segments = [Segment(0.0, whole.audio_s, whole.text)] if whole.text else []
                return TranscribedFile(whole.language, whole.audio_s, segments)
            job = await worker.run(
                lambda: transcriber.transcribe_file(audio, language=language, prompt=prompt),
                kind="asr_file",
            )
            found: list[Segment] = []
            while (
                segment := await worker.run(lambda: next(job.segments, None), kind="asr_file")
            ) is not None:
                found.append(segment)
            return TranscribedFile(job.language, job.duration_s, found)
        finally:
            self._partial_jobs -= 1

    @property
    def paced(self) -> bool:
        """The voice can speak at other speeds than its own."""
        return isinstance(self.synthesizer, PacedSynthesizer)

    async def synthesize(
        self,
        text: str,
        *,
        urgent: bool = False,
        speed: float = 1.0,
        needed_at: float | None = None,
    ) -> Int16Audio:
        """The whole phrase's audio. Piper synthesizes a sentence at once anyway, so the
        phrase is the unit of streaming; the lazy chunk generator is drained in the worker.
        `urgent`: the listener waits for it (a first phrase), so LLM tokens wait instead.
        `needed_at` (time.monotonic()): when playback reaches it; phrases needed sooner go
        first (None: now). `speed` other than 1 needs a PacedSynthesizer (see `paced`)."""
        synthesizer = self.synthesizer
        key = (id(synthesizer), text, speed)
        said = self._said_before(key)
        if said is not None:
            return said

        def run() -> Int16Audio:
            with self.priority.urgent() if urgent else self.priority.beside():
                if speed != 1.0 and isinstance(synthesizer, PacedSynthesizer):
                    chunks = list(synthesizer.synthesize_paced(text, speed))
                else:
                    chunks = list(synthesizer.synthesize(text))
            return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

        audio = await self._tts.run(run, deadline=needed_at, kind=_tts_kind(urgent))
        return self._keep(key, audio)

    def _said_before(self, key: tuple[int, str, float]) -> Int16Audio | None:
        said = self._said.get(key)
        if said is not None:
            self._said.move_to_end(key)
        return said

    def _keep(self, key: tuple[int, str, float], audio: Int16Audio) -> Int16Audio:
        """Remember a short phrase's audio (PHRASE_CACHE_*); returns it, read-only."""
        if self._cache_entries and len(key[1]) <= PHRASE_CACHE_MAX_CHARS and len(audio):
            audio.flags.writeable = False  # shared by every later use
            self._said[key] = audio
            while len(self._said) > self._cache_entries:
                self._said.popitem(last=False)
        return audio

    async def synthesize_chunks(
        self,
        text: str,
        *,
        urgent: bool = False,
        speed: float = 1.0,
        needed_at: Callable[[], float] | None = None,
    ) -> AsyncGenerator[Int16Audio]:
        """The phrase's audio as the voice makes it: a chunk per sentence, or several per
        sentence from a voice that streams its decoder ([tts] stream_decoder), each pulled on
        the TTS thread. Close it (contextlib.aclosing) to stop the synthesis early; other
        sessions' phrases may run between two chunks. `urgent` and `speed` as in synthesize;
        `needed_at` tells, before each chunk, when playback will reach it (None: now)."""
        synthesizer = self.synthesizer
        kind = _tts_kind(urgent)

        def due() -> float | None:
            return needed_at() if needed_at is not None else None

        key = (id(synthesizer), text, speed)
        said = self._said_before(key)
        if said is not None:
            yield said
            return

        def start() -> Iterator[Int16Audio]:
            if speed != 1.0 and isinstance(synthesizer, PacedSynthesizer):
                return iter(synthesizer.synthesize_paced(text, speed))
            return iter(synthesizer.synthesize(text))

        def pull(chunks: Iterator[Int16Audio]) -> Int16Audio | None:
            with self.priority.urgent() if urgent else self.priority.beside():
                return next(chunks, None)

        chunks = await self._tts.run(start, deadline=due(), kind=kind)
        made: list[Int16Audio] = []
        try:
            while (
                chunk := await self._tts.run(lambda: pull(chunks), deadline=due(), kind=kind)
            ) is not None:
                if len(text) <= PHRASE_CACHE_MAX_CHARS:
                    made.append(chunk)
                yield chunk
            if made:  # the whole phrase (not one closed early)
                self._keep(key, np.concatenate(made))
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                # After any pull still running on the one TTS thread; not awaited, so that a
                # cancelled reply does not wait for it. (A worker closed runs nothing more.)
                with contextlib.suppress(RuntimeError):
                    self._tts.submit(close, kind="tts_close")


def _reconsidered(
    transcriber: Transcriber, audio: Float32Audio, prompt: str | None, reconsider: Reconsider
) -> Transcript:
    if isinstance(transcriber, Reconsiders):
        return transcriber.transcribe_reconsidered(audio, prompt=prompt, reconsider=reconsider)

    def more(n: int, other: str | None) -> list[Hypothesis]:
        # Without the engine's beam search the only other reading is one with another prompt.
        if other == prompt:
            return []
        heard = transcriber.transcribe(audio, prompt=other)
        return [Hypothesis(heard.text, heard.avg_logprob)] if heard.text else []

    return reconsider(transcriber.transcribe(audio, prompt=prompt), more)


def _tts_kind(urgent: bool) -> str:
    """The trace's name of a synthesis job: a first phrase someone waits for, or a later one."""
    return "tts_first" if urgent else "tts_later"
