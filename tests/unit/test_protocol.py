import json

import pytest

from server.errors import ChinwagError, ErrorCode
from server.protocol import json_checks
from server.protocol import native as proto


def decode(frame: str | bytes, limit: int = 100) -> proto.ClientMessage:
    return proto.decode_client_message(frame, max_text_chars=limit)


def code_of(frame: str | bytes, limit: int = 100) -> ErrorCode:
    with pytest.raises(ChinwagError) as info:
        decode(frame, limit)
    return info.value.code


def test_user_message_decodes() -> None:
    msg = decode('{"type": "user.message", "text": "hello", "id": "m1"}')
    assert msg == proto.UserMessage(text="hello", id="m1")


def test_session_messages_decode() -> None:
    start = decode('{"type":"session.start","persona":"kiosk","generation":{"temperature":0.1}}')
    assert isinstance(start, proto.SessionStart)
    assert start.persona == "kiosk" and start.generation == {"temperature": 0.1}
    assert isinstance(decode('{"type":"session.update"}'), proto.SessionUpdate)
    assert isinstance(decode('{"type":"cancel"}'), proto.Cancel)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", ErrorCode.INVALID_JSON),
        ("", ErrorCode.INVALID_JSON),
        ("[1, 2]", ErrorCode.INVALID_MESSAGE),
        ('{"text": "no type"}', ErrorCode.INVALID_MESSAGE),
        ('{"type": 5}', ErrorCode.INVALID_MESSAGE),
        ('{"type": "launch.rockets"}', ErrorCode.UNKNOWN_TYPE),
        ('{"type": "user.message"}', ErrorCode.INVALID_MESSAGE),
        ('{"type": "user.message", "text": 42}', ErrorCode.INVALID_MESSAGE),
        ('{"type": "user.message", "text": "   "}', ErrorCode.INVALID_MESSAGE),
        ('{"type": "user.message", "text": "hi", "extra": 1}', ErrorCode.INVALID_MESSAGE),
        ('{"type": "session.start", "persona": 3}', ErrorCode.INVALID_MESSAGE),
        (b"\x00\x01", ErrorCode.UNEXPECTED_BINARY),
    ],
)
def test_bad_frames_get_their_code(frame: str | bytes, code: ErrorCode) -> None:
    assert code_of(frame) == code


def test_text_over_limit() -> None:
    frame = json.dumps({"type": "user.message", "text": "x" * 101})
    assert code_of(frame, limit=100) == ErrorCode.TEXT_TOO_LONG
    assert isinstance(
        decode(json.dumps({"type": "user.message", "text": "x" * 100})), proto.UserMessage
    )


def test_error_message_names_the_field() -> None:
    with pytest.raises(ChinwagError) as info:
        decode('{"type": "user.message", "text": 42}')
    assert "text" in info.value.message


def test_encode_event_is_flat_json_with_type() -> None:
    event = proto.ReplyDone(
        reply_id="r1",
        status="completed",
        text="Hi there",
        usage=proto.Usage(prompt_tokens=10, cached_prompt_tokens=4, completion_tokens=3),
    )
    data = json.loads(proto.encode_event(event))
    assert data["type"] == "reply.done"
    assert data["usage"] == {"prompt_tokens": 10, "cached_prompt_tokens": 4, "completion_tokens": 3}
    assert "timings" not in data  # None fields are left out


def test_error_event_from_exception() -> None:
    event = proto.error_event(ChinwagError(ErrorCode.UNKNOWN_TYPE, "nope"), source="x")
    assert json.loads(proto.encode_event(event)) == {
        "type": "error",
        "code": "unknown_type",
        "message": "nope",
        "source": "x",
    }


def test_error_of_an_event_is_the_error_it_was_made_from() -> None:
    error = proto.error_of(proto.error_event(ChinwagError(ErrorCode.OVERLOADED, "busy")))
    assert (error.code, error.message) == (ErrorCode.OVERLOADED, "busy")
    # A code from elsewhere (a remote engine, a newer server) is an internal error here.
    error = proto.error_of(proto.Error(code="no_such_code", message="odd"))
    assert (error.code, error.message) == (ErrorCode.INTERNAL_ERROR, "odd")


def test_a_say_with_nothing_to_speak_is_an_error() -> None:
    # Else no audio and no event would ever answer it (the same on every transport).
    for text in ("***", "...", " - "):
        with pytest.raises(ChinwagError, match="nothing to speak") as info:
            decode(json.dumps({"type": "say", "text": text}))
        assert info.value.code is ErrorCode.INVALID_MESSAGE
    assert decode('{"type": "say", "text": "Hi."}') == proto.Say(text="Hi.")
    assert proto.has_speech("3 eggs") and not proto.has_speech("!?")


def test_validation_from_a_dict_matches_decoding() -> None:
    data = {"type": "user.message", "text": "hello"}
    assert proto.validate_client_message(data, 100) == decode(json.dumps(data))
    with pytest.raises(ChinwagError) as info:
        proto.validate_client_message({"type": "dance"}, 100)
    assert info.value.code is ErrorCode.UNKNOWN_TYPE


def test_frame_size_check() -> None:
    json_checks.check_frame_size(b"x" * 10, 10)
    with pytest.raises(ChinwagError, match="payload of 11 bytes; the limit is 10") as info:
        json_checks.check_frame_size("x" * 11, 10, "payload")
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE
