"""OpenAI's HTTP API, the parts chinwag answers: errors, what every request shares, the model
list. Pure functions; no I/O. Chat completions (requests, bodies, server-sent events, stop
sequences) are in openai_http_chat.py; speech and transcriptions in openai_http_audio.py.

The transport is server/transports/openai_http.py; the wire format is OpenAI's (docs in
docs/openai-http.md). Unknown request fields are ignored, as OpenAI-compatible servers do, so
clients that send newer options keep working; known fields are checked strictly.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

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


def from_validation(exc: ValidationError) -> OpenAIError:
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


class RequestModel(BaseModel):
    # Unknown fields are ignored (newer SDK options); known ones are not coerced.
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


# --- models ---------------------------------------------------------------------------------


def model_list(names: Sequence[str], created: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": created, "owned_by": "chinwag"}
            for name in names
        ],
    }
