"""chinwag's satellite link on fake engines, against a satellite scripted here the way newer
wyoming-satellites speak (ping / pong, `played`, `restart_on_end`): real sockets on
127.0.0.1, milliseconds per turn. The real wyoming-satellite is driven in
tests/e2e/test_satellites.py."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np
import pytest
from wyoming.audio import AudioChunk
from wyoming.event import Event, async_read_event, async_write_event
from wyoming.info import Attribution, Info, Satellite
from wyoming.ping import Ping, Pong
from wyoming.pipeline import PipelineStage, RunPipeline
from wyoming.snd import Played
from wyoming.wake import Detection

from server.engines.fakes import FakeWakeWordEngine
from server.errors import ConfigError
from server.transports import wyoming_satellite as link_module
from server.transports.wyoming_satellite import SatelliteLink, WyomingSatellites
from tests.conftest import RunningServer, fake_engines, make_settings, serving

RATE = 16000
TIMEOUT_S = 20.0


def tone(seconds: float) -> bytes:
    t = np.arange(int(RATE * seconds)) / RATE
    return (8000 * np.sin(2 * np.pi * 220 * t)).astype("<i2").tobytes()


def silence(seconds: float) -> bytes:
    return bytes(int(RATE * seconds) * 2)


def chunks(pcm: bytes, size: int = 2048) -> list[Event]:
    return [
        AudioChunk(rate=RATE, width=2, channels=1, audio=pcm[i : i + size]).event()
        for i in range(0, len(pcm), size)
    ]


@dataclass
class ScriptedSatellite:
    """A satellite server: answers describe and pings, records what chinwag sends."""

    name: str = "den"
    answer_pings: bool = True
    received: list[Event] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    writer: asyncio.StreamWriter | None = None
    server: asyncio.Server | None = None
    port: int = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        while (event := await async_read_event(reader)) is not None:
            if event.type == "describe":
                info = Info(
                    satellite=Satellite(
                        name=self.name,
                        attribution=Attribution(name="", url=""),
                        installed=True,
                        description="scripted",
                        version=None,
                    )
                )
                await self.send(info.event())
                continue
            if Ping.is_type(event.type) and self.answer_pings:
                await self.send(Pong(text=event.data.get("text")).event())
            self.received.append(event)
            self.arrived.set()

    async def send(self, *events: Event) -> None:
        assert self.writer is not None
        for event in events:
            await async_write_event(event, self.writer)

    def types(self) -> list[str]:
        return [e.type for e in self.received]

    async def wait_for(self, kind: str, count: int = 1) -> Event:
        async with asyncio.timeout(TIMEOUT_S):
            while True:
                found = [e for e in self.received if e.type == kind]
                if len(found) >= count:
                    return found[count - 1]
                self.arrived.clear()
                await self.arrived.wait()

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def wake_tone(seconds: float = 0.6) -> bytes:
    """The fake wake word engine's "hey_jarvis": a steady 1 kHz tone."""
    t = np.arange(int(RATE * seconds)) / RATE
    return (8000 * np.sin(2 * np.pi * 1000.0 * t)).astype("<i2").tobytes()


@contextlib.asynccontextmanager
async def linked(
    satellite: ScriptedSatellite, wake_words: list[str] | None = None
) -> AsyncIterator[tuple[RunningServer, SatelliteLink]]:
    await satellite.start()
    uri = f"tcp://127.0.0.1:{satellite.port}"
    settings = make_settings(
        wyoming={
            "satellites": [uri],
            "satellite_persona": "assistant",
            "satellite_wake_words": wake_words if wake_words is not None else ["hey_jarvis"],
        }
    )
    engines = dataclasses.replace(fake_engines(), wake=FakeWakeWordEngine())
    async with serving(engines, settings) as running:
        satellites = WyomingSatellites(running.app, settings.wyoming)
        satellites.start()
        link = satellites.links[0]
        try:
            await asyncio.wait_for(link.connected.wait(), TIMEOUT_S)
            yield running, link
        finally:
            await satellites.close()
            await satellite.close()


def run_pipeline(restart: bool, start: PipelineStage = PipelineStage.ASR) -> Event:
    return RunPipeline(
        start_stage=start, end_stage=PipelineStage.TTS, restart_on_end=restart
    ).event()


