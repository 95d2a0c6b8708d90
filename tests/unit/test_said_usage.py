"""The usage of a reply said without the model (pipeline/grounding.py count_said, counted): the
prompt the model would have read and the text said; a count that fails or never comes leaves
the usage out instead of holding `reply.done` back. The real model and server:
tests/integration/test_said_usage.py."""

from __future__ import annotations

import asyncio
import logging

import pytest

from server.engines.base import ChatMessage
from server.engines.fakes import FakeChatModel
from server.pipeline import grounding
from server.pipeline.grounding import count_said, counted
from server.protocol import native as proto

LOG = logging.LoggerAdapter(logging.getLogger("test"), {})


async def test_the_prompt_it_would_have_read_and_the_text_said() -> None:
    model = FakeChatModel("unused")
    history = [ChatMessage("user", "What's the wifi password?")]
    prompt, completion = await count_said(model, "You are a receptionist.", history, "It is x.")
    expected = [ChatMessage("system", "You are a receptionist."), *history]
    assert prompt == model.count_prompt_tokens(expected) and completion == 3


async def test_a_count_that_fails_or_never_comes_is_left_out(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    usage = proto.Usage(prompt_tokens=12, cached_prompt_tokens=0, completion_tokens=3)

    async def count() -> proto.Usage | None:
        return usage

    async def fail() -> proto.Usage | None:
        raise RuntimeError("tokenizer gone")

    async def hang() -> proto.Usage | None:
        await asyncio.sleep(60)
        return usage

    assert await counted(None, LOG) is None
    assert await counted(asyncio.create_task(count()), LOG) == usage
    with caplog.at_level(logging.WARNING):
        assert await counted(asyncio.create_task(fail()), LOG) is None
    assert "tokenizer gone" in caplog.text
    monkeypatch.setattr(grounding, "COUNT_WAIT_S", 0.05)
    hanging = asyncio.create_task(hang())
    assert await counted(hanging, LOG) is None
    await asyncio.sleep(0)
    assert hanging.cancelled()
