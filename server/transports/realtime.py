"""`/v1/realtime`: the OpenAI Realtime (GA) protocol over the same session core.

A thin transport: client events become Session calls, the Session's native events are
translated into Realtime server events. Nothing here runs a model. See docs/realtime.md.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from server.app import App
from server.audio.pcm import decode_pcm16, int16_to_float32, resample
from server.errors import ChinwagError
from server.logs import log_failure
from server.pipeline.session import Session
from server.prompts import GenerationSettings
from server.protocol import native as proto
from server.protocol import realtime as rt
from server.protocol.realtime_config import RealtimeConfig
from server.protocol.realtime_events import RealtimeEvent, RealtimeEvents
from server.protocol.realtime_response import response_params
from server.transports.sink import WebSocketSink

log = logging.getLogger(__name__)


class RealtimeSink:
    """The session's EventSink: sends the Realtime events its native events translate to."""

    def __init__(self, ws: WebSocketSink, config: RealtimeConfig) -> None:
        self.ws = ws
        self.events = RealtimeEvents(config)
        # Sees each native event before it is translated (the connection's bookkeeping).
        self.observe: Callable[[proto.ServerEvent], None] | None = None

    async def _send_all(self, events: list[RealtimeEvent]) -> None:
        for event in events:
            await self.ws.send_text(rt.encode(event))

    async def send(self, event: proto.ServerEvent) -> None:
        if self.observe is not None:
            self.observe(event)
        await self._send_all(self.events.event(event))

    async def send_audio(self, pcm: bytes) -> None:
        await self._send_all(self.events.audio(pcm))

    async def send_events(self, events: list[RealtimeEvent]) -> None:
        await self._send_all(events)

    async def emit(self, event: RealtimeEvent) -> None:
        """An answer of the transport's own (cleared, truncated, deleted)."""
        await self._send_all([self.events.stamp(event)])

    async def error(self, exc: rt.RealtimeError) -> None:
        await self._send_all(self.events.error(exc))

    async def session_updated(self) -> None:
        await self._send_all(self.events.session_updated())

    async def item_added(self, item: dict[str, Any], done: bool = True) -> None:
        await self._send_all(self.events.item_added(item, done))


def rejected(event: dict[str, Any], code: str) -> None:
    """Log a refused client event at INFO: its type (a GA type, else "unknown") and the error
    code, never what the client wrote."""
    kind = event.get("type")
    known = kind if isinstance(kind, str) and kind in rt.GA_CLIENT_EVENTS else "unknown"
    log.info("Realtime: refused event %s: %s", known, code)


async def serve(app: App, connection: ServerConnection) -> None:
    """Run one /v1/realtime connection until the client goes."""
    url = urlsplit(connection.request.path if connection.request else "/")
    model = parse_qs(url.query).get("model", ["chinwag"])[0]
    await RealtimeConnection(app, connection, model).run()


