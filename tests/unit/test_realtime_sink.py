"""The Realtime translation of the session's events: pure, events in, Realtime events out."""

from __future__ import annotations

import json

from server.protocol import native as proto
from server.protocol import realtime as rt
from server.protocol.realtime_config import RealtimeConfig
from server.protocol.realtime_events import RealtimeEvent, RealtimeEvents
from server.protocol.realtime_response import ResponseParams


def translator(**config: object) -> RealtimeEvents:
    return RealtimeEvents(RealtimeConfig(model="m", instructions="be brief", **config))  # type: ignore[arg-type]


def kinds(events: list[RealtimeEvent]) -> list[str]:
    return [e["type"] for e in events]


def test_a_joined_utterance_deletes_the_item_it_continues() -> None:
    out = translator().event(
        proto.Transcript(
            utterance_id="u2",
            text="one turn, two parts",
            duration_ms=2000,
            transcribe_ms=90,
            joins="u1",
        )
    )
    pairs = [(e["type"], e.get("item_id")) for e in out]
    assert pairs[0] == ("conversation.item.deleted", "u1")
    assert ("conversation.item.input_audio_transcription.completed", "u2") in pairs


def test_a_plain_transcript_deletes_nothing() -> None:
    out = translator().event(
        proto.Transcript(utterance_id="u1", text="hello", duration_ms=900, transcribe_ms=60)
    )
    assert all(e["type"] != "conversation.item.deleted" for e in out)


def test_event_ids_count_up_across_calls_and_frames_are_json() -> None:
    events = translator()
    out = events.session_updated() + events.session_updated()
    assert kinds(out) == ["session.created", "session.updated"]
    assert [e["event_id"] for e in out] == ["event_000001", "event_000002"]
    assert json.loads(rt.encode(out[0]))["session"]["id"] == events.session_id


def test_a_spoken_response_from_start_to_done() -> None:
    events = translator()
    started = events.event(proto.ReplyStarted(reply_id="r1"))
    assert kinds(started) == [
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
    ]
    assert started[0]["response"]["output_modalities"] == ["audio"]
    delta = events.event(proto.ReplyDelta(reply_id="r1", text="Hi"))
    assert kinds(delta) == ["response.output_audio_transcript.delta"]
    assert delta[0]["response_id"] == "resp_r1" and delta[0]["item_id"] == "r1"
    audio = events.audio(b"\x01\x00\x02\x00")
    assert kinds(audio) == ["response.output_audio.delta"] and audio[0]["delta"] == "AQACAA=="
    assert kinds(
        events.event(proto.OutputAudioDone(stream_id="r1", status="completed", duration_ms=5))
    ) == ["response.output_audio.done"]
    usage = proto.Usage(prompt_tokens=10, cached_prompt_tokens=4, completion_tokens=3)
    done = events.event(
        proto.ReplyDone(
            reply_id="r1", status="cancelled", text="Hi there", heard_text="Hi", usage=usage
        )
    )
    assert kinds(done) == [
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    assert done[0]["transcript"] == "Hi"  # what was heard, not what was written
    response = done[-1]["response"]
    assert response["status"] == "cancelled"
    assert response["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    assert response["usage"]["total_tokens"] == 13
    assert response["output"][0]["status"] == "incomplete"
    # The response is over: later audio (a say) has no Realtime event.
    assert events.audio(b"\x00\x00") == []
    ids = [e["event_id"] for e in started + delta + audio + done]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_a_text_response_when_the_client_asks_for_text() -> None:
    events = translator()
    events.next_response = ResponseParams(speak=False)
    started = events.event(proto.ReplyStarted(reply_id="r2"))
    assert started[-1]["part"] == {"type": "text", "text": ""}
    assert kinds(events.event(proto.ReplyDelta(reply_id="r2", text="ok"))) == [
        "response.output_text.delta"
    ]
    done = events.event(proto.ReplyDone(reply_id="r2", status="completed", text="ok"))
    assert done[0] == {**done[0], "type": "response.output_text.done", "text": "ok"}
    assert done[-1]["response"]["status"] == "completed"
    assert events.next_response is None  # for one response only


def test_speech_events_follow_turn_detection() -> None:
    vad = translator()
    stopped = proto.SpeechStopped(utterance_id="u1", at_ms=1500.5, duration_ms=900)
    assert kinds(vad.event(proto.SpeechStarted(utterance_id="u1", at_ms=600))) == [
        "input_audio_buffer.speech_started"
    ]
    assert kinds(vad.event(stopped)) == [
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
    ]
    push_to_talk = translator(turn_detection=None)
    assert push_to_talk.event(proto.SpeechStarted(utterance_id="u1", at_ms=600)) == []
    assert kinds(push_to_talk.event(stopped)) == [
        "input_audio_buffer.committed",
        "conversation.item.added",
    ]


def test_errors_and_events_without_an_equivalent() -> None:
    events = translator()
    (error,) = events.event(proto.Error(code="text_too_long", message="too long", source="x"))
    assert error["type"] == "error" and error["error"]["code"] == "text_too_long"
    assert error["error"]["type"] == "invalid_request_error"
    assert events.event(proto.OutputAudioClear(stream_id="r1")) == []
    assert events.event(proto.TranscriptPartial(utterance_id="u1", text="hel")) == []
    # A reply.done for a response that is not the current one sends nothing.
    assert events.event(proto.ReplyDone(reply_id="other", status="completed", text="")) == []
