"""`[asr] backend = "openai"` and `[tts] backend = "openai"` against a second chinwag on
loopback (its /v1/audio/transcriptions and /v1/audio/speech, with the real Whisper and Piper):
a small box sends its speech stages to a bigger one. A TCP relay in between shows what went
over the wire and plays the bigger box going away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Literal

import numpy as np
import pytest
from websockets.asyncio.client import connect

from clients.talk import TalkResult, read_wav, talk_turn
from server.app import Engines, close_engine, load_synthesizer, load_transcriber
from tests.conftest import Client, RunningServer, make_settings, start_server
from tests.llama_server import TcpProxy
from tests.speech import recording, to_16k_float, wer

# Real models and servers started per test: minutes on 2 cores, so CI runs them in test-slow.
pytestmark = [pytest.mark.models, pytest.mark.slow]


@pytest.fixture(scope="module")
async def big_box(server: RunningServer) -> AsyncIterator[TcpProxy]:
    """The second chinwag (the test session's real-model server), behind a relay."""
    relay = TcpProxy(server.web.port)
    await relay.start()
    yield relay
    await relay.close()


@pytest.fixture
async def small_box(
    request: pytest.FixtureRequest, big_box: TcpProxy, engines: Engines
) -> AsyncIterator[RunningServer]:
    """chinwag with its own LLM and VAD, and ASR and TTS on the big box."""
    response_format: Literal["pcm", "wav"] = getattr(request, "param", "pcm")
    remote = {"backend": "openai", "base_url": big_box.base_url, "timeout_s": 120.0}
    settings = make_settings(asr=remote, tts={**remote, "response_format": response_format})
    transcriber = await asyncio.to_thread(load_transcriber, settings.asr)
    synthesizer = await asyncio.to_thread(load_synthesizer, settings.tts)
    running = await start_server(
        settings, Engines(engines.chat, transcriber, synthesizer, engines.vad)
    )
    yield running
    await running.web.close()
    if running.app.speech is not None:
        running.app.speech.close()
    close_engine(transcriber)
    close_engine(synthesizer)


async def voice_turn(server: RunningServer, name: str) -> TalkResult:
    pcm, rate = read_wav(recording(name).path)
    async with connect(server.url, max_size=None) as ws:
        client = Client(ws)
        assert (await client.event())["type"] == "session.started"
        generation = {"max_tokens": 30, "temperature": 0.0}
        await client.send({"type": "session.update", "generation": generation})
        assert (await client.event())["type"] == "session.updated"
        return await talk_turn(ws, pcm, rate, timeout=240)


@pytest.mark.parametrize("small_box", ["pcm", "wav"], indirect=True)
async def test_voice_turn_with_speech_on_the_big_box(
    small_box: RunningServer, big_box: TcpProxy, engines: Engines
) -> None:
    asked = len([r for c in big_box.connections for r in c.requests])
    rec = recording("spk2_snt4.wav")
    result = await voice_turn(small_box, rec.path.name)
    assert wer([rec.text], [result.transcript]) <= 0.35, result.transcript
    assert result.status == "completed" and result.reply.strip()
    # The voice is the big box's, at the rate the small box was told (24 kHz), and it says
    # the reply: Whisper (here, locally) hears the reply's words in it.
    assert result.audio_rate == 24000
    audio = np.frombuffer(bytes(result.audio), dtype="<i2")
    assert audio.size > 0.3 * 24000
    heard = await asyncio.to_thread(engines.transcriber.transcribe, to_16k_float(audio, 24000))
    assert wer([result.reply], [heard.text]) <= 0.4, (result.reply, heard.text)
    requests = [r for c in big_box.connections for r in c.requests][asked:]
    assert "POST /v1/audio/transcriptions" in requests
    assert "POST /v1/audio/speech" in requests


async def test_big_box_down_is_an_error_and_the_session_goes_on(
    small_box: RunningServer, big_box: TcpProxy
) -> None:
    pcm, rate = read_wav(recording("spk1_snt3.wav").path)
    silence = np.zeros(rate, dtype=np.int16)
    async with connect(small_box.url, max_size=None) as ws:
        client = Client(ws)
        assert (await client.event())["type"] == "session.started"
        await big_box.down()
        try:
            await client.send({"type": "audio.start", "sample_rate": rate})
            audio = np.concatenate([pcm, silence, silence])
            for i in range(0, len(audio), 320):
                await ws.send(audio[i : i + 320].astype("<i2").tobytes())
                await asyncio.sleep(0.02)
            events: list[dict[str, Any]] = await client.until("error", timeout=120)
        finally:
            await big_box.up()
        error = events[-1]
        assert error["code"] == "remote_unavailable" and error["source"] == "audio", events
        assert "cannot reach the ASR server" in error["message"]
        # The same session, the big box back: a typed question is answered aloud.
        await client.send({"type": "audio.stop"})
        await client.send({"type": "say", "text": "Back again."})
        done = await client.until("output_audio.done", timeout=120)
        assert done[-1]["status"] == "completed", done
