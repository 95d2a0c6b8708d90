"""Speech engines on their own worker threads: VAD, ASR and TTS never run on the event loop.

One thread per stage: the models are thread-confined, and separate threads let the first
phrase be synthesized while the LLM is still writing the second.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from server.audio.vad import VadModel
from server.engines.base import Float32Audio, Int16Audio, Synthesizer, Transcriber, Transcript
from server.pipeline.priority import CpuPriority

T = TypeVar("T")


class SpeechRunner:
    def __init__(
        self,
        transcriber: Transcriber,
        synthesizer: Synthesizer,
        vad: VadModel,
        *,
        priority: CpuPriority | None = None,
    ) -> None:
        self.transcriber = transcriber
        self.priority = priority or CpuPriority(enabled=False)
        self.synthesizer = synthesizer
        self.vad = vad
        self._vad_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vad")
        self._asr_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asr")
        # Partial transcriptions have their own thread, so that one in progress never holds
        # up a turn's transcription (the Whisper model runs two at once).
        self._partial_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asr-partial")
        self._tts_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tts")
        self._partial_jobs = 0

    def close(self) -> None:
        for pool in (self._vad_pool, self._asr_pool, self._partial_pool, self._tts_pool):
            pool.shutdown(wait=False, cancel_futures=True)

    @property
    def partial_busy(self) -> bool:
        return self._partial_jobs > 0

    async def on_vad_thread(self, func: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._vad_pool, func)

    async def transcribe(self, audio: Float32Audio) -> Transcript:
        """A turn's transcription: someone waits for it, so LLM tokens wait instead."""

        def run() -> Transcript:
            with self.priority.urgent():
                return self.transcriber.transcribe(audio)

        return await asyncio.get_running_loop().run_in_executor(self._asr_pool, run)

    async def transcribe_partial(self, audio: Float32Audio) -> Transcript:
        """The words so far of a turn still going on; in the background."""
        self._partial_jobs += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._partial_pool, self.transcriber.transcribe, audio
            )
        finally:
            self._partial_jobs -= 1

    async def synthesize(self, text: str, *, urgent: bool = False) -> Int16Audio:
        """The whole phrase's audio. Piper synthesizes a sentence at once anyway, so the
        phrase is the unit of streaming; the lazy chunk generator is drained in the worker.
        `urgent`: the listener waits for it (a first phrase), so LLM tokens wait instead."""

        def run() -> Int16Audio:
            with self.priority.urgent() if urgent else contextlib.nullcontext():
                chunks = list(self.synthesizer.synthesize(text))
            return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

        return await asyncio.get_running_loop().run_in_executor(self._tts_pool, run)
