"""The MQTT wire format: pure parsing and payloads, no broker."""

from __future__ import annotations

import io
import json
import wave
from typing import Any

import pytest

from server.config import ConfigError, MqttSettings, load_settings
from server.errors import ChinwagError
from server.pipeline.state import SessionState
from server.protocol import mqtt as wire
from server.protocol import native as proto

MAX_TEXT = 1000


def code_of(call: Any, *args: Any) -> str:
    with pytest.raises(ChinwagError) as caught:
        call(*args)
    return caught.value.code.value


def test_plain_text_and_json_commands() -> None:
    ask = wire.parse_command("ask", b"  Is the oven on?\n", MAX_TEXT)
    assert ask == proto.UserMessage(text="Is the oven on?")
    ask = wire.parse_command("ask", b'{"text": "Hi", "id": "q-7", "extra": 1}', MAX_TEXT)
    assert ask == proto.UserMessage(text="Hi", id="q-7")  # unknown keys are ignored
    say = wire.parse_command("say", b'{"text": "Done.", "sample_rate": 16000}', MAX_TEXT)
    assert say == proto.Say(text="Done.", sample_rate=16000)
    # An ask takes no sample_rate: ignored like any other extra key.
    assert wire.parse_command("ask", b'{"text": "a", "sample_rate": 8000}', MAX_TEXT) == (
        proto.UserMessage(text="a")
    )


@pytest.mark.parametrize(
    ("kind", "payload", "code"),
    [
        ("ask", b"\xff\xfe not utf-8", "invalid_message"),
        ("ask", b'{"text": "unfinished', "invalid_json"),
        ("ask", b'{"id": "no-text"}', "invalid_message"),
        ("ask", b'{"text": 5}', "invalid_message"),
        ("ask", b'{"text": "   "}', "invalid_message"),
        ("ask", b"", "invalid_message"),
        ("ask", b"x" * 1001, "text_too_long"),
        ("say", b"***", "invalid_message"),
        ("say", b'{"text": "..."}', "invalid_message"),
    ],
)
def test_bad_commands(kind: str, payload: bytes, code: str) -> None:
    assert code_of(wire.parse_command, kind, payload, MAX_TEXT) == code


def test_json_object() -> None:
    assert wire.json_object(b'{"a": 1}') == {"a": 1}
    assert code_of(wire.json_object, b"[1]") == "invalid_message"
    assert code_of(wire.json_object, b"{") == "invalid_json"


def test_hermes_say() -> None:
    payload = {"text": "Dinner is ready.", "siteId": "sat1", "id": "say-42", "sessionId": "s-9"}
    request = wire.parse_hermes_say(json.dumps(payload).encode(), 4096, MAX_TEXT)
    assert (request.site, request.say_id, request.session_id) == ("sat1", "say-42", "s-9")
    assert request.request_id == "say-42"
    assert request.say == proto.Say(text="Dinner is ready.", id="say-42")
    # No site: "default"; an id that cannot be a topic level gets a fresh one.
    request = wire.parse_hermes_say(b'{"text": "Hi", "id": "a/b"}', 4096, MAX_TEXT)
    assert request.site == "default" and request.say_id == "a/b"
    assert request.request_id != "a/b" and wire.valid_level(request.request_id)


@pytest.mark.parametrize(
    ("payload", "code", "site", "session_id"),
    [
        (b'{"text": "hi", "siteId": "a/b", "sessionId": "s1"}', "invalid_message", "a/b", "s1"),
        (b'{"text": "hi", "siteId": 5}', "invalid_message", None, None),
        (b"not json", "invalid_json", None, None),
        (b'{"siteId": "lobby"}', "invalid_message", "lobby", None),
        (b'{"text": "hi", "id": 3}', "invalid_message", "default", None),
        (b'{"text": "' + b"y" * 5000 + b'"}', "frame_too_large", None, None),
    ],
)
def test_bad_hermes_say(
    payload: bytes, code: str, site: str | None, session_id: str | None
) -> None:
    with pytest.raises(wire.HermesSayError) as caught:
        wire.parse_hermes_say(payload, 4096, MAX_TEXT)
    exc = caught.value
    assert (exc.code.value, exc.site, exc.session_id) == (code, site, session_id)
    body = json.loads(wire.hermes_tts_error_payload(exc))
    assert body == {"error": exc.message, "context": code, "siteId": site, "sessionId": session_id}


