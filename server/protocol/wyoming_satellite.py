"""Wyoming satellites driven by chinwag, as pure translation (docs/satellites.md).

chinwag connects out to a `wyoming-satellite` as Home Assistant does (its wyoming
integration's assist_satellite.py): `describe` / `info`, `run-satellite`, ping / pong, and for
each `run-pipeline` the satellite asks for, one pipeline run whose progress goes back as
`detection`, `voice-started`, `voice-stopped`, `transcript`, `synthesize` and the reply audio
(`audio-start` / `-chunk` / `-stop`); the satellite answers `played` when it has played it.

No asyncio and no sockets here: `wyoming.event.Event`s in, typed actions out (the framing is
server.protocol.wyoming_framing's, the audio conversion server.protocol.wyoming_audio's); the
I/O is server/transports/wyoming_satellite.py.

Satellites differ by version. wyoming-satellite 1.0.0 (the one on the package index) knows no
ping, sends no `played` and no `restart_on_end`: an always-streaming one sends a single
`run-pipeline` and expects the server to keep running pipelines on its audio, as Home
Assistant did then. Newer ones say `restart_on_end` and answer pings and `played`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from wyoming.audio import AudioChunk, AudioStop
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.ping import Ping, Pong
from wyoming.pipeline import RunPipeline
from wyoming.satellite import PauseSatellite, RunSatellite
from wyoming.snd import Played
from wyoming.tts import Synthesize
from wyoming.vad import VoiceStarted, VoiceStopped
from wyoming.wake import Detect, Detection

from server.audio.pcm import check_sample_rate
from server.errors import ChinwagError, ErrorCode
from server.protocol import wyoming as wire
from server.protocol.wyoming_audio import audio_format, to_mono_pcm16

DEFAULT_SATELLITE_PORT = 10700
Stage = Literal["wake", "asr", "intent", "handle", "tts"]
STAGES: tuple[Stage, ...] = ("wake", "asr", "intent", "handle", "tts")
MAX_SITE_CHARS = 64
MAX_WAKE_WORD_CHARS = 128
MAX_WAKE_WORDS = 8


# --- what a satellite sends ------------------------------------------------------------------


@dataclass(frozen=True)
class PingReceived:
    """The satellite checks that chinwag is there: answer `pong` with the same text."""

    text: str | None


@dataclass(frozen=True)
class PongReceived:
    """The satellite answered chinwag's ping: it is there."""


@dataclass(frozen=True)
class PipelineRequest:
    """`run-pipeline`: run from `start` to `end`.

    `restart_on_end`: None when the satellite did not say (wyoming-satellite before 1.1)."""

    start: Stage
    end: Stage
    restart_on_end: bool | None = None
    output_rate: int | None = None  # `snd_format.rate`: the rate the satellite plays
    # The wake words the satellite asks for (`wake_word_names`); none: chinwag's choice.
    wake_words: tuple[str, ...] = ()

    @property
    def wake(self) -> bool:
        """Whether the run starts by listening for the wake word (on chinwag's side)."""
        return self.start == "wake"

    @property
    def respond(self) -> bool:
        """Whether the run answers (intent or LLM) rather than only transcribing."""
        return STAGES.index(self.end) >= STAGES.index("intent")

    @property
    def speak(self) -> bool:
        return self.end == "tts"

    @property
    def restarts(self) -> bool:
        """Whether another run follows this one by itself. Satellites that do not say are the
        old always-streaming kind when they start at the wake stage: their audio never stops
        and they never ask again, so the server keeps listening (as Home Assistant did)."""
        if self.restart_on_end is not None:
            return self.restart_on_end
        return self.start == "wake"


@dataclass(frozen=True)
class MicAudio:
    """Microphone audio as mono 16-bit PCM at `rate`."""

    pcm: bytes
    rate: int


@dataclass(frozen=True)
class MicStopped:
    """`audio-stop` from the satellite: it stopped streaming (e.g. its wake word timed out)."""


@dataclass(frozen=True)
class WakeWordDetected:
    """`detection`: the satellite heard its own wake word."""

    name: str | None


@dataclass(frozen=True)
class AudioPlayed:
    """`played`: the satellite finished playing the reply audio."""


@dataclass(frozen=True)
class SatelliteInfo:
    """`info`: the satellite's name and area, if it gives them."""

    name: str | None
    area: str | None


SatelliteAction = (
    PingReceived
    | PongReceived
    | PipelineRequest
    | MicAudio
    | MicStopped
    | WakeWordDetected
    | AudioPlayed
    | SatelliteInfo
    | wire.Ignore
)


def _stage(value: object, name: str) -> Stage:
    for stage in STAGES:
        if value == stage:
            return stage
    raise ChinwagError(ErrorCode.INVALID_MESSAGE, f"run-pipeline: unknown {name} {value!r}")


