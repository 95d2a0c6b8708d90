"""`[llm] backend = "openai"` against a real `llama_cpp.server` (llama-cpp-python's server,
started here on loopback with the project's GGUF), with real speech, real Whisper and Piper.

A TCP relay sits between chinwag and the server (tests/llama_server.py): it records which
connection carried which request and when chinwag closed it, and plays a server that is down.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from openai import AsyncOpenAI
from websockets.asyncio.client import ClientConnection, connect

from clients.talk import read_wav, talk_turn
from server import PROMPTS_DIR
from server.app import Engines, close_engine, load_chat_model
from server.audio.pcm import resample
from server.config import Settings
from server.engines.base import ChatMessage
from server.engines.openai_chat import OpenAIChatModel
from server.engines.remote import RemoteClient
from tests.conftest import Client, RunningServer, make_settings, start_server
from tests.llama_server import LlamaServer, Relayed, TcpProxy
from tests.model_paths import chat_gguf
from tests.speech import recording, to_16k_float, wer

# Real models and servers started per test: minutes on 2 cores, so CI runs them in test-slow.
pytestmark = [pytest.mark.models, pytest.mark.slow]

N_CTX = 640
API_KEY = f"test-{secrets.token_hex(8)}"
STORYTELLER = """description = "Tells long stories (tests: a reply that goes on)."
system_prompt = \"\"\"
You are a storyteller. Whatever you are told, answer with a long, detailed story of many
paragraphs about it, full of places, people and events. Never stop early.
\"\"\"

[generation]
temperature = 0.0
max_tokens = 300
"""


@pytest.fixture(scope="module")
async def llama_server() -> AsyncIterator[LlamaServer]:
    server = LlamaServer(chat_gguf(), n_ctx=N_CTX, api_key=API_KEY)
    await server.start()
    # The first completion pays for page faults (seconds on a busy machine): not in a test.
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_KEY}"}) as http,
        http.post(
            f"{server.base_url}/chat/completions",
            json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
        ) as response,
    ):
        assert response.status == 200, await response.text()
    yield server
    await server.stop()


@pytest.fixture(scope="module")
async def proxy(llama_server: LlamaServer) -> AsyncIterator[TcpProxy]:
    relay = TcpProxy(llama_server.port)
    await relay.start()
    yield relay
    await relay.close()


def remote_settings(
    base_url: str, prompts: Path, limits: dict[str, Any] | None = None, **llm: Any
) -> Settings:
    values: dict[str, Any] = {
        "backend": "openai",
        "base_url": base_url,
        "api_key": API_KEY,
        "context_size": N_CTX,
        "timeout_s": 120.0,
        "parallel": 2,
    }
    values.update(llm)
    return make_settings(llm=values, prompts={"directory": str(prompts)}, limits=limits or {})


@pytest.fixture(scope="module")
def prompts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped personas and a storyteller, whose replies go on long enough to be cut."""
    directory = tmp_path_factory.mktemp("prompts") / "prompts"
    shutil.copytree(PROMPTS_DIR, directory)
    (directory / "storyteller.toml").write_text(STORYTELLER, encoding="utf-8")
    return directory


async def serve_remote(settings: Settings, engines: Engines) -> RunningServer:
    """chinwag with the remote LLM of `settings` and the local speech engines."""
    chat = await asyncio.to_thread(load_chat_model, settings.llm)
    local = Engines(chat, engines.transcriber, engines.synthesizer, engines.vad)
    return await start_server(settings, local)


async def stop_remote(running: RunningServer) -> None:
    await running.web.close()
    if running.app.chat is not None:
        running.app.chat.close()
        close_engine(running.app.chat.model)
    if running.app.speech is not None:
        running.app.speech.close()


@pytest.fixture(scope="module")
async def remote(proxy: TcpProxy, prompts: Path, engines: Engines) -> AsyncIterator[RunningServer]:
    running = await serve_remote(remote_settings(proxy.base_url, prompts), engines)
    yield running
    await stop_remote(running)


async def open_client(server: RunningServer, **generation: Any) -> tuple[ClientConnection, Client]:
    ws = await connect(server.url, max_size=None)
    client = Client(ws)
    started = await client.event()
    assert started["type"] == "session.started"
    if generation:
        await client.send({"type": "session.update", "generation": generation})
        assert (await client.event())["type"] == "session.updated"
    return ws, client


