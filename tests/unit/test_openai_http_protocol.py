"""The pure parts of OpenAI-compatible HTTP: request validation, stop sequences, server-sent
events, subtitle formats, the front's routing and the speech encoders."""

from __future__ import annotations

import io
import itertools
import json
import struct
from http import HTTPStatus

import av
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from server.audio.codecs import (
    OUTPUT_FORMATS,
    OUTPUT_RATE,
    AudioDecodeError,
    AudioTooLong,
    SpeechEncoder,
    decode_audio,
    wav_header,
)
from server.engines.base import ChatMessage, Segment
from server.protocol import openai_http as oa
from server.protocol import openai_http_audio as oa_audio
from server.protocol import openai_http_chat as oa_chat
from server.transports.front import wants_http


def chat_body(**fields: object) -> bytes:
    base: dict[str, object] = {
        "model": "assistant",
        "messages": [{"role": "user", "content": "hi"}],
    }
    return json.dumps({**base, **fields}).encode()


# --- chat requests --------------------------------------------------------------------------


def test_chat_request_fields() -> None:
    request = oa_chat.parse_chat_request(
        chat_body(
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=10,
            max_completion_tokens=20,
            temperature=0,
            stop="END",
            frequency_penalty=0.5,  # unknown to chinwag: ignored
        ),
        1000,
    )
    assert request.stream and request.include_usage
    assert request.token_limit == 20  # the newer name wins
    assert request.temperature == 0.0 and request.stops == ["END"]


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        (b"\xff\xfe", "invalid_json", None),
        (b"null", "invalid_message", None),
        (chat_body(messages=[]), "invalid_message", "messages"),
        (chat_body(messages=[{"role": "user", "content": 5}]), "invalid_message", None),
        (chat_body(messages=[{"role": "user", "content": [{"type": "image_url"}]}]), "invalid_message", None),  # noqa: E501
        (chat_body(temperature="0.5"), "invalid_message", "temperature"),  # strict: no coercion
        (chat_body(stream="yes"), "invalid_message", "stream"),
        (chat_body(stop=[""]), "invalid_message", "stop"),
        (chat_body(messages=[{"role": "user", "content": "x" * 11}]), "text_too_long",
         "messages.0.content"),
    ],
)  # fmt: skip
def test_chat_request_refusals(body: bytes, code: str, param: str | None) -> None:
    with pytest.raises(oa.OpenAIError) as refused:
        oa_chat.parse_chat_request(body, 10)
    error = refused.value
    assert error.status == HTTPStatus.BAD_REQUEST and error.code == code
    if param is not None:
        assert error.param == param
    assert set(error.body()["error"]) == {"message", "type", "param", "code"}


def test_conversation_takes_system_and_developer_messages_as_the_prompt() -> None:
    request = oa_chat.parse_chat_request(
        chat_body(
            messages=[
                {"role": "system", "content": "Be brief."},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}],
                },
                {"role": "assistant", "content": "Hello."},
                {"role": "developer", "content": "Use French."},
                {"role": "user", "content": "Bye"},
            ]
        ),
        1000,
    )
    conversation = oa_chat.conversation_of(request.messages)
    assert conversation.system_prompt == "Be brief.\n\nUse French."
    assert conversation.history == [
        ChatMessage("user", "Hi there"),
        ChatMessage("assistant", "Hello."),
        ChatMessage("user", "Bye"),
    ]
    assert (
        oa_chat.conversation_of(oa_chat.parse_chat_request(chat_body(), 10).messages).system_prompt
        is None
    )


def test_error_types_follow_openai() -> None:
    assert oa.OpenAIError(HTTPStatus.UNAUTHORIZED, "unauthorized", "x").type == (
        "authentication_error"
    )
    assert oa.OpenAIError(HTTPStatus.FORBIDDEN, "host_not_allowed", "x").type == "permission_error"
    assert oa.OpenAIError(HTTPStatus.NOT_FOUND, "model_not_found", "x").type == (
        "invalid_request_error"
    )
    assert oa.OpenAIError(HTTPStatus.INTERNAL_SERVER_ERROR, "internal_error", "x").type == (
        "server_error"
    )