def test_broker_urls_are_checked_once_for_settings_and_bridge() -> None:
    address = wire.broker_address(MqttSettings(url="MQTTS://u:p%3Aw@h"))
    assert address == wire.BrokerAddress("h", 8883, True, "u", "p:w")
    for bad in ("http://h:1883", "mqtt://", "mqtt://h:99999", "mqtt://h/topic", "h:1883"):
        with pytest.raises(ValueError):
            wire.parse_broker_url(bad)
        with pytest.raises(ConfigError, match="mqtt"):  # the same check, at load time
            load_settings(overrides={"mqtt": {"url": bad}}, environ={})


def test_topics() -> None:
    topics = wire.Topics("home/chinwag")
    assert topics.site("kitchen", wire.event_leaf(proto.OutputAudioClear(stream_id="s"))) == (
        "home/chinwag/kitchen/event/output_audio_clear"
    )
    assert wire.hermes_play_bytes("sat1", "say-42") == "hermes/audioServer/sat1/playBytes/say-42"
    with pytest.raises(ConfigError):
        wire.Topics("home//chinwag")


def old_event_payload(event: proto.ServerEvent, session_id: str) -> bytes:
    """How the bridge built event payloads before: a dict, dumped."""
    body: dict[str, Any] = {"type": event.type, "session_id": session_id}
    body.update(event.model_dump(mode="json", exclude_none=True))
    return wire.dumps(body)


@pytest.mark.parametrize(
    "event",
    [
        proto.ReplyDelta(reply_id="r1", text='Grüße "quoted" \n'),
        proto.ReplyDone(
            reply_id="r1",
            status="completed",
            text="ok",
            usage=proto.Usage(prompt_tokens=3, cached_prompt_tokens=1, completion_tokens=2),
        ),
        proto.SpeechStopped(utterance_id="u1", at_ms=1234.5, duration_ms=800.25),
        proto.SessionStarted(
            session_id="abc",
            persona="assistant",
            personas=["assistant"],
            generation={"temperature": 0.7},
            model="m.gguf",
            context_size=2048,
        ),
        proto.Error(code="invalid_message", message="bad"),
    ],
)
def test_event_payloads_read_as_before(event: proto.ServerEvent) -> None:
    payload = wire.event_payload(event, "abc")
    assert json.loads(payload) == json.loads(old_event_payload(event, "abc"))
    assert list(json.loads(payload))[:2] == ["type", "session_id"]


def test_other_payloads() -> None:
    state = json.loads(wire.state_payload("abc", SessionState.THINKING, SessionState.SPEAKING))
    assert state == {"state": "speaking", "previous": "thinking", "session_id": "abc"}
    assert json.loads(wire.error_payload("c", "m", "ask")) == {
        "code": "c",
        "message": "m",
        "source": "ask",
    }
    unsited = json.loads(wire.error_payload("c", "m", "ask", site="a/b", unsited=True))
    assert unsited["site"] == "a/b"
    transcript = proto.Transcript(
        utterance_id="u", text=" Hi. ", duration_ms=1, transcribe_ms=123.4
    )
    captured = json.loads(wire.text_captured_payload(transcript, "kitchen", "abc"))
    assert captured == {
        "text": "Hi.",
        "likelihood": 1.0,
        "seconds": 0.123,
        "siteId": "kitchen",
        "sessionId": "abc",
        "wakewordId": None,
    }


def test_wav_bytes() -> None:
    pcm = b"\x01\x00\xff\x7f" * 10
    with wave.open(io.BytesIO(wire.wav_bytes(pcm, 22050))) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 22050)
        assert wav.readframes(wav.getnframes()) == pcm
