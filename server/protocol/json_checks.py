"""The one JSON parser of every transport (native frames, Realtime events, MQTT payloads,
Wyoming headers) and the one frame-size check: anything JSON (RFC 8259) does not allow, or
that is nested too deep or too large, is refused with the `error` code the client will see."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from server.errors import ChinwagError, ErrorCode

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


def check_frame_size(frame: str | bytes, limit: int, what: str = "message") -> None:
    """The one frame-size check of every transport: FRAME_TOO_LARGE over `limit`."""
    if len(frame) > limit:
        raise ChinwagError(
            ErrorCode.FRAME_TOO_LARGE, f"{what} of {len(frame)} bytes; the limit is {limit}"
        )
