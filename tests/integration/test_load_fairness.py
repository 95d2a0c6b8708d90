"""Fairness under load (issue 17 item 12): one long reply does not hold up everyone else.

The fake model takes `token_delay_s` per step, so the properties are orderings, never
milliseconds: a short reply asked while a long one streams finishes first; a reply someone
waits to hear goes before text replies waiting for a place. The last tests run the real model.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import connect

from server.app import Engines
from server.engines.base import ChatMessage
from server.engines.llama_cpp import LlamaCppChatModel
from server.pipeline.chat import ChatOutcome, ChatRunner
from server.prompts import GenerationSettings
from tests.conftest import (
    SHORT_ANSWER,
    Client,
    RunningServer,
    fake_engines,
    long_or_short_model,
    make_settings,
    serving,
)

LONG_WORDS = 400
TOKEN_DELAY_S = 0.01


@pytest.fixture
async def fake_server() -> AsyncIterator[RunningServer]:
    async with serving(fake_engines(long_or_short_model(LONG_WORDS, TOKEN_DELAY_S))) as running:
        yield running


async def open_client(server: RunningServer) -> Client:
    ws = await connect(server.url)
    client = Client(ws)
    assert (await client.event())["type"] == "session.started"
    return client


async def test_a_short_reply_does_not_wait_for_a_long_one(fake_server: RunningServer) -> None:
    long, short = await open_client(fake_server), await open_client(fake_server)
    try:
        await long.send({"type": "session.update", "generation": {"max_tokens": 400}})
        await long.until("session.updated")
        await long.send({"type": "user.message", "text": "a long story please"})
        await long.until("reply.delta")
        finished: list[str] = []

        async def follow_long() -> list[dict[str, object]]:
            events = await long.until("reply.done")
            finished.append("long")
            return events

        following = asyncio.create_task(follow_long())
        events = await short.ask("hi")
        finished.append("short")
        assert events[-1]["status"] == "completed"
        assert events[-1]["text"] == SHORT_ANSWER
        rest = await following
        # The long reply was still streaming: the short one was not queued behind it.
        assert finished == ["short", "long"]
        assert rest[-1]["status"] == "completed"
        assert len(str(rest[-1]["text"]).split()) == 400
    finally:
        await long.ws.close()
        await short.ws.close()


async def test_eight_sessions_at_once_all_start_before_any_finishes(
    fake_server: RunningServer,
) -> None:
    clients = [await open_client(fake_server) for _ in range(8)]
    try:
        for c in clients:
            await c.send({"type": "session.update", "generation": {"max_tokens": 60}})
            await c.until("session.updated")
        for c in clients:
            await c.send({"type": "user.message", "text": "a long one"})
        order: list[tuple[str, int]] = []

        async def follow(i: int, c: Client) -> None:
            await c.until("reply.delta")
            order.append(("first", i))
            await c.until("reply.done")
            order.append(("done", i))

        await asyncio.gather(*(follow(i, c) for i, c in enumerate(clients)))
        # Seven text replies run at once (one place is kept for voice): at least seven first
        # tokens arrive before the first reply is complete.
        firsts_before_done = order.index(next(o for o in order if o[0] == "done"))
        assert firsts_before_done >= 7
    finally:
        for c in clients:
            await c.ws.close()


async def test_a_reply_someone_waits_to_hear_goes_before_waiting_text() -> None:
    model = long_or_short_model(LONG_WORDS, TOKEN_DELAY_S, parallel=2)
    runner = ChatRunner(model)
    settings = GenerationSettings(max_tokens=400)
    seen: list[str] = []

    async def ask(name: str, text: str, *, urgent: bool) -> None:
        async def on_delta(_delta: str) -> None:
            if name not in seen:
                seen.append(name)

        await runner.reply(
            "system", [ChatMessage("user", text)], settings, on_delta, ChatOutcome(), urgent=urgent
        )

    try:
        running = asyncio.create_task(ask("long text", "long", urgent=False))
        while "long text" not in seen:  # noqa: ASYNC110 - waits for the worker thread
            await asyncio.sleep(0.005)
        # The one place for text is taken: this text reply waits; the voice reply asked after
        # it takes the place kept for voice and starts first.
        waiting_text = asyncio.create_task(ask("text", "long", urgent=False))
        await asyncio.sleep(0.05)
        voice = asyncio.create_task(ask("voice", "hi", urgent=True))
        await voice
        assert "text" not in seen, "the text reply waits for the long one's place"
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await waiting_text
        assert seen == ["long text", "voice", "text"]
    finally:
        runner.close()


async def test_a_cancelled_reply_leaves_its_place_at_once() -> None:
    model = long_or_short_model(LONG_WORDS, TOKEN_DELAY_S, parallel=1)
    runner = ChatRunner(model)
    outcome = ChatOutcome()

    async def nothing(_delta: str) -> None:
        pass

    long = asyncio.create_task(
        runner.reply("s", [ChatMessage("user", "long")], GenerationSettings(), nothing, outcome)
    )
    try:
        await asyncio.sleep(0.1)
        long.cancel()
        await asyncio.gather(long, return_exceptions=True)
        assert outcome.stats is not None and outcome.stats.finish_reason == "cancelled"
        after = ChatOutcome()
        await runner.reply("s", [ChatMessage("user", "hi")], GenerationSettings(), nothing, after)
        assert after.stats is not None and after.stats.finish_reason == "stop"
    finally:
        runner.close()


# --- the real model --------------------------------------------------------------------------


@pytest.mark.models
async def test_real_model_a_short_reply_finishes_while_a_long_one_streams(
    server: RunningServer,
) -> None:
    async with connect(server.url) as ws_long, connect(server.url) as ws_short:
        long, short = Client(ws_long), Client(ws_short)
        await long.event()
        await short.event()
        await long.send(
            {"type": "session.update", "generation": {"max_tokens": 400, "temperature": 0.0}}
        )
        await long.until("session.updated")
        await short.send({"type": "session.update", "generation": {"max_tokens": 8}})
        await short.until("session.updated")
        await long.send({"type": "user.message", "text": "Write a very long story about a dragon."})
        await long.until("reply.delta")
        done = (await short.ask("Say hello."))[-1]
        assert done["status"] == "completed" and done["text"].strip()
        # The long reply is still under way when the short one is complete.
        rest = await long.until("reply.done")
        assert len(rest) > 1 and rest[-1]["usage"]["completion_tokens"] > 8


@pytest.mark.models
async def test_real_model_replies_in_one_batch_are_the_replies_alone(engines: Engines) -> None:
    """Greedy replies generated together (one batch, one KV cache) begin as each does on its
    own: the sequences do not see each other. Only the beginning: llama.cpp's sums are not
    bit-identical across batch shapes, which can flip a greedy choice between near-equal
    tokens later on (seen after 14 words of one of these replies); a sequence that saw
    another's cells would go wrong from its first words."""
    model = engines.chat
    assert isinstance(model, LlamaCppChatModel)
    settings = GenerationSettings(max_tokens=24, temperature=0.0)
    system = ChatMessage("system", "You are a helpful assistant. Answer briefly.")
    questions = ["Name a colour.", "What is a rainbow?", "What is the capital of France?"]

    def alone(q: str) -> str:
        model.clear_cache()
        parts: list[str] = []
        model.generate([system, ChatMessage("user", q)], settings, parts.append, threading.Event())
        return "".join(parts)

    def together() -> list[str]:
        model.clear_cache()
        texts: list[list[str]] = [[] for _ in questions]
        gens = [
            model.begin([system, ChatMessage("user", q)], settings, texts[i].append)
            for i, q in enumerate(questions)
        ]
        while not all(g.done for g in gens):
            model.step(gens)
        for g in gens:
            model.end(g)
        return ["".join(t) for t in texts]

    expected = [await asyncio.to_thread(alone, q) for q in questions]
    got = await asyncio.to_thread(together)
    assert [t.split()[:6] for t in got] == [t.split()[:6] for t in expected]
    assert all(t.strip() for t in got)


@pytest.mark.models
async def test_real_model_replies_that_overfill_the_cache_all_finish() -> None:
    """Three replies whose prompts and words do not fit the KV cache together: the newest
    are parked (their cells dropped, evaluated again later) so that the oldest progress, and
    every one ends normally."""
    path = make_settings().llm.model_path
    model = await asyncio.to_thread(
        LlamaCppChatModel, path, context_size=256, kv_cache_tokens=300, parallel=3
    )
    settings = GenerationSettings(max_tokens=40, temperature=0.0)
    long = "Tell me about the sea and the ships and the sailors. " * 8

    def together() -> list[tuple[str, str]]:
        texts: list[list[str]] = [[], [], []]
        gens = [
            model.begin([ChatMessage("user", f"{long} ({i})")], settings, texts[i].append)
            for i in range(3)
        ]
        while not all(g.done for g in gens):
            model.step(gens)
        return [(model.end(g).finish_reason, "".join(t)) for g, t in zip(gens, texts, strict=True)]

    results = await asyncio.to_thread(together)
    assert all(reason in ("stop", "length") for reason, _ in results), results
    assert all(text.strip() for _, text in results)
