"""One Realtime response's parameters: `response.create` checked as `session.update` is.

`response_params` reads a `response.create`'s `response` object against the session's
configuration: what it may change for this one response (modalities, instructions, token
limit, voice, metadata, whether it joins the conversation) and what chinwag refuses by name
(tools, a separate input). Separate from the session's configuration
(server/protocol/realtime_config.py) because it describes one response, not the session.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.protocol.realtime import (
    MAX_OUTPUT_TOKENS,
    RATE,
    RealtimeError,
    check_modalities,
    event_id_of,
    field_of,
    invalid_value,
)
from server.protocol.realtime_config import RealtimeConfig

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
