"""The OpenAI-compatible HTTP endpoints' refusals, limits and routing, on a real server
(127.0.0.1:0) with fake engines: every bad request gets an OpenAI-shaped error with a code,
never a 500 or a traceback, and the server goes on. The real-model tests are in
test_openai_http.py."""

from __future__ import annotations

import asyncio
import io
import json
import wave
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import numpy as np
import openai
import pytest

from server.engines.base import Generation, GenerationStats
from server.engines.fakes import FakeChatModel, FakeSynthesizer
from tests.conftest import RunningServer, fake_engines, make_settings, serving

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
async def api() -> AsyncIterator[RunningServer]:
    settings = make_settings(http={"max_body_bytes": 4096, "max_upload_bytes": 200_000})
    async with serving(fake_engines(), settings) as running:
        yield running


@pytest.fixture(scope="module")
async def guarded() -> AsyncIterator[RunningServer]:
    async with serving(fake_engines(), make_settings(server={"token": TOKEN})) as running:
        yield running


async def post(
    server: RunningServer, path: str, body: bytes | aiohttp.FormData, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    kind = {} if isinstance(body, aiohttp.FormData) else {"Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(server.http + path, data=body, headers={**kind, **headers}) as response,
    ):
        return response.status, dict(response.headers), await response.read()


def openai_error(status: int, got: int, body: bytes) -> dict[str, Any]:
    """The error of an OpenAI-shaped error body (all four keys, no traceback)."""
    assert got == status, body
    error: dict[str, Any] = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "Traceback" not in error["message"]
    return error


CHAT = "/v1/chat/completions"
HELLO = {"model": "assistant", "messages": [{"role": "user", "content": "hi"}]}

BAD_CHAT = [
    (b"{not json", 400, "invalid_json", None),
    (b"[1, 2]", 400, "invalid_message", None),
    (json.dumps({"model": "assistant"}).encode(), 400, "invalid_message", "messages"),
    (json.dumps({"messages": HELLO["messages"]}).encode(), 400, "invalid_message", "model"),
    (json.dumps({**HELLO, "messages": "hello"}).encode(), 400, "invalid_message", "messages"),
    (json.dumps({**HELLO, "temperature": "hot"}).encode(), 400, "invalid_message", "temperature"),
    (json.dumps({**HELLO, "temperature": 3}).encode(), 400, "invalid_message", "temperature"),
    (json.dumps({**HELLO, "max_tokens": 0}).encode(), 400, "invalid_message", "max_tokens"),
    (
        json.dumps({**HELLO, "max_completion_tokens": 100000}).encode(),
        400,
        "invalid_message",
        "max_completion_tokens",
    ),
    (json.dumps({**HELLO, "stop": ["a"] * 5}).encode(), 400, "invalid_message", "stop"),
    (json.dumps({**HELLO, "n": 2}).encode(), 400, "invalid_message", "n"),
    (
        json.dumps({**HELLO, "messages": [{"role": "tool", "content": "x"}]}).encode(),
        400,
        "invalid_message",
        "messages.0.role",
    ),
    (
        json.dumps({**HELLO, "messages": [{"role": "system", "content": "x"}]}).encode(),
        400,
        "invalid_message",
        "messages",
    ),
    (
        json.dumps({**HELLO, "messages": [{"role": "user", "content": "x" * 1001}]}).encode(),
        400,
        "text_too_long",
        "messages.0.content",
    ),
    (json.dumps({**HELLO, "model": "gpt-4o"}).encode(), 404, "model_not_found", "model"),
    (b'{"model": "' + b"a" * 5000 + b'"}', 413, "body_too_large", None),
]


@pytest.mark.parametrize(("body", "status", "code", "param"), BAD_CHAT, ids=range(len(BAD_CHAT)))
async def test_bad_chat_requests_get_openai_errors(
    api: RunningServer, body: bytes, status: int, code: str, param: str | None
) -> None:
    got, headers, answer = await post(api, CHAT, body)
    error = openai_error(status, got, answer)
    assert headers["Content-Type"].startswith("application/json")
    assert error["code"] == code and error["param"] == param
    assert error["type"] == "invalid_request_error"
    # The server goes on.
    got, _, answer = await post(api, CHAT, json.dumps(HELLO).encode())
    assert got == 200 and json.loads(answer)["choices"][0]["message"]["content"]


def wav_bytes(seconds: float, rate: int = 16000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        t = np.arange(int(seconds * rate)) / rate
        wav.writeframes((3000 * np.sin(2 * np.pi * 220 * t)).astype("<i2").tobytes())
    return out.getvalue()


def form(file: bytes | None, **fields: str) -> aiohttp.FormData:
    data = aiohttp.FormData()
    for name, value in fields.items():
        data.add_field(name, value)
    if file is not None:
        data.add_field("file", file, filename="audio.bin", content_type="application/octet-stream")
    return data


async def test_bad_transcription_requests(api: RunningServer) -> None:
    path = "/v1/audio/transcriptions"
    noise = b"this is not audio at all" * 10
    cases: list[tuple[aiohttp.FormData | bytes, int, str, str | None]] = [
        (form(noise, model="whisper-1"), 400, "invalid_audio_format", "file"),
        (form(wav_bytes(0.5)), 400, "invalid_message", "model"),
        (form(None, model="whisper-1"), 400, "invalid_message", "file"),
        (form(wav_bytes(0.5), model="w", response_format="docx"), 400, "invalid_message",
         "response_format"),
        (form(wav_bytes(0.5), model="w", language="english!"), 400, "invalid_message", "language"),
        (form(wav_bytes(8.0), model="whisper-1"), 413, "body_too_large", None),
        (json.dumps({"file": "x"}).encode(), 400, "invalid_message", "file"),
    ]  # fmt: skip
    for body, status, code, param in cases:
        got, _, answer = await post(api, path, body)
        error = openai_error(status, got, answer)
        assert (error["code"], error["param"]) == (code, param)
    got, _, answer = await post(api, path, form(wav_bytes(0.5), model="whisper-1"))
    assert got == 200 and json.loads(answer) == {"text": "hello"}


async def test_audio_over_the_length_limit_is_refused(api: RunningServer) -> None:
    settings = make_settings(http={"max_audio_s": 1.0})
    async with serving(fake_engines(), settings) as short:
        got, _, answer = await post(
            short, "/v1/audio/transcriptions", form(wav_bytes(2.0), model="whisper-1")
        )
        assert openai_error(400, got, answer)["code"] == "audio_too_long"


async def test_bad_speech_requests(api: RunningServer) -> None:
    path = "/v1/audio/speech"
    ok = {"model": "tts-1", "input": "Hello.", "voice": "alloy"}
    cases = [
        ({**ok, "voice": "nobody"}, "unknown_voice", "voice"),
        ({**ok, "input": ""}, "invalid_message", "input"),
        ({**ok, "input": "x" * 1001}, "text_too_long", "input"),
        ({**ok, "response_format": "ogg"}, "invalid_message", "response_format"),
        ({**ok, "speed": 9}, "invalid_message", "speed"),
        ({**ok, "speed": 2.0}, "invalid_message", "speed"),  # the fake voice has one pace
        ({"input": "Hello.", "voice": "alloy"}, "invalid_message", "model"),
    ]
    for body, code, param in cases:
        got, _, answer = await post(api, path, json.dumps(body).encode())
        error = openai_error(400, got, answer)
        assert (error["code"], error["param"]) == (code, param)


async def test_routes_methods_and_unknown_paths(api: RunningServer) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(api.http + CHAT) as response:
            error = openai_error(405, response.status, await response.read())
            assert error["code"] == "method_not_allowed" and response.headers["Allow"] == "POST"
        async with session.post(api.http + "/v1/embeddings", json={}) as response:
            assert openai_error(404, response.status, await response.read())["code"] == "not_found"
        async with session.get(api.http + "/v1/models") as response:
            assert response.status == 200
            models = [m["id"] for m in (await response.json())["data"]]
            assert set(models) == {*api.app.personas.names(), "chinwag"}


async def test_foreign_host_and_origin_are_refused(api: RunningServer) -> None:
    body = json.dumps(HELLO).encode()
    got, _, answer = await post(api, CHAT, body, Host="evil.example")
    error = openai_error(403, got, answer)
    assert error["code"] == "host_not_allowed" and error["type"] == "permission_error"
    got, _, answer = await post(api, CHAT, body, Origin="https://evil.example")
    assert openai_error(403, got, answer)["code"] == "origin_not_allowed"


async def test_token_is_required_when_set(guarded: RunningServer) -> None:
    base = guarded.http + "/v1"
    wrong = openai.AsyncOpenAI(base_url=base, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        await wrong.models.list()
    assert refused.value.status_code == 401 and refused.value.code == "unauthorized"
    right = openai.AsyncOpenAI(base_url=base, api_key=TOKEN, max_retries=0)
    reply = await right.chat.completions.create(
        model="assistant", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content == "Hello there, friend."


async def test_keep_alive_connection_serves_other_routes(api: RunningServer) -> None:
    """A kept-alive connection that began with /v1/ still gets the widget, /healthz and
    /metrics right (answered by the WebSocket server's routes)."""
    connector = aiohttp.TCPConnector(limit=1)  # one connection for every request
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.post(api.http + CHAT, json=HELLO) as response:
            assert response.status == 200
            await response.read()
        async with session.get(api.http + "/healthz") as response:
            assert response.status == 200 and (await response.json())["status"] == "ready"
        async with session.get(api.http + "/chinwag-widget.js") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/javascript")
            assert b"customElements" in await response.read()
        async with session.get(api.http + "/no-such-file") as response:
            assert response.status == 404
            assert (await response.json())["error"]["code"] == "not_found"
        async with session.post(api.http + "/healthz") as response:
            assert response.status == 405
        async with session.get(api.http + "/v1/models") as response:
            assert response.status == 200
        assert len(connector._conns) <= 1


async def test_speech_streams_phrase_by_phrase() -> None:
    """The first audio leaves before the last phrase is synthesized."""
    synthesizer = FakeSynthesizer(delay_s=0.2)
    async with serving(fake_engines(synthesizer=synthesizer)) as running:
        text = "One sentence here. Another sentence there. A third one now. And a fourth."
        body = {"model": "tts-1", "input": text, "voice": "alloy", "response_format": "pcm"}
        async with (
            aiohttp.ClientSession() as session,
            session.post(running.http + "/v1/audio/speech", json=body) as response,
        ):
            assert response.status == 200 and response.headers["Content-Type"] == "audio/pcm"
            first = await response.content.readany()
            phrases_when_first_arrived = len(synthesizer.texts)
            rest = await response.read()
        assert first and rest
        assert len(synthesizer.texts) == 4
        assert phrases_when_first_arrived < 4


class RecordingChatModel(FakeChatModel):
    """Records how each reply ended: (cancelled, tokens sent)."""

    def __init__(self, reply: str, token_delay_s: float) -> None:
        super().__init__(reply, token_delay_s=token_delay_s)
        self.ended: list[tuple[bool, int]] = []

    def end(self, generation: Generation, *, cancelled: bool = False) -> GenerationStats:
        stats = super().end(generation, cancelled=cancelled)
        self.ended.append((cancelled, stats.completion_tokens))
        return stats


async def test_disconnect_mid_stream_stops_the_generation() -> None:
    chat = RecordingChatModel("word " * 2000, token_delay_s=0.01)
    async with serving(fake_engines(chat)) as running:
        runner = running.app.chat
        assert runner is not None
        body = {**HELLO, "stream": True, "max_tokens": 2000}
        tasks_before = len(asyncio.all_tasks())
        async with (
            aiohttp.ClientSession() as session,
            session.post(running.http + CHAT, json=body) as response,
        ):
            while b"word" not in await response.content.readline():
                pass  # until the first words: the reply is being generated
            assert runner.busy
        assert await eventually(lambda: not runner.busy)
        cancelled, sent = chat.ended[-1]
        assert cancelled and sent < 2000
        assert await eventually(lambda: len(asyncio.all_tasks()) <= tasks_before)


async def eventually(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Whether the condition holds within the time (polled: there is no event for it)."""
    for _ in range(int(timeout_s / 0.02)):
        if condition():
            return True
        await asyncio.sleep(0.02)
    return condition()


async def test_a_figure_the_facts_do_not_hold_stops_the_reply_over_http() -> None:
    # The receptionist has site knowledge: the model may not state a number that neither the
    # question nor the facts it was given hold (server/pipeline/figures.py), here as elsewhere.
    chat = RecordingChatModel("The town has a population of 1,075. " + "More. " * 300, 0.001)
    async with serving(fake_engines(chat)) as running:
        question = "How many people live in this town?"
        body = {"model": "receptionist", "messages": [{"role": "user", "content": question}]}
        status, _, raw = await post(running, CHAT, json.dumps(body).encode())
        assert status == 200, raw
        content = json.loads(raw)["choices"][0]["message"]["content"]
        assert content.startswith("The town has a population of \u2026 Sorry, I don't know that.")
        assert "1,075" not in content and "01632 960 412" in content  # where to ask
        cancelled, sent = chat.ended[-1]
        assert cancelled and sent < 300  # the model was stopped at the figure
