"""Replies said without the model (the receptionist's site facts, a command's confirmation)
report their usage as a generated reply does, on a real server with the real model, over the
native protocol and the Realtime endpoint: the prompt the model would have read and the text
said, counted with the model's tokenizer, as HTTP chat counts them
(tests/integration/test_openai_http.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from openai import AsyncOpenAI

from server.app import Engines
from server.engines.base import ChatMessage
from tests.conftest import Client, RunningServer, make_settings, serving

pytestmark = pytest.mark.models


def usage_of(
    server: RunningServer, system: str, history: Sequence[ChatMessage], text: str
) -> dict[str, int]:
    assert server.app.chat is not None
    model = server.app.chat.model
    return {
        "prompt_tokens": model.count_prompt_tokens([ChatMessage("system", system), *history]),
        "cached_prompt_tokens": 0,
        "completion_tokens": model.count_text_tokens(text),
    }


async def test_site_facts_report_usage_over_the_native_protocol(
    server: RunningServer, client: Client
) -> None:
    await client.send({"type": "session.start", "persona": "receptionist"})
    await client.until("session.started")
    system = server.app.personas.get("receptionist").system_prompt
    history: list[ChatMessage] = []
    for question, fact in (
        ("What's the wifi password?", "mill-lane-12"),
        ("What time do you open on Saturday?", "9 am to 5 pm"),
    ):
        done = (await client.ask(question))[-1]
        assert done["status"] == "completed" and fact in done["text"]  # said from the file
        assert "timings" not in done  # no generation
        history.append(ChatMessage("user", question))
        assert done["usage"] == usage_of(server, system, history, done["text"])
        assert done["usage"]["completion_tokens"] > 0
        history.append(ChatMessage("assistant", done["text"]))


async def test_a_commands_confirmation_reports_usage(server: RunningServer, client: Client) -> None:
    await client.send({"type": "session.start", "persona": "smart_home", "site": "kitchen"})
    await client.until("session.started")
    system = server.app.personas.get("smart_home").system_prompt
    history: list[ChatMessage] = []
    for command in ("Turn off the kitchen light, will you?", "What time is it?"):
        events = await client.ask(command)
        done = events[-1]
        assert [e["type"] for e in events].count("intent") == 1
        assert done["status"] == "completed" and done["finish_reason"] == "intent"
        history.append(ChatMessage("user", command))
        assert done["usage"] == usage_of(server, system, history, done["text"])
        assert done["usage"]["completion_tokens"] > 0
        history.append(ChatMessage("assistant", done["text"]))


async def test_a_site_fact_reports_usage_over_realtime(engines: Engines) -> None:
    settings = make_settings(prompts={"default_persona": "receptionist"})
    async with serving(engines, settings) as server:
        client = AsyncOpenAI(api_key="unused-locally", base_url=f"{server.http}/v1")
        async with client.realtime.connect(model="gpt-realtime") as conn:
            await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
            question = "What's the wifi password?"
            await conn.conversation.item.create(
                item={"type": "message", "role": "user",
                      "content": [{"type": "input_text", "text": question}]}
            )  # fmt: skip
            await conn.response.create()
            done: Any = None
            async with asyncio.timeout(120):
                async for event in conn:
                    if event.type == "response.done":
                        done = event
                        break
        assert done is not None and done.response.status == "completed"
        text = done.response.output[0].content[0].text
        assert "mill-lane-12" in text
        system = server.app.personas.get("receptionist").system_prompt
        want = usage_of(server, system, [ChatMessage("user", question)], text)
        usage = done.response.usage
        assert usage.input_tokens == want["prompt_tokens"]
        assert usage.output_tokens == want["completion_tokens"] > 0
        assert usage.total_tokens == usage.input_tokens + usage.output_tokens
        assert usage.input_token_details.cached_tokens == 0