def test_errors_raised_below_http_get_their_status() -> None:
    from server.errors import ChinwagError, ErrorCode

    cases = {
        ErrorCode.OVERLOADED: 503,
        ErrorCode.REMOTE_TIMEOUT: 504,
        ErrorCode.REMOTE_UNAVAILABLE: 502,
        ErrorCode.CONTEXT_OVERFLOW: 400,
        ErrorCode.INVALID_AUDIO_FORMAT: 400,
    }
    for code, status in cases.items():
        error = oa.OpenAIError.from_chinwag(ChinwagError(code, "m"))
        assert (error.status.value, error.code) == (status, code.value)
        assert error.type == ("invalid_request_error" if status == 400 else "server_error")


# --- stop sequences -------------------------------------------------------------------------


def test_stop_scanner_holds_back_a_possible_start() -> None:
    scanner = oa_chat.StopScanner(["\n\nUser:"])
    assert scanner.feed("Hello") == "Hello"
    assert scanner.feed(" there\n") == " there"  # "\n" may begin the stop sequence
    assert scanner.feed("\nUs") == ""
    assert scanner.feed("er: what") == ""
    assert scanner.stopped and scanner.flush() == ""
    assert scanner.feed("more") == ""


def test_stop_scanner_releases_what_was_no_stop() -> None:
    scanner = oa_chat.StopScanner(["END"])
    assert scanner.feed("the EN") == "the "
    assert scanner.feed("D") == ""
    assert scanner.stopped
    other = oa_chat.StopScanner(["END"])
    assert other.feed("the EN") == "the "
    assert other.flush() == "EN" and not other.stopped


@given(
    text=st.text(alphabet="ab\n5,", max_size=40),
    stops=st.lists(st.text(alphabet="ab\n5", min_size=1, max_size=4), max_size=3),
    cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=8),
)
@example(text="5a5", stops=["a", "5a5"], cuts=[2])  # a longer stop that starts earlier
@settings(max_examples=1000)
def test_stop_scanner_output_is_the_text_up_to_the_first_stop(
    text: str, stops: list[str], cuts: list[int]
) -> None:
    """However the text is split into deltas, what is sent is the text before the earliest
    stop sequence (all of it when none occurs)."""
    scanner = oa_chat.StopScanner(stops)
    bounds = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    sent = "".join(scanner.feed(text[a:b]) for a, b in itertools.pairwise(bounds))
    sent += scanner.flush()
    positions = [text.find(s) for s in stops if s in text]
    # The earliest stop wins; the scanner sees it when the text holding it arrives.
    expected = text[: min(positions)] if positions else text
    assert sent == expected


# --- server-sent events and response bodies -------------------------------------------------


def test_sse_framing() -> None:
    event = oa_chat.sse({"text": "line one\nline two", "é": 1})
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    assert event.count(b"\n") == 2  # one data line: JSON escapes the newline
    assert json.loads(event[6:]) == {"text": "line one\nline two", "é": 1}
    assert oa_chat.SSE_DONE == b"data: [DONE]\n\n"


def test_chunks_carry_usage_only_when_asked() -> None:
    plain = oa_chat.chunk("id", "m", 1, {"content": "x"})
    assert "usage" not in plain and plain["choices"][0]["delta"] == {"content": "x"}
    with_usage = oa_chat.chunk("id", "m", 1, {"content": "x"}, include_usage=True)
    assert with_usage["usage"] is None
    final = oa_chat.chunk("id", "m", 1, None, usage_=oa_chat.usage(3, 4), include_usage=True)
    assert final["choices"] == [] and final["usage"]["total_tokens"] == 7


# --- transcriptions -------------------------------------------------------------------------

SEGMENTS = [Segment(0.0, 2.5, "Hello there."), Segment(2.5, 3661.0006, "An hour later.")]


def test_srt_and_vtt() -> None:
    assert oa_audio.srt(SEGMENTS) == (
        "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n"
        "2\n00:00:02,500 --> 01:01:01,001\nAn hour later.\n"
    )
    assert oa_audio.vtt(SEGMENTS) == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nHello there.\n\n"
        "00:00:02.500 --> 01:01:01.001\nAn hour later.\n"
    )
    assert oa_audio.vtt([]) == "WEBVTT\n\n"


def test_transcription_bodies() -> None:
    kind, body = oa_audio.transcription_body("json", "en", 3.0, SEGMENTS)
    assert kind == "application/json"
    assert json.loads(body) == {"text": "Hello there. An hour later."}
    kind, body = oa_audio.transcription_body("text", "en", 3.0, SEGMENTS)
    assert kind.startswith("text/plain") and body == b"Hello there. An hour later.\n"
    _, body = oa_audio.transcription_body("verbose_json", "en", 3661.0, SEGMENTS)
    verbose = json.loads(body)
    assert verbose["language"] == "english" and verbose["duration"] == 3661.0
    assert [s["start"] for s in verbose["segments"]] == [0.0, 2.5]


