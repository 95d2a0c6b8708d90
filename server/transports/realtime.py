"""`/v1/realtime`: the OpenAI Realtime (GA) protocol over the same session core.

A thin transport: client events become Session calls, the Session's native events are
translated into Realtime server events. Nothing here runs a model. See docs/realtime.md.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from server.app import App
from server.audio.pcm import decode_pcm16, int16_to_float32, resample
from server.errors import ChinwagError
from server.pipeline.session import Session
from server.protocol import native as proto
from server.protocol import realtime as rt
from server.transports.sink import WebSocketSink

log = logging.getLogger(__name__)


@dataclass
class _Response:
    reply_id: str
    speak: bool
    text: list[str] = field(default_factory=list)
    audio_started: bool = False

    @property
    def id(self) -> str:
        return f"resp_{self.reply_id}"


class RealtimeSink:
    """Receives the Session's native events and sends their Realtime equivalents."""

    def __init__(self, ws: WebSocketSink, config: rt.RealtimeConfig) -> None:
        self.ws = ws
        self.config = config
        self.ids = rt.EventIds()
        self.session_id = f"sess_{uuid.uuid4().hex[:16]}"
        self.response: _Response | None = None
        self.last_item: str | None = None
        self.created = False
        # response.create may override the session's output modalities for one response.
        self.next_speak: bool | None = None

    async def emit(self, event: dict[str, Any]) -> None:
        await self.ws.send_text(rt.encode({"event_id": self.ids.next(), **event}))

    async def error(self, exc: rt.RealtimeError) -> None:
        await self.emit(
            {
                "type": "error",
                "error": {
                    "type": exc.kind,
                    "code": exc.code,
                    "message": exc.message,
                    "param": exc.param,
                    "event_id": exc.event_id,
                },
            }
        )

    async def session_updated(self) -> None:
        kind = "session.updated" if self.created else "session.created"
        self.created = True
        await self.emit({"type": kind, "session": self.config.session_object(self.session_id)})

    async def item_added(self, item: dict[str, Any], done: bool = True) -> None:
        previous, self.last_item = self.last_item, item["id"]
        await self.emit(
            {"type": "conversation.item.added", "previous_item_id": previous, "item": item}
        )
        if done:
            await self.emit(
                {"type": "conversation.item.done", "previous_item_id": previous, "item": item}
            )

    async def send_audio(self, pcm: bytes) -> None:
        response = self.response
        if response is None:
            return  # `say` audio has no Realtime equivalent and is never asked for here
        response.audio_started = True
        await self.emit(
            {
                "type": "response.output_audio.delta",
                **self._part_ref(response),
                "delta": rt.audio_delta(pcm),
            }
        )

    def _part_ref(self, response: _Response) -> dict[str, Any]:
        return {
            "response_id": response.id,
            "item_id": response.reply_id,
            "output_index": 0,
            "content_index": 0,
        }

    async def send(self, event: proto.ServerEvent) -> None:
        match event:
            case proto.SessionStarted():
                await self.session_updated()
            case proto.SpeechStarted() if self.config.turn_detection is not None:
                await self.emit(
                    {
                        "type": "input_audio_buffer.speech_started",
                        "audio_start_ms": int(event.at_ms),
                        "item_id": event.utterance_id,
                    }
                )
            case proto.SpeechStopped():
                if self.config.turn_detection is not None:
                    await self.emit(
                        {
                            "type": "input_audio_buffer.speech_stopped",
                            "audio_end_ms": int(event.at_ms),
                            "item_id": event.utterance_id,
                        }
                    )
                await self.emit(
                    {
                        "type": "input_audio_buffer.committed",
                        "previous_item_id": self.last_item,
                        "item_id": event.utterance_id,
                    }
                )
                item = rt.message_item(
                    event.utterance_id,
                    "user",
                    [{"type": "input_audio", "transcript": None}],
                    "in_progress",
                )
                await self.item_added(item, done=False)
            case proto.Transcript():
                if event.joins is not None:
                    # The earlier utterance was only a pause: its words open this transcript,
                    # so its item goes, as the server's history already dropped it.
                    await self.emit({"type": "conversation.item.deleted", "item_id": event.joins})
                await self.emit(
                    {
                        "type": "conversation.item.input_audio_transcription.completed",
                        "item_id": event.utterance_id,
                        "content_index": 0,
                        "transcript": event.text,
                        "usage": {"type": "duration", "seconds": event.duration_ms / 1000},
                    }
                )
                item = rt.message_item(
                    event.utterance_id, "user", [{"type": "input_audio", "transcript": event.text}]
                )
                await self.emit(
                    {"type": "conversation.item.done", "item": item, "previous_item_id": None}
                )
            case proto.SpeechDiscarded():
                # Not speech after all (noise, or a phrase Whisper invents on silence).
                await self.emit(
                    {"type": "conversation.item.deleted", "item_id": event.utterance_id}
                )
            case proto.ReplyStarted():
                await self._response_started(event.reply_id)
            case proto.ReplyDelta():
                response = self.response
                if response is not None:
                    response.text.append(event.text)
                    kind = (
                        "response.output_audio_transcript.delta"
                        if response.speak
                        else "response.output_text.delta"
                    )
                    await self.emit({"type": kind, **self._part_ref(response), "delta": event.text})
            case proto.OutputAudioDone():
                if self.response is not None and self.response.reply_id == event.stream_id:
                    await self.emit(
                        {"type": "response.output_audio.done", **self._part_ref(self.response)}
                    )
            case proto.ReplyDone():
                await self._response_done(event)
            case proto.Error():
                await self.error(rt.RealtimeError(event.code, event.message))
            case _:
                pass  # output_audio.start/clear, reply.truncated, partials: no Realtime event

    async def _response_started(self, reply_id: str) -> None:
        speak = self.config.speak if self.next_speak is None else self.next_speak
        self.next_speak = None
        response = self.response = _Response(reply_id, speak=speak)
        modalities = ["audio"] if response.speak else ["text"]
        await self.emit(
            {
                "type": "response.created",
                "response": {
                    "id": response.id,
                    "object": "realtime.response",
                    "status": "in_progress",
                    "status_details": None,
                    "output": [],
                    "output_modalities": modalities,
                    "conversation_id": self.session_id,
                    "usage": None,
                },
            }
        )
        item = rt.message_item(reply_id, "assistant", [], "in_progress")
        await self.emit(
            {
                "type": "response.output_item.added",
                "response_id": response.id,
                "output_index": 0,
                "item": item,
            }
        )
        await self.item_added(item, done=False)
        part = (
            {"type": "audio", "transcript": ""} if response.speak else {"type": "text", "text": ""}
        )
        await self.emit(
            {"type": "response.content_part.added", **self._part_ref(response), "part": part}
        )

    async def _response_done(self, event: proto.ReplyDone) -> None:
        response = self.response
        if response is None or response.reply_id != event.reply_id:
            return
        self.response = None
        text = event.heard_text if event.heard_text is not None else event.text
        ref = self._part_ref(response)
        if response.speak:
            await self.emit(
                {"type": "response.output_audio_transcript.done", **ref, "transcript": text}
            )
            part = {"type": "audio", "transcript": text}
        else:
            await self.emit({"type": "response.output_text.done", **ref, "text": text})
            part = {"type": "text", "text": text}
        await self.emit({"type": "response.content_part.done", **ref, "part": part})
        content = [
            {"type": "output_audio", "transcript": text}
            if response.speak
            else {"type": "output_text", "text": text}
        ]
        status = {"completed": "completed", "cancelled": "cancelled"}.get(event.status, "failed")
        item = rt.message_item(
            response.reply_id,
            "assistant",
            content,
            "completed" if status == "completed" else "incomplete",
        )
        await self.emit(
            {
                "type": "response.output_item.done",
                "response_id": response.id,
                "output_index": 0,
                "item": item,
            }
        )
        await self.emit({"type": "conversation.item.done", "previous_item_id": None, "item": item})
        usage = None
        if event.usage is not None:
            usage = {
                "total_tokens": event.usage.prompt_tokens + event.usage.completion_tokens,
                "input_tokens": event.usage.prompt_tokens,
                "output_tokens": event.usage.completion_tokens,
                "input_token_details": {"cached_tokens": event.usage.cached_prompt_tokens},
                "output_token_details": None,
            }
        details = None
        if status == "cancelled":
            details = {
                "type": "cancelled",
                "reason": "turn_detected" if self.config.turn_detection else "client_cancelled",
            }
        await self.emit(
            {
                "type": "response.done",
                "response": {
                    "id": response.id,
                    "object": "realtime.response",
                    "status": status,
                    "status_details": details,
                    "output": [item],
                    "output_modalities": ["audio"] if response.speak else ["text"],
                    "conversation_id": self.session_id,
                    "usage": usage,
                },
            }
        )


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
        self.config = rt.RealtimeConfig(model=model, instructions=persona.system_prompt)
        self.sink = RealtimeSink(WebSocketSink(connection), self.config)
        self.session = Session(app, self.sink, transport="realtime")
        self.audio_open = False
        self.appended = False

    async def run(self) -> None:
        session = self.session
        try:
            await session.start()
            async for frame in self.connection:
                try:
                    if len(frame) > self.app.settings.limits.max_message_bytes:
                        raise rt.RealtimeError(
                            "message_too_large",
                            f"event of {len(frame)} "
                            f"bytes; the limit is "
                            f"{self.app.settings.limits.max_message_bytes}",
                        )
                    event = rt.decode_client_event(frame)
                    await self.handle(event)
                except rt.RealtimeError as exc:
                    await self.sink.error(exc)
                except ChinwagError as exc:
                    await self.sink.error(rt.RealtimeError(exc.code.value, exc.message))
        except ConnectionClosed:
            pass
        finally:
            await session.close()

    def _audio_start(self) -> proto.AudioStart:
        td = self.config.turn_detection
        return proto.AudioStart(
            sample_rate=rt.RATE,
            output_sample_rate=rt.RATE,
            mode="vad" if td else "push_to_talk",
            respond=td.create_response if td else False,
            interrupt=td.interrupt_response if td else True,
            speak=self.config.speak,
            vad=proto.VadOptions(
                threshold=td.threshold,
                prefix_padding_ms=td.prefix_padding_ms,
                silence_ms=td.silence_duration_ms,
            )
            if td
            else None,
        )

    async def _restart_audio(self) -> None:
        if self.audio_open:
            await self.session.handle(proto.AudioStart(**self._audio_start().model_dump()))

    async def handle(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        eid = event.get("event_id")
        session = self.session
        if kind == "session.update":
            self.config.apply(event)
            session.instructions = self.config.instructions
            tokens = self.config.max_output_tokens or session.persona.generation.max_tokens
            session.generation = session.generation.model_copy(update={"max_tokens": tokens})
            await self._restart_audio()
            await self.sink.session_updated()
        elif kind == "input_audio_buffer.append":
            pcm = rt.decode_audio(event.get("audio"), event, "audio")
            if not self.audio_open:
                await session.handle(self._audio_start())
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
            if item_id is None or audio_end_ms is None:
                raise rt.RealtimeError(
                    "missing_field",
                    "item_id and audio_end_ms are required",
                    param="item_id",
                    event_id=eid,
                )
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
                    "content_index": rt.field_of(event, "content_index", int, 0),
                    "audio_end_ms": audio_end_ms,
                }
            )
        elif kind == "conversation.item.delete":
            item_id = rt.field_of(event, "item_id", str)
            if item_id is None or not session.delete_message(item_id):
                raise rt.RealtimeError(
                    "item_not_found", f"no item {item_id!r}", param="item_id", event_id=eid
                )
            await self.sink.emit({"type": "conversation.item.deleted", "item_id": item_id})
        elif kind == "response.create":
            response = rt.field_of(event, "response", dict, {})
            modalities = rt.field_of(response, "output_modalities", list)
            speak = self.config.speak if modalities is None else "audio" in modalities
            instructions = rt.field_of(response, "instructions", str)
            self.sink.next_speak = speak
            await session.respond(speak=speak, sample_rate=rt.RATE, instructions=instructions)
        elif kind == "response.cancel" and not await session.cancel_turn():
            raise rt.RealtimeError(
                "response_cancel_not_active",
                "there is no active response to cancel",
                event_id=eid,
            )

    async def _create_item(self, event: dict[str, Any]) -> None:
        eid = event.get("event_id")
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
        item_id = (
            item.get("id") if isinstance(item.get("id"), str) else f"item_{uuid.uuid4().hex[:16]}"
        )
        texts: list[str] = []
        audio: bytes | None = None
        for index, part in enumerate(rt.field_of(item, "content", list, [])):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in ("input_text", "text", "output_text") and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif kind == "input_audio" and role == "user":
                audio = rt.decode_audio(part.get("audio"), event, f"item.content[{index}].audio")
            else:
                raise rt.RealtimeError(
                    "unsupported_content",
                    f"content type {kind!r} is not supported here",
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
