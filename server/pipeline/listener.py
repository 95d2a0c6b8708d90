"""The microphone of one session: frames in, utterances and pauses out.

Frames are decoded on the loop (cheap, and bad input must be answered at once), then go
through a bounded queue to the VAD, which runs on the VAD thread, in order: a client that
sends faster than the VAD keeps up is slowed down by TCP, not buffered without limit. While
the person speaks, the words so far are transcribed now and then on their own worker, for
clients that asked for partial transcripts and to prefill the LLM.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Protocol

import numpy as np

from server.audio.pcm import decode_pcm16
from server.audio.vad import (
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    SpeechStopped,
    StreamingVad,
)
from server.config import Settings
from server.engines.base import Float32Audio, UnknownWakeWord, WakeWordEngine
from server.errors import ChinwagError, ErrorCode
from server.pipeline.audio_input import AudioInput, InputEvent, vad_config
from server.pipeline.speech import SpeechRunner
from server.pipeline.wake import WakeGate, WakeHeard, WakePlan, WakeWaitingAgain
from server.protocol import native as proto

AUDIO_QUEUE_FRAMES = 64  # ~1-2 s of typical 20-40 ms frames before TCP backpressure
PARTIAL_EVERY_S = 1.0
PREFILL_EVERY_S = 0.5  # a whisper pass (~100 ms on one core) every half second
WAKE_BATCH_S = 0.08  # frames held while waiting for a wake word, then analysed at once


class TurnTaking(Protocol):
    """What the session does when the person starts, pauses, resumes and stops."""

    async def speech_started(self, utterance_id: str, start: proto.AudioStart) -> None: ...

    async def speech_paused(
        self, utterance_id: str, event: SpeechPaused, audio: AudioInput
    ) -> None: ...

    async def speech_resumed(self) -> None: ...

    async def speech_stopped(
        self, utterance_id: str, audio: Float32Audio, start: proto.AudioStart
    ) -> None: ...

    def join_carry(self, audio: Float32Audio) -> tuple[Float32Audio, str | None]: ...

    async def prefill(self, said: str) -> None: ...

    def prefill_would_run(self) -> bool: ...


class Listener:
    def __init__(
        self,
        *,
        speech: Callable[[], SpeechRunner],
        settings: Settings,
        emit: Callable[[proto.ServerEvent], Awaitable[None]],
        send_error: Callable[[ChinwagError, str], Awaitable[None]],
        next_id: Callable[[str], str],
        turns: TurnTaking,
        log: logging.LoggerAdapter[logging.Logger],
        name: str,
        wake_plan: Callable[[], WakePlan | None] = lambda: None,
        wake_engine: Callable[[], WakeWordEngine] | None = None,
        asr_prompt: Callable[[], str | None] = lambda: None,
        begins_command: Callable[[str], bool] = lambda said: False,
    ) -> None:
        self._speech = speech
        self._asr_prompt = asr_prompt
        self._begins_command = begins_command
        # The words so far begin a command: the chat model will not answer this utterance,
        # so neither prefill it nor keep transcribing it while it is spoken (that work
        # competes with the command's own transcription once the person pauses).
        self._commanding = False
        self._wake_plan = wake_plan
        self._wake_engine = wake_engine
        self._settings = settings
        self._emit = emit
        self._send_error = send_error
        self._next_id = next_id
        self._turns = turns
        self._log = log
        self._name = name
        self.input: AudioInput | None = None
        self._queue: asyncio.Queue[np.ndarray | None] | None = None
        self._task: asyncio.Task[None] | None = None
        self.utterance_id: str | None = None  # the utterance being spoken, if any
        self._last_partial_s = 0.0
        # Partial transcriptions under way, and whether each has left the worker's queue.
        self._partials: dict[asyncio.Task[None], threading.Event] = {}

    @property
    def open(self) -> bool:
        return self.input is not None

    # --- the stream ---------------------------------------------------------------------

    async def start(self, start: proto.AudioStart) -> None:
        """Open a stream (an open one ends first, its utterance answered)."""
        speech = self._speech()
        vad = StreamingVad(speech.vad, vad_config(self._settings.vad, start))
        plan = self._wake_plan() if start.mode == "vad" else None
        gate = await self._wake_gate(plan) if plan is not None else None
        audio = AudioInput(start, vad, gate)  # validates the rates
        if self.input is not None:
            await self.stop()
        self.input = audio
        self._queue = asyncio.Queue(maxsize=AUDIO_QUEUE_FRAMES)
        self._task = asyncio.create_task(self._run(audio, self._queue), name=f"audio-{self._name}")
        if plan is not None:
            await self._emit(proto.WakeWaiting(wake_words=list(plan.words)))

    async def _wake_gate(self, plan: WakePlan) -> WakeGate:
        if self._wake_engine is None:
            raise ChinwagError(ErrorCode.UNKNOWN_WAKE_WORD, "this server has no wake words")
        engine = self._wake_engine()
        try:
            # Loading the interpreters and analysing their first (silent) history takes
            # ~0.1 s: off the loop, and off the VAD thread that every stream shares.
            detector = await asyncio.to_thread(engine.new_detector, plan.words)
        except UnknownWakeWord as exc:
            raise ChinwagError(ErrorCode.UNKNOWN_WAKE_WORD, str(exc)) from exc
        return WakeGate(detector, plan)

    async def push(self, frame: bytes) -> None:
        """One frame of 16-bit PCM; waits while the VAD is behind (backpressure)."""
        if self._queue is None:
            raise ChinwagError(
                ErrorCode.AUDIO_NOT_STARTED,
                "send audio.start (with the sample rate) before audio frames",
            )
        pcm = decode_pcm16(frame)
        await self._queue.put(pcm)

    async def stop(self) -> None:
        """End the stream: the utterance in progress (push-to-talk: the whole) is answered."""
        queue, task = self._queue, self._task
        self.input = self._queue = self._task = None
        if queue is not None and task is not None:
            await queue.put(None)
            await asyncio.gather(task, return_exceptions=True)

    async def clear(self) -> None:
        """Drop the audio buffered so far; the stream stays open, as it was started."""
        audio = self.input
        if audio is None:
            return
        await self._abort()
        self.utterance_id = None
        await self.start(audio.start)

    async def close(self) -> None:
        await self._abort()
        tasks = list(self._partials)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _abort(self) -> None:
        task = self._task
        self.input = self._queue = self._task = None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # --- the VAD loop -------------------------------------------------------------------

    async def _run(self, audio: AudioInput, queue: asyncio.Queue[np.ndarray | None]) -> None:
        try:
            await self._consume(audio, queue)
        finally:
            # However the loop ended, a reader blocked on a full queue must not wait forever.
            if self._queue is queue:
                self.input = self._queue = self._task = None
            while not queue.empty():
                queue.get_nowait()
                queue.task_done()

    async def _consume(self, audio: AudioInput, queue: asyncio.Queue[np.ndarray | None]) -> None:
        speech = self._speech()
        while True:
            pcm = await queue.get()
            try:
                if pcm is None:
                    final = await speech.on_vad_thread(audio.finish)
                    if final is not None:
                        if self.utterance_id is None:  # push-to-talk: no speech.started yet
                            self.utterance_id = self._next_id("u")
                        await self._stopped(final, audio)
                    return
                await self._analyse(audio, pcm)
            finally:
                queue.task_done()

    async def _analyse(self, audio: AudioInput, pcm: np.ndarray) -> None:
        speech = self._speech()
        events: list[InputEvent]
        if audio.wake is None or not audio.wake.waiting:
            # No wake word, or heard: the VAD thread (and the detector with it, for its clock).
            events = await speech.on_vad_thread(functools.partial(audio.feed, pcm))
        else:
            # Waiting: the detector on its own thread, so that the VAD of a turn under way
            # never queues behind idle devices, and in 80 ms batches (the detector's step):
            # a quarter of the thread hops of 20 ms frames.
            batch = audio.hold(pcm, WAKE_BATCH_S)
            if batch is None:
                return
            step = await speech.on_wake_thread(functools.partial(audio.listen, batch))
            if audio.wake.waiting and step.heard is None:
                return
            events = await speech.on_vad_thread(functools.partial(audio.hear, step))
        for event in events:
            if isinstance(event, WakeHeard):
                self._log.info("wake word %s heard", event.detection.wake_word_id)
                await self._emit(
                    proto.WakeDetected(
                        wake_word_id=event.detection.wake_word_id,
                        at_ms=round(event.at_s * 1000, 1),
                        probability=round(event.detection.probability, 3),
                    )
                )
            elif isinstance(event, WakeWaitingAgain):
                words = audio.wake.plan.words if audio.wake is not None else ()
                await self._emit(proto.WakeWaiting(wake_words=list(words)))
            elif isinstance(event, SpeechStarted):
                await self._started(event, audio)
            elif isinstance(event, SpeechStopped):
                await self._stopped(event, audio)
            elif isinstance(event, SpeechPaused):
                if not audio.start.partial_transcripts:
                    self._drop_partials()
                if self.utterance_id is not None:
                    await self._turns.speech_paused(self.utterance_id, event, audio)
            elif isinstance(event, SpeechResumed):
                await self._turns.speech_resumed()
        # Not in a pause: a speculative reply has the cores then.
        if (
            audio.vad.in_speech
            and not audio.vad.detector.pausing
            and (
                audio.start.partial_transcripts
                or (self._prefill_wanted(audio.start) and not self._commanding)
            )
        ):
            await self._maybe_partial(audio)

    async def drained(self) -> None:
        """Wait until every frame pushed so far has been through the VAD and acted on."""
        if self._queue is not None:
            await self._queue.join()

    async def _started(self, event: SpeechStarted, audio: AudioInput) -> None:
        self.utterance_id = utterance_id = self._next_id("u")
        self._last_partial_s = 0.0
        self._commanding = False
        await self._emit(
            proto.SpeechStarted(utterance_id=utterance_id, at_ms=round(event.at_s * 1000, 1))
        )
        await self._turns.speech_started(utterance_id, audio.start)

    async def _stopped(self, event: SpeechStopped, audio: AudioInput) -> None:
        utterance_id = self.utterance_id or self._next_id("u")
        self.utterance_id = None
        await self._emit(
            proto.SpeechStopped(
                utterance_id=utterance_id,
                at_ms=round(event.at_s * 1000, 1),
                duration_ms=round(event.duration_s * 1000, 1),
            )
        )
        if event.truncated:
            limit = self._settings.vad.max_utterance_s
            await self._send_error(
                ChinwagError(
                    ErrorCode.UTTERANCE_TOO_LONG,
                    f"an utterance may last {limit:g} s; this one was cut there and not answered",
                ),
                "audio",
            )
            return
        await self._turns.speech_stopped(utterance_id, event.audio, audio.start)

    # --- words so far -------------------------------------------------------------------

    def _prefill_wanted(self, start: proto.AudioStart) -> bool:
        llm = self._settings.llm
        # A remote LLM has no cache of ours to fill: partial transcriptions would be wasted.
        return (
            llm.prefill_while_speaking
            and not llm.remote
            and start.task == "converse"
            and start.respond
        )

    def _drop_partials(self) -> None:
        """The person paused: the speculative reply transcribes the turn so far, so a partial
        made only for the prefill and still queued is withdrawn. It was deferred only while
        that transcription ran, and would then start on the second core beside the reply's
        model and first phrase; its words would wait out the pause anyway. (One already
        running cannot be stopped: its words prefill if the person goes on.)"""
        for task, started in self._partials.items():
            if not started.is_set():
                task.cancel()

    async def _maybe_partial(self, audio: AudioInput) -> None:
        """Transcribe the turn so far, now and then while the person speaks: for clients that
        asked for partial transcripts, and to prefill the LLM with the words said so far."""
        speech = self._speech()
        start = audio.start
        prefill = self._prefill_wanted(start)
        every = PREFILL_EVERY_S if prefill else PARTIAL_EVERY_S
        utterance_s = audio.vad.utterance_s
        if utterance_s - self._last_partial_s < every or speech.partial_busy:
            return
        if not start.partial_transcripts and (
            speech.urgent_pending or not self._turns.prefill_would_run()
        ):
            # Only the prefill would use it, and it would be skipped (the model has other
            # work), or it would take cores from someone waiting for their transcription or
            # first phrase: skip it, and try again at the next frame.
            return
        self._last_partial_s = utterance_s
        utterance_id = self.utterance_id
        snapshot = await speech.on_vad_thread(audio.vad.detector.current_utterance)
        snapshot, _ = self._turns.join_carry(snapshot)

        started = threading.Event()

        async def partial() -> None:
            transcript = await speech.transcribe_partial(
                snapshot, prompt=self._asr_prompt(), started=started
            )
            text = transcript.text.strip()
            if not (text and utterance_id and self.utterance_id == utterance_id):
                return
            if start.partial_transcripts:
                await self._emit(proto.TranscriptPartial(utterance_id=utterance_id, text=text))
            # The last word may be cut off mid-way; what comes before it should stand.
            said = " ".join(text.split()[:-1])
            if said and self._begins_command(said):
                self._commanding = True
            # Once they pause, the speculative reply evaluates the prompt itself.
            if prefill and said and not audio.vad.detector.pausing and not self._commanding:
                await self._turns.prefill(said)

        task = asyncio.create_task(partial())
        self._partials[task] = started
        task.add_done_callback(lambda done: self._partials.pop(done, None))
