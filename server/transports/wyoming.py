"""The Wyoming server: Home Assistant uses chinwag for speech-to-text, text-to-speech and as a
conversation agent (docs/home-assistant.md).

A thin transport on the session core (docs/architecture.md): an asyncio TCP server, one
`Session` per connection that makes a speech request (registered with `app.hub` for as long
as the connection lasts), and one per conversation (`conversation_id`) kept in a bounded,
expiring map. Wire translation is pure code in server.protocol.wyoming; here are the sockets,
the tasks and the sessions.

- `describe` is answered at once, from the settings, even while the models load.
- Speech-to-text: the audio goes to the session's listener as a `transcribe` stream (push to
  talk: `audio-stop` ends the utterance; with `use_vad`, chinwag's VAD ends it and the
  transcript goes out then). Whisper's readings of silence and noise come back as "".
- Text-to-speech: the session's `Speaker` says each phrase as soon as it is complete: one
  audio segment for a `synthesize`, one per phrase in a `synthesize-start` ... `-stop`
  stream (then `synthesize-stopped`), all at the voice's rate, 16-bit mono.
- Conversation: a `transcript` is a user message to the conversation's session; the reply
  comes back as `handled` (or `not-handled`, or `error`).

A failure is answered with `error{text, code}` and ends the connection (Home Assistant opens
a connection per request and, for speech, reads until the answer or the end of the
connection). One request at a time per connection; a `describe` is answered meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import time
from collections import OrderedDict
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from wyoming.event import Event, async_write_event
from wyoming.tts import SynthesizeStopped

from server import __version__
from server.audio.pcm import StreamResampler, decode_pcm16, int16_to_float32
from server.errors import ChinwagError, ChinwagException, ErrorCode
from server.logs import log_failure
from server.pipeline.session import Session
from server.pipeline.transcripts import is_probably_not_speech
from server.pipeline.turn_output import TurnOutput
from server.protocol import native as proto
from server.protocol import wyoming as wire
from server.protocol.wyoming_audio import audio_chunk_event, audio_start_event, audio_stop_event
from server.protocol.wyoming_framing import MAX_HEADER_BYTES, build_event, error_event, parse_header
from server.protocol.wyoming_info import build_info, pick_voice, voice_of

if TYPE_CHECKING:
    from server.app import App
    from server.config import WyomingSettings

log = logging.getLogger(__name__)

# A client that cannot take an event within this time is considered gone.
SEND_TIMEOUT_S = 30.0
# Events waiting for a request's task (audio chunks, phrases); then the reader waits (TCP).
REQUEST_QUEUE = 256
EXPIRE_EVERY_S = 30.0
ONE_AT_A_TIME = "one request at a time on a connection; this one is still running"


# --- one connection ----------------------------------------------------------------------------


class Gone(ChinwagException):
    """The peer went away (or stopped reading); the connection ends."""


class EventStream:
    """Wyoming events over one TCP connection, both ways: reads bounded by `max_event_bytes`
    (checked from the header before anything else is read), writes one at a time with a
    timeout. Used by the server's connections and by the satellites chinwag drives."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        max_event_bytes: int,
        peer: str,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.max_event_bytes = max_event_bytes
        self.peer = peer
        self.gone = False
        self._write_lock = asyncio.Lock()

    async def read(self) -> Event | None:
        """The next event; None when the peer closed the connection. ChinwagError for an
        event that is too large or not Wyoming."""
        try:
            line = await self.reader.readline()
            if not line:
                return None
            header = parse_header(line, self.max_event_bytes)
            data = await self.reader.readexactly(header.data_length) if header.data_length else b""
            payload = (
                await self.reader.readexactly(header.payload_length)
                if header.payload_length
                else b""
            )
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        except ValueError as exc:  # readline: a line over the stream's limit
            raise ChinwagError(ErrorCode.FRAME_TOO_LARGE, "event header too long") from exc
        return build_event(header, data, payload)

    async def write(self, event: Event) -> None:
        """Send one event; a peer that is gone or too slow raises Gone (and is dropped)."""
        if self.gone:
            raise Gone
        async with self._write_lock:
            try:
                async with asyncio.timeout(SEND_TIMEOUT_S):
                    await async_write_event(event, self.writer)
            except TimeoutError:
                log.warning("Wyoming peer %s too slow to read; dropping it", self.peer)
                self.drop()
                raise Gone from None
            except (ConnectionError, RuntimeError) as exc:
                self.drop()
                raise Gone from exc

    def drop(self) -> None:
        self.gone = True
        self.writer.transport.abort()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


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
            try:
                await session.close()
            finally:
                self.app.hub.close(session)
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