def test_transcription_fields() -> None:
    request = oa_audio.parse_transcription_fields(
        {"model": "whisper-1", "response_format": "srt", "language": "EN", "prompt": "Names."}
    )
    assert (request.response_format, request.language, request.prompt) == ("srt", "en", "Names.")
    assert oa_audio.parse_transcription_fields({"model": "m"}).response_format == "json"
    for fields, param in [
        ({}, "model"),
        ({"model": "m", "response_format": "xml"}, "response_format"),
        ({"model": "m", "language": "en-US"}, "language"),
        ({"model": "m", "prompt": "x" * 5000}, "prompt"),
    ]:
        with pytest.raises(oa.OpenAIError) as refused:
            oa_audio.parse_transcription_fields(fields)
        assert refused.value.param == param


# --- speech ---------------------------------------------------------------------------------


def test_speech_request() -> None:
    body = json.dumps({"model": "tts-1", "input": "Hi.", "voice": "nova", "speed": 1.5}).encode()
    request = oa_audio.parse_speech_request(body, 100, {"joe"})
    assert request.response_format == "mp3" and request.speed == 1.5
    own = json.dumps({"model": "tts-1", "input": "Hi.", "voice": "joe"}).encode()
    assert oa_audio.parse_speech_request(own, 100, {"joe"}).voice == "joe"
    with pytest.raises(oa.OpenAIError) as refused:
        oa_audio.parse_speech_request(own.replace(b"joe", b"jane"), 100, {"joe"})
    assert refused.value.code == "unknown_voice"


def test_wav_header_for_a_stream() -> None:
    header = wav_header(24000)
    assert len(header) == 44 and header[:4] == b"RIFF" and header[8:16] == b"WAVEfmt "
    assert struct.unpack("<HHII", header[20:32]) == (1, 1, 24000, 48000)
    assert header[36:40] == b"data" and header[40:44] == b"\xff\xff\xff\xff"


@pytest.mark.parametrize("response_format", sorted(OUTPUT_FORMATS))
def test_speech_encoders_stream_decodable_audio(response_format: str) -> None:
    encoder = SpeechEncoder(response_format)
    t = np.arange(OUTPUT_RATE) / OUTPUT_RATE
    second = (8000 * np.sin(2 * np.pi * 300 * t)).astype(np.int16)
    pieces = [encoder.encode(second), encoder.encode(second), encoder.finish()]
    assert pieces[0], "the first second's bytes are out before the end"
    data = b"".join(pieces)
    if response_format == "pcm":
        assert len(data) == 4 * OUTPUT_RATE
        return
    audio = decode_audio(data, 16000, 10.0)
    assert abs(audio.size / 16000 - 2.0) < 0.1


def test_decode_refuses_what_is_not_audio_and_what_is_too_long() -> None:
    with pytest.raises(AudioDecodeError):
        decode_audio(b"not audio" * 100, 16000, 10.0)
    out = io.BytesIO()
    with av.open(out, mode="w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 8000 * 3), dtype=np.int16), format="s16", layout="mono"
        )
        frame.sample_rate = 8000
        assert isinstance(stream, av.AudioStream)
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    assert decode_audio(out.getvalue(), 16000, 5.0).size == 3 * 16000
    with pytest.raises(AudioTooLong):
        decode_audio(out.getvalue(), 16000, 2.0)


# --- the front ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "http"),
    [
        (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x", True),
        (b"GET /v1/models?x=1 HTTP/1.1\r\nHost: x", True),
        (b"GET /v1/realtime HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade", False),
        (b"GET /v1/realtime HTTP/1.1\r\nuPgRaDe:  WebSocket", False),
        (b"GET / HTTP/1.1\r\nHost: x", False),
        (b"GET /healthz HTTP/1.1", False),
        (b"GET /v1 HTTP/1.1", False),
        (b"GET /v1/" + b"a" * 9000 + b" HTTP/1.1", False),  # websockets answers 414 in JSON
        (b"garbage", False),
        (b"GET /v1/\xff HTTP/1.1", False),
    ],
)
def test_front_routes_plain_v1_requests_to_http(head: bytes, http: bool) -> None:
    assert wants_http(head) is http
