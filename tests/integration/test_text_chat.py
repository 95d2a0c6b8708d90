"""The native protocol against a real server with the real default model."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from server.app import Engines
from tests.conftest import Client, RunningServer, make_settings, start_server

LONG_PROMPT = "Write a very long story about a dragon who learns to bake bread, with many details."


def http_get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


async def test_deltas_stream_before_done(client: Client) -> None:
    events = await client.ask("What is the capital of France?", id="q1")
    kinds = [e["type"] for e in events]
    assert kinds[0] == "reply.started" and events[0]["message_id"] == "q1"
    assert kinds[-1] == "reply.done"
    deltas = [e["text"] for e in events if e["type"] == "reply.delta"]
    assert len(deltas) >= 2, "the reply should stream in several deltas"
    done = events[-1]
    assert done["status"] == "completed"
    assert done["text"] == "".join(deltas) and done["text"].strip()
    assert done["usage"]["completion_tokens"] >= len(deltas) - 1
    assert done["usage"]["prompt_tokens"] > 0
    assert done["timings"]["first_token_ms"] <= done["timings"]["total_ms"]
    assert {e["reply_id"] for e in events} == {done["reply_id"]}


async def test_history_is_kept_and_prefix_comes_from_kv_cache(client: Client) -> None:
    first = (await client.ask("Hello, my name is Ada."))[-1]
    second = (await client.ask("What did I just tell you?"))[-1]
    # The second prompt holds the first exchange, and its shared prefix is not re-evaluated.
    assert second["usage"]["prompt_tokens"] > first["usage"]["prompt_tokens"]
    assert second["usage"]["cached_prompt_tokens"] >= first["usage"]["prompt_tokens"]


async def test_cancel_stops_generation_and_frees_the_model(client: Client) -> None:
    await client.send({"type": "session.update", "generation": {"max_tokens": 1000}})
    assert (await client.event())["type"] == "session.updated"
    await client.send({"type": "user.message", "text": LONG_PROMPT})
    events = await client.until("reply.delta")
    await client.send({"type": "cancel"})
    events += await client.until("reply.done")
    done = events[-1]
    assert done["status"] == "cancelled"
    assert done["usage"]["completion_tokens"] < 200
    # What was streamed before the cancel is the reply's text.
    streamed = "".join(e["text"] for e in events if e["type"] == "reply.delta")
    assert done["text"] == streamed
    # The model is free at once: the next reply completes normally.
    await client.send({"type": "session.update", "generation": {"max_tokens": 30}})
    await client.until("session.updated")
    after = (await client.ask("Say hello."))[-1]
    assert after["status"] == "completed" and after["text"].strip()


async def test_cancel_without_reply_is_an_error(client: Client) -> None:
    await client.send({"type": "cancel"})
    event = await client.event()
    assert event["type"] == "error" and event["code"] == "no_active_reply"


async def test_new_message_interrupts_the_reply_in_progress(client: Client) -> None:
    await client.send({"type": "session.update", "generation": {"max_tokens": 1000}})
    await client.until("session.updated")
    await client.send({"type": "user.message", "text": LONG_PROMPT})
    await client.until("reply.delta")
    await client.send({"type": "user.message", "text": "Stop. Say hi."})
    events = await client.until("reply.done")
    assert events[-1]["status"] == "cancelled"
    final = await client.until("reply.done")
    assert final[0]["type"] == "reply.started"
    assert final[-1]["status"] in {"completed"} and final[-1]["text"].strip()


async def test_two_sessions_at_once_both_complete(server: RunningServer) -> None:
    async def one(question: str) -> dict[str, Any]:
        async with connect(server.url) as ws:
            c = Client(ws)
            await c.until("session.started")
            await c.send({"type": "session.update", "generation": {"max_tokens": 60}})
            await c.until("session.updated")
            return (await c.ask(question))[-1]

    results = await asyncio.gather(
        one("Name a fruit."), one("Name a colour."), one("Name an animal.")
    )
    for done in results:
        assert done["status"] == "completed" and done["text"].strip()
    # The single model served them one after the other: someone waited in the queue.
    assert max(d["timings"]["queued_ms"] for d in results) > 0


async def test_persona_switch_and_unknown_persona(client: Client) -> None:
    await client.send({"type": "session.start", "persona": "receptionist"})
    started = await client.event()
    assert started["type"] == "session.started" and started["persona"] == "receptionist"
    await client.send({"type": "session.update", "persona": "pirate"})
    error = await client.event()
    assert error["type"] == "error" and error["code"] == "unknown_persona"
    assert error["source"] == "session.update"
    await client.send({"type": "session.update", "generation": {"temperature": "hot"}})
    error = await client.event()
    assert error["code"] == "invalid_message" and "temperature" in error["message"]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{oops", "invalid_json"),
        ('{"type": "dance"}', "unknown_type"),
        ('{"type": "user.message"}', "invalid_message"),
        ('{"type": "user.message", "text": ["a"]}', "invalid_message"),
        (json.dumps({"type": "user.message", "text": "x" * 1001}), "text_too_long"),
        ("x" * 5000, "frame_too_large"),
        (b"\x01\x02\x03\x04", "audio_not_started"),
    ],
)
async def test_bad_input_gets_an_error_and_the_session_goes_on(
    client: Client, frame: str | bytes, code: str
) -> None:
    await client.ws.send(frame)
    event = await client.event()
    assert event["type"] == "error" and event["code"] == code and event["message"]
    await client.send({"type": "session.update", "generation": {"max_tokens": 8}})
    await client.until("session.updated")
    done = (await client.ask("Hi"))[-1]
    assert done["status"] == "completed"


async def test_disconnect_mid_reply_leaks_nothing(server: RunningServer) -> None:
    baseline = len(asyncio.all_tasks())
    sessions_before = server.app.hub.count
    async with connect(server.url) as ws:
        c = Client(ws)
        await c.until("session.started")
        await c.send({"type": "session.update", "generation": {"max_tokens": 1000}})
        await c.until("session.updated")
        await c.send({"type": "user.message", "text": LONG_PROMPT})
        await c.until("reply.delta")
    for _ in range(100):
        if server.app.hub.count == sessions_before and len(asyncio.all_tasks()) <= baseline:
            break
        await asyncio.sleep(0.05)
    assert server.app.hub.count == sessions_before
    assert len(asyncio.all_tasks()) <= baseline
    # Another session still gets a full reply: the model was freed.
    async with connect(server.url) as ws:
        c = Client(ws)
        await c.until("session.started")
        done = (await c.ask("Hello"))[-1]
        assert done["status"] == "completed"


async def test_healthz_and_metrics(server: RunningServer, client: Client) -> None:
    await client.ask("Hi")
    status, content_type, body = await asyncio.to_thread(http_get, server.http + "/healthz")
    assert status == 200 and content_type == "application/json"
    health = json.loads(body)
    assert health["status"] == "ready" and health["llm"]["model"].endswith(".gguf")
    status, content_type, text = await asyncio.to_thread(http_get, server.http + "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    for name in (
        "chinwag_sessions_active ",
        "chinwag_turns_total{",
        "chinwag_time_to_first_token_seconds_bucket",
        "chinwag_tokens_per_second_count",
    ):
        assert name in text
    status, _, _ = await asyncio.to_thread(http_get, server.http + "/nowhere")
    assert status == 404


async def test_healthz_is_503_while_loading() -> None:
    import threading

    from server.app import App, load_into
    from server.prompts import PersonaLibrary
    from server.transports.websocket import WebSocketServer

    settings = make_settings()
    release = threading.Event()

    def slow_loader(_settings: object) -> Engines:
        release.wait(30)
        raise RuntimeError("no models in this test")

    app = App(
        settings=settings, personas=PersonaLibrary.load(settings.prompts.directory, "assistant")
    )
    web = WebSocketServer(app)
    await web.start("127.0.0.1", 0)
    loading = asyncio.create_task(load_into(app, slow_loader))
    try:
        status, _, body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{web.port}/healthz")
        assert status == 503 and json.loads(body)["status"] == "loading"
    finally:
        release.set()
        with pytest.raises(RuntimeError):
            await loading
        status, _, body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{web.port}/healthz")
        assert status == 503 and json.loads(body)["status"] == "failed"
        await web.close()


async def test_token_and_session_limit(engines: Engines) -> None:
    running = await start_server(
        make_settings(server={"token": "letmein"}, limits={"max_sessions": 1}), engines
    )
    try:
        with pytest.raises(InvalidStatus) as info:
            async with connect(running.url):
                pass
        assert info.value.response.status_code == 401
        headers = {"Authorization": "Bearer letmein"}
        async with connect(running.url, additional_headers=headers) as ws:
            assert json.loads(await ws.recv())["type"] == "session.started"
            with pytest.raises(InvalidStatus) as info:
                async with connect(running.url, additional_headers=headers):
                    pass
            assert info.value.response.status_code == 503
    finally:
        await running.web.close()


async def test_other_web_origins_need_to_be_allowed(server: RunningServer) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with connect(server.url, origin="http://evil.example"):  # type: ignore[arg-type]
            pass
    assert info.value.response.status_code == 403
    assert b"origin_not_allowed" in info.value.response.body
    # The page chinwag serves itself (same origin) and clients without an Origin get in.
    same = f"http://127.0.0.1:{server.web.port}"
    async with connect(server.url, origin=same) as ws:  # type: ignore[arg-type]
        assert json.loads(await ws.recv())["type"] == "session.started"
    server.app.settings.server.allowed_origins.append("http://intranet.example")
    try:
        async with connect(server.url, origin="http://intranet.example") as ws:  # type: ignore[arg-type]
            assert json.loads(await ws.recv())["type"] == "session.started"
    finally:
        server.app.settings.server.allowed_origins.remove("http://intranet.example")
