"""The OpenAI Realtime (GA) wire format: pure encode/decode, no I/O.

Only what chinwag supports is decoded; everything else is a clear `error` event, in OpenAI's
shape. docs/realtime.md lists exactly what is supported.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from server.errors import ChinwagError, ChinwagException
from server.protocol.native import (
    AudioStart,
    VadOptions,
    WakeOptions,
    check_frame_size,
    check_json_value,
    describe_validation_error,
    loads_json,
)

RATE = 24000  # the only audio/pcm rate the Realtime API defines

CLIENT_EVENTS = frozenset(
    {
        "session.update",
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "input_audio_buffer.clear",
        "conversation.item.create",
        "conversation.item.truncate",
        "conversation.item.delete",
        "conversation.item.retrieve",
        "response.create",
        "response.cancel",
    }
)
# Every client event of the GA reference: a rejected one is logged by its type only when the
# type is one of these (what a client wrote is never logged).
GA_CLIENT_EVENTS = CLIENT_EVENTS | {"output_audio_buffer.clear"}


class RealtimeError(ChinwagException):
    """Becomes an `error` event: {type, code, message, param, event_id}."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        param: str | None = None,
        event_id: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.code, self.message, self.param, self.event_id, self.kind = (
            code,
            message,
            param,
            event_id,
            kind,
        )


def decode_client_event(frame: str | bytes, max_bytes: int | None = None) -> dict[str, Any]:
    """One client event, checked against the frame size limit first when one is given."""
    if max_bytes is not None:
        try:
            check_frame_size(frame, max_bytes, "event")
        except ChinwagError as exc:
            raise RealtimeError("message_too_large", exc.message) from exc
    if isinstance(frame, bytes):
        raise RealtimeError("invalid_event", "binary frames are not part of the Realtime protocol")
    try:
        event = loads_json(frame)
    except ChinwagError as exc:
        raise RealtimeError("invalid_json", exc.message) from exc
    if not isinstance(event, dict):
        raise RealtimeError("invalid_event", "an event must be a JSON object")
    event_id = event_id_of(event)
    try:
        check_json_value(frame, event)
    except ChinwagError as exc:
        raise RealtimeError("invalid_json", exc.message, event_id=event_id) from exc
    kind = event.get("type")
    if not isinstance(kind, str):
        raise RealtimeError("invalid_event", "missing 'type'", param="type", event_id=event_id)
    if kind not in CLIENT_EVENTS:
        raise RealtimeError(
            "invalid_event_type",
            f"unsupported event type {kind!r}; see docs/realtime.md",
            param="type",
            event_id=event_id,
        )
    return event


def event_id_of(event: dict[str, Any]) -> str | None:
    """The client's `event_id`, echoed in errors: a string that can be sent back, else None."""
    event_id = event.get("event_id")
    if not isinstance(event_id, str):
        return None
    try:
        event_id.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: the event is refused, without it
        return None
    return event_id


_KIND_NAMES: dict[type, str] = {
    str: "a string",
    dict: "an object",
    list: "an array",
    int: "an integer",
    float: "a number",
    bool: "true or false",
}


def _kind_name(kinds: type | tuple[type, ...]) -> str:
    if kinds == (int, float):
        return "a number"
    names = [
        _KIND_NAMES.get(k, k.__name__) for k in (kinds if isinstance(kinds, tuple) else (kinds,))
    ]
    return " or ".join(names)


def invalid_value(event: dict[str, Any], param: str, message: str) -> RealtimeError:
    """An `invalid_value` error about `param` of this client event (its event_id echoed)."""
    return RealtimeError("invalid_value", message, param=param, event_id=event_id_of(event))


def field_of(
    event: dict[str, Any], path: str, kinds: type | tuple[type, ...], default: Any = None
) -> Any:
    """event['a']['b'] for path 'a.b', type-checked; absent or null gives `default`. A value
    of the wrong type, or an object on the way that is not one, is an `invalid_value` error
    naming the param (the whole path) and echoing the event's event_id."""
    value: Any = event
    walked: list[str] = []
    for part in path.split("."):
        if value is None:
            return default
        if not isinstance(value, dict):
            where = ".".join(walked)
            raise invalid_value(event, where, f"{where} must be an object")
        if part not in value:
            return default
        value = value[part]
        walked.append(part)
    if value is None:
        return default
    # bool is an int in Python, but true is not a number in JSON.
    if not isinstance(value, kinds) or (isinstance(value, bool) and kinds is not bool):
        raise invalid_value(event, path, f"{path} must be {_kind_name(kinds)}")
    return value


