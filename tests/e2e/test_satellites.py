"""chinwag drives a real wyoming-satellite (1.0.0 from the package index, in .venv-satellite,
built by `make satellite`): its microphone is a WAV of human speech at real-time pace
(tests/e2e/satellite/mic.py), its speaker a file (snd.py). The reply the satellite played
must transcribe back, with the real Whisper, to the reply's text."""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import socket
import sys
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from server.app import Engines
from server.audio.pcm import float32_to_int16
from server.pipeline.session import Session
from server.pipeline.state import SessionState
from server.protocol import native as proto
from server.transports.wyoming_satellite import SatelliteLink, WyomingSatellites
from tests.conftest import RunningServer, make_settings, start_server
from tests.speech import espeak_16k, load_16k, recording, to_16k_float, wer

pytestmark = [pytest.mark.slow, pytest.mark.models]

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).with_name("satellite")
SATELLITE_PYTHON = ROOT / ".venv-satellite" / "bin" / "python"
QUESTION = recording("spk1_snt3.wav")
SND_RATE = 22050  # the satellite's default --snd-command-rate


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class SiteEvents:
    """Every event and state of one site's sessions, as the hub's observers see them."""

    site: str
    events: list[proto.ServerEvent] = field(default_factory=list)
    states: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def on_event(self, session: Session, event: proto.ServerEvent) -> None:
        if session.site == self.site:
            self.events.append(event)
            self.changed.set()

    def on_state(self, session: Session, previous: SessionState, state: SessionState) -> None:
        if session.site == self.site:
            self.states.append(state.value)

    def of(self, kind: type[proto.ServerEvent]) -> list[proto.ServerEvent]:
        return [e for e in self.events if isinstance(e, kind)]

    async def wait_for(self, kind: type[proto.ServerEvent], timeout: float = 180.0) -> None:
        async with asyncio.timeout(timeout):
            while not self.of(kind):
                self.changed.clear()
                await self.changed.wait()


