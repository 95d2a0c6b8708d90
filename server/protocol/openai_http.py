"""OpenAI's HTTP API, the parts chinwag answers: request validation, response bodies,
server-sent events, subtitle formats and errors. Pure functions; no I/O.

The transport is server/transports/openai_http.py; the wire format is OpenAI's (docs in
docs/openai-http.md). Unknown request fields are ignored, as OpenAI-compatible servers do, so
clients that send newer options keep working; known fields are checked strictly.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from server.engines.base import ChatMessage, Segment
from server.errors import ChinwagError, ChinwagException, ErrorCode

# --- errors ---------------------------------------------------------------------------------

ErrorType = Literal[
    "invalid_request_error", "authentication_error", "permission_error", "server_error"
]
# OpenAI's error `type` by HTTP status; anything else 4xx is invalid_request_error.
_TYPES: dict[int, ErrorType] = {
    401: "authentication_error",
    403: "permission_error",
    500: "server_error",
    502: "server_error",
    503: "server_error",
    504: "server_error",
}
# The HTTP status of a ChinwagError raised below the HTTP layer, by its code.
_STATUS_OF_CODE: dict[str, HTTPStatus] = {
    ErrorCode.CONTEXT_OVERFLOW: HTTPStatus.BAD_REQUEST,
    ErrorCode.TOO_MANY_SESSIONS: HTTPStatus.SERVICE_UNAVAILABLE,
    ErrorCode.MODELS_LOADING: HTTPStatus.SERVICE_UNAVAILABLE,
    ErrorCode.INTERNAL_ERROR: HTTPStatus.INTERNAL_SERVER_ERROR,
    ErrorCode.OVERLOADED: HTTPStatus.SERVICE_UNAVAILABLE,
    # A remote engine (docs: [llm|asr|tts] backend = "openai") failed: not the caller's doing.
    ErrorCode.REMOTE_UNAVAILABLE: HTTPStatus.BAD_GATEWAY,
    ErrorCode.REMOTE_UNAUTHORIZED: HTTPStatus.BAD_GATEWAY,
    ErrorCode.REMOTE_TIMEOUT: HTTPStatus.GATEWAY_TIMEOUT,
    ErrorCode.REMOTE_ERROR: HTTPStatus.BAD_GATEWAY,
}


class OpenAIError(ChinwagException):
    """An HTTP error answer: {"error": {"message", "type", "param", "code"}} with a status."""

    def __init__(
        self,
        status: HTTPStatus,
        code: str,
        message: str,
        *,
        param: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.headers = tuple(headers)

    @property
    def type(self) -> ErrorType:
        return _TYPES.get(self.status.value, "invalid_request_error")

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    @classmethod
    def from_chinwag(cls, exc: ChinwagError, param: str | None = None) -> OpenAIError:
        status = _STATUS_OF_CODE.get(exc.code.value, HTTPStatus.BAD_REQUEST)
        return cls(status, exc.code.value, exc.message, param=param)


def invalid(message: str, param: str | None = None) -> OpenAIError:
    return OpenAIError(HTTPStatus.BAD_REQUEST, ErrorCode.INVALID_MESSAGE, message, param=param)


def _from_validation(exc: ValidationError) -> OpenAIError:
    """The first problem of a pydantic validation, with its field as `param`."""
    errors = exc.errors(include_url=False)
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    param = ".".join(str(p) for p in first["loc"]) or None
    message = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in errors[:5]
    )
    return invalid(message, param)


def parse_json_object(body: bytes) -> dict[str, Any]:
    """A request body that must be one JSON object."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OpenAIError(
            HTTPStatus.BAD_REQUEST, ErrorCode.INVALID_JSON, f"the body is not valid JSON: {exc}"
        ) from None
    if not isinstance(data, dict):
        raise invalid("the body must be a JSON object")
    return data


# --- chat completions -----------------------------------------------------------------------

MAX_STOP_SEQUENCES = 4
MAX_STOP_CHARS = 200


class _Request(BaseModel):
    # Unknown fields are ignored (newer SDK options); known ones are not coerced.
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


class TextPart(_Request):
    type: Literal["text"]
    text: str


class MessageIn(_Request):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(_Request):
    include_usage: bool = False


class ChatRequest(_Request):
    model: Annotated[str, Field(min_length=1, max_length=256)]
    messages: Annotated[list[MessageIn], Field(min_length=1, max_length=1000)]
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    n: Annotated[int, Field(ge=1, le=1)] | None = None

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, stop: str | list[str] | None) -> str | list[str] | None:
        stops = [stop] if isinstance(stop, str) else stop or []
        if len(stops) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences")
        if any(not s or len(s) > MAX_STOP_CHARS for s in stops):
            raise ValueError(f"stop sequences must be 1 to {MAX_STOP_CHARS} characters")
        return stop

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    @property
    def token_limit(self) -> int | None:
        """max_completion_tokens (the current name) over max_tokens (the older one)."""
        return self.max_completion_tokens or self.max_tokens