def decode_audio(data: Any, event: dict[str, Any], param: str) -> bytes:
    if not isinstance(data, str):
        raise invalid_value(event, param, f"{param} must be base64 text")
    try:
        pcm = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise invalid_value(event, param, f"{param} is not valid base64") from exc
    if len(pcm) % 2:
        raise invalid_value(event, param, f"{param}: odd number of bytes for 16-bit PCM")
    return pcm


# semantic_vad's eagerness -> how long a turn waits in silence when its words so far do not
# read as a finished sentence (the native `vad.silence_ms`). A sentence that reads as finished
# (server/pipeline/endpointing.py) ends after [vad] complete_silence_ms at any eagerness.
EAGERNESS_SILENCE_MS = {"low": 2000, "medium": 1000, "auto": 1000, "high": 500}


@dataclass
class TurnDetection:
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    create_response: bool = True
    interrupt_response: bool = True
    # "server_vad" (silence only) or "semantic_vad" (eagerness: how sure it waits to be).
    kind: str = "server_vad"
    eagerness: str = "auto"

    @property
    def silence_ms(self) -> int:
        """The silence that ends a turn whose words do not yet read as finished."""
        if self.kind == "semantic_vad":
            return EAGERNESS_SILENCE_MS[self.eagerness]
        return self.silence_duration_ms

    def as_dict(self) -> dict[str, Any]:
        if self.kind == "semantic_vad":
            return {
                "type": "semantic_vad",
                "eagerness": self.eagerness,
                "create_response": self.create_response,
                "interrupt_response": self.interrupt_response,
            }
        return {
            "type": "server_vad",
            "threshold": self.threshold,
            "prefix_padding_ms": self.prefix_padding_ms,
            "silence_duration_ms": self.silence_duration_ms,
            "create_response": self.create_response,
            "interrupt_response": self.interrupt_response,
            "idle_timeout_ms": None,
        }


MAX_OUTPUT_TOKENS = 4096
# turn_detection fields -> the native `vad` options that check their ranges.
VAD_FIELDS = {
    "threshold": "threshold",
    "prefix_padding_ms": "prefix_padding_ms",
    "silence_duration_ms": "silence_ms",
}
NATIVE_VAD_NAMES = {native: name for name, native in VAD_FIELDS.items()}
VAD_FLAGS = ("create_response", "interrupt_response")
# session.update fields accepted and ignored, with the types they must have.
IGNORED_SESSION_FIELDS: dict[str, type | tuple[type, ...]] = {
    "session.model": str,
    "session.tool_choice": (str, dict),
    "session.tracing": (str, dict),
    "session.truncation": (str, dict),
    "session.include": list,
    "session.prompt": dict,
    "session.audio.input.transcription": dict,
    "session.audio.input.noise_reduction": dict,
}
MODALITIES = (["audio"], ["text"])


def check_modalities(event: dict[str, Any], path: str) -> list[str]:
    """output_modalities (of a session or a response): ["audio"] or ["text"]."""
    modalities = field_of(event, path, list)
    if modalities not in MODALITIES:
        raise invalid_value(event, path, f"{path} must be ['audio'] or ['text']")
    return list(modalities)


