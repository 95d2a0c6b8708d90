"""`chinwag satellite`'s client on fake engines: reconnection to a server that comes up late,
barge-in, playback reports, a file run that ends once answered. Real sockets on 127.0.0.1.
The real models and the real command: tests/e2e/test_satellite_client.py."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import sys
import wave
from pathlib import Path

import numpy as np

from clients.satellite import Satellite, SatelliteOptions
from clients.satellite_audio import FileSink, FileSource
from server.app import App
from server.engines.fakes import FakeChatModel, FakeSynthesizer
from server.prompts import PersonaLibrary
from server.protocol import native as proto
from server.transports.websocket import WebSocketServer
from tests.conftest import fake_engines, make_settings

ROOT = Path(__file__).resolve().parents[2]
RATE = 16000
TIMEOUT_S = 30.0


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return (8000 * np.sin(2 * np.pi * 220 * t)).astype(np.int16)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(RATE * seconds), dtype=np.int16)


def wav_file(path: Path, *parts: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(np.concatenate(parts).astype("<i2").tobytes())
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def serve_on(port: int, chat: FakeChatModel, synthesizer: FakeSynthesizer) -> WebSocketServer:
    settings = make_settings()
    app = App(
        settings=settings, personas=PersonaLibrary.load(settings.prompts.directory, "assistant")
    )
    engines = fake_engines(chat, synthesizer=synthesizer)
    app.attach(engines)
    web = WebSocketServer(app)
    await web.start("127.0.0.1", port)
    return web


@dataclasses.dataclass
class Recorder:
    """Every event the server sent, as the hub's observers see them."""

    events: list[proto.ServerEvent] = dataclasses.field(default_factory=list)

    def on_event(self, session: object, event: proto.ServerEvent) -> None:
        self.events.append(event)

    def on_state(self, session: object, previous: object, state: object) -> None:
        pass

    def kinds(self) -> list[str]:
        return [e.type for e in self.events]


class CountingSink(FileSink):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.clears = 0

    def clear(self) -> None:
        self.clears += 1


async def test_a_satellite_waits_for_a_late_server_then_is_answered(tmp_path: Path) -> None:
    port = free_port()
    options = SatelliteOptions(url=f"ws://127.0.0.1:{port}/", name="late", barge_in=True)
    options.linger_s = 1.0
    source = FileSource(wav_file(tmp_path / "ask.wav", silence(0.3), tone(1.0), silence(1.5)))
    sink = FileSink(tmp_path / "out.wav")
    satellite = Satellite(options, source, sink)
    running = asyncio.create_task(satellite.run())
    await asyncio.sleep(1.5)  # refused at least once: 1 s, then 2 s
    assert not running.done()
    web = await serve_on(port, FakeChatModel("Hello there, friend."), FakeSynthesizer())
    try:
        code = await asyncio.wait_for(running, TIMEOUT_S)
    finally:
        await web.close()
    assert code == 0
    assert satellite.connections == 1
    assert satellite.turns.replies == ["Hello there, friend."]
    with wave.open(str(tmp_path / "out.wav")) as written:
        assert written.getnframes() > 0


async def test_speaking_over_a_reply_clears_what_is_left_of_it(tmp_path: Path) -> None:
    port = free_port()
    # A long reply, slowly spoken, and the person speaks again while it plays.
    chat = FakeChatModel("one two three four five six seven eight nine ten. " * 4)
    web = await serve_on(port, chat, FakeSynthesizer(delay_s=0.3))
    recorder = Recorder()
    web.app.hub.add_observer(recorder)
    options = SatelliteOptions(url=f"ws://127.0.0.1:{port}/", name="talker", barge_in=True)
    options.linger_s = 1.0
    speech = wav_file(
        tmp_path / "ask-and-interrupt.wav",
        tone(1.0),
        silence(1.2),
        tone(1.0),
        silence(1.5),
    )
    sink = CountingSink(tmp_path / "out.wav")
    satellite = Satellite(options, FileSource(speech), sink)
    try:
        code = await asyncio.wait_for(satellite.run(), TIMEOUT_S)
    finally:
        await web.close()
    assert code == 0
    kinds = recorder.kinds()
    assert "output_audio.clear" in kinds, kinds
    assert sink.clears >= 1
    # The server kept only what had been heard of the interrupted reply.
    truncated = [e for e in recorder.events if isinstance(e, proto.ReplyTruncated)]
    done = [e for e in recorder.events if isinstance(e, proto.ReplyDone)]
    assert truncated and done
    assert len(truncated[0].heard_text) < len(done[0].text)


async def test_the_command_retries_a_missing_server_and_stops_cleanly_on_sigterm(
    tmp_path: Path,
) -> None:
    """As a systemd service: no server yet is retried with backoff; `systemctl stop` (SIGTERM)
    ends it with status 0."""
    speech = wav_file(tmp_path / "ask.wav", tone(1.0), silence(1.0))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server",
        "satellite",
        "--url",
        f"ws://127.0.0.1:{free_port()}/",
        "--input-file",
        str(speech),
        "--output-file",
        str(tmp_path / "out.wav"),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    seen = ""
    try:
        async with asyncio.timeout(TIMEOUT_S):
            while "reconnecting in 2 s" not in seen:
                line = await process.stderr.readline()
                assert line, seen
                seen += line.decode(errors="replace")
    finally:
        process.terminate()
        _, rest = await process.communicate()
    assert "reconnecting in 1 s" in seen
    assert process.returncode == 0, seen + rest.decode(errors="replace")
