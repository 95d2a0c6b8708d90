"""End-to-end fuzz (issue 17): a corpus of hostile inputs, hand-written and generated, against a
real server over its three ways in: the native WebSocket protocol, /v1/realtime, and MQTT
through a real Mosquitto broker. After each input the same connection (or MQTT site) must
still answer a normal request. Fake engines: the decoders and transports are under test, and
the corpus runs in seconds."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiomqtt
import pytest
from websockets.asyncio.client import connect

from server.errors import ChinwagError
from server.protocol import native as proto
from server.protocol import realtime as rt
from server.transports.mqtt import MqttBridge
from tests.conftest import Client, RunningServer, fake_engines, make_settings, start_server
from tests.integration.test_hostile_input import (
    BAD_JSON,
    BAD_UPDATES,
    NESTED_ERRORS,
    RealtimeClient,
)
from tests.mqtt_broker import MosquittoBroker, running_broker

SEED = 17
GENERATED = 120  # per way in
CHECK_TIMEOUT = 15.0

# --- the corpus ------------------------------------------------------------------------------

HAND_WRITTEN: list[str | bytes] = [
    *BAD_JSON,
    "",
    " ",
    "null",
    "[]",
    '"type"',
    "{}",
    '{"type": null}',
    '{"type": ["user.message"]}',
    '{"type": "user.message"}',
    '{"type": "user.message", "text": ""}',
    '{"type": "user.message", "text": "' + "x" * 5000 + '"}',
    '{"type": "user.message", "text": "hi", "id": ""}',
    '{"type": "user.message", "text": "hi", "id": "' + "i" * 500 + '"}',
    '{"type": "audio.start", "sample_rate": 0}',
    '{"type": "audio.start", "sample_rate": 16000, "vad": {"threshold": 7}}',
    '{"type": "audio.start", "sample_rate": 1e308}',
    '{"type": "audio.stop"}',
    '{"type": "say", "text": "..."}',
    '{"type": "say", "text": "Hello.", "sample_rate": -1}',
    '{"type": "playback", "stream_id": "x", "played_ms": -5}',
    '{"type": "playback", "stream_id": "x", "played_ms": 1e300}',
    '{"type": "session.update", "generation": {"max_tokens": 0}}',
    '{"type": "session.update", "generation": {"temperature": "hot"}}',
    '{"type": "session.update", "generation": [1, 2]}',
    '{"type": "session.start", "persona": "../../etc/passwd"}',
    '{"type": "session.start", "persona": "pirate"}',
    '{"type": "cancel", "extra": true}',
    '{"type": "conversation.item.create", "item": {"type": "message", "role": "user", '
    '"content": [{"type": "input_audio", "audio": ""}]}}',
    '{"type": "conversation.item.create", "item": {"type": "message", "role": "user", '
    '"content": [{"type": "input_audio", "audio": "AAAA"}]}}',
    '{"type": "conversation.item.create", "item": {"type": "message", "role": "tool"}}',
    '{"type": "conversation.item.create", "item": {"type": "function_call"}}',
    '{"type": "conversation.item.truncate", "item_id": "nope", "audio_end_ms": 10}',
    '{"type": "conversation.item.delete", "item_id": 5}',
    '{"type": "input_audio_buffer.append", "audio": "' + "A" * 2000 + '"}',
    '{"type": "input_audio_buffer.commit"}',
    '{"type": "input_audio_buffer.clear"}',
    '{"type": "response.cancel"}',
    '{"type": "response.create", "response": {"output_modalities": "text"}}',
    '{"type": "transcription_session.update"}',
    *(json.dumps({"type": "session.update", "session": s}) for s, _, _ in BAD_UPDATES),
    *(json.dumps({**e, "event_id": "n"}) for e, _ in NESTED_ERRORS),
    "\ufeff{}",
    '{"type": "user.message", "text": "\\u0000\\u001b[2J"}',
    b"\x00\x01",
    b"\x01",
    b"\xff" * 3,
]  # fmt: skip

MESSAGES: list[dict[str, Any]] = [
    {"type": "user.message", "text": "hello", "id": "m1"},
    {"type": "session.update", "generation": {"max_tokens": 20, "temperature": 0.5}},
    {"type": "session.start", "persona": "assistant", "site": "kitchen"},
    {"type": "audio.start", "sample_rate": 16000, "mode": "push_to_talk",
     "vad": {"silence_ms": 500}},
    {"type": "say", "text": "Timer done.", "id": "s1"},
    {"type": "playback", "stream_id": "r1", "played_ms": 10},
    {"type": "session.update", "session": {"audio": {"input": {"turn_detection": {
        "type": "server_vad", "threshold": 0.5, "silence_duration_ms": 500}}}}},
    {"type": "conversation.item.create", "item": {"type": "message", "role": "user",
        "content": [{"type": "input_text", "text": "hi"}]}},
    {"type": "conversation.item.truncate", "item_id": "x", "audio_end_ms": 0},
    {"type": "response.create", "response": {"output_modalities": ["text"]}},
    {"text": "What time is it?", "id": "q-1", "siteId": "kitchen", "sessionId": "s"},
]  # fmt: skip


def any_json(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value, sometimes odd: huge or negative numbers, control characters."""
    pick = rng.randrange(10 if depth < 3 else 6)
    if pick == 0:
        return None
    if pick == 1:
        return rng.choice([True, False])
    if pick == 2:
        return rng.choice([0, -1, 1, 2**31, -(2**63), 10**30, 24000, 16000])
    if pick == 3:
        return rng.choice([0.0, -0.5, 0.5, 1.0, 1e308, -1e-308, 5.0])
    if pick in (4, 5):
        alphabet = 'ab \x00\x1f\u00e9\u202e\U0001f600\ufffd/+#"\\'
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))
    if pick in (6, 7):
        return [any_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(["type", "text", "id", "x", ""]): any_json(rng, depth + 1)
            for _ in range(rng.randrange(4))}  # fmt: skip


