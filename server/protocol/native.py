"""chinwag's native WebSocket protocol: JSON text frames, one `type` per event.

Pure functions only. `decode_client_message` turns a received frame into a typed message or
raises `ChinwagError` with the code the client will see; `encode_event` turns a server event
into the text frame to send. See docs/protocol.md for the wire format with examples.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from server.errors import ChinwagError, ErrorCode

Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class ClientMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str


class SessionStart(ClientMessage):
    """Start a fresh conversation (history cleared) with a persona and settings."""

    type: Literal["session.start"] = "session.start"
    persona: Identifier | None = None
    generation: dict[str, Any] | None = None
    site: Identifier | None = None


class SessionUpdate(ClientMessage):
    """Change persona or generation settings; the conversation so far is kept."""

    type: Literal["session.update"] = "session.update"
    persona: Identifier | None = None
    generation: dict[str, Any] | None = None


class UserMessage(ClientMessage):
    """A typed user message; the reply streams back. Interrupts a reply in progress."""

    type: Literal["user.message"] = "user.message"
    text: str
    id: Identifier | None = None


class Cancel(ClientMessage):
    """Stop the reply in progress; what was generated so far stays in the history."""

    type: Literal["cancel"] = "cancel"


CLIENT_MESSAGES: dict[str, type[ClientMessage]] = {
    cls.model_fields["type"].default: cls
    for cls in (SessionStart, SessionUpdate, UserMessage, Cancel)
}


def decode_client_message(frame: str | bytes, max_text_chars: int) -> ClientMessage:
    """Parse one text frame. Raises ChinwagError with the code to report."""
    if isinstance(frame, bytes):
        raise ChinwagError(
            ErrorCode.UNEXPECTED_BINARY, "binary frames are only accepted inside an audio stream"
        )
    try:
        data = json.loads(frame)
    except json.JSONDecodeError as exc:
        raise ChinwagError(ErrorCode.INVALID_JSON, f"not valid JSON: {exc.msg}") from exc
    if not isinstance(data, dict):
        raise ChinwagError(ErrorCode.INVALID_MESSAGE, "a message must be a JSON object")
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
    if isinstance(message, UserMessage):
        if not message.text.strip():
            raise ChinwagError(ErrorCode.INVALID_MESSAGE, "field 'text' must not be empty")
        if len(message.text) > max_text_chars:
            raise ChinwagError(
                ErrorCode.TEXT_TOO_LONG,
                f"text is {len(message.text)} characters; the limit is {max_text_chars}",
            )
    return message


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
    finish_reason: str | None = None
    usage: Usage | None = None
    timings: ReplyTimings | None = None


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