def parse_chat_request(body: bytes, max_text_chars: int) -> ChatRequest:
    try:
        request = ChatRequest.model_validate(parse_json_object(body))
    except ValidationError as exc:
        raise _from_validation(exc) from None
    for i, message in enumerate(request.messages):
        if len(message.text()) > max_text_chars:
            raise OpenAIError(
                HTTPStatus.BAD_REQUEST,
                ErrorCode.TEXT_TOO_LONG,
                f"message {i} has {len(message.text())} characters; the limit is {max_text_chars}",
                param=f"messages.{i}.content",
            )
    if not any(m.role in ("user", "assistant") for m in request.messages):
        raise invalid("the messages hold no user message to answer", "messages")
    return request


@dataclass(frozen=True)
class Conversation:
    """A chat request's messages as the model takes them."""

    system_prompt: str | None  # the caller's system (and developer) messages, joined
    history: list[ChatMessage]


def conversation_of(messages: Sequence[MessageIn]) -> Conversation:
    """System and developer messages become the system prompt (in order, wherever they
    stand); the rest, the conversation."""
    system = [m.text() for m in messages if m.role in ("system", "developer")]
    history = [
        ChatMessage("user" if m.role == "user" else "assistant", m.text())
        for m in messages
        if m.role in ("user", "assistant")
    ]
    prompt = "\n\n".join(s.strip() for s in system if s.strip())
    return Conversation(prompt or None, history)


def completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


FinishReason = Literal["stop", "length"]


def completion(
    ident: str,
    model: str,
    created: int,
    text: str,
    finish_reason: FinishReason,
    usage_: dict[str, int],
) -> dict[str, Any]:
    """A non-streamed chat.completion."""
    return {
        "id": ident,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage_,
    }


