"""Bursts, slow readers and shutdown (issue 17 items 13 and 15), on a real WebSocket server
with fake engines: every request gets an answer, a client that stops reading is dropped by
one rule, and shutting down ends each turn with a status."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import connect

from server.transports import sink
from tests.conftest import (
    Client,
    RunningServer,
    fake_engines,
    long_or_short_model,
    serving,
)


@pytest.fixture
async def fake_server() -> AsyncIterator[RunningServer]:
    async with serving(fake_engines(long_or_short_model(2000, token_delay_s=0.002))) as running:
        yield running


async def test_every_message_of_a_burst_gets_a_reply_done(fake_server: RunningServer) -> None:
    await burst_gets_every_reply_done(fake_server, 300)


@pytest.mark.models
async def test_real_model_every_message_of_a_burst_gets_a_reply_done(
    server: RunningServer,
) -> None:
    await burst_gets_every_reply_done(server, 60)


async def burst_gets_every_reply_done(fake_server: RunningServer, count: int) -> None:
    async with connect(fake_server.url) as ws:
        client = Client(ws)
        assert (await client.event())["type"] == "session.started"

        async def burst() -> None:
            for i in range(count):
                await client.send({"type": "user.message", "text": f"hello {i}", "id": f"m{i}"})

        sending = asyncio.create_task(burst())
        started: dict[str, str] = {}  # reply id -> message id
        done: dict[str, dict[str, object]] = {}  # message id -> reply.done
        async with asyncio.timeout(300):
            while len(done) < count:
                event = await client.event()
                if event["type"] == "reply.started":
                    started[event["reply_id"]] = event["message_id"]
                elif event["type"] == "reply.done":
                    done[started[event["reply_id"]]] = event
        await sending
    assert set(done) == {f"m{i}" for i in range(count)}
    assert done[f"m{count - 1}"]["status"] == "completed"
    # The others were superseded by the next message: each says so.
    assert {d["status"] for m, d in done.items() if m != f"m{count - 1}"} <= {
        "cancelled",
        "completed",
    }


@pytest.mark.parametrize("question", ["zxq hello", "zxq long"])
async def test_a_client_that_never_reads_is_dropped_by_one_rule_with_a_log_line(
    fake_server: RunningServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    question: str,
) -> None:
    """Whether its output fits in the buffers (a short reply: only the keepalive notices) or
    not (a long one: a send blocks), the client is dropped by the same rule, and logged."""
    monkeypatch.setattr(sink, "SEND_TIMEOUT_S", 1.0)
    monkeypatch.setattr(sink, "KEEPALIVE_INTERVAL_S", 0.3)
    await fake_server.web.close()  # restarted with the shortened rule
    await fake_server.web.start("127.0.0.1", 0)
    caplog.set_level(logging.INFO)
    # max_queue=1: the client library stops reading the socket once a frame waits unread,
    # so it answers no ping either, as a stuck client would.
    ws = await connect(fake_server.url, max_queue=1)
    try:
        await ws.send(json.dumps({"type": "user.message", "text": question}))
        await asyncio.sleep(0.5)
        assert fake_server.app.hub.count == 1
        async with asyncio.timeout(60):
            while fake_server.app.hub.count:  # noqa: ASYNC110 - the server's own state
                await asyncio.sleep(0.05)
    finally:
        ws.transport.abort()
    drops = [r for r in caplog.records if r.name == "server.transports.sink"]
    assert len(drops) == 1 and drops[0].levelno == logging.WARNING
    line = drops[0].getMessage()
    assert "dropped" in line and "1 s" in line
    assert "zxq" not in line and "short answer" not in line and "w1 " not in line
