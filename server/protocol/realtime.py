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

from server.errors import ChinwagError, ChinwagException
from server.protocol.native import LONE_SURROGATE, check_frame_size, lone_surrogate

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
        "response.create",
        "response.cancel",
    }
)


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
        event = json.loads(frame)
    except json.JSONDecodeError as exc:
        raise RealtimeError("invalid_json", f"not valid JSON: {exc.msg}") from exc
    if not isinstance(event, dict):
        raise RealtimeError("invalid_event", "an event must be a JSON object")
    if lone_surrogate(frame, event):
        raise RealtimeError("invalid_json", LONE_SURROGATE)
    event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
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


def field_of(
    event: dict[str, Any], path: str, kinds: type | tuple[type, ...], default: Any = None
) -> Any:
    """event['a']['b'] for path 'a.b', type-checked; a wrong type is an error naming the param."""
    value: Any = event
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return default
        value = value[part]
    if value is None:
        return default
    # bool is an int in Python, but true is not a number in JSON.
    if not isinstance(value, kinds) or (isinstance(value, bool) and kinds is not bool):
        raise RealtimeError(
            "invalid_value",
            f"{path} has the wrong type",
            param=path,
            event_id=event.get("event_id"),
        )
    return value


def decode_audio(data: Any, event: dict[str, Any], param: str) -> bytes:
    if not isinstance(data, str):
        raise RealtimeError(
            "invalid_value",
            f"{param} must be base64 text",
            param=param,
            event_id=event.get("event_id"),
        )
    try:
        pcm = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RealtimeError(
            "invalid_value",
            f"{param} is not valid base64",
            param=param,
            event_id=event.get("event_id"),
        ) from exc
    if len(pcm) % 2:
        raise RealtimeError(
            "invalid_value",
            f"{param}: odd number of bytes for 16-bit PCM",
            param=param,
            event_id=event.get("event_id"),
        )
    return pcm


@dataclass
class TurnDetection:
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    create_response: bool = True
    interrupt_response: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": "server_vad",
            "threshold": self.threshold,
            "prefix_padding_ms": self.prefix_padding_ms,
            "silence_duration_ms": self.silence_duration_ms,
            "create_response": self.create_response,
            "interrupt_response": self.interrupt_response,
            "idle_timeout_ms": None,
        }


@dataclass
class RealtimeConfig:
    """The Realtime session configuration as the client last set it."""

    model: str
    instructions: str
    output_modalities: list[str] = field(default_factory=lambda: ["audio"])
    turn_detection: TurnDetection | None = field(default_factory=TurnDetection)
    max_output_tokens: int | None = None
    voice: str = "chinwag"

    @property
    def speak(self) -> bool:
        return "audio" in self.output_modalities

    def apply(self, event: dict[str, Any]) -> None:
        """Apply a session.update; validates everything before changing anything."""
        session = field_of(event, "session", dict, {})
        eid = event.get("event_id")
        updated = dict(vars(self))
        instructions = field_of(session, "instructions", str)
        if instructions is not None:
            updated["instructions"] = instructions
        modalities = field_of(session, "output_modalities", list)
        if modalities is not None:
            if modalities not in (["audio"], ["text"]):
                raise RealtimeError(
                    "invalid_value",
                    "output_modalities must be ['audio'] or ['text']",
                    param="session.output_modalities",
                    event_id=eid,
                )
            updated["output_modalities"] = list(modalities)
        for direction in ("input", "output"):
            fmt = field_of(session, f"audio.{direction}.format", dict)
            if fmt is not None and (
                fmt.get("type") != "audio/pcm" or fmt.get("rate", RATE) != RATE
            ):
                raise RealtimeError(
                    "unsupported_format",
                    "only audio/pcm at 24000 Hz is supported",
                    param=f"session.audio.{direction}.format",
                    event_id=eid,
                )
        audio_input = field_of(session, "audio.input", dict, {})
        if "turn_detection" in audio_input:
            td = audio_input["turn_detection"]
            if td is None:
                updated["turn_detection"] = None
            elif isinstance(td, dict) and td.get("type", "server_vad") == "server_vad":
                base = self.turn_detection or TurnDetection()
                updated["turn_detection"] = TurnDetection(
                    threshold=float(td.get("threshold", base.threshold)),
                    prefix_padding_ms=int(td.get("prefix_padding_ms", base.prefix_padding_ms)),
                    silence_duration_ms=int(
                        td.get("silence_duration_ms", base.silence_duration_ms)
                    ),
                    create_response=bool(td.get("create_response", base.create_response)),
                    interrupt_response=bool(td.get("interrupt_response", base.interrupt_response)),
                )
            else:
                raise RealtimeError(
                    "unsupported_turn_detection",
                    "turn_detection must be server_vad or null",
                    param="session.audio.input.turn_detection",
                    event_id=eid,
                )
        if field_of(session, "tools", list):
            raise RealtimeError(
                "unsupported_tools",
                "tools are not supported by chinwag",
                param="session.tools",
                event_id=eid,
            )
        tokens = session.get("max_output_tokens")
        if tokens is not None:
            if tokens == "inf":
                updated["max_output_tokens"] = None
            elif isinstance(tokens, int) and not isinstance(tokens, bool) and 1 <= tokens <= 4096:
                updated["max_output_tokens"] = tokens
            else:
                raise RealtimeError(
                    "invalid_value",
                    "max_output_tokens: 1 to 4096 or 'inf'",
                    param="session.max_output_tokens",
                    event_id=eid,
                )
        voice = field_of(session, "audio.output.voice", str)
        if voice is not None:
            updated["voice"] = voice
        for key, value in updated.items():
            setattr(self, key, value)

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
                    "transcription": None,
                    "noise_reduction": None,
                    "turn_detection": self.turn_detection.as_dict()
                    if self.turn_detection
                    else None,
                },
                "output": {"format": pcm, "voice": self.voice, "speed": 1.0},
            },
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": self.max_output_tokens or "inf",
            "tracing": None,
            "truncation": "auto",
            "prompt": None,
            "include": None,
        }


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