def _optional_str(data: Mapping[str, Any], key: str, limit: int) -> str | None:
    value = data.get(key)
    if isinstance(value, str) and 0 < len(value) <= limit:
        return value
    return None


def parse_pipeline_request(data: Mapping[str, Any]) -> PipelineRequest:
    start = _stage(data.get("start_stage"), "start_stage")
    end = _stage(data.get("end_stage"), "end_stage")
    if STAGES.index(end) < STAGES.index(start):
        raise ChinwagError(
            ErrorCode.INVALID_MESSAGE, f"run-pipeline: end_stage {end} comes before {start}"
        )
    restart = data.get("restart_on_end")
    if restart is not None and not isinstance(restart, bool):
        raise ChinwagError(ErrorCode.INVALID_MESSAGE, "run-pipeline: restart_on_end is a bool")
    rate: int | None = None
    snd = data.get("snd_format")
    if isinstance(snd, dict) and snd.get("rate") is not None:
        value = snd["rate"]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ChinwagError(ErrorCode.INVALID_AUDIO_FORMAT, "snd_format.rate is an integer")
        check_sample_rate(value)
        rate = value
    return PipelineRequest(start, end, restart, rate, _wake_words(data))


def _wake_words(data: Mapping[str, Any]) -> tuple[str, ...]:
    names = data.get("wake_word_names")
    if names is None and data.get("wake_word_name") is not None:
        names = [data["wake_word_name"]]
    if names is None:
        return ()
    if (
        not isinstance(names, list)
        or len(names) > MAX_WAKE_WORDS
        or not all(isinstance(n, str) and 0 < len(n) <= MAX_WAKE_WORD_CHARS for n in names)
    ):
        raise ChinwagError(
            ErrorCode.INVALID_MESSAGE,
            f"run-pipeline: wake_word_names is a list of at most {MAX_WAKE_WORDS} names",
        )
    return tuple(names)


def parse_info(data: Mapping[str, Any]) -> SatelliteInfo:
    satellite = data.get("satellite")
    if not isinstance(satellite, dict):
        return SatelliteInfo(None, None)
    return SatelliteInfo(
        _optional_str(satellite, "name", 256), _optional_str(satellite, "area", 256)
    )


def read_satellite_event(event: Event) -> SatelliteAction:
    """One event from a satellite as what to do. ChinwagError for a malformed one (the
    connection goes on: a satellite is not dropped for one bad event)."""
    data = event.data or {}
    kind = event.type
    if AudioChunk.is_type(kind):
        fmt = audio_format(data)
        return MicAudio(to_mono_pcm16(event.payload or b"", fmt), fmt.rate)
    if Ping.is_type(kind):
        text = data.get("text")
        return PingReceived(text if isinstance(text, str) else None)
    if Pong.is_type(kind):
        return PongReceived()
    if RunPipeline.is_type(kind):
        return parse_pipeline_request(data)
    if AudioStop.is_type(kind):
        return MicStopped()
    if Detection.is_type(kind):
        return WakeWordDetected(_optional_str(data, "name", MAX_WAKE_WORD_CHARS))
    if Played.is_type(kind):
        return AudioPlayed()
    if Info.is_type(kind):
        return parse_info(data)
    return wire.Ignore(kind)


# --- the site ----------------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def site_name(name: str | None, host: str, port: int) -> str:
    """The satellite's site (MQTT topics, published events): its name made topic-safe, or
    HOST-PORT when it has none."""
    raw = name if name and name.strip() else f"{host}-{port}"
    site = _UNSAFE.sub("_", raw.strip()).strip("_")[:MAX_SITE_CHARS]
    return site or f"satellite-{port}"


# --- what chinwag sends ------------------------------------------------------------------------


def describe_event() -> Event:
    return Describe().event()


def run_satellite_event() -> Event:
    return RunSatellite().event()


def pause_satellite_event() -> Event:
    return PauseSatellite().event()


def ping_event(text: str) -> Event:
    return Ping(text=text).event()


def pong_event(text: str | None) -> Event:
    return Pong(text=text).event()


def detection_event(name: str) -> Event:
    return Detection(name=name).event()


def detect_event(names: list[str]) -> Event:
    return Detect(names=names).event()


def voice_started_event() -> Event:
    return VoiceStarted().event()


def voice_stopped_event() -> Event:
    return VoiceStopped().event()


def synthesize_event(text: str) -> Event:
    return Synthesize(text=text).event()


def played_wait_s(audio_s: float, sent_for_s: float, extra_s: float = 1.0) -> float:
    """How long to wait for `played` once the reply's audio is all sent: what is left of it
    to play (it was sent faster than real time), and a margin. Old satellites never send
    `played`; for them this is the wait."""
    return max(0.0, audio_s - sent_for_s) + extra_s