async def test_a_turn_goes_out_as_wyoming_events_and_waits_for_played() -> None:
    satellite = ScriptedSatellite()
    async with linked(satellite) as (_, link):
        assert satellite.types()[0] == "run-satellite"
        assert link.site == "den" and link.session is not None and link.session.site == "den"
        await satellite.send(run_pipeline(restart=False))
        await satellite.send(*chunks(silence(0.3) + tone(1.0) + silence(1.5)))
        await satellite.wait_for("audio-stop")
        synthesize = await satellite.wait_for("synthesize")
        assert synthesize.data["text"] == "Hello there, friend."
        types = satellite.types()
        order = [types.index(t) for t in ("voice-started", "voice-stopped", "transcript")]
        assert order == sorted(order)
        assert (await satellite.wait_for("transcript")).data["text"] == "hello"
        assert types.index("audio-start") < types.index("audio-chunk") < types.index("audio-stop")
        assert link.run_state is not None  # waiting for `played`
        await satellite.send(Played().event())
        async with asyncio.timeout(TIMEOUT_S):
            while link.run_state is not None:  # noqa: ASYNC110 - the link's own state
                await asyncio.sleep(0.01)
        # Not restarted: audio now is dropped, nothing more is answered.
        await satellite.send(*chunks(tone(1.0) + silence(1.5)))
        await asyncio.sleep(0.3)
        assert satellite.types().count("transcript") == 1


async def test_an_always_on_satellite_gets_one_run_after_the_other() -> None:
    satellite = ScriptedSatellite()
    async with linked(satellite, wake_words=[]) as (_, link):
        await satellite.send(run_pipeline(restart=True, start=PipelineStage.WAKE))
        for turn in (1, 2):
            await satellite.send(*chunks(tone(1.0) + silence(1.5)))
            await satellite.wait_for("audio-stop", turn)
            await satellite.send(Played().event())
        assert satellite.types().count("transcript") == 2
        assert link.connected.is_set()


async def test_the_wake_stage_waits_for_chinwags_wake_word() -> None:
    satellite = ScriptedSatellite()
    async with linked(satellite) as _:
        await satellite.send(run_pipeline(restart=True, start=PipelineStage.WAKE))
        # Speech without the wake word: nothing is heard.
        await satellite.send(*chunks(tone(1.0) + silence(1.5)))
        detect = await satellite.wait_for("detect")
        assert detect.data["names"] == ["hey_jarvis"]
        await asyncio.sleep(0.3)
        assert "voice-started" not in satellite.types()
        for turn in (1, 2):
            await satellite.send(*chunks(wake_tone() + silence(0.3) + tone(1.0) + silence(1.5)))
            try:
                detection = await satellite.wait_for("detection", turn)
            except TimeoutError:
                raise AssertionError(satellite.types()) from None
            assert detection.data["name"] == "hey_jarvis"
            await satellite.wait_for("audio-stop", turn)
            await satellite.send(Played().event())
        types = satellite.types()
        assert types.count("transcript") == 2
        assert types.index("detection") < types.index("voice-started") < types.index("transcript")


async def test_runs_from_asr_do_not_wait_for_a_wake_word() -> None:
    satellite = ScriptedSatellite()
    async with linked(satellite) as _:
        await satellite.send(Detection(name="its_own").event())  # heard on the satellite
        await satellite.send(run_pipeline(restart=False, start=PipelineStage.ASR))
        await satellite.send(*chunks(tone(1.0) + silence(1.5)))
        assert (await satellite.wait_for("transcript")).data["text"] == "hello"
        assert "detect" not in satellite.types()


async def test_an_unknown_wake_word_is_an_error_to_the_satellite() -> None:
    satellite = ScriptedSatellite()
    async with linked(satellite, wake_words=["okay_nabu"]) as (_, link):
        await satellite.send(run_pipeline(restart=False, start=PipelineStage.WAKE))
        await satellite.send(*chunks(tone(0.5)))
        error = await satellite.wait_for("error")
        assert error.data["code"] == "unknown_wake_word"
        assert link.connected.is_set()


async def test_pings_are_answered_and_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(link_module, "PING_EVERY_S", 0.05)
    satellite = ScriptedSatellite()
    async with linked(satellite) as _:
        await satellite.send(Ping(text="are you there").event())
        pong = await satellite.wait_for("pong")
        assert pong.data["text"] == "are you there"
        await satellite.wait_for("ping", 2)


async def test_a_satellite_that_stops_answering_pings_is_reconnected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(link_module, "PING_EVERY_S", 0.05)
    monkeypatch.setattr(link_module, "PING_TIMEOUT_S", 0.3)
    monkeypatch.setattr(link_module, "FIRST_RETRY_S", 0.05)
    satellite = ScriptedSatellite()
    async with linked(satellite) as (running, link):
        await satellite.wait_for("ping", 2)  # answered: from now on pongs are expected
        satellite.answer_pings = False
        async with asyncio.timeout(TIMEOUT_S):
            while link.connections < 2:  # noqa: ASYNC110 - the link's own state
                await asyncio.sleep(0.02)
        assert running.app.hub.count == 1  # the old session is gone, the new one is open


