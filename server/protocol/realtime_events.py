"""The session's native events as OpenAI Realtime server events: a pure translator.

Events in, Realtime event dicts out (each stamped with its `event_id`); no socket, no asyncio.
The /v1/realtime transport sends what each call returns, in order. See docs/realtime.md.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from server.engines.base import ChatMessage
from server.protocol import native as proto
from server.protocol import realtime as rt
from server.protocol.realtime_config import RealtimeConfig
from server.protocol.realtime_response import ResponseParams

RealtimeEvent = dict[str, Any]
DONE_ITEMS_KEPT = 64


@dataclass
class _Response:
    reply_id: str
    speak: bool
    text: list[str] = field(default_factory=list)
    params: ResponseParams | None = None  # from response.create; None: a VAD turn's

    @property
    def in_conversation(self) -> bool:
        return self.params is None or self.params.in_conversation

    def fields(self, config: RealtimeConfig, session_id: str) -> dict[str, Any]:
        """The response object's fields beside id, status, output and usage."""
        params = self.params
        tokens = params.max_output_tokens if params and params.max_output_tokens else None
        tokens = tokens or config.max_output_tokens
        voice = params.voice if params and params.voice else config.voice
        return {
            "conversation_id": session_id if self.in_conversation else None,
            "output_modalities": ["audio"] if self.speak else ["text"],
            "max_output_tokens": tokens or "inf",
            "audio": {"output": {"format": {"type": "audio/pcm", "rate": rt.RATE}, "voice": voice}},
            "metadata": params.metadata if params else None,
        }

    @property
    def id(self) -> str:
        return f"resp_{self.reply_id}"


