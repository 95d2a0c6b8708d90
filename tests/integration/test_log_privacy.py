"""Logs never carry conversation text above DEBUG (docs/security.md), against a real server.

A lone UTF-16 surrogate ("\\ud800" in JSON) once reached the model's tokenizer, and the
UnicodeEncodeError it raised, which holds the whole prompt, was logged at ERROR. Now every
decoder refuses it with an `invalid_json` error and the session goes on; and a reply that fails
for any reason is logged by type and frames only, its detail at DEBUG.
"""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import pytest
from websockets.asyncio.client import connect

from server.app import Engines
from server.engines.base import ChatMessage
from tests.conftest import Client, RunningServer, make_settings, start_server

SECRET = "my bank PIN is 4417"


def leaks(records: list[logging.LogRecord], texts: list[str]) -> list[str]:
    """Records above DEBUG whose message or formatted exception holds one of the texts."""
    formatter = logging.Formatter("%(message)s")
    found = []
    for record in records:
        if record.levelno <= logging.DEBUG:
            continue
        shown = formatter.format(record)  # the message and its traceback, as a handler shows
        if any(text in shown for text in texts):
            found.append(f"{record.levelname} {record.name}: {shown[:300]}")
    return found


def private_texts(server: RunningServer) -> list[str]:
    system_prompt = server.app.personas.get(None).system_prompt
    return [SECRET, system_prompt[:40]]


async def test_a_lone_surrogate_is_an_error_not_a_log_entry(
    server: RunningServer, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await client.ws.send(json.dumps({"type": "user.message", "text": SECRET + " X"}).replace(
        " X", " \\ud800"
    ))  # fmt: skip
    event = await client.event()
    assert event["type"] == "error" and event["code"] == "invalid_json"
    assert "surrogate" in event["message"]
    # The session goes on.
    await client.send({"type": "session.update", "generation": {"max_tokens": 8}})
    await client.until("session.updated")
    assert (await client.ask("Hi"))[-1]["status"] == "completed"

    # The same on the Realtime endpoint: an error event, and the connection stays usable.
    async with connect(server.url + "v1/realtime?model=x") as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        item = {
            "type": "conversation.item.create",
            "event_id": "e1",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": SECRET + " X"}],
            },
        }
        await ws.send(json.dumps(item).replace(" X", " \\ud800"))
        error = json.loads(await ws.recv())
        assert error["type"] == "error" and error["error"]["code"] == "invalid_json"
        await ws.send(json.dumps({"type": "session.update", "session": {"instructions": "Hi."}}))
        assert json.loads(await ws.recv())["type"] == "session.updated"

    gc.collect()  # an unretrieved future's exception is logged when it is collected
    assert leaks(caplog.records, private_texts(server)) == []


class FailingChat:
    """The real model, except that generating fails with the prompt in the exception's text
    (as a UnicodeEncodeError or a library's ValueError would)."""

    def __init__(self, model: Any) -> None:
        self._model = model

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def _fail(self, messages: Sequence[ChatMessage]) -> Any:
        prompt = " | ".join(m.content for m in messages)
        raise ValueError(f"cannot evaluate the prompt {prompt!r}")

    def begin(
        self, messages: Sequence[ChatMessage], settings: Any, on_delta: Callable[..., Any]
    ) -> Any:
        return self._fail(messages)  # where ChatRunner's batched replies start

    def generate(
        self, messages: Sequence[ChatMessage], settings: Any, on_token: Callable[..., Any], *a: Any
    ) -> Any:
        return self._fail(messages)


async def test_a_failing_reply_is_logged_without_the_conversation(
    engines: Engines, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    running = await start_server(make_settings(), replace(engines, chat=FailingChat(engines.chat)))
    try:
        async with connect(running.url) as ws:
            client = Client(ws)
            await client.until("session.started")
            events = await client.ask(SECRET)
            errors = [e for e in events if e["type"] == "error"]
            assert errors and errors[0]["code"] == "internal_error"
            assert SECRET not in errors[0]["message"]
            assert events[-1]["status"] == "failed"
            await client.send({"type": "session.update", "generation": {"max_tokens": 8}})
            await client.until("session.updated")  # the session goes on
        gc.collect()
        assert leaks(caplog.records, private_texts(running)) == []
        failures = [
            r for r in caplog.records if r.levelno == logging.ERROR and "failed" in r.getMessage()
        ]
        assert failures, "the failure is logged at ERROR"
        assert "ValueError" in failures[0].getMessage()
        assert "reply.py" in failures[0].getMessage(), "with the frames where it happened"
        # The full detail is there at DEBUG, for whoever turns it on.
        debug = [r for r in caplog.records if r.levelno == logging.DEBUG and r.exc_info]
        assert any(SECRET in logging.Formatter().format(r) for r in debug)
    finally:
        await running.web.close()
