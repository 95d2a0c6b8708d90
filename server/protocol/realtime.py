"""The OpenAI Realtime (GA) wire format: pure encode/decode, no I/O.

Only what chinwag supports is decoded; everything else is a clear `error` event, in OpenAI's
shape. docs/realtime.md lists exactly what is supported.

This module is the wire: decoding a client event and checking its fields (`field_of`,
errors naming the `param`), and encoding server events. What the fields mean is in modules
of their own: the session configuration (`session.update`) in realtime_config.py, a
response's parameters (`response.create`) in realtime_response.py, the server events of a
session in realtime_events.py.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
from typing import Any

from server.errors import ChinwagError, ChinwagException
from server.protocol.json_checks import check_frame_size, check_json_value, loads_json

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


MAX_OUTPUT_TOKENS = 4096
MODALITIES = (["audio"], ["text"])


def check_modalities(event: dict[str, Any], path: str) -> list[str]:
    """output_modalities (of a session or a response): ["audio"] or ["text"]."""
    modalities = field_of(event, path, list)
    if modalities not in MODALITIES:
        raise invalid_value(event, path, f"{path} must be ['audio'] or ['text']")
    return list(modalities)


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