async def test_text_reply_streams_from_the_remote_server(
    remote: RunningServer, proxy: TcpProxy
) -> None:
    ws, client = await open_client(remote, max_tokens=40, temperature=0.0)
    async with ws:
        events = await client.ask("What is a rainbow?")
    kinds = [e["type"] for e in events]
    assert kinds[0] == "reply.started" and kinds[-1] == "reply.done", kinds
    deltas = [e["text"] for e in events if e["type"] == "reply.delta"]
    done = events[-1]
    assert len(deltas) >= 3, deltas  # streamed, not one block
    assert done["status"] == "completed" and done["text"] == "".join(deltas)
    assert done["text"].strip()
    assert done["usage"]["completion_tokens"] >= len(deltas)
    assert 0 < done["usage"]["prompt_tokens"] < N_CTX
    assert proxy.requests_to("POST /v1/chat/completions")  # it went to the server
    # The model's name is the one the server lists (no [llm] model set).
    assert remote.app.chat is not None and remote.app.chat.model.name.endswith(".gguf")


async def test_prompt_token_counts_cover_the_servers_own(llama_server: LlamaServer) -> None:
    """History trimming relies on counts never below the server's: the server's tokenizer
    plus the template allowance, and the estimate for servers without a tokenizer."""
    messages = [
        ChatMessage("system", "You are chinwag, a helpful assistant. Answer briefly."),
        ChatMessage("user", "Is the café on 5th Avenue open at 07:30 on 24/12/2026?"),
        ChatMessage("assistant", "I don't know; please call +1 212 555 0199 to ask."),
        ChatMessage("user", "Naïve question: what's 1234567 * 89? Also, 你好吗?"),
    ]
    body = {
        "messages": [{"role": m.role, "content": m.content} for m in messages],
        "max_tokens": 1,
    }
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_KEY}"}) as http,
        http.post(f"{llama_server.base_url}/chat/completions", json=body) as response,
    ):
        actual = (await response.json())["usage"]["prompt_tokens"]
    counts = {}
    text_counts = {}
    reply = messages[2].content  # a reply's length (HTTP usage of an answer said word for word)
    for tokenizer in ("auto", "estimate"):
        client = RemoteClient(llama_server.base_url, api_key=API_KEY, timeout_s=60, role="LLM")
        # A small context: the prompt is not far below it, so it is counted, not estimated.
        model = OpenAIChatModel(client, context_size=256, tokenizer=tokenizer)
        try:
            counts[tokenizer] = await asyncio.to_thread(model.count_prompt_tokens, messages)
            text_counts[tokenizer] = await asyncio.to_thread(model.count_text_tokens, reply)
        finally:
            await asyncio.to_thread(model.close)
    print(f"server {actual}, counted {counts}, the reply {text_counts}")
    assert actual <= counts["auto"] <= actual + 8 * (len(messages) + 1)
    assert actual <= counts["estimate"] <= 2 * actual + 8 * (len(messages) + 1)
    # The server's count of the text alone, or an estimate: a token holds a character or more.
    assert 0 < text_counts["auto"] < actual // 2 and text_counts["auto"] <= len(reply)
    assert 0 < text_counts["estimate"] <= len(reply)


async def test_voice_turn_is_answered(remote: RunningServer) -> None:
    rec = recording("spk1_snt1.wav")
    pcm, rate = read_wav(rec.path)
    ws, _ = await open_client(remote, max_tokens=40, temperature=0.0)
    async with ws:
        result = await talk_turn(ws, pcm, rate, timeout=240)
    assert wer([rec.text], [result.transcript]) <= 0.35, result.transcript
    assert result.status == "completed" and result.reply.strip()
    assert result.audio_rate == 22050 and len(result.audio) > 0.3 * 22050 * 2
    kinds = [e["type"] for e in result.events]
    assert (
        kinds.index("transcript") < kinds.index("reply.started") < kinds.index("output_audio.start")
    )