def mutate(rng: random.Random, message: dict[str, Any]) -> dict[str, Any]:
    """A valid message with one field removed, replaced or added, at any depth."""
    out: dict[str, Any] = json.loads(json.dumps(message))
    target = out
    while isinstance(target, dict) and target and rng.random() < 0.5:
        key = rng.choice(list(target))
        if not isinstance(target[key], dict):
            break
        target = target[key]
    action = rng.randrange(3)
    if action == 0 and target:
        target.pop(rng.choice(list(target)))
    elif action == 1 and target:
        target[rng.choice(list(target))] = any_json(rng)
    else:
        target[rng.choice(["extra", "type", "event_id", "text"])] = any_json(rng)
    return out


def generated(seed: int, count: int) -> Iterator[str | bytes]:
    rng = random.Random(seed)
    for _ in range(count):
        kind = rng.randrange(6)
        if kind == 0:
            yield bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        elif kind == 1:
            text = json.dumps(mutate(rng, rng.choice(MESSAGES)))
            cut = rng.randrange(len(text))
            yield text[:cut] + text[cut + 1 :]  # one character dropped: mostly bad JSON
        elif kind == 2:
            yield json.dumps(any_json(rng))
        else:
            yield json.dumps(mutate(rng, rng.choice(MESSAGES)), ensure_ascii=rng.random() < 0.5)


CORPUS: list[str | bytes] = [*HAND_WRITTEN, *generated(SEED, GENERATED)]


# --- the server --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def broker(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MosquittoBroker]:
    async with running_broker(tmp_path_factory.mktemp("fuzz-broker")) as running:
        yield running


@pytest.fixture(scope="module")
async def fuzz_server(broker: MosquittoBroker) -> AsyncIterator[RunningServer]:
    settings = make_settings(
        limits={"max_message_bytes": 512 * 1024},
        mqtt={"url": broker.url, "hermes": True, "client_id": "chinwag-fuzz"},
    )
    running = await start_server(settings, fake_engines())
    bridge = asyncio.create_task(MqttBridge(running.app, settings.mqtt).run())
    yield running
    bridge.cancel()
    await asyncio.gather(bridge, return_exceptions=True)
    await running.web.close()
    running.app.close()


# --- native ----------------------------------------------------------------------------------


async def native_still_answers(client: Client, n: int) -> None:
    ping = f"ping-{n}"
    await client.send({"type": "user.message", "text": "Are you there?", "id": ping})
    async with asyncio.timeout(CHECK_TIMEOUT):
        while True:
            event = await client.event()
            if event["type"] == "reply.started" and event.get("message_id") == ping:
                break
        while (event := await client.event())["type"] != "reply.done":
            pass
    assert event["status"] == "completed" and event["text"].strip()


async def test_native_survives_the_corpus(fuzz_server: RunningServer) -> None:
    async with connect(fuzz_server.url, max_size=None) as ws:
        client = Client(ws)
        await client.until("session.started", timeout=10)
        for n, frame in enumerate(CORPUS):
            await ws.send(frame)
            try:
                await native_still_answers(client, n)
            except (AssertionError, TimeoutError) as exc:
                raise AssertionError(f"after input {n}: {frame[:200]!r}") from exc


# --- Realtime --------------------------------------------------------------------------------


