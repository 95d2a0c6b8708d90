"""One connected client's conversation: persona, history, microphone, and the turn in progress.

Transports translate their wire format into `handle()` / `handle_audio()` calls (and, for the
OpenAI Realtime transport, the conversation-editing calls below) and deliver what the session
sends to its `EventSink`; the session never knows which transport it serves.

The session wires small parts with one job each (docs/architecture.md):

- `Conversation`: the history, plain data.
- `Listener`: the microphone queue, the VAD, partial transcripts and prefill pacing.
- `TurnManager`: which turn runs, the reply prepared during a pause, what a pause carries.
- `Responder`: a turn's work: transcript → LLM → phrase splitter → `Speaker`.
- `Speaker`: TTS streaming and the account of what the listener heard.

Cancelling a public coroutine of the session (the transport's reader going away) leaves the
session consistent: each call either finished its change or made none. Only `close()` ends
the session's own tasks.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import uuid
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import ValidationError

from server.audio.pcm import check_sample_rate
from server.audio.vad import SpeechPaused
from server.engines.base import ChatMessage, Float32Audio, Role
from server.errors import ChinwagError, ErrorCode
from server.pipeline.audio_input import AudioInput
from server.pipeline.chat import ChatRunner
from server.pipeline.conversation import Conversation
from server.pipeline.endpointing import end_of_turn_silence_ms
from server.pipeline.grounding import ReplyPlan, count_said, plan_reply
from server.pipeline.intents import SessionIntents
from server.pipeline.listener import Listener
from server.pipeline.playback import heard_text
from server.pipeline.reply import Responder
from server.pipeline.speaker import Speaker
from server.pipeline.speech import SpeechRunner
from server.pipeline.state import SessionState, StateTracker
from server.pipeline.turn import TurnContext, Utterance
from server.pipeline.turns import TurnManager
from server.pipeline.wake import WakePlan, wake_plan
from server.prompts import GenerationSettings, Persona
from server.protocol import native as proto

if TYPE_CHECKING:
    from server.app import App

log = logging.getLogger(__name__)


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
        self.transport = transport  # the hub counts sessions by transport
        self.id = uuid.uuid4().hex[:12]
        self.site: str | None = None
        self.log = SessionLogger(log, {"session": self.id})
        self.persona: Persona = app.personas.get(None)
        self.generation: GenerationSettings = self.persona.generation
        # Replaces the persona's system prompt when set (OpenAI Realtime `instructions`).
        self.instructions: str | None = None
        self._ids = itertools.count(1)
        # What the client asked for in session.start/update (None: persona or [wake]).
        self.wake: proto.WakeOptions | None = None
        self._state = StateTracker()
        self.conversation = Conversation()
        self.speaker = Speaker(lambda: self.speech, app.settings.tts.frame_s, self.log)
        self.turns = TurnManager(
            speaker=self.speaker,
            conversation=self.conversation,
            emit=self.emit,
            send_audio=self.sink.send_audio,
            log=self.log,
            name=self.id,
        )
        # Commands answered without the model, timers (pipeline/intents.py).
        self.intents = SessionIntents(
            recognizer=lambda: app.intents,
            settings=app.settings.intents,
            persona=lambda: self.persona,
            site=lambda: self.site,
            conversation=self.conversation,
            speaker=self.speaker,
            metrics=app.metrics,
            next_id=self._next_id,
            emit=self.emit,
            announce=self._announce,
            log=self.log,
            said_usage=self.said_usage,
        )
        self.responder = Responder(
            chat=lambda: self.chat,
            speech=lambda: self.speech,
            conversation=self.conversation,
            speaker=self.speaker,
            persona=self,
            metrics=app.metrics,
            splitter=app.settings.tts.phrase_splitter,
            next_id=self._next_id,
            log=self.log,
            commands=self.intents,
        )
        self.listener = Listener(
            speech=lambda: self.speech,
            settings=app.settings,
            emit=self.emit,
            send_error=self.send_error,
            next_id=self._next_id,
            turns=self,
            log=self.log,
            name=self.id,
            wake_plan=self.wake_plan,
            wake_engine=app.wake_engine,
            asr_prompt=self.intents.asr_prompt,
            begins_command=self.intents.begins_command,
        )
        # Utterances transcribed into the conversation without an answer (respond=False);
        # a reply asked for later waits for them.
        self._pending_input: set[asyncio.Task[None]] = set()

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Wait for the models, then greet the client with `session.started`.

        Cancelled: nothing was sent; the transport still calls close()."""
        await self.app.ready.wait()
        await self.emit(self._started_event())

    async def close(self) -> None:
        """End every task of the session; the turn in progress reports its end first.

        Idempotent: cancelled part-way, call it again."""
        # The microphone first: it is what starts speculations and turns.
        await self.listener.close()
        await self.intents.close()  # no timer fires from here on
        await self.turns.discard_speculation()
        tasks = list(self._pending_input)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.turns.cancel()

    @property
    def history(self) -> list[ChatMessage]:
        return self.conversation.messages

    @property
    def state(self) -> SessionState:
        return self._state.state

    @property
    def chat(self) -> ChatRunner:
        if self.app.chat is None:
            raise ChinwagError(ErrorCode.INTERNAL_ERROR, "the models are not loaded yet")
        return self.app.chat

    @property
    def speech(self) -> SpeechRunner:
        if self.app.speech is None:
            raise ChinwagError(ErrorCode.INTERNAL_ERROR, "this server runs without speech models")
        return self.app.speech

    def system_prompt(self, instructions: str | None = None) -> str:
        return instructions or self.instructions or self.persona.system_prompt

    async def said_usage(
        self, text: str, history: Sequence[ChatMessage], system_prompt: str | None = None
    ) -> proto.Usage | None:
        """The usage of a reply said without the model (site facts, a command's
        confirmation), counted as HTTP counts it (grounding.count_said); None while the
        models load or for no text."""
        chat = self.app.chat
        if chat is None or not text:
            return None
        prompt = system_prompt if system_prompt is not None else self.system_prompt()
        prompt_tokens, completion_tokens = await count_said(chat.model, prompt, history, text)
        return proto.Usage(
            prompt_tokens=prompt_tokens,
            cached_prompt_tokens=0,
            completion_tokens=completion_tokens,
        )

    def plan_reply(self, question: str | None, instructions: str | None = None) -> ReplyPlan:
        """The persona's prompt with the site's facts for `question` (None: the last user
        message), or an answer said as it is (pipeline/grounding.py)."""
        if question is None:
            last = self.conversation.messages[-1] if self.conversation.messages else None
            question = last.content if last is not None and last.role == "user" else None
        persona = self.persona
        return plan_reply(
            self.system_prompt(instructions),
            question,
            persona.knowledge,
            persona.knowledge_settings,
            guard=persona.honest_actions,
        )

    async def _announce(self, text: str) -> None:
        """Say `text` now (a timer that finished), aloud when an audio stream that speaks is
        open; it interrupts a reply in progress, as a kitchen timer would."""
        audio = self.listener.input
        start = audio.start if audio is not None else None
        speak = start is not None and start.speak and start.task == "converse"
        rate = start.output_sample_rate if start is not None else None
        await self.turns.start(
            lambda ctx: self.intents.announce(ctx, text, speak=speak, sample_rate=rate)
        )

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids)}-{self.id}"

    # --- output ------------------------------------------------------------------------

    async def emit(self, event: proto.ServerEvent) -> None:
        """Send an event to the client, and let the app's observers (the MQTT bridge) see it."""
        await self.sink.send(event)
        previous = self._state.state
        new_state = self._state.feed(event.type)
        self.app.hub.notify_event(self, event)
        if new_state is not None:
            self.app.hub.notify_state(self, previous, new_state)

    async def send_error(self, exc: ChinwagError, source: str | None = None) -> None:
        self.app.metrics.errors.labels(exc.code.value).inc()
        await self.emit(proto.error_event(exc, source))

    def _started_event(self) -> proto.SessionStarted:
        return proto.SessionStarted(
            session_id=self.id,
            persona=self.persona.name,
            personas=self.app.personas.names(),
            generation=self.generation.model_dump(),
            model=self.chat.model.name,
            context_size=self.chat.model.context_size,
        )

    # --- input -------------------------------------------------------------------------

    async def handle(self, message: proto.ClientMessage) -> None:
        """Act on one client message. Errors become `error` events; the session goes on.

        Cancelled: the change it was making is complete or not begun; a turn it started
        runs on (cancel that with cancel_turn)."""
        try:
            await self._dispatch(message)
        except ChinwagError as exc:
            await self.send_error(exc, source=message.type)

    async def handle_audio(self, frame: bytes) -> None:
        """One binary frame of microphone PCM. Waits while the VAD is behind (backpressure).

        Cancelled: the frame is dropped; the stream stays open."""
        try:
            await self.listener.push(frame)
        except ChinwagError as exc:
            await self.send_error(exc, source="audio")

    async def _dispatch(self, message: proto.ClientMessage) -> None:
        match message:
            case proto.UserMessage():
                message_id = message.id or self._next_id("m")
                text = message.text
                await self.turns.start(
                    lambda ctx: self.responder.reply(ctx, text, message_id, speak=False)
                )
            case proto.Cancel():
                if not await self.turns.cancel():
                    raise ChinwagError(ErrorCode.NO_ACTIVE_REPLY, "no reply is in progress")
            case proto.AudioStart():
                await self.listener.start(message)
            case proto.AudioStop():
                if not self.listener.open:
                    raise ChinwagError(ErrorCode.AUDIO_NOT_STARTED, "no audio stream is open")
                await self.listener.stop()
            case proto.Say():
                if message.sample_rate is not None:
                    check_sample_rate(message.sample_rate)
                say = message
                await self.turns.start(lambda ctx: self.responder.say(ctx, say))
            case proto.Playback():
                # Reports about an older stream are stale, not wrong: ignored.
                current = self.speaker.current
                if current is not None and current.stream_id == message.stream_id:
                    current.report(message.played_ms)
            case proto.SessionStart():
                await self.turns.cancel()
                self._configure(message.persona, message.generation, message.wake)
                self.wake = message.wake
                self.site = message.site
                self.conversation.clear()
                await self.emit(self._started_event())
                await self._restart_listening()
            case proto.SessionUpdate():
                self._configure(message.persona, message.generation, message.wake)
                if message.wake is not None:
                    self.wake = message.wake
                await self.emit(
                    proto.SessionUpdated(
                        persona=self.persona.name, generation=self.generation.model_dump()
                    )
                )
                if message.wake is not None or message.persona is not None:
                    await self._restart_listening()
            case _:
                raise ChinwagError(ErrorCode.UNKNOWN_TYPE, f"unhandled message {message.type!r}")

    def wake_plan(self) -> WakePlan | None:
        """The wake words an audio stream waits for (docs/wake-word.md); None: none."""
        return wake_plan(self.wake, self.persona.wake_words, self.app.settings.wake)

    async def _restart_listening(self) -> None:
        """An open microphone stream starts again, waiting for the wake words now in force."""
        if self.listener.open:
            await self.listener.clear()

    def _configure(
        self,
        persona_name: str | None,
        overrides: dict[str, Any] | None,
        wake: proto.WakeOptions | None = None,
    ) -> None:
        # Validate everything before changing anything, so a bad update changes nothing.
        if wake is not None and wake.words:
            known = self.app.wake_engine().available
            unknown = [w for w in wake.words if w not in known]
            if unknown:
                raise ChinwagError(
                    ErrorCode.UNKNOWN_WAKE_WORD,
                    f"unknown wake word {', '.join(unknown)}; available: {', '.join(known)}",
                )
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

    # --- conversation editing (used by the OpenAI Realtime transport) ------------------

    async def cancel_turn(self) -> bool:
        """Cancel the turn in progress and wait until its closing events are out.

        Cancelled: the turn is cancelled all the same; its closing events follow."""
        return await self.turns.cancel()

    async def respond(
        self, *, speak: bool, sample_rate: int | None = None, instructions: str | None = None
    ) -> None:
        """Answer the conversation as it stands, once pending transcriptions have joined it.

        Cancelled while transcriptions are pending: no reply starts."""
        if self._pending_input:
            await asyncio.gather(*self._pending_input, return_exceptions=True)
        await self.turns.start(
            lambda ctx: self.responder.reply(
                ctx, None, None, speak=speak, sample_rate=sample_rate, instructions=instructions
            )
        )

    def add_message(self, role: Role, text: str, message_id: str) -> None:
        self.conversation.add(role, text, message_id)

    def delete_message(self, message_id: str) -> bool:
        return self.conversation.delete(message_id)

    def replace_message(self, message_id: str, text: str) -> bool:
        return self.conversation.replace(message_id, text)

    def truncate_reply(self, reply_id: str, audio_end_ms: float) -> str | None:
        """The listener heard audio_end_ms of this spoken reply: keep only that in history."""
        spoken = self.speaker.find(reply_id)
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
        self.conversation.replace(reply_id, heard)
        return heard

    def add_spoken_message(self, message_id: str, audio: Float32Audio) -> None:
        """A user message given as 16 kHz audio: transcribed into the conversation."""
        start = proto.AudioStart(sample_rate=16000, respond=False)
        context = TurnContext(self.turns.output())
        self._track(self.responder.voice_turn(context, Utterance(message_id, audio), start))

    async def clear_audio(self) -> None:
        """Drop the microphone audio buffered so far; the stream stays open."""
        if not self.listener.open:
            return
        await self.listener.clear()
        await self.turns.discard_speculation()  # it was about the audio now dropped

    def _track(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._pending_input.add(task)
        task.add_done_callback(self._pending_input.discard)

    # --- turn taking (called by the listener) ------------------------------------------

    async def speech_started(self, utterance_id: str, start: proto.AudioStart) -> None:
        if start.task == "converse" and start.mode == "vad" and start.interrupt:
            await self.turns.barge_in(join_pause=True)

    async def speech_paused(
        self, utterance_id: str, event: SpeechPaused, audio: AudioInput
    ) -> None:
        """The person went quiet: transcribe and answer now, holding the output until the
        turn is confirmed (kept) or they go on speaking (thrown away, unseen)."""
        await self.turns.discard_speculation()
        start = audio.start
        wanted = start.mode == "vad" and start.task == "converse" and start.respond
        if not (wanted and self.app.settings.vad.speculate):
            return
        samples, joins = self.turns.join_carry(event.audio)
        detector = audio.vad.detector
        vad_settings = self.app.settings.vad

        async def end_sooner_if_complete(text: str) -> None:
            silence_ms = end_of_turn_silence_ms(text, vad_settings)
            if await self.intents.is_command(text):  # a whole command: shorter still
                silence_ms = min(silence_ms, self.app.settings.intents.command_silence_ms)
            if silence_ms < vad_settings.silence_ms:
                shorten = functools.partial(detector.shorten_pause, event.pause_id, silence_ms)
                await self.speech.on_vad_thread(shorten)

        self.log.debug("paused: speculating on %.2f s of audio", len(samples) / 16000)
        utterance = Utterance(utterance_id, samples)
        self.turns.speculate(
            utterance,
            lambda ctx: self.responder.voice_turn(
                ctx, utterance, start, joins, end_sooner_if_complete
            ),
        )

    async def speech_resumed(self) -> None:
        await self.turns.discard_speculation()

    async def speech_stopped(
        self, utterance_id: str, audio: Float32Audio, start: proto.AudioStart
    ) -> None:
        if await self.turns.confirm(utterance_id):
            return
        await self.turns.discard_speculation()
        samples, joins = self.turns.join_carry(audio)
        self.turns.carry = None
        utterance = Utterance(utterance_id, samples)
        if not (start.task == "converse" and start.respond):
            # Nothing to answer (transcription only, or a conversation the client answers
            # itself): every utterance is transcribed, in order; none cancels another.
            context = TurnContext(self.turns.output())
            self._track(self.responder.voice_turn(context, utterance, start, joins))
            return
        if start.mode == "push_to_talk" and start.task == "converse" and start.interrupt:
            await self.turns.barge_in(join_pause=False)  # talking over a reply interrupts it too
        await self.turns.start(
            lambda ctx: self.responder.voice_turn(ctx, utterance, start, joins), utterance
        )

    def join_carry(self, audio: Float32Audio) -> tuple[Float32Audio, str | None]:
        return self.turns.join_carry(audio)

    def prefill_would_run(self) -> bool:
        chat = self.app.chat
        return chat is not None and not chat.busy

    async def prefill(self, said: str) -> None:
        """Evaluate the words said so far into the model's cache (skipped while it is busy)."""
        chat = self.app.chat
        if chat is None:
            return
        evaluated = await chat.prefill(
            self.system_prompt(), self.history, ChatMessage("user", said), self.generation
        )
        self.log.debug("prefilled %d tokens of %r", evaluated, said)
