"""One Wyoming client connection: its requests, run one at a time on the session core.

`Connection` reads a client's events and acts on each (`describe` and errors at once; speech
to text, text to speech and conversation turns in a task of their own, fed through a bounded
queue); `WyomingSink` turns its speech session's events into Wyoming events of the request in
progress. Separate from the server (server/transports/wyoming.py), which only accepts
connections, announces itself and expires conversations.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import numpy as np
from wyoming.event import Event
from wyoming.tts import SynthesizeStopped

from server.audio.pcm import StreamResampler, decode_pcm16, int16_to_float32
from server.errors import ChinwagError, ErrorCode
from server.logs import log_failure
from server.pipeline.session import Session
from server.pipeline.transcripts import is_probably_not_speech
from server.pipeline.turn_output import TurnOutput
from server.protocol import native as proto
from server.protocol import wyoming as wire
from server.protocol.wyoming_audio import audio_chunk_event, audio_start_event, audio_stop_event
from server.protocol.wyoming_framing import error_event
from server.protocol.wyoming_info import pick_voice
from server.transports.wyoming_stream import EventStream, Gone

if TYPE_CHECKING:
    from server.transports.wyoming import WyomingServer

# Logs as the Wyoming server, as before this module was split from it (one name to filter on).
log = logging.getLogger("server.transports.wyoming")

# Events waiting for a request's task (audio chunks, phrases); then the reader waits (TCP).
REQUEST_QUEUE = 256
ONE_AT_A_TIME = "one request at a time on a connection; this one is still running"


class WyomingSink:
    """A speech session's EventSink: the session's events become Wyoming events of the
    request in progress (a transcript, audio segments, an error)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.rate = 0  # of the audio segment being sent
        self.segments = 0
        # Speech-to-text: the answer, once known ("" for no speech).
        self.transcript: asyncio.Future[str] | None = None

    async def send(self, event: proto.ServerEvent) -> None:
        connection = self.connection
        match event:
            case proto.Transcript():
                await self.answer(event.text)
            case proto.OutputAudioStart():
                self.rate = event.sample_rate
                self.segments += 1
                await connection.write(audio_start_event(event.sample_rate))
            case proto.OutputAudioDone():
                await connection.write(audio_stop_event())
            case proto.Error():
                await connection.fail(proto.error_of(event))
            case _:
                pass  # speech.started/stopped, state: nothing to say on Wyoming

    async def send_audio(self, pcm: bytes) -> None:
        await self.connection.write(audio_chunk_event(self.rate, pcm))

    async def answer(self, text: str) -> None:
        """The transcript, once per request (later answers are ignored)."""
        future = self.transcript
        if future is None or future.done():
            return
        future.set_result(text)
        await self.connection.write(wire.transcript_event(text, self.connection.language))


