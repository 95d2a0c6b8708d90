"""The MQTT bridge end to end: a real Mosquitto on a free loopback port, the real models, and
aiomqtt (or mosquitto_pub / mosquitto_sub) as the devices."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import re
import shutil
import sys
import urllib.request
import uuid
import wave
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import pytest
from websockets.asyncio.client import connect

from clients.talk import read_wav, talk_turn
from server import PROJECT_ROOT
from server.app import Engines
from server.config import ConfigError, MqttSettings, Settings, load_settings
from server.protocol.mqtt import BrokerAddress, Topics, broker_address, valid_level
from server.transports.mqtt import MqttBridge, OutBox, Outgoing
from tests.conftest import RunningServer, make_settings, start_server
from tests.mqtt_broker import MosquittoBroker, free_port, running_broker
from tests.speech import recording, to_16k_float, wer

# Generous: two cores shared with other test runs. Nothing here asserts a duration.
TIMEOUT = 180.0


# --- helpers -------------------------------------------------------------------------------


class Recorder:
    """A device: records every message of its subscriptions, in order."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.messages: list[aiomqtt.Message] = []
        self._arrived = asyncio.Event()
        self.pumping: asyncio.Task[None] | None = None

    async def pump(self) -> None:
        async for message in self.client.messages:
            self.messages.append(message)
            self._arrived.set()

    def mark(self) -> int:
        return len(self.messages)

    def all(
        self, topic: str, since: int = 0, where: Callable[[Any], bool] | None = None
    ) -> list[aiomqtt.Message]:
        return [
            m
            for m in self.messages[since:]
            if m.topic.matches(topic) and (where is None or where(body(m)))
        ]

    async def wait_for(
        self,
        topic: str,
        since: int = 0,
        where: Callable[[Any], bool] | None = None,
        timeout: float = TIMEOUT,
        count: int = 1,
    ) -> aiomqtt.Message:
        """The first matching message, once `count` of them have arrived."""
        async with asyncio.timeout(timeout):
            while True:
                found = self.all(topic, since, where)
                if len(found) >= count:
                    return found[0]
                self._arrived.clear()
                await self._arrived.wait()

    async def publish(self, topic: str, payload: str | bytes) -> None:
        await self.client.publish(topic, payload, qos=1)

    async def ask(self, site: str, text: str, ask_id: str) -> dict[str, Any]:
        since = self.mark()
        await self.publish(f"chinwag/{site}/ask", json.dumps({"text": text, "id": ask_id}))
        reply = await self.wait_for(f"chinwag/{site}/reply", since, lambda b: b["id"] == ask_id)
        answer: dict[str, Any] = body(reply)
        return answer


def body(message: aiomqtt.Message) -> Any:
    assert isinstance(message.payload, bytes)
    try:
        return json.loads(message.payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return message.payload.decode("utf-8", errors="replace")


@contextlib.asynccontextmanager
async def device(port: int, *topics: str) -> AsyncIterator[Recorder]:
    client = aiomqtt.Client("127.0.0.1", port, identifier=f"test-{uuid.uuid4().hex[:8]}")
    async with client:
        recorder = Recorder(client)
        for topic in topics or ("chinwag/#", "hermes/#"):
            await client.subscribe(topic, qos=1)
        recorder.pumping = pump = asyncio.create_task(recorder.pump())
        try:
            yield recorder
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)


async def wait_online(recorder: Recorder, since: int = 0) -> None:
    # Retained: a device that subscribes after the bridge said it still hears it.
    await recorder.wait_for("chinwag/status", since, lambda b: b == "online")


@dataclass
class Bridged:
    running: RunningServer
    bridge: MqttBridge
    task: asyncio.Task[None]


@contextlib.asynccontextmanager
async def bridged_server(engines: Engines, settings: Settings) -> AsyncIterator[Bridged]:
    running = await start_server(settings, engines)
    bridge = MqttBridge(running.app, settings.mqtt)
    task = asyncio.create_task(bridge.run(), name="mqtt-bridge")
    try:
        yield Bridged(running, bridge, task)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await running.web.close()
        running.app.close()


