"""The Wyoming translation (server/protocol/wyoming.py and its wyoming_framing, wyoming_info and
wyoming_audio): bytes and events in, actions out."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.event import Event, read_event, write_event
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop

from server.config import load_settings
from server.errors import ChinwagError, ErrorCode
from server.pipeline.text_split import PhraseSplitter
from server.protocol import wyoming as wire
from server.protocol.wyoming_audio import AudioFormat, to_mono_pcm16
from server.protocol.wyoming_framing import build_event, parse_header
from server.protocol.wyoming_info import asr_languages, build_info, pick_voice, voice_of

LIMIT = 1 << 20


def reader(max_audio_s: float = 60.0, max_text_chars: int = 1000) -> wire.RequestReader:
    return wire.RequestReader(
        max_audio_s=max_audio_s,
        max_text_chars=max_text_chars,
        splitter=lambda: PhraseSplitter(first_phrase_max_words=4),
    )


def framed(event: Event) -> bytes:
    out = io.BytesIO()
    write_event(event, out)
    return out.getvalue()


def parse(frame: bytes) -> Event:
    """The bounded reader's steps over one frame."""
    line, rest = frame.split(b"\n", 1)
    header = parse_header(line, LIMIT)
    data, payload = rest[: header.data_length], rest[header.data_length :]
    assert len(payload) == header.payload_length
    return build_event(header, data, payload)


@pytest.mark.parametrize(
    ("kind", "data", "payload"),
    [
        ("describe", {}, b""),
        ("audio-chunk", {"rate": 16000, "width": 2, "channels": 1}, bytes(range(256)) * 8),
        ("synthesize", {"text": 'Grüß Gott \u2014 \U0001f600 \n "quoted"'}, b""),
        ("x", {"nested": {"a": [1, 2, {"b": None}]}, "n": -1.5}, b"\n\n{"),
    ],
)
def test_frames_read_as_the_wyoming_package_writes_them(
    kind: str, data: dict[str, object], payload: bytes
) -> None:
    event = Event(type=kind, data=data, payload=payload or None)
    parsed = parse(framed(event))
    assert (parsed.type, parsed.data, parsed.payload) == (kind, data, payload or None)
    # and the package reads what it wrote the same way
    again = read_event(io.BytesIO(framed(event)))
    assert again is not None and again.data == parsed.data


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"not json", ErrorCode.INVALID_JSON),
        (b"[1, 2]", ErrorCode.INVALID_MESSAGE),
        (b'{"data": {}}', ErrorCode.INVALID_MESSAGE),
        (b'{"type": "x", "payload_length": -1}', ErrorCode.INVALID_MESSAGE),
        (b'{"type": "x", "data_length": "12"}', ErrorCode.INVALID_MESSAGE),
        (b'{"type": "audio-chunk", "payload_length": 2000000}', ErrorCode.FRAME_TOO_LARGE),
        (b'{"type": "x", "data": [1]}', ErrorCode.INVALID_MESSAGE),
    ],
)
def test_bad_headers_are_refused_before_reading_on(line: bytes, code: ErrorCode) -> None:
    with pytest.raises(ChinwagError) as caught:
        parse_header(line, LIMIT)
    assert caught.value.code == code


def test_tcp_uris() -> None:
    assert wire.parse_tcp_uri("tcp://127.0.0.1:10300") == ("127.0.0.1", 10300)
    assert wire.parse_tcp_uri("tcp://0.0.0.0:0") == ("0.0.0.0", 0)
    assert wire.parse_tcp_uri("tcp://[::1]:10300") == ("::1", 10300)
    for bad in ("127.0.0.1:10300", "unix:///tmp/s", "tcp://host", "tcp://h:70000"):
        with pytest.raises(ValueError):
            wire.parse_tcp_uri(bad)


