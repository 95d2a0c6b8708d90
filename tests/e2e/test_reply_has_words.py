"""A reply always has words: the model may not end a reply before its first word."""

from __future__ import annotations

import asyncio
import threading

import pytest

from server.app import Engines
from server.engines.base import ChatMessage
from server.prompts import GenerationSettings


@pytest.mark.parametrize("temperature", [0.0, 0.6])
async def test_a_conversation_of_empty_replies_still_gets_words(
    engines: Engines, temperature: float
) -> None:
    # Earlier replies that said nothing make SmolLM2 end the next one at once (its first
    # token is end-of-generation for "five" and "six" on the machine this was written on).
    history = [ChatMessage("system", "Say nothing.")]
    for word in ("one", "two", "three", "four"):
        history += [ChatMessage("user", word), ChatMessage("assistant", "")]
    settings = GenerationSettings(temperature=temperature, max_tokens=12, seed=7)
    for last in ("five", "six", "in this regard."):
        parts: list[str] = []
        stats = await asyncio.to_thread(
            engines.chat.generate,
            [*history, ChatMessage("user", last)],
            settings,
            parts.append,
            threading.Event(),
        )
        assert stats.completion_tokens >= 1
        assert "".join(parts).strip(), f"an empty reply to {last!r}"