async def test_barge_in_closes_the_remote_stream(
    remote: RunningServer, proxy: TcpProxy, llama_server: LlamaServer
) -> None:
    first, second = recording("spk1_snt1.wav"), recording("spk2_snt2.wav")
    pcm1, rate = read_wav(first.path)
    pcm2, _ = read_wav(second.path)
    disconnects_before = llama_server.count("Disconnected from client")
    ws, client = await open_client(remote)
    events: list[dict[str, Any]] = []
    received: dict[str, float] = {}
    speaking = asyncio.Event()

    async def listen() -> None:
        while True:
            frame = await ws.recv()
            if isinstance(frame, bytes):
                speaking.set()
                continue
            event = json.loads(frame)
            events.append(event)
            received.setdefault(event["type"], time.monotonic())

    async def stream(pcm: np.ndarray) -> None:
        for i in range(0, len(pcm), 320):
            await ws.send(pcm[i : i + 320].astype("<i2").tobytes())
            await asyncio.sleep(0.02)

    async with ws:
        await client.send({"type": "session.start", "persona": "storyteller"})
        await client.until("session.started")
        await client.send({"type": "audio.start", "sample_rate": rate})
        listener = asyncio.create_task(listen())
        silence = np.zeros(320, dtype=np.int16)
        await stream(pcm1)
        async with asyncio.timeout(240):
            while not speaking.is_set():  # silence until the story is heard
                await stream(silence)
        # The answer to the second question: short (a story would take minutes to speak on
        # a busy machine); the story under way keeps its own settings.
        short = {"max_tokens": 20, "temperature": 0.0}
        await client.send({"type": "session.update", "generation": short})
        barge_at = time.monotonic()
        await stream(pcm2)  # the person talks over it
        async with asyncio.timeout(240):
            while sum(e["type"] == "reply.done" for e in events) < 2:
                await stream(silence)
        listener.cancel()

    dones = [e for e in events if e["type"] == "reply.done"]
    assert dones[0]["status"] == "cancelled", dones[0]
    assert dones[0]["usage"]["completion_tokens"] < 300  # cut short, not finished
    assert "output_audio.clear" in received
    # chinwag closed the connection that streamed the story (a pooled one, maybe opened
    # before this test; idle pooled connections stay open). A speculative reply to the
    # second question that was dropped (the person went on) may have closed its own too.
    story = [
        c
        for c in proxy.connections
        if c.client_closed is not None
        and c.client_closed >= barge_at
        and _last_chat_request(c) < barge_at
    ]
    assert len(story) == 1, (dones[0], [(c.requests, c.client_closed) for c in proxy.connections])
    cut = story
    assert cut[0].client_closed is not None
    print(f"stream closed {cut[0].client_closed - received['output_audio.clear']:+.3f} s "
          "after the client got output_audio.clear")  # fmt: skip
    # ... and the server saw it go, and stopped (it says so when it notices).
    await llama_server.wait_for("Disconnected from client", more_than=disconnects_before)
    # The second question was answered on the same server.
    assert dones[1]["status"] == "completed"


def _last_chat_request(connection: Relayed) -> float:
    """When the last chat request on this connection was sent (inf: none was)."""
    times = [
        t
        for r, t in zip(connection.requests, connection.asked_at, strict=True)
        if "chat/completions" in r
    ]
    return times[-1] if times else float("inf")


async def test_realtime_endpoint_on_the_remote_llm(remote: RunningServer) -> None:
    client = AsyncOpenAI(api_key="unused-locally", base_url=f"{remote.http}/v1")
    async with client.realtime.connect(model="gpt-realtime") as conn:
        assert (await conn.recv()).type == "session.created"
        await conn.session.update(
            session={"type": "realtime", "output_modalities": ["audio"], "max_output_tokens": 40}
        )
        rec = recording("spk1_snt3.wav")
        pcm, rate = read_wav(rec.path)
        speech = resample(pcm, rate, 24000)
        silence = np.zeros(24000, dtype=np.int16)
        audio = np.concatenate([speech, silence, silence])

        async def talk() -> None:
            for i in range(0, len(audio), 480):
                chunk = audio[i : i + 480].astype("<i2").tobytes()
                await conn.input_audio_buffer.append(audio=base64.b64encode(chunk).decode())
                await asyncio.sleep(0.02)

        sender = asyncio.create_task(talk())
        seen: list[Any] = []
        async with asyncio.timeout(240):
            async for event in conn:
                seen.append(event)
                if event.type == "response.done":
                    break
        sender.cancel()
    kinds = [e.type for e in seen]
    transcript = next(
        e for e in seen if e.type == "conversation.item.input_audio_transcription.completed"
    )
    assert wer([rec.text], [transcript.transcript]) <= 0.35
    assert "response.output_audio_transcript.delta" in kinds
    assert "response.output_audio.delta" in kinds
    done = seen[-1]
    assert done.response.status == "completed"
    said = done.response.output[0].content[0].transcript
    assert said.strip()
    spoken = b"".join(
        base64.b64decode(e.delta) for e in seen if e.type == "response.output_audio.delta"
    )
    assert len(spoken) > 0.3 * 24000 * 2
    heard = await asyncio.to_thread(
        remote.app.speech.transcriber.transcribe,  # type: ignore[union-attr]
        to_16k_float(np.frombuffer(spoken, dtype="<i2"), 24000),
    )
    assert wer([said], [heard.text]) <= 0.4