class Satellite:
    """A wyoming-satellite process: always streaming, microphone and speaker commands."""

    def __init__(self, tmp: Path, wav: Path, name: str, port: int) -> None:
        self.go = tmp / f"{name}.go"
        self.out = tmp / f"{name}.raw"
        # What the satellite's event commands were given (its --*-command gets the text).
        self.detections = tmp / f"{name}.detections"
        self.transcripts = tmp / f"{name}.transcripts"
        self.said = tmp / f"{name}.synthesize"
        self.streaming = tmp / f"{name}.streaming"  # created when it starts streaming
        self.port = port
        python = shlex.quote(sys.executable)
        self.args = [
            str(SATELLITE_PYTHON),
            "-m",
            "wyoming_satellite",
            "--uri",
            f"tcp://127.0.0.1:{port}",
            "--name",
            name,
            "--no-zeroconf",
            "--mic-command",
            f"{python} {SCRIPTS / 'mic.py'} {wav} --go {self.go}",
            "--snd-command",
            f"{python} {SCRIPTS / 'snd.py'} {self.out}",
            "--snd-command-rate",
            str(SND_RATE),
            "--detection-command",
            f"{python} {SCRIPTS / 'snd.py'} {self.detections}",
            "--transcript-command",
            f"{python} {SCRIPTS / 'snd.py'} {self.transcripts}",
            "--synthesize-command",
            f"{python} {SCRIPTS / 'snd.py'} {self.said}",
            "--streaming-start-command",
            f"{python} {SCRIPTS / 'snd.py'} {self.streaming}",
        ]
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        if not SATELLITE_PYTHON.exists():
            pytest.fail(f"{SATELLITE_PYTHON} is missing: `make satellite` builds it")
        self.process = await asyncio.create_subprocess_exec(
            *self.args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        async with asyncio.timeout(60):
            while True:
                with contextlib.suppress(OSError):
                    _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                    writer.close()
                    return
                assert self.process.returncode is None, await self._stderr()
                await asyncio.sleep(0.2)

    async def _stderr(self) -> str:
        assert self.process is not None and self.process.stderr is not None
        return (await self.process.stderr.read()).decode(errors="replace")[-3000:]

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    def played(self) -> np.ndarray:
        return np.frombuffer(self.out.read_bytes() if self.out.exists() else b"", dtype="<i2")


@pytest.fixture
async def served(engines: Engines) -> AsyncIterator[RunningServer]:
    running = await start_server(make_settings(), engines)
    yield running
    await running.web.close()


@contextlib.asynccontextmanager
async def driving(
    running: RunningServer, *uris: str, wake_words: list[str] | None = None
) -> AsyncIterator[WyomingSatellites]:
    settings = make_settings(
        wyoming={"satellites": list(uris), "satellite_wake_words": wake_words or []}
    )
    satellites = WyomingSatellites(running.app, settings.wyoming)
    satellites.start()
    try:
        yield satellites
    finally:
        await satellites.close()


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


async def settled_size(path: Path, quiet_s: float = 2.0, timeout: float = 120.0) -> int:
    """The file's size once it has stopped growing for quiet_s."""
    last, since = -1, asyncio.get_running_loop().time()
    async with asyncio.timeout(timeout):
        while True:
            size = await asyncio.to_thread(_size, path)
            now = asyncio.get_running_loop().time()
            if size != last:
                last, since = size, now
            elif size > 0 and now - since >= quiet_s:
                return size
            await asyncio.sleep(0.2)


async def test_a_satellite_speaks_the_reply_it_was_asked_for(
    served: RunningServer, engines: Engines, tmp_path: Path
) -> None:
    site = SiteEvents("kitchen")
    served.app.hub.add_observer(site)
    satellite = Satellite(tmp_path, QUESTION.path, "kitchen", free_port())
    await satellite.start()
    try:
        async with driving(served, f"tcp://127.0.0.1:{satellite.port}") as satellites:
            link = satellites.links[0]
            await asyncio.wait_for(link.connected.wait(), 120)
            assert link.site == "kitchen"  # the satellite's name is the site
            satellite.go.touch()  # the person speaks now
            await site.wait_for(proto.ReplyDone)
            await settled_size(satellite.out)
            transcript = site.of(proto.Transcript)[0]
            assert isinstance(transcript, proto.Transcript)
            assert wer([QUESTION.text], [transcript.text]) <= 0.2
            done = site.of(proto.ReplyDone)[0]
            assert isinstance(done, proto.ReplyDone) and done.status == "completed"
            played = satellite.played()
            assert len(played) > 0.5 * SND_RATE, "under 0.5 s of audio was played"
            heard = await asyncio.to_thread(
                engines.transcriber.transcribe, to_16k_float(played, SND_RATE)
            )
            print("satellite round trip:", transcript.text, "|", done.text, "|", heard.text)
            assert wer([done.text], [heard.text]) <= 0.35, (done.text, heard.text)
            # Published like any other session: listening, thinking, speaking, back to idle.
            assert {"listening", "thinking", "speaking"} <= set(site.states), site.states
    finally:
        served.app.hub.remove_observer(site)
        await satellite.stop()


async def test_a_satellite_that_goes_away_mid_turn_is_cleaned_up_and_reconnected(
    served: RunningServer, tmp_path: Path
) -> None:
    site = SiteEvents("hall")
    served.app.hub.add_observer(site)
    port = free_port()
    satellite = Satellite(tmp_path, QUESTION.path, "hall", port)
    await satellite.start()
    sessions_before = served.app.hub.count
    try:
        async with driving(served, f"tcp://127.0.0.1:{port}") as satellites:
            link: SatelliteLink = satellites.links[0]
            await asyncio.wait_for(link.connected.wait(), 120)
            assert served.app.hub.count == sessions_before + 1
            satellite.go.touch()
            await site.wait_for(proto.SpeechStopped)  # the turn is under way
            await satellite.stop()  # gone, mid-turn
            async with asyncio.timeout(60):
                while link.connected.is_set() or served.app.hub.count != sessions_before:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            assert link.session is None and link.run_state is None
            # It comes back: chinwag reconnects by itself (backoff 1 s, 2 s, ...).
            again = Satellite(tmp_path, QUESTION.path, "hall", port)
            await again.start()
            try:
                await asyncio.wait_for(link.connected.wait(), 60)
                assert link.connections == 2
                assert served.app.hub.count == sessions_before + 1
            finally:
                await again.stop()
    finally:
        served.app.hub.remove_observer(site)
        await satellite.stop()


def write_wav(path: Path, pcm: np.ndarray) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(pcm.astype("<i2").tobytes())


async def test_an_always_streaming_satellite_is_answered_only_after_the_wake_word(
    served: RunningServer, engines: Engines, tmp_path: Path
) -> None:
    """The satellite streams all the time and asks chinwag for the wake stage: the question
    said without the wake word is not heard; "hey jarvis" and the same question are."""
    question = float32_to_int16(load_16k(QUESTION))
    gap = np.zeros(int(1.5 * 16000), dtype=np.int16)
    pause = np.zeros(int(0.3 * 16000), dtype=np.int16)
    wake = espeak_16k("hey jarvis")
    wav = tmp_path / "wake-and-ask.wav"
    write_wav(wav, np.concatenate([question, gap, wake, pause, question]))
    site = SiteEvents("porch")
    served.app.hub.add_observer(site)
    satellite = Satellite(tmp_path, wav, "porch", free_port())
    await satellite.start()
    try:
        uri = f"tcp://127.0.0.1:{satellite.port}"
        async with driving(served, uri, wake_words=["hey_jarvis"]) as satellites:
            await asyncio.wait_for(satellites.links[0].connected.wait(), 120)
            satellite.go.touch()
            await site.wait_for(proto.ReplyDone)
            await settled_size(satellite.out)
            kinds = [e.type for e in site.events]
            assert kinds.count("wake.detected") == 1
            # Nothing was heard before the wake word: the first speech comes after it.
            assert kinds.index("wake.detected") < kinds.index("speech.started")
            transcripts = site.of(proto.Transcript)
            assert len(transcripts) == 1, transcripts
            assert isinstance(transcripts[0], proto.Transcript)
            assert wer([QUESTION.text], [transcripts[0].text]) <= 0.2
            # The satellite was told (its --detection-command got the wake word's name).
            detections = await asyncio.to_thread(satellite.detections.read_text)
            assert "hey_jarvis" in detections
            done = site.of(proto.ReplyDone)[0]
            assert isinstance(done, proto.ReplyDone)
            heard = await asyncio.to_thread(
                engines.transcriber.transcribe, to_16k_float(satellite.played(), SND_RATE)
            )
            assert wer([done.text], [heard.text]) <= 0.35, (done.text, heard.text)
    finally:
        served.app.hub.remove_observer(site)
        await satellite.stop()


async def test_chinwag_serve_drives_a_satellite_from_its_config(
    engines: Engines, tmp_path: Path
) -> None:
    """The whole command: `chinwag serve` with `[wyoming] satellites` in its config file, seen
    only from the satellite's side (what it was told and what it played), as a deployment
    would be checked."""
    satellite = Satellite(tmp_path, QUESTION.path, "attic", free_port())
    await satellite.start()
    config = tmp_path / "chinwag.toml"
    config.write_text(
        "[wyoming]\n"
        f'satellites = ["tcp://127.0.0.1:{satellite.port}"]\n'
        "satellite_wake_words = []\n",
        encoding="utf-8",
    )
    ready = tmp_path / "port"
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server", "serve", "--port", "0", "--config", str(config),
        "--ready-file", str(ready),
        cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(240):
            while not await asyncio.to_thread(ready.exists):
                assert server.returncode is None, "chinwag serve exited"
                await asyncio.sleep(0.2)
        # chinwag says run-satellite once the models are loaded; the satellite then streams.
        async with asyncio.timeout(60):
            while not await asyncio.to_thread(satellite.streaming.exists):  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        satellite.go.touch()
        await settled_size(satellite.said, timeout=240)  # the reply's text, once complete
        await settled_size(satellite.out)
        heard_question = await asyncio.to_thread(satellite.transcripts.read_text)
        assert wer([QUESTION.text], [heard_question]) <= 0.2
        said = await asyncio.to_thread(satellite.said.read_text)
        audio = satellite.played()
        assert len(audio) > 0.5 * SND_RATE
        heard = await asyncio.to_thread(
            engines.transcriber.transcribe, to_16k_float(audio, SND_RATE)
        )
        assert wer([said], [heard.text]) <= 0.35, (said, heard.text)
    finally:
        server.terminate()
        _, err = await server.communicate()
        await satellite.stop()
    assert server.returncode == 0, err.decode(errors="replace")[-3000:]