@dataclass
class RealtimeConfig:
    """The Realtime session configuration as the client last set it."""

    model: str
    instructions: str
    output_modalities: list[str] = field(default_factory=lambda: ["audio"])
    turn_detection: TurnDetection | None = field(default_factory=TurnDetection)
    max_output_tokens: int | None = None
    voice: str = "chinwag"
    # Recorded and echoed in session.updated; the server's Whisper transcribes whatever the
    # model named, Piper speaks at its own speed, and there is no noise reduction stage.
    transcription: dict[str, Any] | None = None
    noise_reduction: dict[str, Any] | None = None
    speed: float = 1.0
    tracing: str | dict[str, Any] | None = None
    truncation: str | dict[str, Any] = "auto"
    # chinwag's extension (session.chinwag.wake): wait for a wake word (docs/wake-word.md).
    wake: WakeOptions | None = None

    @property
    def speak(self) -> bool:
        return "audio" in self.output_modalities

    def apply(self, event: dict[str, Any], wake_words: tuple[str, ...] = ()) -> None:
        """Apply a session.update. Every field is checked (type, range) before anything
        changes: a bad one is an error naming it (`param`), and the session stays as it was.
        `wake_words`: the ids session.chinwag.wake may name."""
        eid = event_id_of(event)
        field_of(event, "session", dict)
        kind = field_of(event, "session.type", str)
        if kind is not None and kind != "realtime":
            raise RealtimeError(
                "invalid_value",
                "session.type must be 'realtime' (transcription sessions are not supported)",
                param="session.type",
                event_id=eid,
            )
        # Accepted and ignored (any model name is served by the configured model; tracing,
        # truncation, include, prompt and tool_choice change nothing), but of the right type.
        for path, kinds in IGNORED_SESSION_FIELDS.items():
            field_of(event, path, kinds)
        updated = dict(vars(self))
        instructions = field_of(event, "session.instructions", str)
        if instructions is not None:
            updated["instructions"] = instructions
        modalities = field_of(event, "session.output_modalities", list)
        if modalities is not None:
            updated["output_modalities"] = check_modalities(event, "session.output_modalities")
        for direction in ("input", "output"):
            fmt = field_of(event, f"session.audio.{direction}.format", dict)
            if fmt is not None and (
                fmt.get("type") != "audio/pcm" or fmt.get("rate", RATE) != RATE
            ):
                raise RealtimeError(
                    "unsupported_format",
                    "only audio/pcm at 24000 Hz is supported",
                    param=f"session.audio.{direction}.format",
                    event_id=eid,
                )
        audio_input = field_of(event, "session.audio.input", dict, {})
        if "turn_detection" in audio_input:
            updated["turn_detection"] = self._turn_detection(event, audio_input["turn_detection"])
        if "transcription" in audio_input:
            updated["transcription"] = self._transcription(event)
        if "noise_reduction" in audio_input:
            reduction = audio_input["noise_reduction"]
            kind = field_of(event, "session.audio.input.noise_reduction.type", str)
            if reduction is not None and kind not in (None, "near_field", "far_field"):
                raise invalid_value(
                    event,
                    "session.audio.input.noise_reduction.type",
                    "noise_reduction.type must be near_field or far_field",
                )
            updated["noise_reduction"] = None if reduction is None else {"type": kind}
        session = field_of(event, "session", dict, {})
        for name in ("tracing", "truncation"):
            if name in session and session[name] is not None:
                updated[name] = session[name]
        if field_of(event, "session.tools", list):
            raise RealtimeError(
                "unsupported_tools",
                "tools are not supported by chinwag",
                param="session.tools",
                event_id=eid,
            )
        tokens = field_of(event, "session.max_output_tokens", (int, str))
        if tokens is not None:
            if tokens == "inf":
                updated["max_output_tokens"] = None
            elif isinstance(tokens, int) and 1 <= tokens <= MAX_OUTPUT_TOKENS:
                updated["max_output_tokens"] = tokens
            else:
                raise invalid_value(
                    event,
                    "session.max_output_tokens",
                    f"session.max_output_tokens must be 1 to {MAX_OUTPUT_TOKENS} or 'inf'",
                )
        voice = field_of(event, "session.audio.output.voice", str)
        if voice is not None:
            updated["voice"] = voice
        speed = field_of(event, "session.audio.output.speed", (int, float))
        if speed is not None and not 0.25 <= speed <= 1.5:
            raise invalid_value(
                event, "session.audio.output.speed", "session.audio.output.speed: 0.25 to 1.5"
            )
        if speed is not None:
            updated["speed"] = float(speed)
        chinwag = field_of(event, "session.chinwag", dict, {})
        if "wake" in chinwag:
            updated["wake"] = self._wake(event, chinwag["wake"], wake_words)
        unknown = set(chinwag) - {"wake"}
        if unknown:
            raise invalid_value(
                event,
                "session.chinwag",
                f"unknown chinwag setting(s): {', '.join(sorted(unknown))}",
            )
        for key, value in updated.items():
            setattr(self, key, value)

    @staticmethod
    def _wake(event: dict[str, Any], wake: Any, known: tuple[str, ...]) -> WakeOptions:
        """session.chinwag.wake: {"words": [...], "listen_s", "follow_up_s"}, or null (off)."""
        param = "session.chinwag.wake"
        if wake is None:
            return WakeOptions(words=[])
        try:
            options = WakeOptions.model_validate(wake)
        except ValidationError as exc:
            raise invalid_value(event, param, f"{param}: {describe_validation_error(exc)}") from exc
        unknown = [w for w in options.words if w not in known]
        if unknown:
            raise invalid_value(
                event,
                f"{param}.words",
                f"unknown wake word {', '.join(unknown)}; available: {', '.join(known)}",
            )
        return options

    def _turn_detection(self, event: dict[str, Any], td: Any) -> TurnDetection | None:
        """session.audio.input.turn_detection: null (push-to-talk) or server_vad, checked
        against the ranges the native protocol's `vad` options allow."""
        param = "session.audio.input.turn_detection"
        if td is None:
            return None
        if not isinstance(td, dict):
            raise invalid_value(event, param, f"{param} must be an object or null")
        kind = field_of(event, f"{param}.type", str, "server_vad")
        if kind not in ("server_vad", "semantic_vad"):
            raise RealtimeError(
                "unsupported_turn_detection",
                "turn_detection.type must be server_vad or semantic_vad (or turn_detection null)",
                param=f"{param}.type",
                event_id=event_id_of(event),
            )
        base = self.turn_detection or TurnDetection()
        if kind == "semantic_vad":
            # Silence and the words so far (server/pipeline/endpointing.py) decide the end of
            # the turn; server_vad's numbers do not apply to it and are not read.
            eagerness = field_of(event, f"{param}.eagerness", str, "auto")
            if eagerness not in EAGERNESS_SILENCE_MS:
                raise invalid_value(
                    event, f"{param}.eagerness", f"{param}.eagerness: low, medium, high or auto"
                )
            semantic = {name: field_of(event, f"{param}.{name}", bool) for name in VAD_FLAGS}
            return TurnDetection(
                threshold=base.threshold,
                prefix_padding_ms=base.prefix_padding_ms,
                silence_duration_ms=base.silence_duration_ms,
                create_response=base.create_response
                if semantic["create_response"] is None
                else semantic["create_response"],
                interrupt_response=base.interrupt_response
                if semantic["interrupt_response"] is None
                else semantic["interrupt_response"],
                kind="semantic_vad",
                eagerness=eagerness,
            )
        options = {
            native_name: td[name]
            for name, native_name in VAD_FIELDS.items()
            if td.get(name) is not None
        }
        try:
            VadOptions.model_validate(options, strict=True)
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            name = NATIVE_VAD_NAMES.get(str(error["loc"][0]), str(error["loc"][0]))
            raise invalid_value(
                event, f"{param}.{name}", f"{param}.{name}: {error['msg']}"
            ) from exc
        flags = {name: field_of(event, f"{param}.{name}", bool) for name in VAD_FLAGS}
        idle = field_of(event, f"{param}.idle_timeout_ms", int)
        if idle is not None and idle < 0:
            raise invalid_value(
                event, f"{param}.idle_timeout_ms", f"{param}.idle_timeout_ms must be >= 0"
            )
        return TurnDetection(
            threshold=float(options.get("threshold", base.threshold)),
            prefix_padding_ms=int(options.get("prefix_padding_ms", base.prefix_padding_ms)),
            silence_duration_ms=int(options.get("silence_ms", base.silence_duration_ms)),
            create_response=base.create_response
            if flags["create_response"] is None
            else flags["create_response"],
            interrupt_response=base.interrupt_response
            if flags["interrupt_response"] is None
            else flags["interrupt_response"],
        )

    @staticmethod
    def _transcription(event: dict[str, Any]) -> dict[str, Any] | None:
        """session.audio.input.transcription: null, or {model, language, prompt} (strings),
        kept as set; the server's own Whisper transcribes in any case."""
        param = "session.audio.input.transcription"
        if event["session"]["audio"]["input"]["transcription"] is None:
            return None
        kept: dict[str, Any] = {}
        for name in ("model", "language", "prompt"):
            value = field_of(event, f"{param}.{name}", str)
            if value is not None:
                kept[name] = value
        return kept

    def audio_start(self) -> AudioStart:
        """The native audio stream these settings ask for (valid for any applied update)."""
        td = self.turn_detection
        return AudioStart(
            sample_rate=RATE,
            output_sample_rate=RATE,
            mode="vad" if td else "push_to_talk",
            respond=td.create_response if td else False,
            interrupt=td.interrupt_response if td else True,
            speak=self.speak,
            vad=VadOptions(
                threshold=td.threshold,
                prefix_padding_ms=td.prefix_padding_ms,
                silence_ms=td.silence_ms,
            )
            if td
            else None,
        )

    def session_object(self, session_id: str) -> dict[str, Any]:
        pcm = {"type": "audio/pcm", "rate": RATE}
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": session_id,
            "model": self.model,
            "output_modalities": self.output_modalities,
            "instructions": self.instructions,
            "audio": {
                "input": {
                    "format": pcm,
                    "transcription": self.transcription,
                    "noise_reduction": self.noise_reduction,
                    "turn_detection": self.turn_detection.as_dict()
                    if self.turn_detection
                    else None,
                },
                "output": {"format": pcm, "voice": self.voice, "speed": self.speed},
            },
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": self.max_output_tokens or "inf",
            "tracing": self.tracing,
            "truncation": self.truncation,
            "prompt": None,
            "include": None,
            # chinwag's extension, shown once a client has set it.
            **({"chinwag": {"wake": self.wake.model_dump()}} if self.wake is not None else {}),
        }