def test_info_fills_what_home_assistant_reads(tmp_path: Path) -> None:
    settings = load_settings(overrides={"wyoming": {"uri": "tcp://127.0.0.1:0"}}, environ={})
    info = Info.from_event(build_info(settings, "smart_home", "1.2.3").event())
    assert [p.name for p in info.asr] == ["chinwag"]
    assert info.asr[0].installed and info.asr[0].requires_external_vad
    assert info.tts[0].supports_synthesize_streaming and info.tts[0].voices[0].installed
    assert info.handle[0].installed and not info.handle[0].supports_home_control
    assert "smart_home" in (info.handle[0].description or "")
    assert not info.wake and not info.intent and not info.mic and info.satellite is None
    with_vad = load_settings(overrides={"wyoming": {"use_vad": True}}, environ={})
    assert not build_info(with_vad, "x", "1").asr[0].requires_external_vad
    english = load_settings(overrides={"asr": {"language": None}}, environ={})
    assert asr_languages(english) == ["en"]  # whisper-tiny-en: an English-only model
    multi = load_settings(
        overrides={"asr": {"language": None, "model_path": str(tmp_path / "whisper-base")}},
        environ={},
    )
    assert "de" in asr_languages(multi)


def test_voice_described_from_its_config(tmp_path: Path) -> None:
    onnx = tmp_path / "de_DE-thorsten-high.onnx"
    config = {"language": {"code": "de_DE"}, "audio": {"sample_rate": 22050, "quality": "high"}}
    Path(f"{onnx}.json").write_text(json.dumps(config))
    voice = voice_of(onnx)
    assert (voice.name, voice.languages, voice.sample_rate) == (
        "de_DE-thorsten-high",
        ("de_DE",),
        22050,
    )
    assert voice_of(tmp_path / "fr_FR-siwis-low.onnx").languages == ("fr_FR",)
    voices = [voice]
    assert pick_voice(voices, None, None) is voice
    assert pick_voice(voices, None, "de") is voice
    with pytest.raises(ChinwagError) as caught:
        pick_voice(voices, "nobody", None)
    assert caught.value.code == ErrorCode.UNKNOWN_VOICE
    with pytest.raises(ChinwagError):
        pick_voice(voices, None, "fr")


def test_audio_of_any_width_and_channels_becomes_mono_16_bit() -> None:
    samples = np.array([0, 1000, -1000, 32767, -32768], dtype=np.int16)
    fmt16 = AudioFormat(16000, 2, 1)
    assert to_mono_pcm16(samples.tobytes(), fmt16) == samples.tobytes()
    stereo = np.stack([samples, samples], axis=1).astype("<i2").tobytes()
    assert to_mono_pcm16(stereo, AudioFormat(16000, 2, 2)) == samples.tobytes()
    wide = (samples.astype(np.int32) << 16).astype("<i4").tobytes()
    assert to_mono_pcm16(wide, AudioFormat(16000, 4, 1)) == samples.tobytes()
    as24 = b"".join((int(s) << 8).to_bytes(3, "little", signed=True) for s in samples)
    assert to_mono_pcm16(as24, AudioFormat(16000, 3, 1)) == samples.tobytes()
    as8 = bytes([128, 132, 124, 255, 0])
    out = np.frombuffer(to_mono_pcm16(as8, AudioFormat(8000, 1, 1)), dtype="<i2")
    assert out.tolist() == [0, 1024, -1024, 32512, -32768]
    with pytest.raises(ChinwagError):
        to_mono_pcm16(b"\x00\x00\x00", fmt16)


@pytest.mark.parametrize(
    "data",
    [
        {"rate": 16000, "width": 5, "channels": 1},
        {"rate": 16000, "width": 2, "channels": 0},
        {"rate": 4000, "width": 2, "channels": 1},
        {"rate": "16000", "width": 2, "channels": 1},
        {"width": 2, "channels": 1},
    ],
)
def test_bad_audio_formats(data: dict[str, object]) -> None:
    with pytest.raises(ChinwagError) as caught:
        reader().receive(Event("audio-start", data))
    assert caught.value.code == ErrorCode.INVALID_AUDIO_FORMAT


