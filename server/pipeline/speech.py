"""Speech engines on their own worker threads: VAD, ASR and TTS never run on the event loop.

One thread per stage: the models are thread-confined, and separate threads let the first
phrase be synthesized while the LLM is still writing the second.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    Int16Audio,
    PacedSynthesizer,
    Segment,
    Synthesizer,
    Transcriber,
    Transcript,
)
from server.pipeline.admission import WaitLimit
from server.pipeline.priority import CpuPriority

T = TypeVar("T")

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
        self._asr_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asr")
        # Partial transcriptions have their own thread, so that one in progress never holds
        # up a turn's transcription (the Whisper model runs two at once).
        self._partial_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asr-partial")
        self._tts_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tts")
        self._partial_jobs = 0
        # (synthesizer, text, speed) -> audio; touched on the event loop only.
        self._said: OrderedDict[tuple[int, str, float], Int16Audio] = OrderedDict()

    def close(self) -> None:
        pools = (self._vad_pool, self._wake_pool, self._asr_pool, self._partial_pool)
        for pool in (*pools, self._tts_pool):
            pool.shutdown(wait=False, cancel_futures=True)

    @property
    def partial_busy(self) -> bool:
        return self._partial_jobs > 0

    async def on_vad_thread(self, func: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._vad_pool, func)

    async def on_wake_thread(self, func: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._wake_pool, func)

    async def transcribe(self, audio: Float32Audio, *, prompt: str | None = None) -> Transcript:
        """A turn's transcription: someone waits for it, so LLM tokens wait instead.
        Raises ChinwagError(OVERLOADED) if it waited behind other sessions' turns for longer
        than the limit (pipeline/admission.py); one that can start at once always runs."""
        deadline = self.limit.deadline(time.monotonic()) if self._turn_jobs else None

        def run() -> Transcript:
            if self.limit.expired(deadline, time.monotonic()):
                raise self.limit.error("the transcription")
            with self.priority.urgent():
                return self.transcriber.transcribe(audio, prompt=prompt)

        self._turn_jobs += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._asr_pool, run)
        finally:
            self._turn_jobs -= 1

    async def transcribe_partial(
        self, audio: Float32Audio, *, prompt: str | None = None
    ) -> Transcript:
        """The words so far of a turn still going on; in the background."""
        self._partial_jobs += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._partial_pool, lambda: self.transcriber.transcribe(audio, prompt=prompt)
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
        loop = asyncio.get_running_loop()
        transcriber = self.transcriber
        self._partial_jobs += 1  # the listener skips partials meanwhile, not queue them
        try:
            if not isinstance(transcriber, FileTranscriber):
                whole = await loop.run_in_executor(
                    self._partial_pool, transcriber.transcribe, audio
                )
                segments = [Segment(0.0, whole.audio_s, whole.text)] if whole.text else []
                return TranscribedFile(whole.language, whole.audio_s, segments)
            job = await loop.run_in_executor(
                self._partial_pool,
                lambda: transcriber.transcribe_file(audio, language=language, prompt=prompt),
            )
            found: list[Segment] = []
            while (
                segment := await loop.run_in_executor(self._partial_pool, next, job.segments, None)
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
        self, text: str, *, urgent: bool = False, speed: float = 1.0
    ) -> Int16Audio:
        """The whole phrase's audio. Piper synthesizes a sentence at once anyway, so the
        phrase is the unit of streaming; the lazy chunk generator is drained in the worker.
        `urgent`: the listener waits for it (a first phrase), so LLM tokens wait instead.
        `speed` other than 1 needs a PacedSynthesizer (see `paced`)."""
        synthesizer = self.synthesizer
        key = (id(synthesizer), text, speed)
        said = self._said_before(key)
        if said is not None:
            return said

        def run() -> Int16Audio:
            with self.priority.urgent() if urgent else contextlib.nullcontext():
                if speed != 1.0 and isinstance(synthesizer, PacedSynthesizer):
                    chunks = list(synthesizer.synthesize_paced(text, speed))
                else:
                    chunks = list(synthesizer.synthesize(text))
            return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

        audio = await asyncio.get_running_loop().run_in_executor(self._tts_pool, run)
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
        self, text: str, *, urgent: bool = False, speed: float = 1.0
    ) -> AsyncGenerator[Int16Audio]:
        """The phrase's audio as the voice makes it: a chunk per sentence, or several per
        sentence from a voice that streams its decoder ([tts] stream_decoder), each pulled on
        the TTS thread. Close it (contextlib.aclosing) to stop the synthesis early; other
        sessions' phrases may run between two chunks. `urgent` and `speed` as in synthesize."""
        synthesizer = self.synthesizer
        loop = asyncio.get_running_loop()
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
            with self.priority.urgent() if urgent else contextlib.nullcontext():
                return next(chunks, None)

        chunks = await loop.run_in_executor(self._tts_pool, start)
        made: list[Int16Audio] = []
        try:
            while (chunk := await loop.run_in_executor(self._tts_pool, pull, chunks)) is not None:
                if len(text) <= PHRASE_CACHE_MAX_CHARS:
                    made.append(chunk)
                yield chunk
            if made:  # the whole phrase (not one closed early)
                self._keep(key, np.concatenate(made))
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                # After any pull still running on the one TTS thread; not awaited, so that a
                # cancelled reply does not wait for it. (A pool shut down runs nothing more.)
                with contextlib.suppress(RuntimeError):
                    loop.run_in_executor(self._tts_pool, close)
