"""One connected client's conversation: persona, history, microphone, and the reply in progress.

Transports translate their wire format into `handle()` / `handle_audio()` calls and deliver
what the session sends to its `EventSink`; the session never knows which transport it serves.

A turn (typed message, or utterance → transcript → reply) is one cancellable task. Barge-in,
a new message, `cancel` or a disconnect cancel it; its `finally` always reports how it ended.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import ValidationError

from server.app import App
from server.audio.pcm import StreamResampler, check_sample_rate, decode_pcm16
from server.audio.vad import (
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    SpeechStopped,
    StreamingVad,
    VadEvent,
)
from server.engines.base import ChatMessage, Float32Audio, Role
from server.errors import ChinwagError, ErrorCode
from server.pipeline.audio_input import AudioInput, vad_config
from server.pipeline.chat import ChatOutcome
from server.pipeline.endpointing import looks_complete
from server.pipeline.playback import SpokenReply, heard_text
from server.pipeline.speech import SpeechRunner
from server.pipeline.text_split import PhraseSplitter, speakable
from server.pipeline.turn_output import TurnOutput
from server.prompts import GenerationSettings, Persona
from server.protocol import native as proto

log = logging.getLogger(__name__)

AUDIO_QUEUE_FRAMES = 64  # ~1-2 s of typical 20-40 ms frames before TCP backpressure
PARTIAL_EVERY_S = 1.0
PREFILL_EVERY_S = 0.5  # a whisper pass (~100 ms on one core) every half second
Status = Literal["completed", "cancelled", "failed"]


class EventSink(Protocol):
    async def send(self, event: proto.ServerEvent) -> None: ...

    async def send_audio(self, pcm: bytes) -> None: ...


class SessionLogger(logging.LoggerAdapter[logging.Logger]):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{self.extra['session'] if self.extra else '?'}] {msg}", kwargs


class Session:
    def __init__(self, app: App, sink: EventSink, *, transport: str = "native") -> None:
        self.app = app
        self.sink = sink
        self.id = uuid.uuid4().hex[:12]
        self.site: str | None = None
        self.log = SessionLogger(log, {"session": self.id})
        self.persona: Persona = app.personas.get(None)
        self.generation: GenerationSettings = self.persona.generation
        self.history: list[ChatMessage] = []
        self._turn: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        # Microphone stream, when open.
        self._audio: AudioInput | None = None
        self._audio_queue: asyncio.Queue[np.ndarray | None] | None = None
        self._audio_task: asyncio.Task[None] | None = None
        self._utterance_id: str | None = None
        self._last_partial_s = 0.0
        # The last spoken reply (its audio may still be playing after the turn ended), and
        # the current turn's, if it has begun speaking.
        self._spoken: SpokenReply | None = None
        self._turn_spoken: SpokenReply | None = None
        # Audio of an utterance whose answer was interrupted before a word of it was heard:
        # the person only paused, so it is joined to what they say next.
        self._carry: tuple[str, Float32Audio] | None = None  # (utterance id, its audio)
        self._turn_audio: tuple[str, Float32Audio] | None = None
        # A reply being prepared while the person pauses (its output held), if any.
        self._speculation: tuple[str, asyncio.Task[None], TurnOutput, Float32Audio] | None = None
        self._direct = TurnOutput(self.emit, self._send_audio)
        self._background: set[asyncio.Task[None]] = set()
        # Utterances being transcribed into the conversation without an answer (respond=False);
        # a reply asked for later waits for them.
        self._pending_input: set[asyncio.Task[None]] = set()
        self._spoken_log: collections.deque[SpokenReply] = collections.deque(maxlen=8)
        # Replaces the persona's system prompt when set (OpenAI Realtime `instructions`).
        self.instructions: str | None = None
        self.transport = transport  # the hub counts sessions by transport

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        await self.app.ready.wait()
        await self.emit(self._started_event())

    async def close(self) -> None:
        # The audio loop first: it is what starts speculations and turns.
        if self._audio_task is not None:
            self._audio_task.cancel()
            await asyncio.gather(self._audio_task, return_exceptions=True)
        await self._discard_speculation()
        tasks = [*self._background, *self._pending_input]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.cancel_turn()

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids)}-{self.id}"

    # --- input -------------------------------------------------------------------------

    async def handle(self, message: proto.ClientMessage) -> None:
        """Act on one client message. Errors become `error` events; the session goes on."""
        try:
            await self._dispatch(message)
        except ChinwagError as exc:
            await self.send_error(exc, source=message.type)

    async def handle_audio(self, frame: bytes) -> None:
        """One binary frame of microphone PCM."""
        try:
            if self._audio_queue is None:
                raise ChinwagError(
                    ErrorCode.AUDIO_NOT_STARTED,
                    "send audio.start (with the sample rate) before audio frames",
                )
            pcm = decode_pcm16(frame)
        except ChinwagError as exc:
            await self.send_error(exc, source="audio")
            return
        await self._audio_queue.put(pcm)

    async def _dispatch(self, message: proto.ClientMessage) -> None:
        match message:
            case proto.UserMessage():
                await self.cancel_turn()
                message_id = message.id or self._next_id("m")
                self._begin_turn(self._reply(message.text, message_id, speak=False))
            case proto.Cancel():
                if not await self.cancel_turn():
                    raise ChinwagError(ErrorCode.NO_ACTIVE_REPLY, "no reply is in progress")
            case proto.AudioStart():
                await self._start_audio(message)
            case proto.AudioStop():
                if self._audio is None:
                    raise ChinwagError(ErrorCode.AUDIO_NOT_STARTED, "no audio stream is open")
                await self._stop_audio()
            case proto.Say():
                if message.sample_rate is not None:
                    check_sample_rate(message.sample_rate)
                await self.cancel_turn()
                self._begin_turn(self._say(message))
            case proto.Playback():
                # Reports about an older stream are stale, not wrong: ignored.
                if self._spoken is not None and self._spoken.stream_id == message.stream_id:
                    self._spoken.report(message.played_ms)
            case proto.SessionStart():
                await self.cancel_turn()
                self._configure(message.persona, message.generation)
                self.site = message.site
                self.history.clear()
                await self.emit(self._started_event())
            case proto.SessionUpdate():
                self._configure(message.persona, message.generation)
                await self.emit(
                    proto.SessionUpdated(
                        persona=self.persona.name, generation=self.generation.model_dump()
                    )
                )
            case _:
                raise ChinwagError(ErrorCode.UNKNOWN_TYPE, f"unhandled message {message.type!r}")

    def _configure(self, persona_name: str | None, overrides: dict[str, Any] | None) -> None:
        # Validate everything before changing anything, so a bad update changes nothing.
        persona = self.app.personas.get(persona_name) if persona_name else self.persona
        base = persona.generation if persona_name else self.generation
        try:
            generation = GenerationSettings.model_validate(
                {**base.model_dump(), **(overrides or {})}
            )
        except ValidationError as exc:
            raise ChinwagError(
                ErrorCode.INVALID_MESSAGE, "generation: " + proto.describe_validation_error(exc)
            ) from exc
        self.persona, self.generation = persona, generation

    async def emit(self, event: proto.ServerEvent) -> None:
        """Send an event to the client, and let the app's observers (the MQTT bridge) see it."""
        await self.sink.send(event)
        self.app.hub.notify_event(self, event)

    async def send_error(
        self, exc: ChinwagError, source: str | None = None, out: TurnOutput | None = None
    ) -> None:
        self.app.metrics.errors.labels(exc.code.value).inc()
        await (out or self._direct).emit(proto.error_event(exc, source))

    async def _send_audio(self, pcm: bytes) -> None:
        await self.sink.send_audio(pcm)

    def _started_event(self) -> proto.SessionStarted:
        assert self.app.chat is not None
        return proto.SessionStarted(
            session_id=self.id,
            persona=self.persona.name,
            personas=self.app.personas.names(),
            generation=self.generation.model_dump(),
            model=self.app.chat.model.name,
            context_size=self.app.chat.model.context_size,
        )

    @property
    def speech(self) -> SpeechRunner:
        if self.app.speech is None:
            raise ChinwagError(ErrorCode.INTERNAL_ERROR, "this server runs without speech models")
        return self.app.speech

    # --- conversation editing (used by the OpenAI Realtime transport) ------------------

    async def respond(
        self, *, speak: bool, sample_rate: int | None = None, instructions: str | None = None
    ) -> None:
        """Answer the conversation as it stands, once pending transcriptions have joined it."""
        if self._pending_input:
            await asyncio.gather(*self._pending_input, return_exceptions=True)
        await self.cancel_turn()
        self._begin_turn(
            self._reply(None, None, speak=speak, sample_rate=sample_rate, instructions=instructions)
        )

    def add_message(self, role: Role, text: str, message_id: str) -> None:
        self.history.append(ChatMessage(role, text, message_id))

    def delete_message(self, message_id: str) -> bool:
        for index, message in enumerate(self.history):
            if message.id == message_id:
                del self.history[index]
                return True
        return False

    def replace_message(self, message_id: str, text: str) -> bool:
        for index, message in enumerate(self.history):
            if message.id == message_id:
                self.history[index] = ChatMessage(message.role, text, message_id)
                return True
        return False

    def truncate_reply(self, reply_id: str, audio_end_ms: float) -> str | None:
        """The listener heard audio_end_ms of this spoken reply: keep only that in history."""
        spoken = next((s for s in self._spoken_log if s.stream_id == reply_id), None)
        if spoken is None:
            return None
        if audio_end_ms > spoken.sent_ms:
            raise ChinwagError(
                ErrorCode.INVALID_MESSAGE,
                f"audio_end_ms {audio_end_ms:g} is past the reply's {spoken.sent_ms:.0f} ms",
            )
        spoken.report(audio_end_ms)
        spoken.stop()
        heard = heard_text(spoken.phrases, audio_end_ms)
        self.replace_message(reply_id, heard)
        return heard

    def add_spoken_message(self, message_id: str, audio: Float32Audio) -> None:
        """A user message given as 16 kHz audio: transcribed into the conversation."""
        start = proto.AudioStart(sample_rate=16000, respond=False)
        self._track(self._pending_input, self._voice_turn(message_id, audio, start))

    async def clear_audio(self) -> None:
        """Drop the microphone audio buffered so far; the stream stays open."""
        audio = self._audio
        if audio is None:
            return
        task = self._audio_task
        self._audio = self._audio_queue = self._audio_task = None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._discard_speculation()  # it was about the audio now dropped
        self._utterance_id = None
        await self._start_audio(audio.start)

    # --- microphone --------------------------------------------------------------------

    async def _start_audio(self, start: proto.AudioStart) -> None:
        vad = StreamingVad(self.speech.vad, vad_config(self.app.settings.vad, start))
        audio = AudioInput(start, vad)  # validates the rates
        if self._audio is not None:
            await self._stop_audio()
        self._audio = audio
        self._audio_queue = asyncio.Queue(maxsize=AUDIO_QUEUE_FRAMES)
        self._audio_task = asyncio.create_task(
            self._audio_loop(audio, self._audio_queue), name=f"audio-{self.id}"
        )

    async def _stop_audio(self) -> None:
        """End the stream: the utterance in progress (push-to-talk: the whole) is answered."""
        queue, task = self._audio_queue, self._audio_task
        self._audio = self._audio_queue = self._audio_task = None
        if queue is not None and task is not None:
            await queue.put(None)
            await asyncio.gather(task, return_exceptions=True)

    async def _audio_loop(self, audio: AudioInput, queue: asyncio.Queue[np.ndarray | None]) -> None:
        try:
            await self._consume_audio(audio, queue)
        finally:
            # However the loop ended, a reader blocked on a full queue must not wait forever.
            if self._audio_queue is queue:
                self._audio = self._audio_queue = self._audio_task = None
            while not queue.empty():
                queue.get_nowait()

    async def _consume_audio(
        self, audio: AudioInput, queue: asyncio.Queue[np.ndarray | None]
    ) -> None:
        speech = self.speech
        while True:
            pcm = await queue.get()
            if pcm is None:
                final = await speech.on_vad_thread(audio.finish)
                if final is not None:
                    if self._utterance_id is None:  # push-to-talk: no speech.started was sent
                        self._utterance_id = self._next_id("u")
                    await self._on_speech_stopped(final, audio)
                return
            events: list[VadEvent] = await speech.on_vad_thread(functools.partial(audio.feed, pcm))
            for event in events:
                if isinstance(event, SpeechStarted):
                    await self._on_speech_started(event, audio)
                elif isinstance(event, SpeechStopped):
                    await self._on_speech_stopped(event, audio)
                elif isinstance(event, SpeechPaused):
                    await self._speculate(event, audio)
                elif isinstance(event, SpeechResumed):
                    await self._discard_speculation()
            # Not in a pause: the speculative reply has the cores then.
            if (
                audio.vad.in_speech
                and not audio.vad.detector.pausing
                and (audio.start.partial_transcripts or self._prefill_wanted(audio.start))
            ):
                await self._maybe_partial(audio)

    async def _on_speech_started(self, event: SpeechStarted, audio: AudioInput) -> None:
        self._utterance_id = self._next_id("u")
        self._last_partial_s = 0.0
        await self.emit(
            proto.SpeechStarted(utterance_id=self._utterance_id, at_ms=round(event.at_s * 1000, 1))
        )
        start = audio.start
        if start.task == "converse" and start.mode == "vad" and start.interrupt:
            await self._barge_in(join_pause=True)

    async def _on_speech_stopped(self, event: SpeechStopped, audio: AudioInput) -> None:
        utterance_id = self._utterance_id or self._next_id("u")
        self._utterance_id = None
        await self.emit(
            proto.SpeechStopped(
                utterance_id=utterance_id,
                at_ms=round(event.at_s * 1000, 1),
                duration_ms=round(event.duration_s * 1000, 1),
            )
        )
        if event.truncated:
            await self.send_error(
                ChinwagError(
                    ErrorCode.UTTERANCE_TOO_LONG,
                    f"an utterance may last {self.app.settings.vad.max_utterance_s:g} s; "
                    "this one was cut there and not answered",
                ),
                source="audio",
            )
            return
        spec = self._speculation
        if spec is not None and spec[0] == utterance_id:
            # The turn ended where the person paused: the reply prepared meanwhile is it.
            self.log.debug("turn confirmed: releasing the speculative reply")
            self._speculation = None
            _, task, out, samples = spec
            self._carry = None
            await self.cancel_turn()
            self._turn, self._turn_audio = task, (utterance_id, samples)
            await out.release()
            return
        await self._discard_speculation()
        samples, joins = self._join_carry(event.audio)
        self._carry = None
        start = audio.start
        if start.task == "converse" and not start.respond:
            self._track(self._pending_input, self._voice_turn(utterance_id, samples, start, joins))
            return
        if start.mode == "push_to_talk" and start.task == "converse" and start.interrupt:
            await self._barge_in(join_pause=False)  # talking over a reply interrupts it too
        await self.cancel_turn()
        self._begin_turn(
            self._voice_turn(utterance_id, samples, start, joins), (utterance_id, samples)
        )

    def _join_carry(self, audio: Float32Audio) -> tuple[Float32Audio, str | None]:
        """An utterance interrupted by a mere pause goes in front of the next one."""
        if self._carry is None:
            return audio, None
        joins, carried = self._carry
        return np.concatenate([carried, audio]), joins

    async def _speculate(self, event: SpeechPaused, audio: AudioInput) -> None:
        """The person went quiet: transcribe and answer now, holding the output until the
        turn is confirmed (kept) or they go on speaking (thrown away, unseen)."""
        await self._discard_speculation()
        start, utterance_id = audio.start, self._utterance_id
        wanted = start.mode == "vad" and start.task == "converse" and start.respond
        if not (wanted and utterance_id and self.app.settings.vad.speculate):
            return
        samples, joins = self._join_carry(event.audio)
        detector = audio.vad.detector
        complete_ms = self.app.settings.vad.complete_silence_ms

        async def end_sooner_if_complete(text: str) -> None:
            if looks_complete(text):
                shorten = functools.partial(detector.shorten_pause, event.pause_id, complete_ms)
                await self.speech.on_vad_thread(shorten)

        self.log.debug("paused: speculating on %.2f s of audio", len(samples) / 16000)
        out = TurnOutput(self.emit, self._send_audio, held=True)
        work = self._voice_turn(utterance_id, samples, start, joins, out, end_sooner_if_complete)
        task = asyncio.create_task(work, name=f"speculative-{self.id}")
        self._speculation = (utterance_id, task, out, samples)

    async def _discard_speculation(self) -> None:
        spec, self._speculation = self._speculation, None
        if spec is not None:
            _, task, out, _ = spec
            out.discard()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _prefill_wanted(self, start: proto.AudioStart) -> bool:
        return (
            self.app.settings.llm.prefill_while_speaking
            and start.task == "converse"
            and start.respond
        )

    async def _maybe_partial(self, audio: AudioInput) -> None:
        """Transcribe the turn so far, now and then while the person speaks: for clients that
        asked for partial transcripts, and to prefill the LLM with the words said so far."""
        start = audio.start
        prefill = self._prefill_wanted(start)
        every = PREFILL_EVERY_S if prefill else PARTIAL_EVERY_S
        utterance_s = audio.vad.utterance_s
        if utterance_s - self._last_partial_s < every or self.speech.partial_busy:
            return
        self._last_partial_s = utterance_s
        utterance_id = self._utterance_id
        snapshot = await self.speech.on_vad_thread(audio.vad.detector.current_utterance)
        snapshot, _ = self._join_carry(snapshot)

        async def partial() -> None:
            transcript = await self.speech.transcribe_partial(snapshot)
            text = transcript.text.strip()
            if not (text and utterance_id and self._utterance_id == utterance_id):
                return
            if start.partial_transcripts:
                await self.emit(proto.TranscriptPartial(utterance_id=utterance_id, text=text))
            # The last word may be cut off mid-way; what comes before it should stand.
            said = " ".join(text.split()[:-1])
            chat = self.app.chat
            # Once they pause, the speculative reply evaluates the prompt itself.
            if prefill and said and chat is not None and not audio.vad.detector.pausing:
                evaluated = await chat.prefill(
                    self._system_prompt(), self.history, ChatMessage("user", said), self.generation
                )
                self.log.debug("prefilled %d tokens of %r", evaluated, said)

        self._track(self._background, partial())

    def _system_prompt(self, instructions: str | None = None) -> str:
        return instructions or self.instructions or self.persona.system_prompt

    @staticmethod
    def _track(tasks: set[asyncio.Task[None]], work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _barge_in(self, *, join_pause: bool) -> None:
        """The person speaks: stop talking, and keep only what they heard.

        join_pause: when the interrupted turn had not said anything yet, the person only
        paused; its utterance is joined to the one now starting."""
        spoken = self._spoken
        turn_running = self._turn is not None and not self._turn.done()
        said_nothing = self._turn_spoken is None or self._turn_spoken.first_sent_at is None
        if join_pause and turn_running and said_nothing and self._turn_audio is not None:
            self._carry = self._turn_audio  # they only paused: join it to what comes next
        playing = spoken is not None and spoken.still_playing()
        if spoken is not None and playing:
            spoken.stop()
            await self.emit(proto.OutputAudioClear(stream_id=spoken.stream_id))
        if turn_running:
            await self.cancel_turn()  # its reply.done carries heard_text
        elif spoken is not None and playing:
            # Fully generated, but the listener stopped it part-way: shorten the history.
            heard = spoken.heard()
            self.replace_message(spoken.stream_id, heard)
            await self.emit(proto.ReplyTruncated(reply_id=spoken.stream_id, heard_text=heard))

    # --- turns -------------------------------------------------------------------------

    def _begin_turn(
        self, work: Coroutine[Any, Any, None], audio: tuple[str, Float32Audio] | None = None
    ) -> None:
        self._turn_spoken = None
        self._turn_audio = audio  # what to join to the next utterance if only a pause
        self._turn = asyncio.create_task(work, name=f"turn-{self.id}")

    async def cancel_turn(self) -> bool:
        """Cancel the turn in progress and wait until its closing events are out."""
        turn = self._turn
        if turn is None or turn.done():
            return False
        turn.cancel()
        # The turn task reports its own cancellation and then ends normally.
        await asyncio.gather(turn, return_exceptions=True)
        return True

    async def _voice_turn(
        self,
        utterance_id: str,
        audio: Float32Audio,
        start: proto.AudioStart,
        joins: str | None = None,
        out: TurnOutput | None = None,
        on_transcript: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        from server.engines.faster_whisper import is_probably_not_speech

        out = out or self._direct
        try:
            began = time.perf_counter()
            transcript = await self.speech.transcribe(audio)
            transcribe_ms = round((time.perf_counter() - began) * 1000, 1)
            self.log.debug("transcribed in %.0f ms: %r", transcribe_ms, transcript.text)
            if on_transcript is not None:
                await on_transcript(transcript.text)
            if is_probably_not_speech(transcript):
                await out.emit(
                    proto.SpeechDiscarded(
                        utterance_id=utterance_id, reason="not_speech", text=transcript.text
                    )
                )
                return
            await out.emit(
                proto.Transcript(
                    utterance_id=utterance_id,
                    text=transcript.text,
                    duration_ms=round(transcript.audio_s * 1000, 1),
                    transcribe_ms=transcribe_ms,
                    joins=joins,
                )
            )
            if start.task == "converse" and start.respond:
                await self._reply(
                    transcript.text,
                    utterance_id,
                    speak=start.speak,
                    sample_rate=start.output_sample_rate,
                    out=out,
                )
            elif start.task == "converse":
                self.history.append(ChatMessage("user", transcript.text, utterance_id))
        except asyncio.CancelledError:
            pass  # interrupted before the reply began: nothing was started, nothing to close
        except Exception:
            self.log.exception("voice turn %s failed", utterance_id)
            await self.send_error(
                ChinwagError(ErrorCode.INTERNAL_ERROR, "transcription failed; see the server log"),
                source="audio",
                out=out,
            )

    async def _say(self, message: proto.Say) -> None:
        stream_id = message.id or self._next_id("s")
        phrases: asyncio.Queue[str | None] = asyncio.Queue()
        splitter = PhraseSplitter()
        for phrase in [*splitter.feed(message.text), *splitter.flush()]:
            phrases.put_nowait(phrase)
        phrases.put_nowait(None)
        # Cancellation (barge-in, a new message) ends the turn quietly; _speak reports it.
        with contextlib.suppress(asyncio.CancelledError):
            await self._speak(SpokenReply(stream_id), phrases, message.sample_rate, self._direct)

    async def _speak(
        self,
        spoken: SpokenReply,
        phrases: asyncio.Queue[str | None],
        sample_rate: int | None,
        out: TurnOutput,
    ) -> None:
        """Synthesize phrases as they arrive and stream their audio; always closes the stream."""
        speech = self.speech
        voice_rate = speech.synthesizer.sample_rate
        rate = sample_rate or voice_rate
        resampler = StreamResampler(voice_rate, rate, np.int16)
        frame = max(1, int(rate * self.app.settings.tts.frame_s))
        status: Status = "failed"
        started = False

        async def send(pcm: np.ndarray, text: str | None) -> None:
            nonlocal started
            if not len(pcm):
                return
            if not started:
                self.log.debug("first audio of %s ready", spoken.stream_id)
                started = True
                await out.emit(proto.OutputAudioStart(stream_id=spoken.stream_id, sample_rate=rate))
            if text is not None:
                spoken.add(text, len(pcm) / rate * 1000)
            else:  # the resampler's tail belongs to the last phrase
                spoken.sent_ms += len(pcm) / rate * 1000
            for i in range(0, len(pcm), frame):
                await out.send_audio(pcm[i : i + frame].astype("<i2").tobytes())
            # Playback (and so what was heard) starts when audio really leaves, not when a
            # speculative reply merely holds it.
            out.when_sent(spoken.mark_sent)

        try:
            while (phrase := await phrases.get()) is not None:
                text = speakable(phrase)
                if not started:
                    self.log.debug("first phrase of %s: %r", spoken.stream_id, text)
                if text.strip():
                    await send(
                        resampler.process(await speech.synthesize(text, urgent=not started)),
                        phrase,
                    )
            await send(resampler.flush(), None)
            status = "completed"
        except asyncio.CancelledError:
            status = "cancelled"
            raise
        finally:
            if started:
                await out.emit(
                    proto.OutputAudioDone(
                        stream_id=spoken.stream_id,
                        status=status,
                        duration_ms=round(spoken.sent_ms, 1),
                    )
                )

    async def _reply(
        self,
        text: str | None,
        message_id: str | None,
        *,
        speak: bool,
        sample_rate: int | None = None,
        instructions: str | None = None,
        out: TurnOutput | None = None,
    ) -> None:
        """Stream the model's answer (and, when speaking, its audio) to a new user message,
        or (text None) to the conversation as it stands."""
        chat = self.app.chat
        assert chat is not None
        out = out or self._direct
        reply_id = self._next_id("r")
        start = time.perf_counter()
        parts: list[str] = []
        first_token_s: float | None = None
        outcome = ChatOutcome()
        status: Status = "failed"
        spoken: SpokenReply | None = None
        speaking: asyncio.Task[None] | None = None
        phrases: asyncio.Queue[str | None] = asyncio.Queue()
        splitter = PhraseSplitter(
            first_phrase_max_words=self.app.settings.tts.first_phrase_max_words or None
        )
        if speak:
            spoken = self._spoken = self._turn_spoken = SpokenReply(reply_id)
            self._spoken_log.append(spoken)
            speaking = asyncio.create_task(self._speak(spoken, phrases, sample_rate, out))
        asked = ChatMessage("user", text, message_id) if text is not None else None
        if asked is not None:
            self.history.append(asked)
        system_prompt = self._system_prompt(instructions)

        async def on_delta(delta: str) -> None:
            nonlocal first_token_s
            if first_token_s is None:
                self.log.debug("first token of %s", reply_id)
                first_token_s = time.perf_counter() - start
            parts.append(delta)
            await out.emit(proto.ReplyDelta(reply_id=reply_id, text=delta))
            if speak:
                for phrase in splitter.feed(delta):
                    phrases.put_nowait(phrase)

        try:
            await out.emit(proto.ReplyStarted(reply_id=reply_id, message_id=message_id))
            await chat.reply(system_prompt, self.history, self.generation, on_delta, outcome)
            if speaking is not None:
                for phrase in splitter.flush():
                    phrases.put_nowait(phrase)
                phrases.put_nowait(None)
                await speaking
            status = "completed"
        except asyncio.CancelledError:
            status = "cancelled"
        except ChinwagError as exc:
            await self.send_error(exc, source="user.message", out=out)
        except Exception:
            self.log.exception("reply %s failed", reply_id)
            await self.send_error(
                ChinwagError(ErrorCode.INTERNAL_ERROR, "the reply failed; see the server log"),
                source="user.message",
                out=out,
            )
        finally:
            if speaking is not None and not speaking.done():
                speaking.cancel()
                await asyncio.gather(speaking, return_exceptions=True)
            del self.history[: outcome.dropped]
            if out.discarded:
                # A speculative reply thrown away: it never happened, for the history too.
                if asked is not None and asked in self.history:
                    self.history.remove(asked)
            else:
                full = "".join(parts)
                heard = spoken.heard() if spoken is not None and status != "completed" else None
                kept = full if heard is None else heard
                # History keeps whole exchanges only; of an interrupted reply, what was heard.
                if kept.strip():
                    self.history.append(ChatMessage("assistant", kept, reply_id))
                elif asked is not None and self.history and self.history[-1] is asked:
                    self.history.pop()
                self.app.metrics.turns.labels(status).inc()
                await self._send_done(
                    reply_id, status, full, heard, outcome, first_token_s, start, out
                )

    async def _send_done(
        self,
        reply_id: str,
        status: Status,
        text: str,
        heard: str | None,
        outcome: ChatOutcome,
        first_token_s: float | None,
        start: float,
        out: TurnOutput,
    ) -> None:
        metrics = self.app.metrics
        total_s = time.perf_counter() - start
        usage = timings = None
        finish_reason: str | None = status if status != "completed" else None
        if outcome.stats is not None:
            stats = outcome.stats
            finish_reason = stats.finish_reason
            gen_s = stats.total_s - (stats.first_token_s or 0.0)
            tps = (
                (stats.completion_tokens - 1) / gen_s
                if stats.completion_tokens > 1 and gen_s > 0
                else None
            )
            usage = proto.Usage(
                prompt_tokens=stats.prompt_tokens,
                cached_prompt_tokens=stats.cached_prompt_tokens,
                completion_tokens=stats.completion_tokens,
            )
            timings = proto.ReplyTimings(
                queued_ms=round(outcome.queued_s * 1000, 1),
                first_token_ms=round(first_token_s * 1000, 1)
                if first_token_s is not None
                else None,
                total_ms=round(total_s * 1000, 1),
                tokens_per_second=round(tps, 1) if tps else None,
            )
            metrics.queue_wait.observe(outcome.queued_s)
            metrics.completion_tokens.inc(stats.completion_tokens)
            metrics.prompt_tokens.labels("cache").inc(stats.cached_prompt_tokens)
            metrics.prompt_tokens.labels("evaluated").inc(
                stats.prompt_tokens - stats.cached_prompt_tokens
            )
            if tps:
                metrics.tokens_per_second.observe(tps)
        if first_token_s is not None:
            metrics.time_to_first_token.observe(first_token_s)
        await out.emit(
            proto.ReplyDone(
                reply_id=reply_id,
                status=status,
                text=text,
                heard_text=heard,
                finish_reason=finish_reason,
                usage=usage,
                timings=timings,
            )
        )
