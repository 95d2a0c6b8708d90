"""Property tests of every decoder (issue 17): any bytes or JSON in, a valid message or the
project's error (with a code) out, never another exception.

- native: `decode_client_message` / `validate_client_message`, and a session applying the
  session.start / session.update it decoded (generation settings, persona);
- OpenAI Realtime: `decode_client_event`, and `RealtimeConfig.apply` of session.update: an
  applied update gives a valid audio stream and session object, a refused one changes nothing;
- MQTT: `parse_command` (ask, say), `parse_hermes_say`, command topics, and the error payloads
  built from what they raise.

Fast enough for `make test-fast`: a modest number of examples each, no example database (the
working tree is shared), and deadlines generous for two busy cores.
"""

from __future__ import annotations

import json
import string
from dataclasses import asdict
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.app import App
from server.errors import ChinwagError, ErrorCode
from server.pipeline.session import Session
from server.prompts import PersonaLibrary
from server.protocol import mqtt as wire
from server.protocol import native as proto
from server.protocol import realtime as rt
from server.protocol.realtime_config import RealtimeConfig
from tests.conftest import make_settings

MAX_TEXT = 200
MAX_BYTES = 4096
FAST = settings(
    max_examples=150,
    deadline=timedelta(seconds=2),
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# --- strategies ------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["", " ", "inf", "server_vad", "audio/pcm", "user", "vad", "pcm16"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def messages_of(types: list[str], fields: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects shaped like the protocol's: a known (or not) type, known (or not) field names,
    values of every JSON kind."""
    return st.builds(
        lambda kind, body: {**body, "type": kind} if kind is not None else body,
        st.one_of(st.none(), st.sampled_from(types), st.text(max_size=12), json_values),
        st.dictionaries(st.one_of(st.sampled_from(fields), st.text(max_size=8)), json_values,
                        max_size=6),
    )  # fmt: skip


NATIVE_FIELDS = sorted(
    {name for cls in proto.CLIENT_MESSAGES.values() for name in cls.model_fields} | {"vad"}
)
native_messages = messages_of(sorted(proto.CLIENT_MESSAGES), NATIVE_FIELDS)

# Frames: raw text, raw bytes, JSON of any value, JSON shaped like a message, and hand-made
# oddities (deep nesting, long numbers, NaN, lone surrogates) spliced into them.
ODD_JSON = st.sampled_from(
    [
        "[" * 5000 + "]" * 5000,
        '{"a":' * 40 + "1" + "}" * 40,
        "9" * 5000,
        '{"type": "user.message", "text": "hi", "id": ' + "7" * 4400 + "}",
        '{"type": "user.message", "text": NaN}',
        '{"type": "say", "text": -Infinity}',
        '{"type": "session.update", "generation": {"max_tokens": 1e400}}',
        '{"type": "user.message", "text": "\\ud800"}',
        '{"type": "user.message", "text": "ok", "\\udfff": 1}',
        '{"type": "user.message", "text": "\\u0000"}',
        "\ufeff{}",
        "",
        "null",
    ]
)


def frames_from(messages: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[str | bytes]:
    return st.one_of(
        st.text(max_size=60),
        st.binary(max_size=60),
        json_values.map(json.dumps),
        messages.map(json.dumps),
        messages.map(lambda m: json.dumps(m, ensure_ascii=False)),
        ODD_JSON,
    )


# --- native ----------------------------------------------------------------------------------


def fake_app() -> App:
    config = make_settings()
    personas = PersonaLibrary.load(config.prompts.directory, config.prompts.default_persona)
    return App(settings=config, personas=personas)


class NullSink:
    async def send(self, event: proto.ServerEvent) -> None:
        pass

    async def send_audio(self, pcm: bytes) -> None:
        pass


APP = fake_app()


@FAST
@given(frames_from(native_messages))
def test_native_decoder_gives_a_message_or_a_chinwag_error(frame: str | bytes) -> None:
    try:
        message = proto.decode_client_message(frame, MAX_TEXT)
    except ChinwagError as exc:
        assert isinstance(exc.code, ErrorCode) and exc.message
        proto.encode_event(proto.error_event(exc, "x"))  # the error can be sent back
        return
    assert isinstance(message, proto.ClientMessage)
    assert type(message) is proto.CLIENT_MESSAGES[message.type]


@FAST
@given(native_messages)
def test_native_validation_of_any_object(data: dict[str, Any]) -> None:
    try:
        message = proto.validate_client_message(data, MAX_TEXT)
    except ChinwagError:
        return
    assert isinstance(message, proto.ClientMessage)


@FAST
@given(
    st.one_of(st.none(), st.sampled_from(["assistant", "pirate", "receptionist"]), st.text()),
    st.one_of(
        st.none(),
        st.dictionaries(
            st.sampled_from(["temperature", "top_p", "top_k", "repeat_penalty", "max_tokens",
                             "seed", "mirostat"]),
            json_values,
            max_size=4,
        ),
    ),
)  # fmt: skip
def test_session_configure_changes_all_or_nothing(
    persona: str | None, generation: dict[str, Any] | None
) -> None:
    """session.start / session.update as a session applies them: valid settings or an error
    with nothing changed."""
    session = Session(APP, NullSink())
    before = (session.persona, session.generation)
    try:
        session._configure(persona, generation)
    except ChinwagError as exc:
        assert exc.code in (ErrorCode.INVALID_MESSAGE, ErrorCode.UNKNOWN_PERSONA)
        assert (session.persona, session.generation) == before
        return
    assert 1 <= session.generation.max_tokens <= 4096


# --- OpenAI Realtime -------------------------------------------------------------------------

TURN_DETECTION = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["server_vad", "semantic_vad", "none"]) | json_values,
            "threshold": st.floats(-1, 2) | json_values,
            "prefix_padding_ms": st.integers(-100, 3000) | json_values,
            "silence_duration_ms": st.integers(0, 12000) | json_values,
            "create_response": st.booleans() | json_values,
            "interrupt_response": st.booleans() | json_values,
            "idle_timeout_ms": st.none() | st.integers(-5, 10**6) | json_values,
        },
    ),
)
SESSION = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["realtime", "transcription"]) | json_values,
        "model": json_values,
        "instructions": st.text(max_size=30) | json_values,
        "output_modalities": st.sampled_from([["audio"], ["text"], ["audio", "text"]])
        | json_values,
        "max_output_tokens": st.integers(-2, 5000) | st.just("inf") | json_values,
        "tools": st.just([]) | json_values,
        "tool_choice": json_values,
        "tracing": json_values,
        "audio": st.fixed_dictionaries(
            {},
            optional={
                "input": st.fixed_dictionaries(
                    {},
                    optional={
                        "format": st.just({"type": "audio/pcm", "rate": 24000}) | json_values,
                        "turn_detection": TURN_DETECTION,
                        "transcription": json_values,
                        "noise_reduction": json_values,
                    },
                )
                | json_values,
                "output": st.fixed_dictionaries(
                    {},
                    optional={
                        "format": st.just({"type": "audio/pcm", "rate": 24000}) | json_values,
                        "voice": st.text(max_size=10) | json_values,
                        "speed": st.floats(0, 2) | json_values,
                    },
                )
                | json_values,
            },
        )
        | json_values,
    },
)
session_updates = st.builds(
    lambda session, event_id: {"type": "session.update", "session": session, "event_id": event_id},
    SESSION | json_values,
    st.none() | st.text(max_size=8) | json_values,
)
realtime_events = st.one_of(
    session_updates,
    messages_of(sorted(rt.CLIENT_EVENTS), ["event_id", "session", "item", "audio", "response",
                                            "item_id", "audio_end_ms", "content_index"]),
)  # fmt: skip


@FAST
@given(frames_from(realtime_events))
def test_realtime_decoder_gives_an_event_or_a_realtime_error(frame: str | bytes) -> None:
    try:
        event = rt.decode_client_event(frame, MAX_BYTES)
    except rt.RealtimeError as exc:
        assert exc.code and exc.message
        assert exc.event_id is None or isinstance(exc.event_id, str)
        rt.encode({"type": "error", "error": vars(exc)}).encode("utf-8")  # sendable
        return
    assert isinstance(event, dict) and event["type"] in rt.CLIENT_EVENTS


@FAST
@given(session_updates)
def test_realtime_session_update_is_applied_whole_or_not_at_all(event: dict[str, Any]) -> None:
    config = RealtimeConfig(model="m", instructions="Be brief.")
    before = asdict(config)
    try:
        config.apply(event)
    except rt.RealtimeError as exc:
        assert exc.code and exc.param is not None
        expected_id = event["event_id"] if isinstance(event["event_id"], str) else None
        assert exc.event_id == expected_id
        assert asdict(config) == before
        return
    # What an applied update leads to must work: the next append opens this audio stream, and
    # session.updated carries this object.
    config.audio_start()
    rt.encode(config.session_object("sess_1")).encode("utf-8")
    assert config.output_modalities in (["audio"], ["text"])


def test_realtime_the_session_object_is_a_valid_update() -> None:
    config = RealtimeConfig(model="m", instructions="Be brief.")
    session = config.session_object("sess_1")
    before = asdict(config)
    config.apply({"type": "session.update", "session": session})
    assert asdict(config) == before


# --- MQTT ------------------------------------------------------------------------------------

mqtt_objects = st.dictionaries(
    st.sampled_from(["text", "id", "sample_rate", "siteId", "sessionId", "lang", "volume"])
    | st.text(max_size=6),
    json_values | st.text(max_size=30),
    max_size=5,
)
payloads = st.one_of(
    st.binary(max_size=80),
    st.text(max_size=80).map(str.encode),
    mqtt_objects.map(lambda d: json.dumps(d).encode()),
    mqtt_objects.map(lambda d: json.dumps(d, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    ODD_JSON.map(lambda s: s.encode("utf-8", "surrogatepass")),
)


@FAST
@given(st.sampled_from(["ask", "say"]), payloads)
def test_mqtt_command_gives_a_message_or_a_chinwag_error(kind: str, payload: bytes) -> None:
    try:
        message = wire.parse_command(kind, payload, MAX_TEXT)
    except ChinwagError as exc:
        wire.error_payload(exc.code.value, exc.message, kind, site="s", unsited=True)
        return
    assert isinstance(message, proto.Say if kind == "say" else proto.UserMessage)


@FAST
@given(payloads)
def test_mqtt_hermes_say_gives_a_request_or_an_error_to_publish(payload: bytes) -> None:
    try:
        request = wire.parse_hermes_say(payload, MAX_BYTES, MAX_TEXT)
    except wire.HermesSayError as exc:
        json.loads(wire.hermes_tts_error_payload(exc))
        return
    assert wire.valid_level(request.site) and wire.valid_level(request.request_id)
    assert isinstance(request.say, proto.Say)


@FAST
@given(st.text(alphabet=string.printable + "+#/\x00é", max_size=40))
def test_mqtt_any_topic_is_a_command_or_none(topic: str) -> None:
    topics = wire.Topics("chinwag")
    found = topics.command(topic)
    assert found is None or (found[1] in ("ask", "say") and topic.startswith("chinwag/"))


# --- hand-picked regressions (issue 17 item 6), each a test that failed before -------------------

DEEP = '{"text": "hi", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
LONG_INT = '{"text": "hi", "id": ' + "9" * 5000 + "}"


@pytest.mark.parametrize("frame", [DEEP, LONG_INT, '{"text": "hi", "x": NaN}'])
def test_mqtt_bad_json_is_invalid_json(frame: str) -> None:
    for kind in ("ask", "say"):
        with pytest.raises(ChinwagError) as caught:
            wire.parse_command(kind, frame.encode(), 10**6)
        assert caught.value.code is ErrorCode.INVALID_JSON
    with pytest.raises(wire.HermesSayError) as hermes:
        wire.parse_hermes_say(frame.encode(), 10**6, 10**6)
    assert hermes.value.code is ErrorCode.INVALID_JSON


@pytest.mark.parametrize("frame", [DEEP, LONG_INT, '{"type": "cancel", "x": Infinity}'])
def test_native_and_realtime_bad_json_is_invalid_json(frame: str) -> None:
    with pytest.raises(ChinwagError) as caught:
        proto.decode_client_message(frame, 10**6)
    assert caught.value.code is ErrorCode.INVALID_JSON
    with pytest.raises(rt.RealtimeError) as realtime:
        rt.decode_client_event(frame, 10**6)
    assert realtime.value.code == "invalid_json"