async def test_bad_events_are_answered_with_an_error_and_the_link_goes_on() -> None:
    satellite = ScriptedSatellite()
    async with linked(satellite) as _:
        await satellite.send(Event(type="run-pipeline", data={"start_stage": "nowhere"}))
        error = await satellite.wait_for("error")
        assert error.data["code"] == "invalid_message"
        await satellite.send(AudioChunk(rate=RATE, width=9, channels=1, audio=b"").event())
        error = await satellite.wait_for("error", 2)
        assert error.data["code"] == "invalid_audio_format"
        await satellite.send(run_pipeline(restart=False))
        await satellite.send(*chunks(tone(1.0) + silence(1.5)))
        assert (await satellite.wait_for("transcript")).data["text"] == "hello"


async def test_a_satellite_gone_mid_turn_leaves_no_session_or_task() -> None:
    satellite = ScriptedSatellite()
    async with linked(satellite) as (running, link):
        await satellite.send(run_pipeline(restart=False))
        await satellite.send(*chunks(tone(1.0) + silence(1.5)))
        await satellite.wait_for("audio-start")
        assert satellite.writer is not None
        satellite.writer.transport.abort()  # gone while the reply plays
        async with asyncio.timeout(TIMEOUT_S):
            while link.connected.is_set() or running.app.hub.count:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        assert link.session is None and link.run_state is None
        assert link._runs is None


def test_satellite_uris_are_checked_when_the_settings_load() -> None:
    with pytest.raises(ConfigError, match="tcp://HOST:PORT"):
        make_settings(wyoming={"satellites": ["http://kitchen:10700"]})
    with pytest.raises(ConfigError, match="twice"):
        make_settings(wyoming={"satellites": ["tcp://a:1", "tcp://a:1"]})


@pytest.mark.parametrize(
    ("end", "replies"), [(PipelineStage.ASR, False), (PipelineStage.HANDLE, True)]
)
async def test_the_end_stage_decides_what_the_satellite_gets(
    end: PipelineStage, replies: bool
) -> None:
    satellite = ScriptedSatellite()
    async with linked(satellite) as (running, link):
        recorded: list[str] = []

        class Recorder:
            def on_event(self, session: object, event: object) -> None:
                recorded.append(getattr(event, "type", ""))

            def on_state(self, session: object, previous: object, state: object) -> None:
                pass

        running.app.hub.add_observer(Recorder())
        request = RunPipeline(start_stage=PipelineStage.ASR, end_stage=end).event()
        await satellite.send(request)
        await satellite.send(*chunks(tone(1.0) + silence(1.5)))
        assert (await satellite.wait_for("transcript")).data["text"] == "hello"
        async with asyncio.timeout(TIMEOUT_S):
            while link.run_state is not None:  # noqa: ASYNC110 - the link's own state
                await asyncio.sleep(0.01)
        types = satellite.types()
        assert "audio-start" not in types and "synthesize" not in types
        assert ("reply.done" in recorded) is replies


async def test_shutting_down_pauses_the_satellite_first() -> None:
    satellite = ScriptedSatellite()
    await satellite.start()
    uri = f"tcp://127.0.0.1:{satellite.port}"
    settings = make_settings(wyoming={"satellites": [uri], "satellite_persona": "assistant"})
    try:
        async with serving(fake_engines(), settings) as running:
            satellites = WyomingSatellites(running.app, settings.wyoming)
            satellites.start()
            await asyncio.wait_for(satellites.links[0].connected.wait(), TIMEOUT_S)
            await satellites.close()
            assert (await satellite.wait_for("pause-satellite")).type == "pause-satellite"
            assert running.app.hub.count == 0
    finally:
        await satellite.close()


async def test_a_vad_that_falls_behind_drops_audio_rather_than_the_satellite(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(link_module, "RUN_AUDIO_CHUNKS", 2)
    monkeypatch.setattr(link_module, "MIC_WAIT_S", 0.01)
    satellite = ScriptedSatellite()
    async with linked(satellite, wake_words=[]) as (_, link):
        assert link.session is not None

        async def overloaded(frame: bytes) -> None:  # a VAD far behind real time
            await asyncio.sleep(0.2)

        monkeypatch.setattr(link.session, "handle_audio", overloaded)
        await satellite.send(run_pipeline(restart=False))
        # Audio in a burst: the reader does not wait behind the VAD for long.
        await satellite.send(*chunks(tone(0.5) + silence(1.0), size=320))
        await satellite.send(Ping(text="still there?").event())
        pong = await satellite.wait_for("pong")
        assert pong.data["text"] == "still there?"
        assert link.dropped_chunks > 0