class RealtimeConnection:
    """One /v1/realtime WebSocket: decodes client events and drives a Session."""

    def __init__(self, app: App, connection: ServerConnection, model: str) -> None:
        self.app = app
        self.connection = connection
        persona = app.personas.get(None)
        self.config = RealtimeConfig(model=model, instructions=persona.system_prompt)
        self.sink = RealtimeSink(WebSocketSink(connection), self.config)
        self.session = Session(app, self.sink, transport="realtime")
        self.audio_open = False
        self.appended = False
        self.sink.observe = self._observe
        # A response.create's max_output_tokens holds until its reply has read it.
        self._generation_after: GenerationSettings | None = None
        self._out_of_band: set[str] = set()  # replies kept out of the conversation

    def _observe(self, event: proto.ServerEvent) -> None:
        if isinstance(event, proto.ReplyStarted):
            if self._generation_after is not None:
                self.session.generation, self._generation_after = self._generation_after, None
            params = self.sink.events.next_response
            if params is not None and not params.in_conversation:
                self._out_of_band.add(event.reply_id)
        elif isinstance(event, proto.ReplyDone) and event.reply_id in self._out_of_band:
            self._out_of_band.discard(event.reply_id)
            self.session.delete_message(event.reply_id)  # conversation "none"

    async def run(self) -> None:
        hub = self.app.hub
        try:
            if hub.full:  # it filled up since the handshake was accepted
                full = hub.too_many()
                await self.sink.error(rt.RealtimeError(full.code.value, full.message))
                await self.connection.close(CloseCode.TRY_AGAIN_LATER, "too many sessions")
                return
            async with hub.opened(self.session):
                await self._read_loop()
        except ConnectionClosed:
            pass

    async def _read_loop(self) -> None:
        max_bytes = self.app.settings.limits.max_message_bytes
        async for frame in self.connection:
            event: dict[str, Any] = {}
            try:
                event = rt.decode_client_event(frame, max_bytes)
                await self.handle(event)
            except rt.RealtimeError as exc:
                if exc.event_id is None:  # raised below the event: still the client's event
                    exc.event_id = rt.event_id_of(event)
                rejected(event, exc.code)
                await self.sink.error(exc)
            except ChinwagError as exc:
                rejected(event, exc.code.value)
                await self.sink.error(
                    rt.RealtimeError(exc.code.value, exc.message, event_id=rt.event_id_of(event))
                )
            except ConnectionClosed:
                raise
            except Exception as exc:  # a bug: logged without the conversation; the session goes on
                log_failure(log, "Realtime: handling a client event failed", exc)
                await self.sink.error(
                    rt.RealtimeError(
                        "server_error",
                        "the server failed to handle this event; details in its log",
                        event_id=rt.event_id_of(event),
                        kind="server_error",
                    )
                )

    def _wake_words(self, event: dict[str, Any]) -> tuple[str, ...]:
        """The wake word ids this server has, when the update names any (loading the wake
        word engine for a server whose clients never ask is not needed)."""
        session = event.get("session")
        chinwag = session.get("chinwag") if isinstance(session, dict) else None
        if not (isinstance(chinwag, dict) and chinwag.get("wake")):
            return ()
        return self.app.wake_engine().available

    async def _restart_audio(self) -> None:
        if self.audio_open:
            await self.session.handle(self.config.audio_start())

    async def handle(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        eid = rt.event_id_of(event)
        session = self.session
        if kind == "session.update":
            self.config.apply(event, self._wake_words(event))
            session.instructions = self.config.instructions
            session.wake = self.config.wake
            tokens = self.config.max_output_tokens or session.persona.generation.max_tokens
            session.generation = session.generation.model_copy(update={"max_tokens": tokens})
            await self._restart_audio()
            await self.sink.session_updated()
        elif kind == "input_audio_buffer.append":
            pcm = rt.decode_audio(event.get("audio"), event, "audio")
            if not self.audio_open:
                await session.handle(self.config.audio_start())
                self.audio_open = True
            self.appended = True
            await session.handle_audio(pcm)
        elif kind == "input_audio_buffer.commit":
            if not self.appended:
                raise rt.RealtimeError(
                    "input_audio_buffer_commit_empty",
                    "the input audio buffer is empty",
                    event_id=eid,
                )
            # Ends the utterance: it is transcribed into the conversation (push-to-talk).
            await session.handle(proto.AudioStop())
            self.audio_open = self.appended = False
        elif kind == "input_audio_buffer.clear":
            await session.clear_audio()
            self.appended = False
            await self.sink.emit({"type": "input_audio_buffer.cleared"})
        elif kind == "conversation.item.create":
            await self._create_item(event)
        elif kind == "conversation.item.truncate":
            item_id = rt.field_of(event, "item_id", str)
            audio_end_ms = rt.field_of(event, "audio_end_ms", int)
            content_index = rt.field_of(event, "content_index", int, 0)
            if item_id is None or audio_end_ms is None:
                raise rt.RealtimeError(
                    "missing_field",
                    "item_id and audio_end_ms are required",
                    param="item_id" if item_id is None else "audio_end_ms",
                    event_id=eid,
                )
            if audio_end_ms < 0:
                raise rt.invalid_value(event, "audio_end_ms", "audio_end_ms must be >= 0")
            try:
                heard = session.truncate_reply(item_id, audio_end_ms)
            except ChinwagError as exc:
                raise rt.RealtimeError(
                    "invalid_value", exc.message, param="audio_end_ms", event_id=eid
                ) from exc
            if heard is None:
                raise rt.RealtimeError(
                    "item_not_found",
                    f"no spoken assistant item {item_id!r}",
                    param="item_id",
                    event_id=eid,
                )
            await self.sink.emit(
                {
                    "type": "conversation.item.truncated",
                    "item_id": item_id,
                    "content_index": content_index,
                    "audio_end_ms": audio_end_ms,
                }
            )
        elif kind == "conversation.item.delete":
            item_id = rt.field_of(event, "item_id", str)
            if item_id is None or not session.delete_message(item_id):
                raise rt.RealtimeError(
                    "item_not_found", f"no item {item_id!r}", param="item_id", event_id=eid
                )
            await self.sink.send_events([self.sink.events.item_deleted(item_id)])
        elif kind == "conversation.item.retrieve":
            item_id = rt.field_of(event, "item_id", str)
            if item_id is None:
                raise rt.RealtimeError(
                    "missing_field", "item_id is required", param="item_id", event_id=eid
                )
            await self.sink.send_events(self.sink.events.item_retrieved(item_id, session.history))
        elif kind == "response.create":
            params = response_params(event, self.config)
            if params.max_output_tokens is not None:
                self._generation_after = self._generation_after or session.generation
                session.generation = session.generation.model_copy(
                    update={"max_tokens": params.max_output_tokens}
                )
            self.sink.events.next_response = params
            await session.respond(
                speak=params.speak, sample_rate=rt.RATE, instructions=params.instructions
            )
        elif kind == "response.cancel":
            # response_id, when given, must name the response in progress: a late cancel of
            # one that already ended must not stop the next.
            response_id = rt.field_of(event, "response_id", str)
            active = self.sink.events.response
            if (
                response_id is not None and (active is None or active.id != response_id)
            ) or not await session.cancel_turn():
                raise rt.RealtimeError(
                    "response_cancel_not_active",
                    "Cancellation failed: no active response found",
                    param="response_id" if response_id is not None else None,
                    event_id=eid,
                )

    def _check_previous_item(self, event: dict[str, Any]) -> None:
        """previous_item_id: items join the end of the conversation, so it must name the end
        (the last item, one still in progress, or "root" while the conversation is empty)."""
        previous = rt.field_of(event, "previous_item_id", str)
        events = self.sink.events
        history = [message.id for message in self.session.history]
        if (
            previous is None
            or previous == events.last_item
            or previous in events.live_items
            or (history and previous == history[-1])
            or (previous == "root" and not history)
        ):
            return
        if previous == "root" or previous in history:
            raise rt.RealtimeError(
                "unsupported_previous_item_id",
                "items can only be added at the end of the conversation",
                param="previous_item_id",
                event_id=rt.event_id_of(event),
            )
        raise rt.RealtimeError(
            "item_not_found",
            f"no item {previous[:64]!r} in the conversation",
            param="previous_item_id",
            event_id=rt.event_id_of(event),
        )

    async def _create_item(self, event: dict[str, Any]) -> None:
        eid = rt.event_id_of(event)
        item = rt.field_of(event, "item", dict)
        if item is None or item.get("type", "message") != "message":
            raise rt.RealtimeError(
                "unsupported_item",
                "only message items are supported",
                param="item.type",
                event_id=eid,
            )
        role = item.get("role")
        if role not in ("user", "assistant", "system"):
            raise rt.RealtimeError(
                "invalid_value",
                "item.role must be user, assistant or system",
                param="item.role",
                event_id=eid,
            )
        self._check_previous_item(event)
        item_id = (
            item.get("id") if isinstance(item.get("id"), str) else f"item_{uuid.uuid4().hex[:16]}"
        )
        texts: list[str] = []
        audio: bytes | None = None
        for index, part in enumerate(rt.field_of(event, "item.content", list, [])):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in ("input_text", "text", "output_text") and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif kind == "input_audio" and role == "user":
                audio = rt.decode_audio(part.get("audio"), event, f"item.content[{index}].audio")
            else:
                raise rt.RealtimeError(
                    "unsupported_content",
                    f"content type {str(kind)[:64]!r} is not supported here",
                    param=f"item.content[{index}]",
                    event_id=eid,
                )
        text = " ".join(texts).strip()
        if len(text) > self.app.settings.limits.max_text_chars:
            raise rt.RealtimeError(
                "text_too_long",
                "the item's text is over the limit",
                param="item.content",
                event_id=eid,
            )
        if audio is not None:
            self.sink.events.audio_items.add(item_id)
            pcm16k = resample(int16_to_float32(decode_pcm16(audio)), rt.RATE, 16000)
            self.session.add_spoken_message(item_id, np.asarray(pcm16k, dtype=np.float32))
            content = [{"type": "input_audio", "transcript": None}]
            await self.sink.item_added(
                rt.message_item(item_id, "user", content, "in_progress"), done=False
            )
            return
        if not text:
            raise rt.RealtimeError(
                "missing_field", "the item has no text", param="item.content", event_id=eid
            )
        self.session.add_message(role, text, item_id)
        part_type = "input_text" if role != "assistant" else "output_text"
        await self.sink.item_added(
            rt.message_item(item_id, role, [{"type": part_type, "text": text}])
        )