class Connection:
    """One client. The reader loop reads events and acts on them at once (describe, errors)
    or hands them to the request's task through a bounded queue, so that a `describe` is
    answered while a request runs and a request waiting for the models holds nothing up."""

    _ids = itertools.count(1)

    def __init__(
        self, server: WyomingServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.app = server.app
        self.reader = reader
        self.writer = writer
        self.name = f"wy{next(self._ids)}"
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        settings = self.app.settings
        self.requests = wire.RequestReader(
            max_audio_s=settings.wyoming.max_audio_s,
            max_text_chars=settings.limits.max_text_chars,
            splitter=settings.tts.phrase_splitter,
        )
        self.language: str | None = settings.asr.language
        self.stream = EventStream(reader, writer, settings.wyoming.max_event_bytes, self.peer)
        self.failed = False
        self._queue: asyncio.Queue[wire.Action] | None = None
        self._task: asyncio.Task[None] | None = None
        self._session: Session | None = None
        self.sink = WyomingSink(self)

    # --- output ------------------------------------------------------------------------

    async def write(self, event: Event) -> None:
        """Send one event; a peer that is gone or too slow ends the connection."""
        await self.stream.write(event)

    @property
    def gone(self) -> bool:
        return self.stream.gone

    async def fail(self, exc: ChinwagError) -> None:
        """Answer `error` and end the connection (the request cannot go on)."""
        if self.failed:
            return
        self.failed = True
        self.app.metrics.errors.labels(exc.code.value).inc()
        log.info("Wyoming %s: %s: %s", self.peer, exc.code, exc.message)
        with contextlib.suppress(Gone):
            await self.write(error_event(exc))
        self.writer.close()  # the reader loop then ends, and the request with it

    # --- the reader loop ----------------------------------------------------------------

    async def serve(self) -> None:
        try:
            while not self.failed:
                try:
                    event = await self._read_event()
                    if event is None:
                        break
                    await self._act(self.requests.receive(event))
                except ChinwagError as exc:
                    await self.fail(exc)
        except Gone:
            pass
        finally:
            await self._end()

    async def _read_event(self) -> Event | None:
        return await self.stream.read()

    async def _act(self, action: wire.Action) -> None:
        match action:
            case wire.SendInfo():
                await self.write(self.server.info_event)
            case wire.Ignore():
                log.debug("Wyoming %s: ignoring %s", self.peer, action.type)
            case wire.BeginTranscription():
                if action.language:
                    self.language = action.language
            case wire.OpenAudio():
                self._begin(self._transcribe(action))
            case wire.Speak():
                pick_voice(self.server.voices, action.voice, action.language)
                self._begin(self._speak(action))
            case wire.OpenTextStream():
                pick_voice(self.server.voices, action.voice, action.language)
                self._begin(self._speak_stream())
            case wire.Converse():
                self._begin(self._converse(action))
            case wire.AudioIn() | wire.CloseAudio() | wire.TextIn():
                if self._queue is not None:
                    await self._queue.put(action)

    def _begin(self, work: Coroutine[Any, Any, None]) -> None:
        if self._task is not None and not self._task.done():
            work.close()
            raise ChinwagError(ErrorCode.INVALID_MESSAGE, ONE_AT_A_TIME)
        self._queue = asyncio.Queue(REQUEST_QUEUE)
        self._task = asyncio.create_task(self._run(work), name=f"wyoming-{self.name}")

    async def _run(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except Gone:
            pass
        except ChinwagError as exc:
            await self.fail(exc)
        except Exception as exc:
            log_failure(log, "Wyoming request from %s failed", exc, self.peer)
            await self.fail(
                ChinwagError(ErrorCode.INTERNAL_ERROR, "the request failed; see the server log")
            )

    async def _end(self) -> None:
        """However the connection ends: stop the request, close the session, close."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        session, self._session = self._session, None
        if session is not None:
            await self.app.hub.close_and_forget(session)
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()

    async def _next(self) -> wire.Action:
        assert self._queue is not None
        return await self._queue.get()

    async def session(self) -> Session:
        """This connection's speech session, opened on its first request (after the models
        are ready) and registered with the hub until the connection ends."""
        if self._session is None:
            session = Session(self.app, self.sink, transport="wyoming")
            self.app.hub.open(session)  # ChinwagError(TOO_MANY_SESSIONS) when full
            self._session = session
            await session.start()
        return self._session

    # --- speech-to-text -----------------------------------------------------------------

    async def _transcribe(self, opened: wire.OpenAudio) -> None:
        session = await self.session()
        self.sink.transcript = asyncio.get_running_loop().create_future()
        if self.app.settings.wyoming.use_vad:
            await self._transcribe_turn(session, opened)
        else:
            await self._transcribe_all(session, opened)
        await self.sink.answer("")  # nothing was said (or the transcript already went out)

    async def _transcribe_all(self, session: Session, opened: wire.OpenAudio) -> None:
        """Home Assistant's VAD ends the audio: transcribe all of it at `audio-stop`.

        Resampled to 16 kHz as it comes (bounded by `max_audio_s`), so only Whisper runs
        after `audio-stop`."""
        speech = session.speech
        resampler = StreamResampler(opened.rate, speech.transcriber.sample_rate, np.float32)
        parts: list[np.ndarray] = []
        while not isinstance(action := await self._next(), wire.CloseAudio):
            if isinstance(action, wire.AudioIn) and action.pcm:
                parts.append(resampler.process(int16_to_float32(decode_pcm16(action.pcm))))
        parts.append(resampler.flush())
        audio = np.concatenate(parts)
        if audio.size == 0:
            return
        transcript = await speech.transcribe(audio)
        if transcript.language:
            self.language = self.language or transcript.language
        await self.sink.answer("" if is_probably_not_speech(transcript) else transcript.text)

    async def _transcribe_turn(self, session: Session, opened: wire.OpenAudio) -> None:
        """chinwag's VAD ends the turn ([wyoming] use_vad): the session's listener hears the
        stream and the transcript goes out as soon as the turn is over, audio-stop or not."""
        sink = self.sink
        assert sink.transcript is not None
        silence = round(self.app.settings.vad.silence_ms * opened.transcription.vad_sensitivity)
        await session.handle(
            proto.AudioStart(
                sample_rate=opened.rate,
                mode="vad",
                task="transcribe",
                vad=proto.VadOptions(silence_ms=max(100, min(10000, silence))),
            )
        )
        while not isinstance(action := await self._next(), wire.CloseAudio):
            if isinstance(action, wire.AudioIn) and action.pcm and not sink.transcript.done():
                await session.handle_audio(action.pcm)
        if not sink.transcript.done():
            await session.handle(proto.AudioStop())  # what is left of a turn is transcribed
            turn = session.turns.turn
            if turn is not None:
                await asyncio.gather(turn.task, return_exceptions=True)

    # --- text-to-speech -----------------------------------------------------------------

    async def _say(self, session: Session, phrases: tuple[str, ...] | list[str]) -> None:
        """One audio segment for these phrases, synthesized one after the other."""
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        for phrase in phrases:
            queue.put_nowait(phrase)
        queue.put_nowait(None)
        segments = self.sink.segments
        spoken = session.speaker.new_reply(f"{self.name}-{segments + 1}")
        out = TurnOutput(session.emit, self.sink.send_audio)
        await session.speaker.speak(spoken, queue, None, out)
        if self.sink.segments == segments:  # nothing to say: still one (empty) segment
            await self.write(audio_start_event(session.speech.synthesizer.sample_rate))
            await self.write(audio_stop_event())

    async def _speak(self, action: wire.Speak) -> None:
        session = await self.session()
        await self._say(session, action.phrases)

    async def _speak_stream(self) -> None:
        session = await self.session()
        while True:
            action = await self._next()
            if not isinstance(action, wire.TextIn):
                continue
            for phrase in action.phrases:
                await self._say(session, [phrase])
            if action.final:
                break
        await self.write(SynthesizeStopped().event())

    # --- conversation -------------------------------------------------------------------

    async def _converse(self, action: wire.Converse) -> None:
        cid = action.conversation_id
        if not action.text:
            await self.write(wire.not_handled_event("Nothing was said.", cid))
            return
        answer = await self.server.conversations.ask(cid, action.text)
        if answer.error is not None:
            await self.fail(answer.error)
        elif answer.text.strip():
            await self.write(wire.handled_event(answer.text.strip(), cid))
        else:
            await self.write(wire.not_handled_event("The assistant had no answer.", cid))
