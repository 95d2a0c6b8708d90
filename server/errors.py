"""One exception tree.

`ChinwagException` is the root of every exception chinwag raises on purpose:
- `ChinwagError`: a client's request failed; it becomes an `error` event with a machine-readable
  `code` (ErrorCode) and the session survives it.
- `server.protocol.realtime.RealtimeError`: the same for OpenAI Realtime clients, whose codes
  are OpenAI's strings.
- `ConfigError` (settings), `server.models.ModelError` (fetching weights) and
  `server.prompts.PersonaFileError` (persona files): deployment errors, reported at start-up.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    # Malformed input: the message is rejected, the session goes on.
    INVALID_JSON = "invalid_json"
    INVALID_MESSAGE = "invalid_message"  # missing or wrong-typed field
    UNKNOWN_TYPE = "unknown_type"
    TEXT_TOO_LONG = "text_too_long"
    FRAME_TOO_LARGE = "frame_too_large"
    UNEXPECTED_BINARY = "unexpected_binary"
    UNKNOWN_PERSONA = "unknown_persona"
    NO_ACTIVE_REPLY = "no_active_reply"
    # Audio input.
    AUDIO_NOT_STARTED = "audio_not_started"
    INVALID_AUDIO_FORMAT = "invalid_audio_format"
    UTTERANCE_TOO_LONG = "utterance_too_long"
    # Speech output.
    UNKNOWN_WAKE_WORD = "unknown_wake_word"  # a wake word this server has no model for
    UNKNOWN_VOICE = "unknown_voice"  # a voice this server does not have (Wyoming)
    # Server-side conditions.
    CONTEXT_OVERFLOW = "context_overflow"
    TOO_MANY_SESSIONS = "too_many_sessions"
    # A turn that could not start within [limits] max_reply_wait_s (the model or the speech
    # recognizer busy with other sessions); a voice turn also hears a short apology.
    OVERLOADED = "overloaded"
    UNAUTHORIZED = "unauthorized"
    ORIGIN_NOT_ALLOWED = "origin_not_allowed"
    HOST_NOT_ALLOWED = "host_not_allowed"  # a Host header not among the server's names
    METHOD_NOT_ALLOWED = "method_not_allowed"  # HTTP methods other than GET and HEAD
    NOT_FOUND = "not_found"  # an HTTP path the server does not serve
    BAD_REQUEST = "bad_request"  # an HTTP request target with control characters
    URI_TOO_LONG = "uri_too_long"  # an HTTP request target over security.MAX_TARGET_CHARS
    HEADERS_TOO_LARGE = "headers_too_large"  # a header line or too many (websockets' limits)
    INTERNAL_ERROR = "internal_error"
    # OpenAI-compatible HTTP (/v1/chat/completions, /v1/audio/*; docs/openai-http.md).
    MODEL_NOT_FOUND = "model_not_found"  # a `model` that is no persona of this server
    BODY_TOO_LARGE = "body_too_large"  # a request body over [http] max_body_bytes / upload
    AUDIO_TOO_LONG = "audio_too_long"  # an uploaded file over [http] max_audio_s
    MODELS_LOADING = "models_loading"  # the models are not loaded yet (or failed to load)
    # A remote engine (`backend = "openai"`: the LLM, ASR or TTS on another server) failed;
    # the turn fails, the session goes on (docs/scaling.md, "Remote engines").
    REMOTE_UNAVAILABLE = "remote_unavailable"  # no connection (down, refused, reset)
    REMOTE_UNAUTHORIZED = "remote_unauthorized"  # 401 or 403: check the api_key
    REMOTE_TIMEOUT = "remote_timeout"  # no answer, or no next chunk, within timeout_s
    REMOTE_ERROR = "remote_error"  # an error status or a response that is not what was asked


class ChinwagException(Exception):
    """The root of chinwag's exceptions."""


class ConfigError(ChinwagException):
    """The configuration could not be read or is invalid."""


class ChinwagError(ChinwagException):
    """An error that becomes an `error` event for the client; the session survives it."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