class RealtimeEvents:
    """Translates one session's native events into Realtime server events."""

    def __init__(self, config: RealtimeConfig) -> None:
        self.config = config
        self.ids = rt.EventIds()
        self.session_id = f"sess_{uuid.uuid4().hex[:16]}"
        self.response: _Response | None = None
        self.last_item: str | None = None
        self.created = False
        # What response.create asked of the response it starts (modalities, metadata, ...).
        self.next_response: ResponseParams | None = None
        # Items whose content is audio (spoken user turns, spoken replies), and items not yet
        # done (an utterance being transcribed, a reply being written): for retrieve.
        self.audio_items: set[str] = set()
        self.live_items: dict[str, dict[str, Any]] = {}
        # The last items finished, as last sent: an exchange the history dropped (a reply
        # interrupted before a word was heard takes its question with it) is still an item
        # the client was told of, and retrieves it after truncating it.
        self.done_items: dict[str, dict[str, Any]] = {}

    def remember(self, item: dict[str, Any]) -> None:
        self.live_items.pop(item["id"], None)
        self.done_items.pop(item["id"], None)
        self.done_items[item["id"]] = item
        while len(self.done_items) > DONE_ITEMS_KEPT:
            del self.done_items[next(iter(self.done_items))]

    def stamp(self, event: RealtimeEvent) -> RealtimeEvent:
        """The event with the next event_id, as every server event carries one."""
        return {"event_id": self.ids.next(), **event}

    def error(self, exc: rt.RealtimeError) -> list[RealtimeEvent]:
        return [
            self.stamp(
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
        ]

    def session_updated(self) -> list[RealtimeEvent]:
        kind = "session.updated" if self.created else "session.created"
        self.created = True
        return [self.stamp({"type": kind, "session": self.config.session_object(self.session_id)})]

    def item_added(self, item: dict[str, Any], done: bool = True) -> list[RealtimeEvent]:
        previous, self.last_item = self.last_item, item["id"]
        if done:
            self.remember(item)
        else:
            self.live_items[item["id"]] = item
        out = [
            self.stamp(
                {"type": "conversation.item.added", "previous_item_id": previous, "item": item}
            )
        ]
        if done:
            out.append(
                self.stamp(
                    {"type": "conversation.item.done", "previous_item_id": previous, "item": item}
                )
            )
        return out

    def item_deleted(self, item_id: str) -> RealtimeEvent:
        self.live_items.pop(item_id, None)
        self.done_items.pop(item_id, None)
        self.audio_items.discard(item_id)
        return self.stamp({"type": "conversation.item.deleted", "item_id": item_id})

    def item_retrieved(self, item_id: str, history: list[ChatMessage]) -> list[RealtimeEvent]:
        """conversation.item.retrieved: the item as the server holds it (the history's words,
        after any truncation; an item still in progress, or one the history dropped, as last
        sent). Audio is not kept, so audio content carries its transcript and no `audio`."""
        item = self.live_items.get(item_id) or self.done_items.get(item_id)
        for message in history:
            if message.id == item_id:
                item = self.history_item(message)
        if item is None:
            raise rt.RealtimeError(
                "item_retrieve_invalid_item_id",
                f"no item {item_id[:64]!r} in the conversation",
                param="item_id",
            )
        return [self.stamp({"type": "conversation.item.retrieved", "item": item})]

    def history_item(self, message: ChatMessage) -> dict[str, Any]:
        assert message.id is not None
        audio = message.id in self.audio_items
        part: dict[str, Any]
        if message.role == "assistant":
            part = (
                {"type": "output_audio", "transcript": message.content}
                if audio
                else {"type": "output_text", "text": message.content}
            )
        elif audio:
            part = {"type": "input_audio", "transcript": message.content}
        else:
            part = {"type": "input_text", "text": message.content}
        return rt.message_item(message.id, message.role, [part])

    def audio(self, pcm: bytes) -> list[RealtimeEvent]:
        response = self.response
        if response is None:
            return []  # `say` audio has no Realtime equivalent and is never asked for here
        return [
            self.stamp(
                {
                    "type": "response.output_audio.delta",
                    **self._part_ref(response),
                    "delta": rt.audio_delta(pcm),
                }
            )
        ]

    @staticmethod
    def _part_ref(response: _Response) -> dict[str, Any]:
        return {
            "response_id": response.id,
            "item_id": response.reply_id,
            "output_index": 0,
            "content_index": 0,
        }

    def event(self, event: proto.ServerEvent) -> list[RealtimeEvent]:
        """The Realtime events for one native event (often none, sometimes several)."""
        out: list[RealtimeEvent] = []
        emit = out.append
        match event:
            case proto.SessionStarted():
                out += self.session_updated()
            case proto.SpeechStarted() if self.config.turn_detection is not None:
                emit(
                    self.stamp(
                        {
                            "type": "input_audio_buffer.speech_started",
                            "audio_start_ms": int(event.at_ms),
                            "item_id": event.utterance_id,
                        }
                    )
                )
            case proto.SpeechStopped():
                if self.config.turn_detection is not None:
                    emit(
                        self.stamp(
                            {
                                "type": "input_audio_buffer.speech_stopped",
                                "audio_end_ms": int(event.at_ms),
                                "item_id": event.utterance_id,
                            }
                        )
                    )
                emit(
                    self.stamp(
                        {
                            "type": "input_audio_buffer.committed",
                            "previous_item_id": self.last_item,
                            "item_id": event.utterance_id,
                        }
                    )
                )
                item = rt.message_item(
                    event.utterance_id,
                    "user",
                    [{"type": "input_audio", "transcript": None}],
                    "in_progress",
                )
                self.audio_items.add(event.utterance_id)
                out += self.item_added(item, done=False)
            case proto.Transcript():
                if event.joins is not None:
                    # The earlier utterance was only a pause: its words open this transcript,
                    # so its item goes, as the server's history already dropped it.
                    emit(self.item_deleted(event.joins))
                emit(
                    self.stamp(
                        {
                            "type": "conversation.item.input_audio_transcription.completed",
                            "item_id": event.utterance_id,
                            "content_index": 0,
                            "transcript": event.text,
                            "usage": {"type": "duration", "seconds": event.duration_ms / 1000},
                        }
                    )
                )
                item = rt.message_item(
                    event.utterance_id, "user", [{"type": "input_audio", "transcript": event.text}]
                )
                self.remember(item)
                emit(
                    self.stamp(
                        {"type": "conversation.item.done", "item": item, "previous_item_id": None}
                    )
                )
            case proto.WakeWaiting():
                # chinwag's extension events (docs/realtime.md): sent only to a session that
                # asked for a wake word with session.chinwag.wake.
                emit(self.stamp({"type": "chinwag.wake.waiting", "wake_words": event.wake_words}))
            case proto.WakeDetected():
                emit(
                    self.stamp(
                        {
                            "type": "chinwag.wake.detected",
                            "wake_word_id": event.wake_word_id,
                            "audio_ms": int(event.at_ms),
                            "probability": event.probability,
                        }
                    )
                )
            case proto.SpeechDiscarded():
                # Not speech after all (noise, or a phrase Whisper invents on silence).
                emit(self.item_deleted(event.utterance_id))
            case proto.ReplyStarted():
                out += self._response_started(event.reply_id)
            case proto.ReplyDelta():
                response = self.response
                if response is not None:
                    response.text.append(event.text)
                    kind = (
                        "response.output_audio_transcript.delta"
                        if response.speak
                        else "response.output_text.delta"
                    )
                    emit(
                        self.stamp({"type": kind, **self._part_ref(response), "delta": event.text})
                    )
            case proto.OutputAudioDone():
                if self.response is not None and self.response.reply_id == event.stream_id:
                    emit(
                        self.stamp(
                            {"type": "response.output_audio.done", **self._part_ref(self.response)}
                        )
                    )
            case proto.ReplyDone():
                out += self._response_done(event)
            case proto.Error():
                out += self.error(rt.RealtimeError(event.code, event.message))
            case proto.Intent() | proto.TimerFinished():
                # chinwag's extensions (docs/realtime.md): `chinwag.intent`, a command the
                # intent stage answered; `chinwag.timer.finished`. Clients ignore unknown types.
                body = event.model_dump(mode="json", exclude_none=True)
                emit(self.stamp({"type": f"chinwag.{event.type}", **body}))
            case _:
                pass  # output_audio.start/clear, reply.truncated, partials: no Realtime event
        return out

    def _response_started(self, reply_id: str) -> list[RealtimeEvent]:
        params, self.next_response = self.next_response, None
        speak = self.config.speak if params is None else params.speak
        response = self.response = _Response(reply_id, speak=speak, params=params)
        if speak and response.in_conversation:
            self.audio_items.add(reply_id)
        out = [
            self.stamp(
                {
                    "type": "response.created",
                    "response": {
                        "id": response.id,
                        "object": "realtime.response",
                        "status": "in_progress",
                        "status_details": None,
                        "output": [],
                        **response.fields(self.config, self.session_id),
                        "usage": None,
                    },
                }
            )
        ]
        item = rt.message_item(reply_id, "assistant", [], "in_progress")
        out.append(
            self.stamp(
                {
                    "type": "response.output_item.added",
                    "response_id": response.id,
                    "output_index": 0,
                    "item": item,
                }
            )
        )
        if response.in_conversation:  # an out-of-band response adds no item
            out += self.item_added(item, done=False)
        part = (
            {"type": "audio", "transcript": ""} if response.speak else {"type": "text", "text": ""}
        )
        out.append(
            self.stamp(
                {"type": "response.content_part.added", **self._part_ref(response), "part": part}
            )
        )
        return out

    def _response_done(self, event: proto.ReplyDone) -> list[RealtimeEvent]:
        response = self.response
        if response is None or response.reply_id != event.reply_id:
            return []
        self.response = None
        out: list[RealtimeEvent] = []
        text = event.heard_text if event.heard_text is not None else event.text
        ref = self._part_ref(response)
        if response.speak:
            out.append(
                self.stamp(
                    {"type": "response.output_audio_transcript.done", **ref, "transcript": text}
                )
            )
            part = {"type": "audio", "transcript": text}
        else:
            out.append(self.stamp({"type": "response.output_text.done", **ref, "text": text}))
            part = {"type": "text", "text": text}
        out.append(self.stamp({"type": "response.content_part.done", **ref, "part": part}))
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
        out.append(
            self.stamp(
                {
                    "type": "response.output_item.done",
                    "response_id": response.id,
                    "output_index": 0,
                    "item": item,
                }
            )
        )
        if response.in_conversation:
            self.remember(item)
            out.append(
                self.stamp(
                    {"type": "conversation.item.done", "previous_item_id": None, "item": item}
                )
            )
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
        out.append(
            self.stamp(
                {
                    "type": "response.done",
                    "response": {
                        "id": response.id,
                        "object": "realtime.response",
                        "status": status,
                        "status_details": details,
                        "output": [item],
                        **response.fields(self.config, self.session_id),
                        "usage": usage,
                    },
                }
            )
        )
        return out
