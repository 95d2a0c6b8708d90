"""OpenAI's chat completions, the parts chinwag answers: the request checked, the messages as
the model takes them, response bodies, server-sent events and stop sequences. Pure functions;
no I/O. The transport is server/transports/openai_http_chat.py.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator

from server.engines.base import ChatMessage
from server.errors import ErrorCode
from server.protocol.openai_http import (
    OpenAIError,
    RequestModel,
    from_validation,
    invalid,
    parse_json_object,
)

MAX_STOP_SEQUENCES = 4
MAX_STOP_CHARS = 200


class TextPart(RequestModel):
    type: Literal["text"]
    text: str


class MessageIn(RequestModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(RequestModel):
    include_usage: bool = False


class ChatRequest(RequestModel):
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
        raise from_validation(exc) from None
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