async def realtime_still_answers(client: RealtimeClient, n: int) -> None:
    item = f"ping_{n}"
    await client.send({"type": "response.cancel"})  # one a corpus event may have started
    await client.send(
        {
            "type": "conversation.item.create",
            "item": {"id": item, "type": "message", "role": "user",
                     "content": [{"type": "input_text", "text": "Are you there?"}]},
        }
    )  # fmt: skip
    await client.send({"type": "response.create", "event_id": item})
    async with asyncio.timeout(CHECK_TIMEOUT):
        while True:
            event = await client.event(CHECK_TIMEOUT)
            if event["type"] == "conversation.item.added" and event["item"]["id"] == item:
                break
        while True:
            event = await client.event(CHECK_TIMEOUT)
            if event["type"] == "response.done" and event["response"]["status"] == "completed":
                return


async def test_realtime_survives_the_corpus(fuzz_server: RunningServer) -> None:
    async with connect(f"{fuzz_server.url}v1/realtime", max_size=None) as ws:
        client = RealtimeClient(ws)
        assert (await client.event())["type"] == "session.created"
        for n, frame in enumerate(CORPUS):
            await ws.send(frame)
            try:
                await realtime_still_answers(client, n)
            except (AssertionError, TimeoutError) as exc:
                raise AssertionError(f"after input {n}: {frame[:200]!r}") from exc


# --- MQTT ------------------------------------------------------------------------------------


class Device:
    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.queue: asyncio.Queue[aiomqtt.Message] = asyncio.Queue()

    async def pump(self) -> None:
        async for message in self.client.messages:
            self.queue.put_nowait(message)

    async def wait(self, topic: str, predicate: Any = None) -> Any:
        async with asyncio.timeout(CHECK_TIMEOUT):
            while True:
                message = await self.queue.get()
                if message.topic.value != topic or not isinstance(message.payload, bytes):
                    continue
                try:
                    body = json.loads(message.payload)
                except ValueError:
                    continue
                if predicate is None or predicate(body):
                    return body


async def test_mqtt_bad_json_gets_an_error_on_the_site(
    fuzz_server: RunningServer, broker: MosquittoBroker
) -> None:
    """Issue 17 item 6: deep nesting and a 5,000-digit integer are invalid_json on
    chinwag/<site>/error (they were a traceback in the log and nothing published)."""
    client = aiomqtt.Client("127.0.0.1", broker.port, identifier=f"fuzz-{uuid.uuid4().hex[:6]}")
    async with client:
        device = Device(client)
        await client.subscribe("chinwag/odd/#", qos=1)
        pump = asyncio.create_task(device.pump())
        try:
            for payload in (
                '{"text": "hi", "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
                '{"text": "hi", "id": ' + "9" * 5000 + "}",
            ):
                await client.publish("chinwag/odd/ask", payload.encode(), qos=1)
                error = await device.wait("chinwag/odd/error")
                assert error["code"] == "invalid_json" and error["source"] == "ask"
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)


async def test_mqtt_site_survives_the_corpus(
    fuzz_server: RunningServer, broker: MosquittoBroker
) -> None:
    """Every corpus input as an ask, a say and a Hermes say on one site; after each, the same
    site still answers an ask with its id."""
    client = aiomqtt.Client("127.0.0.1", broker.port, identifier=f"fuzz-{uuid.uuid4().hex[:6]}")
    async with client:
        device = Device(client)
        await client.subscribe("chinwag/fuzz/reply", qos=1)
        pump = asyncio.create_task(device.pump())
        try:
            for n, frame in enumerate(CORPUS):
                payload = (
                    frame.encode("utf-8", "surrogatepass") if isinstance(frame, str) else frame
                )
                topic = ("chinwag/fuzz/ask", "chinwag/fuzz/say", "hermes/tts/say")[n % 3]
                await client.publish(topic, payload, qos=1)
                ping = f"ping-{n}"
                ask = json.dumps({"text": "Are you there?", "id": ping}).encode()
                await client.publish("chinwag/fuzz/ask", ask, qos=1)
                try:
                    reply = await device.wait(
                        "chinwag/fuzz/reply", lambda body, ping=ping: body.get("id") == ping
                    )
                except TimeoutError as exc:
                    raise AssertionError(f"after input {n} on {topic}: {frame[:200]!r}") from exc
                assert reply["status"] == "completed" and reply["text"].strip()
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)


def test_the_corpus_holds_what_it_should() -> None:
    assert len(CORPUS) > 200
    assert any(isinstance(f, bytes) for f in CORPUS)
    # Some of it is valid: the fuzz also runs real turns in between.
    valid = 0
    for frame in CORPUS:
        try:
            proto.decode_client_message(frame, 1000)
            valid += 1
        except ChinwagError:
            continue
    assert valid > 5
    assert rt.decode_client_event(json.dumps(MESSAGES[7]))
