"""chinwag's native protocol, the server's side: the events a session sends, encoded as JSON
text frames (docs/protocol.md). Pure; server/protocol/native.py (the client messages) exports
them too, so every caller names them `proto.ReplyDone`, `proto.encode_event`...
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from server.errors import ChinwagError, ErrorCode


class ServerEvent(BaseModel):
    model_config = ConfigDict(frozen=True)
    type: ClassVar[str]


class SessionStarted(ServerEvent):
    type: ClassVar[str] = "session.started"
    session_id: str
    persona: str
    personas: list[str]
    generation: dict[str, Any]
    model: str
    context_size: int


class SessionUpdated(ServerEvent):
    type: ClassVar[str] = "session.updated"
    persona: str
    generation: dict[str, Any]


class ReplyStarted(ServerEvent):
    type: ClassVar[str] = "reply.started"
    reply_id: str
    message_id: str | None = None


class ReplyDelta(ServerEvent):
    type: ClassVar[str] = "reply.delta"
    reply_id: str
    text: str


class Usage(BaseModel):
    model_config = ConfigDict(frozen=True)
    prompt_tokens: int
    cached_prompt_tokens: int
    completion_tokens: int


class ReplyTimings(BaseModel):
    model_config = ConfigDict(frozen=True)
    queued_ms: float = Field(description="waiting for the model (other sessions' turns)")
    first_token_ms: float | None = Field(description="from the message to the first delta")
    total_ms: float
    tokens_per_second: float | None


class ReplyDone(ServerEvent):
    type: ClassVar[str] = "reply.done"
    reply_id: str
    status: Literal["completed", "cancelled", "failed"]
    text: str
    # Spoken replies: the part the listener heard before an interruption (kept in history).
    heard_text: str | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    timings: ReplyTimings | None = None


class ReplyTruncated(ServerEvent):
    """A spoken reply that had finished generating was interrupted while still playing."""

    type: ClassVar[str] = "reply.truncated"
    reply_id: str
    heard_text: str


class WakeWaiting(ServerEvent):
    """The microphone waits for a wake word: nothing said is heard until one of these."""

    type: ClassVar[str] = "wake.waiting"
    wake_words: list[str]


class WakeDetected(ServerEvent):
    """A wake word was heard; the request said after it (in the same breath or within the
    listening time) is the next turn."""

    type: ClassVar[str] = "wake.detected"
    wake_word_id: str
    at_ms: float  # position in the audio stream where the detection fired
    probability: float


class SpeechStarted(ServerEvent):
    type: ClassVar[str] = "speech.started"
    utterance_id: str
    at_ms: float  # position in the audio stream


class SpeechStopped(ServerEvent):
    type: ClassVar[str] = "speech.stopped"
    utterance_id: str
    at_ms: float
    duration_ms: float


class TranscriptPartial(ServerEvent):
    type: ClassVar[str] = "transcript.partial"
    utterance_id: str
    text: str


class Transcript(ServerEvent):
    type: ClassVar[str] = "transcript"
    utterance_id: str
    text: str
    duration_ms: float
    transcribe_ms: float
    # The earlier utterance this one continues (the person had only paused): its audio was
    # joined in front, so this transcript replaces that one's.
    joins: str | None = None


class SpeechDiscarded(ServerEvent):
    """An utterance that was not answered: its transcript looked like noise or silence."""

    type: ClassVar[str] = "speech.discarded"
    utterance_id: str
    reason: str
    text: str


class OutputAudioStart(ServerEvent):
    """Binary frames that follow (until output_audio.done) are this stream's 16-bit LE PCM."""

    type: ClassVar[str] = "output_audio.start"
    stream_id: str
    sample_rate: int
    format: str = "pcm16"
    channels: int = 1


class OutputAudioDone(ServerEvent):
    type: ClassVar[str] = "output_audio.done"
    stream_id: str
    status: Literal["completed", "cancelled", "failed"]
    duration_ms: float


class OutputAudioClear(ServerEvent):
    """Drop whatever audio of this stream is still buffered: the listener interrupted."""

    type: ClassVar[str] = "output_audio.clear"
    stream_id: str


class IntentSlot(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str  # the template's slot: name, area, domain, brightness, minutes...
    value: str | int | float
    text: str  # the words said for it ("" when it came from the site's area)


class IntentTarget(BaseModel):
    """A configured device the command is for (the devices file, docs/intents.md)."""

    model_config = ConfigDict(frozen=True)
    entity_id: str
    name: str
    domain: str
    area: str | None = None


class Intent(ServerEvent):
    """A command recognised by the intent stage (docs/intents.md): answered by the reply
    `reply_id` without the model. `handled_by` "home": for the home's automations to carry
    out (the MQTT bridge publishes it); "chinwag": the clock and timers, done here."""

    type: ClassVar[str] = "intent"
    reply_id: str
    name: str  # Home Assistant's intent name: HassTurnOff, HassStartTimer...
    text: str  # what was said or typed
    site: str
    confidence: float
    slots: list[IntentSlot]
    targets: list[IntentTarget]
    area: str | None = None
    handled_by: Literal["home", "chinwag"]
    speech: str  # the confirmation said
    match_ms: float


class TimerFinished(ServerEvent):
    """A timer set in this session is done; its announcement follows as a reply."""

    type: ClassVar[str] = "timer.finished"
    timer_id: str
    name: str | None = None
    seconds: float
    site: str


class Error(ServerEvent):
    type: ClassVar[str] = "error"
    code: str
    message: str
    # The type of the client message that caused it, when known.
    source: str | None = None


def encode_event(event: ServerEvent) -> str:
    body = event.model_dump(mode="json", exclude_none=True)
    return json.dumps({"type": event.type, **body}, ensure_ascii=False, separators=(",", ":"))


def error_event(error: ChinwagError, source: str | None = None) -> Error:
    return Error(code=error.code.value, message=error.message, source=source)


def error_of(event: Error) -> ChinwagError:
    """The error an `error` event stands for (a code this server does not know: internal)."""
    try:
        code = ErrorCode(event.code)
    except ValueError:
        code = ErrorCode.INTERNAL_ERROR
    return ChinwagError(code, event.message)