# --- conversations -----------------------------------------------------------------------------


@dataclass
class Answer:
    text: str = ""
    error: ChinwagError | None = None


class ConversationSink:
    """A conversation session's EventSink: collects the reply of the message asked."""

    def __init__(self) -> None:
        self.waiter: asyncio.Future[Answer] | None = None
        self._error: ChinwagError | None = None

    async def send(self, event: proto.ServerEvent) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if isinstance(event, proto.Error):
            self._error = proto.error_of(event)
        elif isinstance(event, proto.ReplyDone):
            error, self._error = self._error, None
            if event.status == "completed" or (error is None and event.text.strip()):
                waiter.set_result(Answer(event.text))
            else:
                waiter.set_result(
                    Answer(
                        error=error
                        or ChinwagError(ErrorCode.INTERNAL_ERROR, f"the reply {event.status}")
                    )
                )

    async def send_audio(self, pcm: bytes) -> None:
        pass  # conversation replies are text; Home Assistant speaks them with its TTS


@dataclass
class Conversation:
    session: Session
    sink: ConversationSink
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_used: float = field(default_factory=time.monotonic)


class Conversations:
    """Home Assistant's conversations by `conversation_id`, each a session with its history:
    at most `max_conversations`, the least recently used closed first, and any idle for
    `conversation_idle_s` closed. A request without an id gets a session of its own."""

    def __init__(self, app: App, persona: str, settings: WyomingSettings) -> None:
        self.app = app
        self.persona = persona
        self.max = settings.max_conversations
        self.idle_s = settings.conversation_idle_s
        self._items: OrderedDict[str, Conversation] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, conversation_id: str) -> Conversation | None:
        return self._items.get(conversation_id)

    async def ask(self, conversation_id: str | None, text: str) -> Answer:
        """The assistant's answer to `text` in this conversation (one at a time in each)."""
        await self.expire()
        if conversation_id is None:
            conversation = await self._open()
            try:
                return await self._ask(conversation, text)
            finally:
                await self._close(conversation)
        found = self._items.get(conversation_id)
        if found is None:
            await self._make_room()
            opened = await self._open()
            found = self._items.get(conversation_id)
            if found is not None:  # opened meanwhile by a concurrent request
                await self._close(opened)
            else:
                found = self._items[conversation_id] = opened
        conversation = found
        self._items.move_to_end(conversation_id)
        return await self._ask(conversation, text)

    async def _ask(self, conversation: Conversation, text: str) -> Answer:
        async with conversation.lock:
            conversation.last_used = time.monotonic()
            waiter: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
            conversation.sink.waiter = waiter
            session = conversation.session
            try:
                await session.handle(proto.UserMessage(text=text))
                return await waiter
            except asyncio.CancelledError:
                # The client went away: stop the reply (what was said so far stays).
                await session.cancel_turn()
                raise
            finally:
                conversation.sink.waiter = None
                conversation.last_used = time.monotonic()

    async def _open(self) -> Conversation:
        sink = ConversationSink()
        session = Session(self.app, sink, transport="wyoming")
        self.app.hub.open(session)
        try:
            await session.start()
            await session.handle(proto.SessionStart(persona=self.persona))
        except BaseException:
            await self._close(Conversation(session, sink))
            raise
        return Conversation(session, sink)

    async def _close(self, conversation: Conversation) -> None:
        try:
            await conversation.session.close()
        finally:
            self.app.hub.close(conversation.session)

    async def _make_room(self) -> None:
        while len(self._items) >= self.max or (self.app.hub.full and self._items):
            for cid, conversation in self._items.items():
                if not conversation.lock.locked():
                    del self._items[cid]
                    await self._close(conversation)
                    break
            else:
                raise self.app.hub.too_many()

    async def expire(self) -> None:
        now = time.monotonic()
        for cid, conversation in list(self._items.items()):
            idle = now - conversation.last_used > self.idle_s
            if idle and not conversation.lock.locked() and self._items.get(cid) is conversation:
                del self._items[cid]
                await self._close(conversation)

    async def close(self) -> None:
        items, self._items = list(self._items.values()), OrderedDict()
        for conversation in items:
            await self._close(conversation)


