"""Conversation history trimming: drop the oldest exchanges until the prompt fits."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from server.engines.base import ChatMessage
from server.errors import ChinwagError, ErrorCode


def exchange_starts(history: Sequence[ChatMessage]) -> list[int]:
    """Indexes where a user message opens an exchange (user, then the assistant's reply)."""
    return [i for i, m in enumerate(history) if m.role == "user"]


def messages_to_drop(
    system_prompt: str,
    history: Sequence[ChatMessage],
    fits: Callable[[list[ChatMessage]], bool],
) -> int:
    """How many leading history messages to drop so that system + rest fits.

    Whole exchanges go, oldest first; the system prompt and the last exchange always stay.
    Raises CONTEXT_OVERFLOW when even that is too big.
    """
    system = [ChatMessage("system", system_prompt)]
    starts = exchange_starts(history)
    # Candidate cut points: 0 (keep everything), then each later exchange start.
    candidates = [0] + [s for s in starts if s > 0]
    for cut in candidates:
        if fits(system + list(history[cut:])):
            return cut
    raise ChinwagError(
        ErrorCode.CONTEXT_OVERFLOW,
        "the system prompt and the last message do not fit in the model's context",
    )
