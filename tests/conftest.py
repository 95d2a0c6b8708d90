"""Shared fixtures: a real chinwag server on 127.0.0.1:0 with the real default model."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from server.app import App, Engines, load_engines, load_into
from server.config import Settings, load_settings
from server.engines.base import ChatMessage
from server.engines.fakes import FakeChatModel, FakeSynthesizer, FakeTranscriber, FakeVad
from server.prompts import PersonaLibrary
from server.transports.websocket import WebSocketServer


class RunningServer:
    def __init__(self, app: App, web: WebSocketServer) -> None:
        self.app = app
        self.web = web

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.web.port}/"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.web.port}"


def make_settings(**groups: dict[str, Any]) -> Settings:
    base: dict[str, Any] = {
        "server": {"port": 0},
        "limits": {"max_message_bytes": 4096, "max_text_chars": 1000},
        "llm": {"context_size": 2048, "seed": 7},
    }
    for group, values in groups.items():
        base.setdefault(group, {}).update(values)
    return load_settings(overrides=base, environ={})


async def start_server(settings: Settings, engines: Engines | None = None) -> RunningServer:
    personas = PersonaLibrary.load(settings.prompts.directory, settings.prompts.default_persona)
    app = App(settings=settings, personas=personas)
    web = WebSocketServer(app)
    await web.start("127.0.0.1", 0)
    if engines is None:
        await load_into(app)
    else:
        app.attach(engines)
    return RunningServer(app, web)


def fake_engines(
    chat: FakeChatModel | None = None,
    *,
    transcriber: FakeTranscriber | None = None,
    synthesizer: FakeSynthesizer | None = None,
) -> Engines:
    """Fake engines and a fake VAD: a whole server or session runs in milliseconds."""
    return Engines(
        chat=chat if chat is not None else FakeChatModel("Hello there, friend."),
        transcriber=transcriber if transcriber is not None else FakeTranscriber(),
        synthesizer=synthesizer if synthesizer is not None else FakeSynthesizer(),
        vad=FakeVad(),
    )


SHORT_ANSWER = "A short answer."


def long_or_short_model(words: int, token_delay_s: float, parallel: int = 8) -> FakeChatModel:
    """The load tests' fake model: `words` words in reply to a message that asks for something
    long, a short answer to any other; `token_delay_s` a step."""
    long = " ".join(f"w{i}" for i in range(words))

    def reply(messages: Sequence[ChatMessage]) -> str:
        return long if "long" in messages[-1].content else SHORT_ANSWER

    return FakeChatModel(reply, token_delay_s=token_delay_s, parallel=parallel)


@contextlib.asynccontextmanager
async def serving(
    engines: Engines, settings: Settings | None = None
) -> AsyncIterator[RunningServer]:
    """A server on 127.0.0.1:0 with these engines, closed (sessions, workers) afterwards."""
    running = await start_server(settings if settings is not None else make_settings(), engines)
    try:
        yield running
    finally:
        await running.web.close()
        running.app.close()


@pytest.fixture(scope="session")
async def engines() -> Engines:
    """The real default models, loaded once for the whole test run."""
    return await asyncio.to_thread(load_engines, make_settings())


@pytest.fixture(scope="session")
async def server(engines: Engines) -> AsyncIterator[RunningServer]:
    running = await start_server(make_settings(), engines)
    yield running
    await running.web.close()


class Client:
    """A test client of the native protocol."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def event(self, timeout: float = 120) -> dict[str, Any]:
        while True:
            frame = await asyncio.wait_for(self.ws.recv(), timeout)
            if isinstance(frame, str):
                event: dict[str, Any] = json.loads(frame)
                return event

    async def until(self, kind: str, timeout: float = 120) -> list[dict[str, Any]]:
        """Events up to and including the first of `kind`."""
        events = []
        while True:
            event = await self.event(timeout)
            events.append(event)
            if event["type"] == kind:
                return events

    async def ask(self, text: str, **extra: Any) -> list[dict[str, Any]]:
        await self.send({"type": "user.message", "text": text, **extra})
        return await self.until("reply.done")


@pytest.fixture
async def client(server: RunningServer) -> AsyncIterator[Client]:
    async with connect(server.url) as ws:
        c = Client(ws)
        started = await c.event()
        assert started["type"] == "session.started"
        yield c