def chunk(
    ident: str,
    model: str,
    created: int,
    delta: dict[str, Any] | None,
    finish_reason: FinishReason | None = None,
    usage_: dict[str, int] | None = None,
    include_usage: bool = False,
) -> dict[str, Any]:
    """One chat.completion.chunk. `delta` None: the usage chunk (no choices)."""
    body: dict[str, Any] = {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    if include_usage:  # with stream_options.include_usage every chunk has the key
        body["usage"] = usage_
    return body


def now() -> int:
    return int(time.time())


# --- server-sent events ---------------------------------------------------------------------

SSE_DONE = b"data: [DONE]\n\n"


def sse(data: dict[str, Any]) -> bytes:
    """One server-sent event. JSON has no raw newlines, so one `data:` line carries it."""
    return b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n"


def sse_error(error: OpenAIError) -> bytes:
    """An error after the stream began (the status is sent): as an event, as OpenAI does."""
    return sse(error.body())


class StopScanner:
    """Finds the caller's stop sequences in streamed text and holds back what could be the
    start of one, so no part of a stop sequence is ever sent."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """The text that is safe to send now. After a stop sequence: nothing more."""
        if self.stopped:
            return ""
        if not self.stops:
            return text
        return self._scan(self._held + text, final=False)

    def flush(self) -> str:
        """At the end of the reply: what was held back is sent up to any stop sequence in it."""
        held, self._held = self._held, ""
        return "" if self.stopped else self._scan(held, final=True)

    def _scan(self, pending: str, *, final: bool) -> str:
        found = [i for i in (pending.find(s) for s in self.stops) if i >= 0]
        # Where a stop sequence could still begin, if more text comes ("5a" with the stops
        # "a" and "5a5": "5a5" would start before "a", and the earliest stop wins).
        # (Only the last few characters can begin a stop sequence that is not all there.)
        tail_from = max(0, len(pending) - max(map(len, self.stops), default=1) + 1)
        open_starts = (
            []
            if final
            else [q for q in range(tail_from, len(pending)) if self._could_start(pending[q:])]
        )
        if found and not [q for q in open_starts if q < min(found)]:
            self.stopped = True
            self._held = ""
            return pending[: min(found)]
        safe = min(open_starts, default=len(pending))
        self._held = pending[safe:]
        return pending[:safe]

    def _could_start(self, tail: str) -> bool:
        """`tail` is the start of a stop sequence but not all of it."""
        return any(len(tail) < len(stop) and stop.startswith(tail) for stop in self.stops)


# --- speech ---------------------------------------------------------------------------------

SPEECH_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
# OpenAI's voice names, accepted so that clients written for OpenAI work unchanged: this
# server has one voice, and each of them is that voice.
OPENAI_VOICES = frozenset(
    {
        "alloy",
        "ash",
        "ballad",
        "coral",
        "echo",
        "fable",
        "onyx",
        "nova",
        "sage",
        "shimmer",
        "verse",
        "marin",
        "cedar",
    }
)


class SpeechRequest(_Request):
    model: Annotated[str, Field(min_length=1, max_length=256)]
    input: Annotated[str, Field(min_length=1)]
    voice: Annotated[str, Field(min_length=1, max_length=256)]
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "mp3"
    speed: Annotated[float, Field(ge=0.25, le=4.0)] = 1.0
    instructions: str | None = None  # accepted, not used: Piper voices take no instructions


def parse_speech_request(body: bytes, max_text_chars: int, voices: set[str]) -> SpeechRequest:
    """A /v1/audio/speech body; `voices` are this server's voice names besides OpenAI's."""
    try:
        request = SpeechRequest.model_validate(parse_json_object(body))
    except ValidationError as exc:
        raise _from_validation(exc) from None
    if len(request.input) > max_text_chars:
        raise OpenAIError(
            HTTPStatus.BAD_REQUEST,
            ErrorCode.TEXT_TOO_LONG,
            f"input has {len(request.input)} characters; the limit is {max_text_chars}",
            param="input",
        )
    if request.voice not in voices and request.voice not in OPENAI_VOICES:
        raise OpenAIError(
            HTTPStatus.BAD_REQUEST,
            ErrorCode.UNKNOWN_VOICE,
            f"no voice {request.voice[:64]!r}; this server has {', '.join(sorted(voices))} "
            "(OpenAI's voice names are accepted too)",
            param="voice",
        )
    return request


# --- transcriptions -------------------------------------------------------------------------

TRANSCRIPTION_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
MAX_PROMPT_CHARS = 2000
MAX_FIELD_BYTES = 16 * 1024  # a form field other than the file


@dataclass(frozen=True)
class TranscriptionRequest:
    model: str
    response_format: str = "json"
    language: str | None = None
    prompt: str | None = None


def parse_transcription_fields(fields: dict[str, str]) -> TranscriptionRequest:
    """The form fields of /v1/audio/transcriptions besides `file` (others are ignored)."""
    model = fields.get("model", "").strip()
    if not model:
        raise invalid("model is required", "model")
    response_format = fields.get("response_format", "json").strip() or "json"
    if response_format not in TRANSCRIPTION_FORMATS:
        raise invalid(
            f"response_format must be one of {', '.join(TRANSCRIPTION_FORMATS)}",
            "response_format",
        )
    language = fields.get("language", "").strip().lower() or None
    if language is not None and not (
        2 <= len(language) <= 3 and language.isascii() and language.isalpha()
    ):
        raise invalid("language must be an ISO-639-1 code such as 'en'", "language")
    prompt = fields.get("prompt") or None
    if prompt is not None and len(prompt) > MAX_PROMPT_CHARS:
        raise OpenAIError(
            HTTPStatus.BAD_REQUEST,
            ErrorCode.TEXT_TOO_LONG,
            f"prompt has {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}",
            param="prompt",
        )
    return TranscriptionRequest(model, response_format, language, prompt)


def _timestamp(seconds: float, separator: str) -> str:
    millis = max(0, math.floor(seconds * 1000 + 0.5))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def srt(segments: Sequence[Segment]) -> str:
    """SubRip: numbered cues, comma before the milliseconds."""
    cues = [
        f"{i}\n{_timestamp(s.start_s, ',')} --> {_timestamp(s.end_s, ',')}\n{s.text}\n"
        for i, s in enumerate(segments, 1)
    ]
    return "\n".join(cues)


def vtt(segments: Sequence[Segment]) -> str:
    """WebVTT: a header, then cues with a dot before the milliseconds."""
    cues = [
        f"{_timestamp(s.start_s, '.')} --> {_timestamp(s.end_s, '.')}\n{s.text}\n" for s in segments
    ]
    return "WEBVTT\n\n" + "\n".join(cues)


LANGUAGE_NAMES = {
    "en": "english",
    "de": "german",
    "fr": "french",
    "es": "spanish",
    "it": "italian",
    "nl": "dutch",
    "pt": "portuguese",
}


def transcription_body(
    response_format: str, language: str, duration_s: float, segments: Sequence[Segment]
) -> tuple[str, bytes]:
    """(content type, body) of a transcription in a response_format."""
    text = " ".join(s.text for s in segments)
    if response_format == "text":
        return "text/plain; charset=utf-8", (text + "\n").encode()
    if response_format == "srt":
        return "application/x-subrip; charset=utf-8", srt(segments).encode()
    if response_format == "vtt":
        return "text/vtt; charset=utf-8", vtt(segments).encode()
    body: dict[str, Any] = {"text": text}
    if response_format == "verbose_json":
        body = {
            "task": "transcribe",
            "language": LANGUAGE_NAMES.get(language, language),
            "duration": round(duration_s, 3),
            "text": text,
            "segments": [
                {
                    "id": i,
                    "seek": 0,
                    "start": round(s.start_s, 3),
                    "end": round(s.end_s, 3),
                    "text": s.text,
                    "tokens": list(s.tokens),
                    "temperature": 0.0,
                    "avg_logprob": round(s.avg_logprob, 4),
                    "compression_ratio": round(s.compression_ratio, 4),
                    "no_speech_prob": round(s.no_speech_prob, 4),
                }
                for i, s in enumerate(segments)
            ],
        }
    return "application/json", json.dumps(body, ensure_ascii=False).encode()


# --- models ---------------------------------------------------------------------------------


def model_list(names: Sequence[str], created: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": created, "owned_by": "chinwag"}
            for name in names
        ],
    }