@pytest.mark.timeout(900)
async def test_long_conversation_stays_within_the_remote_context(
    remote: RunningServer, llama_server: LlamaServer
) -> None:
    """Eight exchanges hold more than the server's 640 tokens: the oldest are dropped and
    every request fits (llama_cpp.server refuses one that does not)."""
    max_tokens = 60
    ws, client = await open_client(remote, max_tokens=max_tokens, temperature=0.0)
    topics = ["volcanoes", "the moon", "bread", "bicycles", "rain", "owls", "glass", "chess"]
    prompt_tokens = []
    said: list[ChatMessage] = []
    async with ws:
        for topic in topics:
            question = (
                f"Tell me three interesting facts about {topic}, and explain each of them in "
                "a couple of sentences so that a curious child could follow along easily."
            )
            began = time.monotonic()
            events = await client.ask(question)
            print(f"{topic}: {time.monotonic() - began:.1f} s", events[-1].get("usage"))
            errors = [e for e in events if e["type"] == "error"]
            assert not errors, errors
            done = events[-1]
            assert done["status"] == "completed", done
            prompt_tokens.append(done["usage"]["prompt_tokens"])
            said += [ChatMessage("user", question), ChatMessage("assistant", done["text"])]
    assert remote.app.chat is not None
    model = remote.app.chat.model
    system = remote.app.personas.get("assistant").system_prompt
    whole = await asyncio.to_thread(
        model.count_prompt_tokens, [ChatMessage("system", system), *said]
    )
    print(f"prompt tokens per turn: {prompt_tokens}; the whole conversation: {whole}")
    # The whole conversation no longer fits: the oldest exchanges were left out, and every
    # request fitted (llama_cpp.server would have refused one that did not).
    assert whole + max_tokens > N_CTX
    assert max(prompt_tokens) + max_tokens <= N_CTX
    assert llama_server.count("exceed context window") == 0


async def test_remote_down_is_an_error_and_the_session_goes_on(
    remote: RunningServer, proxy: TcpProxy
) -> None:
    ws, client = await open_client(remote, max_tokens=20, temperature=0.0)
    async with ws:
        await proxy.down()
        try:
            events = await client.ask("Are you there?")
        finally:
            await proxy.up()
        errors = [e for e in events if e["type"] == "error"]
        assert errors and errors[0]["code"] == "remote_unavailable", events
        assert "cannot reach the LLM server" in errors[0]["message"]
        assert events[-1]["status"] == "failed"
        # The same session, the server back: answered.
        events = await client.ask("Are you there now?")
        assert events[-1]["type"] == "reply.done" and events[-1]["status"] == "completed"
        assert events[-1]["text"].strip()


async def test_wrong_key_and_a_stalled_server_are_errors_with_codes(
    llama_server: LlamaServer, prompts: Path, engines: Engines
) -> None:
    stalled = TcpProxy(llama_server.port)
    stalled.stalled = True
    await stalled.start()
    # A context_size over the server's own: llama_cpp.server fails the long prompt by ending
    # the stream at once (llama-server and vLLM answer 400 instead: context_overflow).
    too_big = remote_settings(
        llama_server.base_url,
        prompts,
        {"max_text_chars": 8000, "max_message_bytes": 16384},
        context_size=8192,
    )
    cases = [
        (remote_settings(llama_server.base_url, prompts, api_key="wrong"), "remote_unauthorized"),
        (remote_settings(stalled.base_url, prompts, timeout_s=1.0), "remote_timeout"),
        (too_big, "remote_error"),
    ]
    try:
        for settings, code in cases:
            running = await serve_remote(settings, engines)
            try:
                ws, client = await open_client(running, max_tokens=10)
                async with ws:
                    question = "Hello? " * (900 if settings is too_big else 1)
                    events = await client.ask(question)
                    errors = [e for e in events if e["type"] == "error"]
                    assert errors and errors[0]["code"] == code, events
                    if settings is too_big:
                        assert "context_size" in errors[0]["message"]
                    # The session goes on: it still answers what needs no model.
                    await client.send({"type": "session.update", "generation": {"top_k": 5}})
                    assert (await client.event())["type"] == "session.updated"
            finally:
                await stop_remote(running)
    finally:
        await stalled.close()
