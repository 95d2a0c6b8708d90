"""Admission control with the real server and models (issue 13): with one place on the model
and a 10 ms limit, a turn asked while a long reply streams is refused with `overloaded` (a
voice turn hears the apology, which Whisper transcribes back), and every session goes on.

Nothing here depends on speed: a turn is refused only while the one place is taken, and the
long reply is asked again and again until the refusals are seen."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect

from clients.talk import read_wav, send_paced, talk_turn
from server.app import Engines
from server.engines.llama_cpp import LlamaCppChatModel
from server.pipeline.admission import APOLOGY
from tests.conftest import Client, RunningServer, make_settings, start_server
from tests.speech import normalise, recording, to_16k_float

# Real models and servers started per test: minutes on 2 cores, so CI runs them in test-slow.
pytestmark = [pytest.mark.models, pytest.mark.slow]

LONG = "Write a very long story about a dragon who learns to bake bread, with many details."


@pytest.fixture
async def one_place(engines: Engines) -> AsyncIterator[RunningServer]:
    """The real models, the LLM with a single place (so a second reply has to wait), and an
    admission limit far below any real reply's time."""
    settings = make_settings(limits={"max_reply_wait_s": 0.01})
    model = await asyncio.to_thread(
        LlamaCppChatModel,
        settings.llm.model_path,
        context_size=settings.llm.context_size,
        parallel=1,
    )
    running = await start_server(
        settings,
        Engines(
            chat=model,
            transcriber=engines.transcriber,
            synthesizer=engines.synthesizer,
            vad=engines.vad,
        ),
    )
    yield running
    await running.web.close()
    running.app.close()


async def open_client(server: RunningServer, generation: dict[str, Any]) -> Client:
    client = Client(await connect(server.url, max_size=None))
    assert (await client.event())["type"] == "session.started"
    await client.send({"type": "session.update", "generation": generation})
    await client.until("session.updated")
    return client


@contextlib.asynccontextmanager
async def long_replies(server: RunningServer) -> AsyncIterator[None]:
    """A session keeping the model's one place busy with long replies, one after another."""
    hog = await open_client(server, {"max_tokens": 1000, "temperature": 0.0})
    stop = asyncio.Event()
    streaming = asyncio.Event()

    async def run() -> None:
        while not stop.is_set():
            await hog.send({"type": "user.message", "text": LONG})
            events = [await hog.event(300)]
            while events[-1]["type"] not in ("reply.delta", "reply.done"):
                events.append(await hog.event(300))
            assert events[-1]["type"] == "reply.delta", events
            streaming.set()
            events = await hog.until("reply.done", timeout=600)
            assert events[-1]["status"] in ("completed", "cancelled"), events

    task = asyncio.create_task(run())
    await asyncio.wait_for(streaming.wait(), 300)
    try:
        yield
    finally:
        stop.set()
        await hog.send({"type": "cancel"})
        await asyncio.wait_for(task, 300)
        await hog.ws.close()


async def refused_voice_turn(ws: ClientConnection) -> tuple[list[dict[str, Any]], bytes, int]:
    """Speak a recording; the events up to the refused reply's end, and the audio sent."""
    pcm, rate = read_wav(recording("spk2_snt4.wav").path)
    await ws.send(json.dumps({"type": "audio.start", "sample_rate": rate}))
    sender = asyncio.create_task(send_paced(ws.send, pcm, rate, time.perf_counter(), {}))
    events: list[dict[str, Any]] = []
    audio = bytearray()
    audio_rate = 0
    try:
        async with asyncio.timeout(300):
            while not any(e["type"] == "output_audio.done" for e in events) or not any(
                e["type"] == "reply.done" for e in events
            ):
                frame = await ws.recv()
                if isinstance(frame, bytes):
                    audio.extend(frame)
                    continue
                event = json.loads(frame)
                events.append(event)
                if event["type"] == "output_audio.start":
                    audio_rate = event["sample_rate"]
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    await ws.send(json.dumps({"type": "audio.stop"}))
    return events, bytes(audio), audio_rate


async def test_overloaded_text_and_voice_turns_then_everyone_goes_on(
    one_place: RunningServer, engines: Engines
) -> None:
    texter = await open_client(one_place, {"max_tokens": 16, "temperature": 0.0})
    talker = await open_client(one_place, {"max_tokens": 16, "temperature": 0.0})
    try:
        async with long_replies(one_place):
            # Text: a clear error, and the reply ends as failed with nothing in it.
            events = await texter.ask("What is two plus two?")
            errors = [e for e in events if e["type"] == "error"]
            assert [e["code"] for e in errors] == ["overloaded"]
            assert "busy" in errors[0]["message"]
            assert events[-1]["status"] == "failed" and events[-1]["text"] == ""

            # Voice: the same error, and a spoken apology as the reply's audio.
            events, audio, rate = await refused_voice_turn(talker.ws)
            assert "overloaded" in [e["code"] for e in events if e["type"] == "error"]
            done = [e for e in events if e["type"] == "reply.done"][-1]
            assert done["status"] == "failed"
            assert audio and rate
            pcm = np.frombuffer(audio, dtype="<i2")
            heard = await asyncio.to_thread(engines.transcriber.transcribe, to_16k_float(pcm, rate))
            assert "busy" in normalise(heard.text), heard.text
            assert normalise(heard.text).split()[:2] == normalise(APOLOGY).split()[:2]

        # The long replies are over: both sessions are answered again, on the same connection.
        events = await texter.ask("What is two plus two?")
        assert events[-1]["status"] == "completed" and events[-1]["text"].strip()
        pcm16, rate16 = read_wav(recording("spk2_snt4.wav").path)
        result = await talk_turn(talker.ws, pcm16, rate16, timeout=300)
        assert result.status == "completed" and result.reply.strip()
        assert len(result.audio) > 0
    finally:
        await texter.ws.close()
        await talker.ws.close()
