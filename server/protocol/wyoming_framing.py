"""Wyoming event framing: one header line, then its data and payload bytes.

An event is a JSON header line (`type`, `data`, `data_length`, `payload_length`), then
`data_length` bytes of JSON merged into `data`, then `payload_length` bytes of payload. The
`wyoming` package reads a frame with no bound on those lengths, so the header is parsed here,
its lengths checked against a limit before anything is read, and the package's own `Event`
built from it; events are written with the package's writer. Kept apart from the requests
(server/protocol/wyoming.py) because both the Wyoming server and the satellite link read
frames this way, whatever the events mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wyoming.event import Event

from server.errors import ChinwagError, ErrorCode
from server.protocol.json_checks import parse_json

# A header line longer than this is not a Wyoming header (HA's are under 300 bytes).
MAX_HEADER_BYTES = 16 * 1024


@dataclass(frozen=True)
class Header:
    """A parsed header line; `data_length` and `payload_length` bytes follow it, in order."""

    type: str
    data: dict[str, Any]
    data_length: int
    payload_length: int


def _length(value: object, name: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ChinwagError(ErrorCode.INVALID_MESSAGE, f"{name} must be a non-negative integer")
    return value


def parse_header(line: bytes, max_event_bytes: int) -> Header:
    """One header line (with or without its newline). Raises ChinwagError before anything
    larger than `max_event_bytes` would be read."""
    if len(line) > MAX_HEADER_BYTES:
        raise ChinwagError(ErrorCode.FRAME_TOO_LARGE, f"header over {MAX_HEADER_BYTES} bytes")
    try:
        # The same checked parser as the other protocols: depth, huge numbers, surrogates.
        header = parse_json(line.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ChinwagError(ErrorCode.INVALID_JSON, "an event header must be one JSON line") from exc
    if not isinstance(header, dict):
        raise ChinwagError(ErrorCode.INVALID_MESSAGE, "an event header must be a JSON object")
    kind = header.get("type")
    if not isinstance(kind, str) or not kind:
        raise ChinwagError(ErrorCode.INVALID_MESSAGE, "an event needs a string `type`")
    data = header.get("data") or {}
    if not isinstance(data, dict):
        raise ChinwagError(ErrorCode.INVALID_MESSAGE, "`data` must be a JSON object")
    data_length = _length(header.get("data_length"), "data_length")
    payload_length = _length(header.get("payload_length"), "payload_length")
    if len(line) + data_length + payload_length > max_event_bytes:
        raise ChinwagError(
            ErrorCode.FRAME_TOO_LARGE,
            f"a {kind} event of {len(line) + data_length + payload_length} bytes; "
            f"the limit is {max_event_bytes}",
        )
    return Header(kind, data, data_length, payload_length)


def build_event(header: Header, data_bytes: bytes = b"", payload: bytes = b"") -> Event:
    """The event a header and the bytes that followed it make."""
    data = dict(header.data)
    if data_bytes:
        try:
            extra = parse_json(data_bytes.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ChinwagError(ErrorCode.INVALID_JSON, "event data is not JSON") from exc
        if not isinstance(extra, dict):
            raise ChinwagError(ErrorCode.INVALID_MESSAGE, "event data must be a JSON object")
        data.update(extra)
    return Event(type=header.type, data=data, payload=payload or None)


def error_event(exc: ChinwagError) -> Event:
    from wyoming.error import Error

    return Error(text=exc.message, code=exc.code.value).event()
