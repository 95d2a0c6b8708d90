"""The satellite side of Wyoming as pure translation: events in, actions out."""

from __future__ import annotations

import pytest
from wyoming.audio import AudioChunk, AudioStop
from wyoming.event import Event
from wyoming.info import Attribution, Info, Satellite
from wyoming.ping import Ping, Pong
from wyoming.pipeline import PipelineStage, RunPipeline
from wyoming.snd import Played
from wyoming.wake import Detection

from server.errors import ChinwagError, ErrorCode
from server.protocol import wyoming as wire
from server.protocol import wyoming_satellite as sat


def test_run_pipeline_is_read_with_its_stages_and_options() -> None:
    event = RunPipeline(
        start_stage=PipelineStage.WAKE, end_stage=PipelineStage.TTS, restart_on_end=True
    ).event()
    event.data["snd_format"] = {"rate": 16000, "width": 2, "channels": 1}
    request = sat.read_satellite_event(event)
    assert request == sat.PipelineRequest("wake", "tts", True, 16000)
    assert isinstance(request, sat.PipelineRequest)
    assert request.wake and request.respond and request.speak and request.restarts


@pytest.mark.parametrize(
    ("start", "end", "respond", "speak"),
    [("asr", "asr", False, False), ("asr", "handle", True, False), ("asr", "tts", True, True)],
)
def test_the_end_stage_decides_what_a_run_does(
    start: sat.Stage, end: sat.Stage, respond: bool, speak: bool
) -> None:
    request = sat.parse_pipeline_request({"start_stage": start, "end_stage": end})
    assert (request.respond, request.speak, request.wake) == (respond, speak, False)


def test_old_satellites_that_do_not_say_restart_when_they_start_at_wake() -> None:
    # wyoming-satellite 1.0.0 (always streaming) sends one run-pipeline with no restart_on_end.
    old_always_on = sat.parse_pipeline_request({"start_stage": "wake", "end_stage": "tts"})
    assert old_always_on.restart_on_end is None and old_always_on.restarts
    local_wake = sat.parse_pipeline_request({"start_stage": "asr", "end_stage": "tts"})
    assert not local_wake.restarts
    said_no = sat.parse_pipeline_request(
        {"start_stage": "wake", "end_stage": "tts", "restart_on_end": False}
    )
    assert not said_no.restarts


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ({"start_stage": "listen", "end_stage": "tts"}, ErrorCode.INVALID_MESSAGE),
        ({"start_stage": "tts", "end_stage": "asr"}, ErrorCode.INVALID_MESSAGE),
        ({"end_stage": "tts"}, ErrorCode.INVALID_MESSAGE),
        (
            {"start_stage": "asr", "end_stage": "tts", "restart_on_end": "yes"},
            ErrorCode.INVALID_MESSAGE,
        ),
        (
            {"start_stage": "asr", "end_stage": "tts", "snd_format": {"rate": 1}},
            ErrorCode.INVALID_AUDIO_FORMAT,
        ),
        (
            {"start_stage": "asr", "end_stage": "tts", "snd_format": {"rate": "fast"}},
            ErrorCode.INVALID_AUDIO_FORMAT,
        ),
    ],
)
def test_bad_run_pipeline_requests_are_errors_with_a_code(
    data: dict[str, object], code: ErrorCode
) -> None:
    with pytest.raises(ChinwagError) as raised:
        sat.read_satellite_event(Event(type="run-pipeline", data=data))
    assert raised.value.code == code


def test_microphone_audio_is_made_mono_16_bit() -> None:
    stereo = AudioChunk(rate=16000, width=2, channels=2, audio=b"\x10\x00\x30\x00" * 4).event()
    action = sat.read_satellite_event(stereo)
    assert action == sat.MicAudio(b"\x20\x00" * 4, 16000)
    with pytest.raises(ChinwagError) as raised:
        sat.read_satellite_event(AudioChunk(rate=16000, width=7, channels=1, audio=b"").event())
    assert raised.value.code == ErrorCode.INVALID_AUDIO_FORMAT


def test_the_other_satellite_events() -> None:
    assert sat.read_satellite_event(Ping(text="7").event()) == sat.PingReceived("7")
    assert sat.read_satellite_event(Pong(text="7").event()) == sat.PongReceived()
    assert sat.read_satellite_event(AudioStop().event()) == sat.MicStopped()
    assert sat.read_satellite_event(Played().event()) == sat.AudioPlayed()
    assert sat.read_satellite_event(Detection(name="ok_nabu").event()) == sat.WakeWordDetected(
        "ok_nabu"
    )
    assert sat.read_satellite_event(Event(type="timer-started")) == wire.Ignore("timer-started")


def test_info_gives_the_satellite_name() -> None:
    attribution = Attribution(name="", url="")
    info = Info(
        satellite=Satellite(
            name="Kitchen speaker",
            attribution=attribution,
            installed=True,
            description="",
            version=None,
            area="Kitchen",
        )
    )
    assert sat.read_satellite_event(info.event()) == sat.SatelliteInfo("Kitchen speaker", "Kitchen")
    assert sat.read_satellite_event(Info().event()) == sat.SatelliteInfo(None, None)


@pytest.mark.parametrize(
    ("name", "site"),
    [
        ("kitchen", "kitchen"),
        ("Kitchen speaker #2", "Kitchen_speaker_2"),
        ("a/b+c", "a_b_c"),
        (None, "10_0_0_5-10700"),
        ("   ", "10_0_0_5-10700"),
        ("x" * 200, "x" * sat.MAX_SITE_CHARS),
        ("///", "satellite-10700"),
    ],
)
def test_the_site_is_the_name_made_topic_safe(name: str | None, site: str) -> None:
    assert sat.site_name(name, "10.0.0.5", 10700) == site


def test_the_wait_for_played_is_what_is_left_to_play_and_a_margin() -> None:
    assert sat.played_wait_s(3.0, 1.0) == pytest.approx(3.0)
    assert sat.played_wait_s(1.0, 5.0) == pytest.approx(1.0)


def test_the_wake_words_a_satellite_names_are_read() -> None:
    names = {"start_stage": "wake", "end_stage": "tts", "wake_word_names": ["hey_jarvis"]}
    assert sat.parse_pipeline_request(names).wake_words == ("hey_jarvis",)
    one = {"start_stage": "wake", "end_stage": "tts", "wake_word_name": "alexa"}
    assert sat.parse_pipeline_request(one).wake_words == ("alexa",)
    for bad in ("hey_jarvis", [1], [""], ["x"] * 9):
        with pytest.raises(ChinwagError) as raised:
            sat.parse_pipeline_request({**names, "wake_word_names": bad})
        assert raised.value.code == ErrorCode.INVALID_MESSAGE