@pytest.fixture(scope="module")
def prompts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped personas with short replies, to keep the file quick."""
    directory = tmp_path_factory.mktemp("prompts") / "prompts"
    # The whole folder: personas name files beside them (knowledge, the devices file).
    shutil.copytree(PROJECT_ROOT / "prompts", directory)
    for path in directory.glob("*.toml"):
        text = re.sub(r"max_tokens = \d+", "max_tokens = 40", path.read_text(encoding="utf-8"))
        path.write_text(text, encoding="utf-8")
    return directory


def bridge_settings(url: str, prompts: Path, **mqtt: Any) -> Settings:
    return make_settings(
        mqtt={"url": url, "client_id": f"chinwag-{uuid.uuid4().hex[:8]}", **mqtt},
        prompts={"directory": str(prompts)},
    )


@pytest.fixture(scope="module")
async def broker(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MosquittoBroker]:
    async with running_broker(tmp_path_factory.mktemp("mosquitto")) as started:
        yield started


@pytest.fixture(scope="module")
async def bridged(
    broker: MosquittoBroker, engines: Engines, prompts: Path
) -> AsyncIterator[Bridged]:
    settings = bridge_settings(broker.url, prompts, reconnect_max_s=2.0)
    async with bridged_server(engines, settings) as served, device(broker.port) as watcher:
        await wait_online(watcher)
        yield served


@pytest.fixture
async def mqtt(bridged: Bridged, broker: MosquittoBroker) -> AsyncIterator[Recorder]:
    async with device(broker.port) as recorder:
        yield recorder
    assert not bridged.task.done(), "the bridge stopped"


def wav_audio(payload: bytes) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(payload)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth()) == (1, 2)
        rate = wav.getframerate()
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    return pcm, rate


async def heard(engines: Engines, payload: bytes) -> str:
    pcm, rate = wav_audio(payload)
    assert len(pcm) > 0.3 * rate, "under 0.3 s of audio"
    transcript = await asyncio.to_thread(engines.transcriber.transcribe, to_16k_float(pcm, rate))
    return transcript.text


# --- through a shared bridge ---------------------------------------------------------------


async def test_ask_streams_a_reply(mqtt: Recorder, bridged: Bridged) -> None:
    since = mqtt.mark()
    await mqtt.publish("chinwag/kitchen/ask", "What is a rainbow?")  # plain text
    reply = body(await mqtt.wait_for("chinwag/kitchen/reply", since))
    assert reply["text"].strip() and reply["status"] == "completed", reply
    deltas = [body(m) for m in mqtt.all("chinwag/kitchen/reply/delta", since)]
    assert deltas and all(d["id"] == reply["id"] for d in deltas)
    assert "".join(d["text"] for d in deltas) == reply["text"]
    # JSON with an id: the id comes back.
    answer = await mqtt.ask("kitchen", "And what is a cloud?", "q-7")
    assert answer["text"].strip() and answer["status"] == "completed"
    # Its session's states: thinking while answering, then idle.
    session = bridged.bridge.session("kitchen")
    assert session is not None

    def ours(b: Any) -> bool:
        return bool(b["session_id"] == session.id)

    # Events have their own queue: the last states may come after the reply.
    await mqtt.wait_for("chinwag/kitchen/event/state", since, ours, count=4)
    states = [b["state"] for b in map(body, mqtt.all("chinwag/kitchen/event/state", since, ours))]
    assert states == ["thinking", "idle", "thinking", "idle"], states


async def test_say_returns_a_wav_that_transcribes_back(mqtt: Recorder, engines: Engines) -> None:
    text = "The kitchen timer has finished."
    since = mqtt.mark()
    await mqtt.publish("chinwag/kitchen/say", text)
    audio = await mqtt.wait_for("chinwag/kitchen/audio", since)
    assert isinstance(audio.payload, bytes) and audio.payload[:4] == b"RIFF"
    assert wer([text], [await heard(engines, audio.payload)]) <= 0.2


async def test_events_of_a_voice_turn_over_websocket(
    mqtt: Recorder, bridged: Bridged, broker: MosquittoBroker
) -> None:
    rec = recording("spk1_snt1.wav")
    pcm, rate = read_wav(rec.path)
    since = mqtt.mark()
    async with connect(bridged.running.url, max_size=None) as ws:
        session_id = json.loads(await ws.recv())["session_id"]
        for message in (
            {"type": "session.start", "site": "kitchen"},
            {"type": "session.update", "generation": {"max_tokens": 40, "temperature": 0.0}},
        ):
            await ws.send(json.dumps(message))
            assert json.loads(await ws.recv())["type"].startswith("session.")
        result = await talk_turn(ws, pcm, rate, timeout=240)
    assert result.status == "completed" and result.reply.strip()

    def ours(b: Any) -> bool:
        return isinstance(b, dict) and b.get("session_id") == session_id

    done = await mqtt.wait_for("chinwag/kitchen/event/reply_done", since, ours)
    assert body(done)["text"] == result.reply
    await mqtt.wait_for(
        "chinwag/kitchen/event/state", since, lambda b: ours(b) and b["state"] == "idle"
    )
    kinds = [
        m.topic.value.rsplit("/", 1)[1] for m in mqtt.all("chinwag/kitchen/event/+", since, ours)
    ]
    expected = ["speech_started", "speech_stopped", "transcript", "reply_started",
                "reply_delta", "output_audio_start", "output_audio_done", "reply_done"]  # fmt: skip
    assert set(expected) <= set(kinds), kinds
    assert kinds.index("speech_started") < kinds.index("transcript") < kinds.index("reply_started")
    transcript = body(mqtt.all("chinwag/kitchen/event/transcript", since, ours)[0])
    assert wer([rec.text], [transcript["text"]]) <= 0.2
    states = [b["state"] for b in map(body, mqtt.all("chinwag/kitchen/event/state", since, ours))]
    assert states == ["listening", "thinking", "speaking", "idle"], states
    # Rhasspy satellites hear the transcript too.
    captured = body(await mqtt.wait_for("hermes/asr/textCaptured", since, ours_hermes(session_id)))
    assert captured["text"] == transcript["text"].strip() and captured["siteId"] == "kitchen"
    assert captured["likelihood"] > 0 and captured["seconds"] >= 0


def ours_hermes(session_id: str) -> Callable[[Any], bool]:
    return lambda b: isinstance(b, dict) and b.get("sessionId") == session_id


async def test_hermes_tts_say(mqtt: Recorder, engines: Engines) -> None:
    text = "Dinner is ready."
    since = mqtt.mark()
    say = {"text": text, "siteId": "satellite1", "id": "say-42", "lang": "en", "sessionId": "s-9"}
    await mqtt.publish("hermes/tts/say", json.dumps(say))
    finished = await mqtt.wait_for("hermes/tts/sayFinished", since)
    assert body(finished) == {"id": "say-42", "sessionId": "s-9"}
    played = mqtt.all("hermes/audioServer/satellite1/playBytes/say-42", since)
    assert len(played) == 1 and isinstance(played[0].payload, bytes)
    assert mqtt.messages.index(played[0]) < mqtt.messages.index(finished)  # audio, then done
    assert wer([text], [await heard(engines, played[0].payload)]) <= 0.2


@pytest.mark.parametrize(
    ("topic", "payload", "code"),
    [
        ("chinwag/lobby/ask", b"\xff\xfe not utf-8", "invalid_message"),
        ("chinwag/lobby/ask", b'{"text": "unfinished', "invalid_json"),
        ("chinwag/lobby/ask", b'{"id": "no-text"}', "invalid_message"),
        ("chinwag/lobby/ask", b'{"text": 5}', "invalid_message"),
        ("chinwag/lobby/ask", b'{"text": "   "}', "invalid_message"),
        ("chinwag/lobby/ask", b"", "invalid_message"),
        ("chinwag/lobby/ask", b"x" * 1001, "text_too_long"),
        ("chinwag/lobby/say", b"y" * 5000, "frame_too_large"),
        ("chinwag/lobby/say", b"***", "invalid_message"),
        ("chinwag/lobby/say", b'{"text": "hi", "sample_rate": 3}', "invalid_audio_format"),
    ],
)
async def test_malformed_payloads_get_an_error(
    mqtt: Recorder, topic: str, payload: bytes, code: str
) -> None:
    since = mqtt.mark()
    await mqtt.publish(topic, payload)
    error = body(await mqtt.wait_for("chinwag/lobby/error", since))
    assert error["code"] == code and error["message"], error


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b'{"text": "hi", "siteId": "a/b"}', "invalid_message"),
        (b'{"text": "hi", "siteId": "#"}', "invalid_message"),
        (b"not json", "invalid_json"),
        (b'{"siteId": "lobby"}', "invalid_message"),
    ],
)
async def test_malformed_hermes_say_gets_an_error(
    mqtt: Recorder, payload: bytes, code: str
) -> None:
    since = mqtt.mark()
    await mqtt.publish("hermes/tts/say", payload)
    error = body(await mqtt.wait_for("hermes/error/tts", since))
    assert error["context"] == code and error["error"], error
    # Ours came first: a site's error topic, or chinwag/error when there is no valid site.
    ours = mqtt.all("chinwag/error", since) + mqtt.all("chinwag/lobby/error", since)
    assert [body(m)["code"] for m in ours] == [code]


async def test_two_sites_at_once_keep_separate_conversations(
    mqtt: Recorder, bridged: Bridged
) -> None:
    bedroom, garage = await asyncio.gather(
        mqtt.ask("bedroom", "Tell me about the moon.", "b-1"),
        mqtt.ask("garage", "How do I change a tyre?", "g-1"),
    )
    assert bedroom["text"].strip() and garage["text"].strip()
    again = await mqtt.ask("bedroom", "And the sun?", "b-2")
    assert again["text"].strip()
    sessions = {site: bridged.bridge.session(site) for site in ("bedroom", "garage")}
    history = {
        site: [m.content for m in s.history if m.role == "user"]
        for site, s in sessions.items()
        if s is not None
    }
    assert history == {
        "bedroom": ["Tell me about the moon.", "And the sun?"],
        "garage": ["How do I change a tyre?"],
    }
    # Each site's replies went to its own topics only.
    assert not mqtt.all("chinwag/garage/reply", where=lambda b: b["id"].startswith("b-"))


# --- brokers that go away ------------------------------------------------------------------


async def test_broker_restart_mid_run(engines: Engines, prompts: Path, tmp_path: Path) -> None:
    broker = MosquittoBroker(tmp_path / "broker")
    await broker.start()
    settings = bridge_settings(broker.url, prompts, reconnect_max_s=2.0)
    try:
        async with bridged_server(engines, settings) as bridged:
            async with device(broker.port) as mqtt:
                await wait_online(mqtt)
                since = mqtt.mark()
                await mqtt.publish("chinwag/porch/ask", json.dumps({"text": "Hi!", "id": "a-1"}))
                await mqtt.wait_for("chinwag/porch/reply/delta", since)
                await broker.stop()  # while the reply streams
                assert mqtt.pumping is not None
                with pytest.raises(aiomqtt.MqttError):  # the device sees it go
                    await mqtt.pumping
            with pytest.raises(aiomqtt.MqttError):  # the broker is away: asking fails
                async with device(broker.port):
                    pass
            await broker.start()  # the same port
            async with device(broker.port) as mqtt:
                await wait_online(mqtt)  # retained messages died with the broker: this is new
                answer = await mqtt.ask("porch", "Are you back?", "a-2")
                assert answer["text"].strip() and answer["status"] == "completed"
            assert bridged.bridge.connections >= 2 and not bridged.task.done()
    finally:
        await broker.stop()


async def test_broker_down_at_start_up(engines: Engines, prompts: Path, tmp_path: Path) -> None:
    port = free_port()
    settings = bridge_settings(f"mqtt://127.0.0.1:{port}", prompts, reconnect_max_s=1.0)
    retries = RetryWatch(3)
    bridge_log = logging.getLogger("server.transports.mqtt")
    level = bridge_log.level
    bridge_log.setLevel(logging.INFO)
    bridge_log.addHandler(retries)
    try:
        await down_then_up(engines, settings, retries, tmp_path / "late", port)
    finally:
        bridge_log.removeHandler(retries)
        bridge_log.setLevel(level)


async def down_then_up(
    engines: Engines, settings: Settings, retries: RetryWatch, directory: Path, port: int
) -> None:
    async with bridged_server(engines, settings) as bridged:
        health = await asyncio.to_thread(urlopen_status, f"{bridged.running.http}/healthz")
        assert health == 200
        async with asyncio.timeout(TIMEOUT):
            await retries.reached.wait()  # it keeps trying
        assert not bridged.task.done() and bridged.bridge.connections == 0
        async with (
            running_broker(directory, port) as broker,
            device(broker.port) as mqtt,
        ):
            await wait_online(mqtt)
            answer = await mqtt.ask("attic", "Hello there.", "late-1")
            assert answer["text"].strip()
            since = mqtt.mark()
            bridged.task.cancel()  # a clean shutdown says goodbye
            await asyncio.gather(bridged.task, return_exceptions=True)
            await mqtt.wait_for("chinwag/status", since, lambda b: b == "offline")


class RetryWatch(logging.Handler):
    """Sets `reached` once the bridge has announced `count` reconnection attempts."""

    def __init__(self, count: int) -> None:
        super().__init__(logging.INFO)
        self.count = count
        self.reached = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "next attempt" in record.getMessage():
            self.count -= 1
            if self.count <= 0:
                self.reached.set()


def urlopen_status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=30) as response:
        return int(response.status)


# --- the outside check: chinwag serve, mosquitto_pub, mosquitto_sub ------------------------


async def run(*argv: str, timeout: float = TIMEOUT) -> str:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(timeout):
        out, err = await process.communicate()
    assert process.returncode == 0, (argv, err.decode())
    return out.decode()


@pytest.mark.skipif(not shutil.which("mosquitto_sub"), reason="needs Debian's mosquitto-clients")
async def test_chinwag_serve_with_mosquitto_pub_and_sub(prompts: Path, tmp_path: Path) -> None:
    log_path = tmp_path / "server.log"
    async with running_broker(tmp_path / "broker") as broker:
        mqtt = ["-h", "127.0.0.1", "-p", str(broker.port)]
        with log_path.open("wb") as log_file:
            server = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "server", "serve", "--port", "0",
                "--ready-file", str(tmp_path / "port"), "--mqtt", broker.url,
                env={**os.environ, "CHINWAG_PROMPTS__DIRECTORY": str(prompts)},
                stdout=asyncio.subprocess.DEVNULL, stderr=log_file,
            )  # fmt: skip
        exited = asyncio.create_task(server.wait())
        try:
            online = asyncio.create_task(
                run("mosquitto_sub", *mqtt, "-C", "1", "-W", "170", "-t", "chinwag/status")
            )
            await asyncio.wait({online, exited}, return_when=asyncio.FIRST_COMPLETED)
            assert not exited.done(), log_path.read_text(errors="replace")[-3000:]
            assert (await online).strip() == "online"  # subscribed, and the models are loaded
            sub = asyncio.create_task(
                run("mosquitto_sub", *mqtt, "-i", "reply-sub", "-C", "1", "-W", "170",
                    "-t", "chinwag/kitchen/reply")
            )  # fmt: skip
            await broker.wait_for_log("reply-sub 0 chinwag/kitchen/reply")  # it listens
            await run("mosquitto_pub", *mqtt, "-q", "1", "-t", "chinwag/kitchen/ask",
                      "-m", "What is the capital of France?")  # fmt: skip
            reply = json.loads(await sub)
            assert reply["text"].strip() and reply["status"] == "completed", reply
        finally:
            if server.returncode is None:
                server.terminate()
            async with asyncio.timeout(60):
                await exited
        assert server.returncode == 0, log_path.read_text(errors="replace")[-3000:]
        # A clean shutdown leaves a retained "offline".
        status = await run("mosquitto_sub", *mqtt, "-C", "1", "-W", "30", "-t", "chinwag/status")
        assert status.strip() == "offline"


# --- the pure parts ------------------------------------------------------------------------


def test_broker_urls() -> None:
    def address(url: str, **fields: Any) -> BrokerAddress:
        return broker_address(MqttSettings(url=url, **fields))

    assert address("mqtt://10.0.0.2") == BrokerAddress("10.0.0.2", 1883, False, None, None)
    assert address("mqtts://broker.lan") == BrokerAddress("broker.lan", 8883, True, None, None)
    assert address("mqtt://u%40x:p%3Aw@h:1884") == BrokerAddress("h", 1884, False, "u@x", "p:w")
    assert address("mqtt://u:p@h", username="v", password="q", tls=True) == BrokerAddress(
        "h", 8883, True, "v", "q"
    )
    assert "p:w" not in repr(address("mqtt://u:p%3Aw@h"))  # never logged
    for bad in ("http://h:1883", "mqtt://", "mqtt://h:99999", "mqtt://h/topic", "h:1883"):
        with pytest.raises(ConfigError):  # from the settings, or from the bridge's own parsing
            broker_address(load_settings(overrides={"mqtt": {"url": bad}}, environ={}).mqtt)
    with pytest.raises(ConfigError):
        Topics("chinwag/#")


def test_command_topics() -> None:
    topics = Topics("home/chinwag")
    assert topics.commands == ["home/chinwag/+/ask", "home/chinwag/+/say"]
    assert topics.command("home/chinwag/kitchen/ask") == ("kitchen", "ask")
    assert topics.command("home/chinwag/kitchen/reply") is None
    assert topics.command("other/chinwag/kitchen/say") is None
    assert [valid_level(s) for s in ("kitchen", "Küche 2", "a/b", "+", "#", "", "x" * 129)] == [
        True, True, False, False, False, False, False,
    ]  # fmt: skip


async def test_outbox_drops_the_oldest() -> None:
    box = OutBox("test", maxsize=16, max_bytes=100)
    for i in range(20):
        box.put(Outgoing("t", str(i).encode()))
    box.put(Outgoing("t", b"x" * 90))  # over the byte bound: older ones make room
    assert box.dropped > 4
    kept: list[bytes] = []
    while not box._queue.empty():
        kept.append(box._queue.get_nowait().payload)
    assert kept[-1] == b"x" * 90 and sum(map(len, kept)) <= 100