def test_speech_to_text_events() -> None:
    r = reader(max_audio_s=1.0)
    assert isinstance(r.receive(Describe().event()), wire.SendInfo)
    begin = r.receive(Transcribe(language="en", vad_sensitivity="relaxed").event())
    assert begin == wire.BeginTranscription("en", 1.5)
    opened = r.receive(AudioStart(rate=16000, width=2, channels=1).event())
    assert opened == wire.OpenAudio(16000, begin)
    pcm = bytes(16000)  # half a second
    assert r.receive(AudioChunk(rate=16000, width=2, channels=1, audio=pcm).event()) == (
        wire.AudioIn(pcm)
    )
    with pytest.raises(ChinwagError) as caught:
        r.receive(AudioChunk(rate=8000, width=2, channels=1, audio=pcm).event())
    assert caught.value.code == ErrorCode.INVALID_AUDIO_FORMAT
    r.receive(AudioChunk(rate=16000, width=2, channels=1, audio=pcm).event())
    with pytest.raises(ChinwagError) as caught:  # over max_audio_s
        r.receive(AudioChunk(rate=16000, width=2, channels=1, audio=b"\x00\x00").event())
    assert caught.value.code == ErrorCode.UTTERANCE_TOO_LONG
    assert isinstance(r.receive(AudioStop().event()), wire.CloseAudio)
    with pytest.raises(ChinwagError) as caught:
        r.receive(AudioChunk(rate=16000, width=2, channels=1, audio=pcm).event())
    assert caught.value.code == ErrorCode.AUDIO_NOT_STARTED
    # audio-start on its own is a transcription too
    alone = r.receive(AudioStart(rate=22050, width=2, channels=1).event())
    assert alone == wire.OpenAudio(22050, wire.BeginTranscription(None, 1.0))


def test_synthesize_is_one_request_and_streams_split_anywhere() -> None:
    r = reader()
    speak = r.receive(Synthesize(text="Hello there. How are you today, my friend?").event())
    assert isinstance(speak, wire.Speak) and speak.voice is None
    assert " ".join(speak.phrases) == "Hello there. How are you today, my friend?"
    assert isinstance(r.receive(SynthesizeStart().event()), wire.OpenTextStream)
    text = "The birch canoe slid on the smooth planks. Glue the sheet."
    phrases: list[str] = []
    for i in range(0, len(text), 5):
        action = r.receive(SynthesizeChunk(text=text[i : i + 5]).event())
        assert isinstance(action, wire.TextIn) and not action.final
        phrases.extend(action.phrases)
    assert phrases, "complete phrases go out before the stream ends"
    assert isinstance(r.receive(Synthesize(text=text).event()), wire.Ignore)
    last = r.receive(SynthesizeStop().event())
    assert isinstance(last, wire.TextIn) and last.final
    assert " ".join([*phrases, *last.phrases]) == text
    with pytest.raises(ChinwagError):
        r.receive(SynthesizeChunk(text="late").event())


def test_text_limits() -> None:
    r = reader(max_text_chars=10)
    with pytest.raises(ChinwagError) as caught:
        r.receive(Synthesize(text="x" * 11).event())
    assert caught.value.code == ErrorCode.TEXT_TOO_LONG
    r.receive(SynthesizeStart().event())
    r.receive(SynthesizeChunk(text="x" * 6).event())
    with pytest.raises(ChinwagError):
        r.receive(SynthesizeChunk(text="x" * 6).event())


def test_a_transcript_is_a_conversation_turn() -> None:
    r = reader()
    context = {"conversation_id": "01J", "device_id": "d"}
    action = r.receive(Transcript("Turn on the lights. ", context=context, language="en").event())
    assert action == wire.Converse("Turn on the lights.", "en", "01J", context)
    with pytest.raises(ChinwagError):
        r.receive(Transcript("x", context={"conversation_id": 5}).event())
    with pytest.raises(ChinwagError):
        r.receive(Event("transcript", {}))


def test_other_events_are_ignored() -> None:
    r = reader()
    for kind in ("select-program", "ping", "run-pipeline", "frobnicate"):
        assert r.receive(Event(kind, {"name": "x"})) == wire.Ignore(kind)


@pytest.mark.parametrize(
    "line",
    [
        b"[" * 40 + b"]" * 40,  # deeper than any event
        b'{"type": "x", "data": {"n": ' + b"9" * 5000 + b"}}",  # past the digit limit
        b'{"type": "\\ud800"}',  # a lone surrogate
        b'{"type": "x", "data": {"n": NaN}}',
    ],
)
def test_hostile_json_headers_are_invalid_json(line: bytes) -> None:
    with pytest.raises(ChinwagError) as err:
        parse_header(line, 1 << 20)
    assert err.value.code is ErrorCode.INVALID_JSON