# --- the server --------------------------------------------------------------------------------


class WyomingServer:
    def __init__(self, app: App, settings: WyomingSettings) -> None:
        self.app = app
        self.settings = settings
        persona = app.personas.get(settings.persona).name
        self.info_event = build_info(app.settings, persona, __version__).event()
        self.voices = [voice_of(app.settings.tts.voice_path)]
        self.conversations = Conversations(app, persona, settings)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._expiry: asyncio.Task[None] | None = None
        self._zeroconf: Any = None
        self.host = "127.0.0.1"
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(
            self._accept, host, port, limit=MAX_HEADER_BYTES + 2
        )
        self.host = host
        self.port = self._server.sockets[0].getsockname()[1]
        self._expiry = asyncio.create_task(self._expire_forever(), name="wyoming-expiry")
        log.info("Wyoming server on tcp://%s:%d", host, self.port)
        if self.settings.zeroconf:
            try:
                await self._announce()
            except Exception as exc:  # discovery is a convenience: the server still serves
                log_failure(log, "Wyoming: zeroconf announcement failed", exc)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await Connection(self, reader, writer).serve()
        finally:
            self._connections.discard(task)

    async def _expire_forever(self) -> None:
        while True:
            await asyncio.sleep(EXPIRE_EVERY_S)
            try:
                await self.conversations.expire()
            except Exception as exc:
                log_failure(log, "Wyoming: expiring conversations failed", exc)

    async def _announce(self) -> None:
        """mDNS `_wyoming._tcp.local.` so Home Assistant discovers this server."""
        from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

        address = self.host if self.host not in ("", "0.0.0.0", "::") else _lan_address()
        if address.startswith("127.") or address == "::1":
            log.warning("Wyoming: zeroconf announces %s, which only this machine reaches", address)
        name = self.settings.zeroconf_name
        info = AsyncServiceInfo(
            "_wyoming._tcp.local.",
            f"{name}._wyoming._tcp.local.",
            addresses=[socket.inet_pton(_family(address), address)],
            port=self.port,
            properties={"version": __version__},
            server=f"{socket.gethostname()}.local.",
        )
        zeroconf = AsyncZeroconf()
        await zeroconf.async_register_service(info)
        self._zeroconf = (zeroconf, info)
        log.info("Wyoming: announced as %s on %s:%d", name, address, self.port)

    async def close(self) -> None:
        if self._zeroconf is not None:
            zeroconf, info = self._zeroconf
            self._zeroconf = None
            with contextlib.suppress(Exception):
                await zeroconf.async_unregister_service(info)
                await zeroconf.async_close()
        if self._expiry is not None:
            self._expiry.cancel()
            await asyncio.gather(self._expiry, return_exceptions=True)
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self.conversations.close()
        if self._server is not None:
            await self._server.wait_closed()


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _lan_address() -> str:
    """This machine's address on the local network (a UDP connect sends no packet)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("224.0.0.251", 5353))
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"