METADATA_MAX_KEYS, METADATA_KEY_CHARS, METADATA_VALUE_CHARS = 16, 64, 512


@dataclass
class ResponseParams:
    """What a response.create asked of its one response."""

    speak: bool
    instructions: str | None = None
    max_output_tokens: int | None = None  # None: the session's
    metadata: dict[str, str] | None = None
    # False for conversation "none": an out-of-band response, kept out of the conversation.
    in_conversation: bool = True
    voice: str | None = None


def response_params(event: dict[str, Any], config: RealtimeConfig) -> ResponseParams:
    """response.create's `response` object, checked as session.update is: a field chinwag
    cannot honour is an error naming it, and no response starts."""
    eid = event_id_of(event)
    field_of(event, "response", dict)
    speak = config.speak
    if field_of(event, "response.output_modalities", list) is not None:
        speak = "audio" in check_modalities(event, "response.output_modalities")
    instructions = field_of(event, "response.instructions", str)
    conversation = field_of(event, "response.conversation", str, "auto")
    if conversation not in ("auto", "none"):
        raise invalid_value(event, "response.conversation", "response.conversation: auto or none")
    if field_of(event, "response.input", list) is not None:
        raise RealtimeError(
            "unsupported_response_input",
            "response.input (a separate context for one response) is not supported; add the "
            "items with conversation.item.create, or use conversation 'none' to keep the "
            "response out of the conversation",
            param="response.input",
            event_id=eid,
        )
    if field_of(event, "response.tools", list):
        raise RealtimeError(
            "unsupported_tools",
            "tools are not supported by chinwag",
            param="response.tools",
            event_id=eid,
        )
    field_of(event, "response.tool_choice", (str, dict))
    field_of(event, "response.prompt", dict)
    tokens = field_of(event, "response.max_output_tokens", (int, str))
    max_tokens: int | None = None
    if tokens is not None:
        if tokens == "inf":
            max_tokens = config.max_output_tokens
        elif isinstance(tokens, int) and 1 <= tokens <= MAX_OUTPUT_TOKENS:
            max_tokens = tokens
        else:
            raise invalid_value(
                event,
                "response.max_output_tokens",
                f"response.max_output_tokens must be 1 to {MAX_OUTPUT_TOKENS} or 'inf'",
            )
    fmt = field_of(event, "response.audio.output.format", dict)
    if fmt is not None and (fmt.get("type") != "audio/pcm" or fmt.get("rate", RATE) != RATE):
        raise RealtimeError(
            "unsupported_format",
            "only audio/pcm at 24000 Hz is supported",
            param="response.audio.output.format",
            event_id=eid,
        )
    voice = field_of(event, "response.audio.output.voice", str)
    metadata = field_of(event, "response.metadata", dict)
    if metadata is not None:
        if len(metadata) > METADATA_MAX_KEYS or not all(
            isinstance(value, str)
            and len(key) <= METADATA_KEY_CHARS
            and len(value) <= METADATA_VALUE_CHARS
            for key, value in metadata.items()
        ):
            raise invalid_value(
                event,
                "response.metadata",
                f"response.metadata: at most {METADATA_MAX_KEYS} string values, keys up to "
                f"{METADATA_KEY_CHARS} characters, values up to {METADATA_VALUE_CHARS}",
            )
        metadata = dict(metadata)
    return ResponseParams(
        speak=speak,
        instructions=instructions,
        max_output_tokens=max_tokens,
        metadata=metadata,
        in_conversation=conversation == "auto",
        voice=voice,
    )


class EventIds:
    def __init__(self) -> None:
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"event_{next(self._counter):06d}"


def message_item(
    item_id: str, role: str, content: list[dict[str, Any]], status: str = "completed"
) -> dict[str, Any]:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "role": role,
        "status": status,
        "content": content,
    }


def encode(event: dict[str, Any]) -> str:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))


def audio_delta(pcm: bytes) -> str:
    return base64.b64encode(pcm).decode("ascii")
