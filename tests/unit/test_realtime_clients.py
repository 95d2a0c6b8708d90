"""What the Realtime frameworks send (issue 18), decoded and answered without a server:
semantic_vad, a session.update applied whole, response.create's parameters, item retrieval,
and refused events in the log. The frameworks themselves run in
tests/e2e/test_realtime_frameworks.py."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from server.engines.base import ChatMessage
from server.protocol import native as proto
from server.protocol import realtime as rt
from server.protocol.realtime_config import RealtimeConfig
from server.protocol.realtime_events import RealtimeEvents
from server.protocol.realtime_response import ResponseParams, response_params
from server.transports.realtime import rejected

# The Agents SDK's first session.update, as 0.24 sends it with its defaults.
AGENTS_UPDATE: dict[str, Any] = {
    "type": "session.update",
    "session": {
        "type": "realtime",
        "model": "gpt-realtime-2.1",
        "instructions": "You are a pirate.",
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": {"model": "gpt-4o-mini-transcribe"},
                "turn_detection": {"type": "semantic_vad", "interrupt_response": True},
            },
            "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "ash"},
        },
        "tools": [],
    },
}


def config() -> RealtimeConfig:
    return RealtimeConfig(model="m", instructions="persona")


def test_semantic_vad_applies_with_every_other_field() -> None:
    cfg = config()
    cfg.apply(AGENTS_UPDATE)
    assert cfg.instructions == "You are a pirate." and cfg.voice == "ash"
    session = cfg.session_object("sess_1")
    audio_in = session["audio"]["input"]
    assert audio_in["turn_detection"] == {
        "type": "semantic_vad",
        "eagerness": "auto",
        "create_response": True,
        "interrupt_response": True,
    }
    assert audio_in["transcription"] == {"model": "gpt-4o-mini-transcribe"}
    assert session["audio"]["output"]["voice"] == "ash"


@pytest.mark.parametrize(
    ("eagerness", "silence_ms"), [("low", 2000), ("medium", 1000), ("auto", 1000), ("high", 500)]
)
def test_eagerness_sets_the_silence_of_an_unfinished_sentence(
    eagerness: str, silence_ms: int
) -> None:
    cfg = config()
    td = {"type": "semantic_vad", "eagerness": eagerness, "create_response": False}
    cfg.apply({"type": "session.update", "session": {"audio": {"input": {"turn_detection": td}}}})
    start = cfg.audio_start()
    assert start.mode == "vad" and start.vad is not None and start.vad.silence_ms == silence_ms
    assert start.respond is False
    reported = cfg.session_object("s")["audio"]["input"]["turn_detection"]
    assert reported["eagerness"] == eagerness and reported["create_response"] is False


def test_a_bad_eagerness_changes_nothing() -> None:
    cfg = config()
    update = {
        "type": "session.update",
        "event_id": "e1",
        "session": {
            "instructions": "lost",
            "audio": {"input": {"turn_detection": {"type": "semantic_vad", "eagerness": "eager"}}},
        },
    }
    with pytest.raises(rt.RealtimeError) as info:
        cfg.apply(update)
    assert info.value.code == "invalid_value" and info.value.event_id == "e1"
    assert info.value.param == "session.audio.input.turn_detection.eagerness"
    assert cfg.instructions == "persona" and cfg.turn_detection is not None
    assert cfg.turn_detection.kind == "server_vad"


def test_other_turn_detection_types_are_refused() -> None:
    with pytest.raises(rt.RealtimeError) as info:
        config().apply(
            {"type": "session.update",
             "session": {"audio": {"input": {"turn_detection": {"type": "push_button"}}}}}
        )  # fmt: skip
    assert info.value.code == "unsupported_turn_detection"


def test_settings_without_effect_are_echoed_as_set() -> None:
    cfg = config()
    cfg.apply(
        {"type": "session.update",
         "session": {"tracing": "auto", "truncation": "disabled",
                     "audio": {"input": {"noise_reduction": {"type": "near_field"}},
                               "output": {"speed": 1.2}}}}
    )  # fmt: skip
    session = cfg.session_object("s")
    assert session["tracing"] == "auto" and session["truncation"] == "disabled"
    assert session["audio"]["input"]["noise_reduction"] == {"type": "near_field"}
    assert session["audio"]["output"]["speed"] == 1.2
    cfg.apply({"type": "session.update", "session": {"audio": {"input": {"transcription": None}}}})
    assert cfg.session_object("s")["audio"]["input"]["transcription"] is None


def create(**response: Any) -> dict[str, Any]:
    return {"type": "response.create", "event_id": "c1", "response": response}


def test_response_parameters() -> None:
    params = response_params(
        create(metadata={"client_event_id": "response_create_1"}, conversation="none",
               output_modalities=["text"], max_output_tokens=20, instructions="shout")
    , config())  # fmt: skip
    assert params.metadata == {"client_event_id": "response_create_1"}
    assert not params.in_conversation and not params.speak
    assert params.max_output_tokens == 20 and params.instructions == "shout"
    assert response_params({"type": "response.create"}, config()).in_conversation


@pytest.mark.parametrize(
    ("response", "code", "param"),
    [
        ({"input": []}, "unsupported_response_input", "response.input"),
        ({"tools": [{"type": "function", "name": "f"}]}, "unsupported_tools", "response.tools"),
        ({"conversation": "other"}, "invalid_value", "response.conversation"),
        ({"metadata": {"k": 1}}, "invalid_value", "response.metadata"),
        ({"metadata": {str(i): "v" for i in range(17)}}, "invalid_value", "response.metadata"),
        ({"max_output_tokens": 0}, "invalid_value", "response.max_output_tokens"),
        ({"audio": {"output": {"format": {"type": "audio/pcmu"}}}}, "unsupported_format",
         "response.audio.output.format"),
    ],
)  # fmt: skip
def test_response_parameters_refused(response: dict[str, Any], code: str, param: str) -> None:
    with pytest.raises(rt.RealtimeError) as info:
        response_params(create(**response), config())
    assert (info.value.code, info.value.param, info.value.event_id) == (code, param, "c1")


def test_metadata_is_echoed_and_out_of_band_adds_no_item() -> None:
    events = RealtimeEvents(config())
    events.next_response = ResponseParams(
        speak=False, metadata={"client_event_id": "x"}, in_conversation=False
    )
    started = events.event(proto.ReplyStarted(reply_id="r1"))
    created = started[0]["response"]
    assert created["metadata"] == {"client_event_id": "x"} and created["conversation_id"] is None
    done = events.event(proto.ReplyDone(reply_id="r1", status="completed", text="hi"))
    assert done[-1]["response"]["metadata"] == {"client_event_id": "x"}
    assert not any(e["type"].startswith("conversation.item") for e in started + done)
    # The next response, a VAD turn's, is in the conversation and has no metadata.
    started = events.event(proto.ReplyStarted(reply_id="r2"))
    assert started[0]["response"]["metadata"] is None
    assert "conversation.item.added" in [e["type"] for e in started]


def test_retrieve_gives_the_item_as_held() -> None:
    events = RealtimeEvents(config())
    events.event(proto.SpeechStopped(utterance_id="u1", at_ms=900, duration_ms=800))
    # Still being transcribed: as last sent.
    live = events.item_retrieved("u1", [])[0]["item"]
    assert live["status"] == "in_progress" and live["content"][0]["transcript"] is None
    history = [
        ChatMessage("user", "what time is it", "u1"),
        ChatMessage("assistant", "It is", "r1"),  # truncated to what was heard
        ChatMessage("user", "typed", "m1"),
    ]
    events.audio_items.add("r1")
    retrieved = events.item_retrieved("u1", history)[0]
    assert retrieved["type"] == "conversation.item.retrieved"
    assert retrieved["item"]["content"] == [
        {"type": "input_audio", "transcript": "what time is it"}
    ]
    reply = events.item_retrieved("r1", history)[0]["item"]
    assert reply["role"] == "assistant"
    assert reply["content"] == [{"type": "output_audio", "transcript": "It is"}]
    assert events.item_retrieved("m1", history)[0]["item"]["content"][0]["type"] == "input_text"
    with pytest.raises(rt.RealtimeError) as info:
        events.item_retrieved("nope", history)
    assert info.value.code == "item_retrieve_invalid_item_id"


def test_retrieve_is_a_client_event() -> None:
    event = rt.decode_client_event('{"type": "conversation.item.retrieve", "item_id": "u1"}')
    assert event["item_id"] == "u1"


def test_a_refused_event_is_logged_by_type_and_code_only(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="server.transports.realtime")
    secret = "my bank password is hunter2"
    rejected({"type": "conversation.item.create", "item": {"text": secret}}, "unsupported_item")
    rejected({"type": secret}, "invalid_event_type")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "Realtime: refused event conversation.item.create: unsupported_item",
        "Realtime: refused event unknown: invalid_event_type",
    ]
    assert all(r.levelno == logging.INFO for r in caplog.records)


def test_a_reply_the_history_dropped_is_still_retrieved_as_sent() -> None:
    # Interrupted before a word was heard, the exchange leaves the history; the client was
    # told of the item, truncates it and retrieves it (the Agents SDK does, every time).
    events = RealtimeEvents(config())
    events.event(proto.ReplyStarted(reply_id="r1"))
    done = proto.ReplyDone(reply_id="r1", status="cancelled", text="Once upon", heard_text="")
    events.event(done)
    item = events.item_retrieved("r1", [])[0]["item"]
    assert item["status"] == "incomplete" and item["content"][0]["transcript"] == ""
    events.item_deleted("r1")
    with pytest.raises(rt.RealtimeError):
        events.item_retrieved("r1", [])
