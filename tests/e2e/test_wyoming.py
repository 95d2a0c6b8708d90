"""The Wyoming server with the real models, driven by the `wyoming` package's own client
replaying Home Assistant's sequences (homeassistant/components/wyoming: stt.py, tts.py,
conversation.py, data.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.handle import Handled, NotHandled
from wyoming.info import Describe, Info
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
    SynthesizeVoice,
)

from clients.talk import read_wav
from server.app import App, Engines
from server.audio.pcm import resample
from server.engines.piper import PiperSynthesizer
from server.prompts import PersonaLibrary
from server.transports.wyoming import WyomingServer
from tests.conftest import RunningServer, make_settings, start_server
from tests.model_paths import piper_voice
from tests.speech import Recording, recordings, to_16k_float, wer

pytestmark = pytest.mark.models

HA_RATE, HA_WIDTH, HA_CHANNELS = 16000, 2, 1  # homeassistant/components/wyoming/const.py
READ_TIMEOUT_S = 60.0
STT_RECORDINGS = ["spk1_snt1.wav", "spk2_snt3.wav", "birch_canoe.wav", "spk1_snt4.wav"]


@dataclasses.dataclass
class Served:
    running: RunningServer
    wyoming: WyomingServer

    @property
    def app(self) -> App:
        return self.running.app

    def client(self) -> AsyncTcpClient:
        return AsyncTcpClient("127.0.0.1", self.wyoming.port)


async def serve(engines: Engines | None, **wyoming: Any) -> Served:
    settings = make_settings(wyoming={"uri": "tcp://127.0.0.1:0", **wyoming})
    if engines is None:  # models never load: for `describe` while loading
        personas = PersonaLibrary.load(settings.prompts.directory, "assistant")
        app = App(settings=settings, personas=personas)
        running = RunningServer(app, None)  # type: ignore[arg-type]
    else:
        running = await start_server(settings, engines)
    server = WyomingServer(running.app, settings.wyoming)
    await server.start("127.0.0.1", 0)
    return Served(running, server)


async def stop(served: Served) -> None:
    await served.wyoming.close()
    if served.running.web is not None:
        await served.running.web.close()


@pytest.fixture(scope="module")
async def wy(engines: Engines) -> AsyncIterator[Served]:
    served = await serve(engines)
    yield served
    await stop(served)


@pytest.fixture(scope="module", params=[False, True], ids=["piper-whole", "stream-decoder"])
async def wy_tts(engines: Engines, request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    """The server with Piper whole and with its decoder streamed ([tts] stream_decoder)."""
    voice = await asyncio.to_thread(PiperSynthesizer, piper_voice(), stream_decoder=request.param)
    assert voice.streams_decoder is request.param
    served = await serve(dataclasses.replace(engines, synthesizer=voice))
    yield served
    await stop(served)


async def read(client: AsyncTcpClient, timeout: float = READ_TIMEOUT_S) -> Event | None:
    return await asyncio.wait_for(client.read_event(), timeout)


def pcm_of(rec: Recording) -> bytes:
    """The recording as Home Assistant sends it: 16 kHz, 16-bit, mono."""
    pcm, rate = read_wav(rec.path)
    audio = resample(pcm.astype(np.int16), rate, HA_RATE) if rate != HA_RATE else pcm
    return audio.astype("<i2").tobytes()


async def ha_transcribe(served: Served, pcm: bytes, chunk_bytes: int = 2048) -> tuple[str, float]:
    """stt.py: transcribe, audio-start, audio-chunk*, audio-stop, then read to `transcript`.
    Returns the text and the time from audio-stop to the transcript."""
    async with served.client() as client:
        await client.write_event(Transcribe(language="en").event())
        await client.write_event(AudioStart(rate=HA_RATE, width=HA_WIDTH, channels=1).event())
        for i in range(0, len(pcm), chunk_bytes):
            chunk = AudioChunk(
                rate=HA_RATE, width=HA_WIDTH, channels=HA_CHANNELS, audio=pcm[i : i + chunk_bytes]
            )
            await client.write_event(chunk.event())
        await client.write_event(AudioStop().event())
        stopped = time.perf_counter()
        while True:
            event = await read(client)
            assert event is not None, "connection lost before the transcript"
            assert not Error.is_type(event.type), event.data
            if Transcript.is_type(event.type):
                return Transcript.from_event(event).text, time.perf_counter() - stopped


@dataclasses.dataclass
class Segment:
    start: AudioStart
    chunks: list[AudioChunk]
    first_chunk_s: float

    @property
    def pcm(self) -> bytes:
        return b"".join(c.audio for c in self.chunks)


async def read_segments(
    client: AsyncTcpClient, until: str, began: float
) -> tuple[list[Segment], list[Event]]:
    """Audio segments up to an event of type `until` (audio-stop or synthesize-stopped)."""
    segments: list[Segment] = []
    others: list[Event] = []
    current: Segment | None = None
    while True:
        event = await read(client)
        assert event is not None, "connection lost"
        assert not Error.is_type(event.type), event.data
        if AudioStart.is_type(event.type):
            assert current is None, "audio-start inside a segment"
            current = Segment(AudioStart.from_event(event), [], 0.0)
        elif AudioChunk.is_type(event.type):
            assert current is not None, "audio-chunk outside a segment"
            if not current.chunks:
                current.first_chunk_s = time.perf_counter() - began
            current.chunks.append(AudioChunk.from_event(event))
        elif AudioStop.is_type(event.type):
            assert current is not None, "audio-stop outside a segment"
            segments.append(current)
            current = None
        else:
            others.append(event)
        if event.type == until:
            return segments, others


def transcribe_pcm(served: Served, pcm: bytes, rate: int) -> str:
    speech = served.app.speech
    assert speech is not None
    audio = to_16k_float(np.frombuffer(pcm, dtype="<i2"), rate)
    return speech.transcriber.transcribe(audio).text


def one_format(segments: list[Segment]) -> tuple[int, int, int]:
    formats = {(s.start.rate, s.start.width, s.start.channels) for s in segments}
    formats |= {(c.rate, c.width, c.channels) for s in segments for c in s.chunks}
    assert len(formats) == 1, formats
    return formats.pop()


# --- describe ---------------------------------------------------------------------------------


def unfilled(obj: Any, path: str = "info") -> list[str]:
    """Fields left None or empty anywhere in the info (speakers: None for one-speaker voices)."""
    missing: list[str] = []
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.name in ("speakers", "satellite"):
                continue
            if value is None or value == "":
                missing.append(f"{path}.{f.name}")
            else:
                missing.extend(unfilled(value, f"{path}.{f.name}"))
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            missing.extend(unfilled(item, f"{path}[{i}]"))
    return missing


def ha_platforms(info: Info) -> list[str]:
    """homeassistant/components/wyoming/data.py: WyomingService.platforms."""
    if info.satellite is not None and info.satellite.installed:
        return []
    platforms = []
    if any(p.installed for p in info.asr):
        platforms.append("stt")
    if any(p.installed for p in info.tts):
        platforms.append("tts")
    if any(p.installed for p in info.wake):
        platforms.append("wake_word")
    if any(p.installed for p in info.intent) or any(p.installed for p in info.handle):
        platforms.append("conversation")
    return platforms


async def describe(served: Served) -> Info:
    """data.py: load_wyoming_info (a 1 s timeout per try)."""
    async with served.client() as client:
        await client.write_event(Describe().event())
        while True:
            event = await read(client, timeout=1.0)
            assert event is not None
            if Info.is_type(event.type):
                return Info.from_event(event)


async def test_describe_gives_stt_tts_and_a_conversation_agent(wy: Served) -> None:
    info = await describe(wy)
    assert ha_platforms(info) == ["stt", "tts", "conversation"]
    assert not info.wake and not info.intent and info.satellite is None
    assert unfilled(info) == []
    asr, tts, handle = info.asr[0], info.tts[0], info.handle[0]
    assert asr.requires_external_vad is True
    assert asr.models[0].installed and asr.models[0].languages == ["en"]
    assert tts.supports_synthesize_streaming is True
    assert [v.name for v in tts.voices] == ["en_US-joe-medium"]
    assert tts.voices[0].languages == ["en_US"] and tts.voices[0].installed
    assert handle.models[0].installed and handle.models[0].languages == ["en"]


async def test_describe_is_answered_while_the_models_load() -> None:
    served = await serve(None)
    try:
        assert not served.app.ready.is_set()
        began = time.perf_counter()
        info = await describe(served)
        assert time.perf_counter() - began < 1.0
        assert ha_platforms(info) == ["stt", "tts", "conversation"]
    finally:
        await stop(served)


async def test_unknown_events_and_select_program_are_ignored(wy: Served) -> None:
    async with wy.client() as client:
        await client.write_event(Event("select-program", {"name": "whatever"}))
        await client.write_event(Event("frobnicate", {"x": 1}, payload=b"\x00\x01"))
        await client.write_event(Describe().event())
        event = await read(client, timeout=2.0)
        assert event is not None and Info.is_type(event.type)


# --- speech-to-text ---------------------------------------------------------------------------


async def test_stt_transcribes_recordings(wy: Served) -> None:
    chosen = [r for r in recordings() if r.path.name in STT_RECORDINGS]
    texts = [(await ha_transcribe(wy, pcm_of(rec)))[0] for rec in chosen]
    assert wer([r.text for r in chosen], texts) <= 0.15, texts


async def test_stt_converts_any_audio_format(wy: Served) -> None:
    rec = next(r for r in recordings() if r.path.name == "birch_canoe.wav")
    pcm, rate = read_wav(rec.path)
    stereo48 = resample(pcm.astype(np.int16), rate, 48000).astype(np.int32) << 16  # 32-bit
    frames = np.repeat(stereo48[:, None], 2, axis=1).astype("<i4").tobytes()
    async with wy.client() as client:
        await client.write_event(Transcribe().event())
        await client.write_event(AudioStart(rate=48000, width=4, channels=2).event())
        step = 4 * 2 * 4800
        for i in range(0, len(frames), step):
            chunk = AudioChunk(rate=48000, width=4, channels=2, audio=frames[i : i + step])
            await client.write_event(chunk.event())
        await client.write_event(AudioStop().event())
        event = await read(client)
        assert event is not None and Transcript.is_type(event.type)
        assert wer([rec.text], [Transcript.from_event(event).text]) <= 0.15


async def test_stt_of_no_audio_is_empty(wy: Served) -> None:
    assert (await ha_transcribe(wy, b""))[0] == ""
    silence = bytes(HA_RATE * 2)  # one second of digital silence
    assert (await ha_transcribe(wy, silence))[0] == ""


async def test_stt_with_chinwags_vad_answers_when_the_turn_ends(engines: Engines) -> None:
    served = await serve(engines, use_vad=True)
    try:
        info = await describe(served)
        assert info.asr[0].requires_external_vad is False
        rec = next(r for r in recordings() if r.path.name == "spk2_snt4.wav")
        speech = pcm_of(rec) + bytes(HA_RATE * 2 * 3)  # then 3 s of silence, no audio-stop
        async with served.client() as client:
            await client.write_event(Transcribe(language="en").event())
            await client.write_event(AudioStart(rate=HA_RATE, width=2, channels=1).event())
            step = HA_RATE * 2 // 50  # 20 ms at real-time pace
            for i in range(0, len(speech), step):
                chunk = AudioChunk(rate=HA_RATE, width=2, channels=1, audio=speech[i : i + step])
                await client.write_event(chunk.event())
                await asyncio.sleep(0.02)
            # The transcript came before any audio-stop.
            event = await read(client, timeout=5.0)
            assert event is not None and Transcript.is_type(event.type)
            assert wer([rec.text], [Transcript.from_event(event).text]) <= 0.2
            await client.write_event(AudioStop().event())
    finally:
        await stop(served)


# --- text-to-speech ---------------------------------------------------------------------------

TTS_TEXT = "Glue the sheet to the dark blue background. It is easy to tell the depth of a well."


async def test_tts_synthesize_gives_exactly_one_segment(wy_tts: Served) -> None:
    """tts.py async_get_tts_audio: synthesize, then read to the first audio-stop."""
    async with wy_tts.client() as client:
        began = time.perf_counter()
        voice = SynthesizeVoice(name="en_US-joe-medium")
        await client.write_event(Synthesize(text=TTS_TEXT, voice=voice).event())
        segments, others = await read_segments(client, AudioStop().event().type, began)
        assert len(segments) == 1 and not others
        rate, width, channels = one_format(segments)
        assert (rate, width, channels) == (22050, 2, 1)
        # Nothing more: no second segment follows.
        with pytest.raises(TimeoutError):
            await read(client, timeout=0.5)
    heard = transcribe_pcm(wy_tts, segments[0].pcm, rate)
    assert wer([TTS_TEXT], [heard]) <= 0.25, heard  # tiny.en hears Piper imperfectly


async def test_tts_streaming_with_mid_word_chunks(wy_tts: Served) -> None:
    """tts.py async_stream_tts_audio: synthesize-start, synthesize-chunk* (cut anywhere),
    the whole text again as `synthesize`, synthesize-stop; read to synthesize-stopped."""
    pieces = [TTS_TEXT[i : i + 7] for i in range(0, len(TTS_TEXT), 7)]  # "The bir", "ch cano"
    async with wy_tts.client() as client:
        began = time.perf_counter()
        await client.write_event(SynthesizeStart().event())
        for piece in pieces:
            await client.write_event(SynthesizeChunk(text=piece).event())
        await client.write_event(Synthesize(text=TTS_TEXT).event())
        await client.write_event(SynthesizeStop().event())
        segments, others = await read_segments(client, SynthesizeStopped().event().type, began)
    assert [e.type for e in others] == ["synthesize-stopped"]
    assert len(segments) >= 2  # a segment per phrase, each as soon as it is ready
    rate, _, _ = one_format(segments)
    pcm = b"".join(s.pcm for s in segments)
    heard = transcribe_pcm(wy_tts, pcm, rate)
    assert wer([TTS_TEXT], [heard]) <= 0.25, heard  # tiny.en hears Piper imperfectly
    # No audio twice (the compatibility `synthesize` is not spoken): as long as one segment.
    async with wy_tts.client() as client:
        await client.write_event(Synthesize(text=TTS_TEXT).event())
        whole, _ = await read_segments(client, "audio-stop", time.perf_counter())
    assert 0.7 < len(pcm) / len(whole[0].pcm) < 1.3


async def test_tts_unknown_voice_is_an_error(wy: Served) -> None:
    async with wy.client() as client:
        voice = SynthesizeVoice(name="nobody")
        await client.write_event(Synthesize(text="Hello.", voice=voice).event())
        event = await read(client)
        assert event is not None and Error.is_type(event.type)
        error = Error.from_event(event)
        assert error.code == "unknown_voice" and "en_US-joe-medium" in error.text
        assert await read(client) is None  # the connection ends with the request


async def test_describe_during_a_running_request(wy: Served) -> None:
    long_text = " ".join([TTS_TEXT] * 6)
    async with wy.client() as client:
        await client.write_event(Synthesize(text=long_text).event())
        first = await read(client)
        assert first is not None and AudioStart.is_type(first.type)
        await client.write_event(Describe().event())
        seen = []
        while (event := await read(client)) is not None:
            seen.append(event.type)
            if event.type in ("info", "audio-stop"):
                break
        assert seen[-1] == "info", "describe waited for the synthesis to end"


# --- conversation -----------------------------------------------------------------------------


async def ha_converse(served: Served, text: str, conversation_id: str) -> Event:
    """conversation.py: transcript{text, context{conversation_id}, language}, then read."""
    async with served.client() as client:
        context = {"conversation_id": conversation_id, "device_id": "kitchen-speaker"}
        await client.write_event(Transcript(text, context=context, language="en").event())
        event = await read(client)
        assert event is not None
        return event


async def test_conversation_keeps_history_per_conversation_id(wy: Served) -> None:
    first = await ha_converse(wy, "My name is Alice. Please remember it.", "01JTEST")
    assert Handled.is_type(first.type), first
    handled = Handled.from_event(first)
    assert handled.text and handled.context == {"conversation_id": "01JTEST"}
    second = await ha_converse(wy, "What is my name?", "01JTEST")
    assert Handled.is_type(second.type), second
    conversation = wy.wyoming.conversations.get("01JTEST")
    assert conversation is not None
    history = [(m.role, m.content) for m in conversation.session.history]
    # The second answer was asked with the first exchange before it.
    assert [role for role, _ in history] == ["user", "assistant", "user", "assistant"]
    assert history[0][1].startswith("My name is Alice")
    assert history[3][1] == Handled.from_event(second).text
    other = await ha_converse(wy, "Hello!", "01JOTHER")
    assert Handled.is_type(other.type)
    other_conversation = wy.wyoming.conversations.get("01JOTHER")
    assert other_conversation is not None and len(other_conversation.session.history) == 2


async def test_conversation_of_nothing_is_not_handled(wy: Served) -> None:
    event = await ha_converse(wy, "   ", "01JEMPTY")
    assert NotHandled.is_type(event.type)


# --- failures and disconnects -----------------------------------------------------------------


async def settled(served: Served, sessions: int) -> None:
    for _ in range(100):
        if served.app.hub.count == sessions and not served.wyoming._connections:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{served.app.hub.count} sessions, {served.wyoming._connections}")


async def test_a_client_that_disconnects_mid_stream_leaks_nothing(wy: Served) -> None:
    await settled(wy, len(wy.wyoming.conversations))
    baseline = wy.app.hub.count
    pcm = pcm_of(recordings()[0])
    async with wy.client() as client:  # gone in the middle of the audio
        await client.write_event(Transcribe().event())
        await client.write_event(AudioStart(rate=HA_RATE, width=2, channels=1).event())
        await client.write_event(AudioChunk(rate=HA_RATE, width=2, channels=1, audio=pcm).event())
    async with wy.client() as client:  # gone in the middle of a text stream
        await client.write_event(SynthesizeStart().event())
        await client.write_event(SynthesizeChunk(text="Hello there, this is a long ").event())
        await client.write_event(SynthesizeChunk(text="sentence that is cut. And more").event())
        event = await read(client)
        assert event is not None and AudioStart.is_type(event.type)
    async with wy.client() as client:  # gone while the transcript is being made
        await client.write_event(AudioStart(rate=HA_RATE, width=2, channels=1).event())
        await client.write_event(AudioChunk(rate=HA_RATE, width=2, channels=1, audio=pcm).event())
        await client.write_event(AudioStop().event())
    await settled(wy, baseline)
    # And the server still answers.
    assert (await ha_transcribe(wy, pcm))[0]


async def test_an_oversized_event_is_refused(wy: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", wy.wyoming.port)
    header = {"type": "audio-chunk", "data": {}, "payload_length": 1 << 40}
    writer.write(json.dumps(header).encode() + b"\n")
    await writer.drain()
    line = await asyncio.wait_for(reader.readline(), 5)
    error = json.loads(line)
    assert error["type"] == "error"
    length = error.get("data_length", 0)
    data = json.loads(await reader.readexactly(length)) if length else error["data"]
    assert data["code"] == "frame_too_large"
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


# --- an independent client --------------------------------------------------------------------


async def test_wyoming_bench_against_chinwag(wy: Served, tmp_path: Path) -> None:
    """wyoming-bench (PyPI), run as its own process, finds chinwag's STT and TTS and measures
    them without errors."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for rec in recordings()[:3]:
        (corpus / rec.path.name).write_bytes(rec.path.read_bytes())
        (corpus / rec.path.with_suffix(".txt").name).write_text(rec.text + "\n")
    bench = [sys.executable, "-m", "wyoming_bench.cli"]
    where = f"127.0.0.1:{wy.wyoming.port}"
    common = ["--rounds", "1", "--warmup", "0", "--timeout", "60"]
    for args in (
        ["stt", "--corpus", str(corpus), "--mode", "non_streaming", *common, where],
        ["tts", "--texts", "Hello from chinwag.", "--mode", "both", *common, where],
    ):
        done = await asyncio.to_thread(
            subprocess.run, [*bench, *args], capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "chinwag" in done.stdout, done.stdout
        assert "error" not in done.stdout.lower(), done.stdout
