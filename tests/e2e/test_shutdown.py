"""SIGTERM while replies stream (issue 17 item 15): each turn ends with a status the client
sees (`reply.done` cancelled over WebSocket, the last `/reply` over MQTT) before the
connection closes with 1001. A real `chinwag serve` process, the real models, a real broker."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.e2e.test_mqtt import body, device, wait_online
from tests.mqtt_broker import running_broker

pytestmark = [pytest.mark.models, pytest.mark.slow]
LONG = "Write a very long story about a dragon who learns to bake bread, with many details."


def start_serve(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[str], int]:
    """`chinwag serve` as a process on a free port, once ready; returns it and the port."""
    ready = tmp_path / "port"
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "serve", "--port", "0", "--ready-file", str(ready),
         *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"server did not start: {proc.communicate()[1][-2000:]}")
        time.sleep(0.2)
    return proc, int(ready.read_text())


async def test_sigterm_ends_each_turn_with_a_status(tmp_path: Path) -> None:
    async with running_broker(tmp_path / "broker") as broker:
        proc, port = await asyncio.to_thread(start_serve, tmp_path, "--mqtt", broker.url)
        try:
            async with device(broker.port) as mqtt, connect(f"ws://127.0.0.1:{port}/") as ws:
                await wait_online(mqtt)
                assert json.loads(await ws.recv())["type"] == "session.started"
                await ws.send(json.dumps({"type": "session.update",
                                          "generation": {"max_tokens": 1500}}))  # fmt: skip
                await ws.send(json.dumps({"type": "user.message", "text": LONG, "id": "q1"}))
                since = mqtt.mark()
                await mqtt.publish("chinwag/den/ask", json.dumps({"text": LONG, "id": "a1"}))
                # Both stream, then the server is told to stop.
                await mqtt.wait_for("chinwag/den/reply/delta", since)
                events: list[dict[str, object]] = []
                while not any(e["type"] == "reply.delta" for e in events):
                    events.append(json.loads(await ws.recv()))
                proc.send_signal(signal.SIGTERM)
                with pytest.raises(ConnectionClosed) as closed:
                    async with asyncio.timeout(60):
                        while True:
                            frame = await ws.recv()
                            if isinstance(frame, str):
                                events.append(json.loads(frame))
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
                done = [e for e in events if e["type"] == "reply.done"]
                assert len(done) == 1 and done[0]["status"] == "cancelled", done
                reply = body(await mqtt.wait_for("chinwag/den/reply", since, timeout=60))
                assert reply["id"] == "a1" and reply["status"] == "cancelled", reply
            assert await asyncio.to_thread(proc.wait, 30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
