"""chinwag's native WebSocket protocol: JSON text frames, one `type` per event.

Pure functions only. `decode_client_message` turns a received frame into a typed message or
raises `ChinwagError` with the code the client will see; `encode_event` turns a server event
into the text frame to send. See docs/protocol.md for the wire format with examples.
"""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from server.errors import ChinwagError, ErrorCode
from server.pipeline.text_split import PhraseSplitter, speakable

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


# --- JSON: the one parser of every transport -------------------------------------------------

# No message of any protocol nests deeper than a few levels; a deeper value is refused before
# anything walks it. (json itself raises RecursionError near Python's recursion limit.)
MAX_JSON_DEPTH = 32


class _NotJson(ValueError):
    """Raised from json's hooks: a value JSON (RFC 8259) does not have."""


def _refuse_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _NotJson("a number too large for a double")
    return value


def loads_json(text: str) -> Any:
    """json.loads, with every way the text can fail as ChinwagError(INVALID_JSON): a syntax
    error, NaN/Infinity, a number out of range, an integer over Python's digit limit (a
    ValueError), nesting too deep for the parser (a RecursionError)."""
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise ChinwagError(ErrorCode.INVALID_JSON, f"not valid JSON: {exc.msg}") from exc
    except _NotJson as exc:
        raise ChinwagError(ErrorCode.INVALID_JSON, f"not valid JSON: {exc}") from exc
    except ValueError as exc:  # int(): more digits than sys.get_int_max_str_digits()
        raise ChinwagError(ErrorCode.INVALID_JSON, "not valid JSON: a number too long") from exc
    except RecursionError as exc:
        raise ChinwagError(
            ErrorCode.INVALID_JSON, f"not valid JSON: nested more than {MAX_JSON_DEPTH} deep"
        ) from exc


def check_json_value(text: str, data: object) -> None:
    """Refuse (INVALID_JSON) a decoded value nested too deeply or holding a lone surrogate."""
    check_surrogates = _SURROGATE_ESCAPE.search(text) is not None
    stack: list[tuple[object, int]] = [(data, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if check_surrogates and not _encodable(item):
                raise ChinwagError(ErrorCode.INVALID_JSON, LONE_SURROGATE)
        elif isinstance(item, dict | list):
            if depth >= MAX_JSON_DEPTH:
                raise ChinwagError(
                    ErrorCode.INVALID_JSON,
                    f"not valid JSON: nested more than {MAX_JSON_DEPTH} deep",
                )
            if isinstance(item, dict):
                stack.extend((key, depth + 1) for key in item)
                stack.extend((value, depth + 1) for value in item.values())
            else:
                stack.extend((value, depth + 1) for value in item)


def parse_json(text: str) -> Any:
    """One JSON text, decoded and checked; ChinwagError(INVALID_JSON) for anything else."""
    data = loads_json(text)
    check_json_value(text, data)
    return data


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# JSON may escape a UTF-16 surrogate ("\ud800") with no partner: Python decodes it to a str
# that is not text and fails wherever it is encoded (the model's tokenizer, a log file).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
LONE_SURROGATE = "not valid JSON text: a \\u escape of a lone UTF-16 surrogate (U+D800-U+DFFF)"


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


def check_frame_size(frame: str | bytes, limit: int, what: str = "message") -> None:
    """The one frame-size check of every transport: FRAME_TOO_LARGE over `limit`."""
    if len(frame) > limit:
        raise ChinwagError(
            ErrorCode.FRAME_TOO_LARGE, f"{what} of {len(frame)} bytes; the limit is {limit}"
        )


def describe_validation_error(exc: ValidationError) -> str:
    """One short line per problem: 'field: what is wrong'."""
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "message"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


# --- server events -------------------------------------------------------------------------


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
