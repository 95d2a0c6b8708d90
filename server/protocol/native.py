"""chinwag's native WebSocket protocol: JSON text frames, one `type` per event.

Pure functions only. `decode_client_message` turns a received frame into a typed message or
raises `ChinwagError` with the code the client will see; `encode_event` turns a server event
into the text frame to send. See docs/protocol.md for the wire format with examples. The server
events are defined in native_events.py, the JSON parser every transport shares in
json_checks.py.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from server.errors import ChinwagError, ErrorCode
from server.pipeline.text_split import PhraseSplitter, speakable
from server.protocol.json_checks import parse_json

# The server events are in native_events.py; callers name them `proto.ReplyDone`... too.
from server.protocol.native_events import *  # noqa: F403

Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class ClientMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str


class WakeOptions(BaseModel):
    """Wait for a wake word before taking a turn (docs/wake-word.md); server defaults from
    [wake] and the persona."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # Wake word ids (e.g. "hey_jarvis"); any of them wakes the session. [] turns waiting off.
    words: list[Identifier] = Field(max_length=8)
    # After the wake word, the request must begin within this time ([wake] listen_s).
    listen_s: float | None = Field(None, gt=0.0, le=60.0)
    # Further turns without the wake word if they begin this soon after one ends.
    follow_up_s: float | None = Field(None, ge=0.0, le=300.0)


class SessionStart(ClientMessage):
    """Start a fresh conversation (history cleared) with a persona and settings."""

    type: Literal["session.start"] = "session.start"
    persona: Identifier | None = None
    generation: dict[str, Any] | None = None
    site: Identifier | None = None
    wake: WakeOptions | None = None


class SessionUpdate(ClientMessage):
    """Change persona or generation settings; the conversation so far is kept."""

    type: Literal["session.update"] = "session.update"
    persona: Identifier | None = None
    generation: dict[str, Any] | None = None
    wake: WakeOptions | None = None


class UserMessage(ClientMessage):
    """A typed user message; the reply streams back. Interrupts a reply in progress."""

    type: Literal["user.message"] = "user.message"
    text: str
    id: Identifier | None = None


class Cancel(ClientMessage):
    """Stop the reply in progress; what was generated so far stays in the history."""

    type: Literal["cancel"] = "cancel"


class VadOptions(BaseModel):
    """Turn-detection overrides for one audio stream (server defaults from [vad])."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    threshold: float | None = Field(None, gt=0.0, lt=1.0)
    min_speech_ms: int | None = Field(None, ge=0, le=5000)
    silence_ms: int | None = Field(None, ge=100, le=10000)
    prefix_padding_ms: int | None = Field(None, ge=0, le=2000)


class AudioStart(ClientMessage):
    """Open the microphone stream: binary frames of 16-bit LE mono PCM follow.

    mode "vad": the server detects turns; "push_to_talk": `audio.stop` ends each utterance.
    task "converse": transcribe and answer aloud; "transcribe": transcripts only.
    """

    type: Literal["audio.start"] = "audio.start"
    sample_rate: int
    format: Literal["pcm16"] = "pcm16"
    mode: Literal["vad", "push_to_talk"] = "vad"
    task: Literal["converse", "transcribe"] = "converse"
    # Rate for the reply audio; default: the voice's own rate.
    output_sample_rate: int | None = None
    partial_transcripts: bool = False
    vad: VadOptions | None = None
    # converse: answer each utterance at once (false: it only joins the conversation).
    respond: bool = True
    # vad mode: speaking over a reply interrupts it (barge-in).
    interrupt: bool = True
    # Answer aloud (false: text replies only, no audio).
    speak: bool = True


class AudioStop(ClientMessage):
    """End the microphone stream (push-to-talk: end of the utterance, which is then answered)."""

    type: Literal["audio.stop"] = "audio.stop"


class Say(ClientMessage):
    """Speak this text (TTS only); the audio comes back as an output audio stream."""

    type: Literal["say"] = "say"
    text: str
    id: Identifier | None = None
    sample_rate: int | None = None


class Playback(ClientMessage):
    """How much of an output audio stream the client has actually played."""

    type: Literal["playback"] = "playback"
    stream_id: Identifier
    played_ms: float = Field(ge=0)


CLIENT_MESSAGES: dict[str, type[ClientMessage]] = {
    cls.model_fields["type"].default: cls
    for cls in (
        SessionStart, SessionUpdate, UserMessage, Cancel, AudioStart, AudioStop, Say, Playback
    )
}  # fmt: skip


def decode_client_message(frame: str | bytes, max_text_chars: int) -> ClientMessage:
    """Parse one text frame. Raises ChinwagError with the code to report."""
    if isinstance(frame, bytes):
        raise ChinwagError(
            ErrorCode.UNEXPECTED_BINARY, "binary frames are only accepted inside an audio stream"
        )
    data = parse_json(frame)
    if not isinstance(data, dict):
        raise ChinwagError(ErrorCode.INVALID_MESSAGE, "a message must be a JSON object")
    return validate_client_message(data, max_text_chars)


def validate_client_message(data: dict[str, Any], max_text_chars: int) -> ClientMessage:
    """A typed message from a decoded JSON object (any transport's). Raises ChinwagError."""
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ChinwagError(ErrorCode.INVALID_MESSAGE, "field 'type' (string) is required")
    cls = CLIENT_MESSAGES.get(kind)
    if cls is None:
        raise ChinwagError(
            ErrorCode.UNKNOWN_TYPE,
            f"unknown message type {kind!r}; known: {', '.join(sorted(CLIENT_MESSAGES))}",
        )
    try:
        message = cls.model_validate(data)
    except ValidationError as exc:
        raise ChinwagError(ErrorCode.INVALID_MESSAGE, describe_validation_error(exc)) from exc
    if isinstance(message, UserMessage | Say):
        if not message.text.strip():
            raise ChinwagError(ErrorCode.INVALID_MESSAGE, "field 'text' must not be empty")
        if len(message.text) > max_text_chars:
            raise ChinwagError(
                ErrorCode.TEXT_TOO_LONG,
                f"text is {len(message.text)} characters; the limit is {max_text_chars}",
            )
    if isinstance(message, Say) and not has_speech(message.text):
        # Else no audio, and no event at all, would ever answer it.
        raise ChinwagError(ErrorCode.INVALID_MESSAGE, "the text has nothing to speak")
    return message


def has_speech(text: str) -> bool:
    """Whether speaking this text produces any audio (punctuation alone does not)."""
    splitter = PhraseSplitter()
    return any(speakable(p).strip() for p in [*splitter.feed(text), *splitter.flush()])


def describe_validation_error(exc: ValidationError) -> str:
    """One short line per problem: 'field: what is wrong'."""
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "message"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
