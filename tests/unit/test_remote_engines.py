"""The pure parts of the remote engines: SSE decoding, chat chunks, token estimates, what the
servers say about themselves, error mapping, streamed audio bodies, and the settings."""

from __future__ import annotations

import io
import itertools
import json
import struct
import wave
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.audio.wav_stream import AudioStreamError, Pcm16Decoder, WavDecoder, wav_bytes
from server.config import ConfigError, load_settings, settings_as_toml
from server.config_errors import settings_problem
from server.engines.base import PromptTooLong, RemoteFailure
from server.engines.openai_audio import transcript_from_answer
from server.engines.openai_chat import (
    context_from_server,
    estimate_tokens,
    first_model_id,
    parse_chat_chunk,
)
from server.engines.remote import error_for_status, error_message, server_root
from server.errors import ErrorCode
from server.protocol.sse import SseDecoder, SseError, SseEvent

WHAT = "the LLM server at 127.0.0.1:8080"

# --- server-sent events ------------------------------------------------------------------


def decode_all(chunks: list[bytes]) -> list[SseEvent]:
    decoder = SseDecoder()
    return [event for chunk in chunks for event in decoder.feed(chunk)]


STREAM = (
    b": ping\n\n"
    b'data: {"a": 1}\n\n'
    b"event: update\r\nid: 7\r\ndata: first line\r\ndata:second line\r\n\r\n"
    b"data: cr only\r\rdata: [DONE]\n\n"
)
EXPECTED = [
    SseEvent(data='{"a": 1}'),
    SseEvent(data="first line\nsecond line", event="update", id="7"),
    SseEvent(data="cr only", id="7"),
    SseEvent(data="[DONE]", id="7"),
]


def test_sse_events_lines_comments_and_fields() -> None:
    assert decode_all([STREAM]) == EXPECTED


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_sse_any_split_gives_the_same_events(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(STREAM)]
    chunks = [STREAM[a:b] for a, b in itertools.pairwise(bounds)]
    assert decode_all(chunks) == EXPECTED


def test_sse_crlf_split_between_chunks_is_one_break() -> None:
    assert decode_all([b"data: x\r", b"\n\r", b"\n"]) == [SseEvent(data="x")]


def test_sse_multibyte_character_split_between_chunks() -> None:
    text = 'data: {"t": "café ☕"}\n\n'.encode()
    at = text.index("☕".encode()) + 1
    assert decode_all([text[:at], text[at:]]) == [SseEvent(data='{"t": "café ☕"}')]


def test_sse_leading_bom_and_unfinished_event() -> None:
    assert decode_all([b"\xef\xbb\xbfdata: a\n\ndata: never ended\n"]) == [SseEvent(data="a")]


def test_sse_event_without_end_is_bounded() -> None:
    decoder = SseDecoder(max_event_bytes=1000)
    with pytest.raises(SseError):
        for _ in range(20):
            decoder.feed(b"data: " + b"x" * 100 + b"\n")
    with pytest.raises(SseError):
        SseDecoder(max_event_bytes=1000).feed(b"data: " + b"y" * 2000)


# --- chat chunks ---------------------------------------------------------------------------


def chunk(**choice: object) -> str:
    return json.dumps({"object": "chat.completion.chunk", "choices": [{"index": 0, **choice}]})


def test_chat_chunk_text_finish_and_usage() -> None:
    assert parse_chat_chunk(chunk(delta={"content": " Hi"}), WHAT).text == " Hi"
    role_only = parse_chat_chunk(chunk(delta={"role": "assistant"}, finish_reason=None), WHAT)
    assert role_only.text == "" and role_only.finish_reason is None
    last = parse_chat_chunk(chunk(delta={}, finish_reason="length"), WHAT)
    assert last.finish_reason == "length"
    usage = parse_chat_chunk(json.dumps({"choices": [], "usage": {"completion_tokens": 12}}), WHAT)
    assert usage.completion_tokens == 12 and usage.text == ""


def test_chat_chunk_errors() -> None:
    with pytest.raises(RemoteFailure) as bad:
        parse_chat_chunk("not json", WHAT)
    assert bad.value.code is ErrorCode.REMOTE_ERROR
    with pytest.raises(RemoteFailure) as mid:
        parse_chat_chunk(json.dumps({"error": {"message": "out of memory", "code": 500}}), WHAT)
    assert "out of memory" in mid.value.message
    overflow = {"error": {"message": "the request exceeds the available context size"}}
    with pytest.raises(PromptTooLong):
        parse_chat_chunk(json.dumps(overflow), WHAT)


# --- token estimates and what servers say about themselves ----------------------------------


def test_estimate_errs_on_the_large_side() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("Hi") == 1
    # Roughly 4 bytes a token in English: a third of the length is more.
    english = "The quick brown fox jumps over the lazy dog near the riverbank."
    assert estimate_tokens(english) == -(-len(english) // 3)
    assert estimate_tokens("1234567890") >= 10  # digits often one token each
    assert estimate_tokens("你好吗") >= 3  # about a token a character
    assert estimate_tokens("?!...,;") >= 7


def test_context_size_from_llama_server_and_vllm() -> None:
    props = {"default_generation_settings": {"n_ctx": 4096}, "total_slots": 4}
    assert context_from_server(None, props) == 4096
    assert context_from_server(None, {"n_ctx": 8192}) == 8192
    vllm = {"data": [{"id": "Qwen/Qwen2.5-7B-Instruct", "max_model_len": 32768}]}
    assert context_from_server(vllm, None) == 32768
    llama_cpp_python = {"data": [{"id": "model.gguf", "object": "model", "owned_by": "me"}]}
    assert context_from_server(llama_cpp_python, {"detail": "Not Found"}) is None
    assert first_model_id(llama_cpp_python) == "model.gguf"
    assert first_model_id({"data": []}) is None


# --- errors --------------------------------------------------------------------------------


def test_error_messages_of_the_usual_servers() -> None:
    openai = b'{"error": {"message": "Invalid API Key", "type": "invalid_request_error"}}'
    assert error_message(openai) == "Invalid API Key"
    assert error_message(b'{"detail": "Not Found"}') == "Not Found"
    assert error_message(b'{"error": "model not loaded"}') == "model not loaded"
    assert error_message(b"<html>Bad Gateway</html>" + b" x" * 300).endswith("...")


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (401, ErrorCode.REMOTE_UNAUTHORIZED),
        (403, ErrorCode.REMOTE_UNAUTHORIZED),
        (404, ErrorCode.REMOTE_ERROR),
        (500, ErrorCode.REMOTE_ERROR),
        (502, ErrorCode.REMOTE_UNAVAILABLE),
        (503, ErrorCode.REMOTE_UNAVAILABLE),
        (429, ErrorCode.REMOTE_UNAVAILABLE),
        (504, ErrorCode.REMOTE_TIMEOUT),
    ],
)
def test_status_codes_map_to_error_codes(status: int, code: ErrorCode) -> None:
    failure = error_for_status(WHAT, status, b'{"error": {"message": "nope"}}')
    assert failure.code is code
    assert f"HTTP {status}" in failure.message and "nope" in failure.message


def test_server_root_of_an_api_root() -> None:
    assert server_root("http://gpu:8080/v1") == "http://gpu:8080"
    assert server_root("http://gpu:11434/api/v1") == "http://gpu:11434/api"
    assert server_root("https://example.com/openai") == "https://example.com/openai"


# --- transcripts ---------------------------------------------------------------------------


def test_transcript_from_verbose_json_keeps_whispers_confidence() -> None:
    answer = {
        "text": " Hello  there. ",
        "language": "english",
        "segments": [
            {"text": "Hello", "avg_logprob": -0.2, "no_speech_prob": 0.1},
            {"text": "there.", "avg_logprob": -0.4, "no_speech_prob": 0.3},
        ],
    }
    transcript = transcript_from_answer(answer, 1.5, "en")
    assert transcript.text == "Hello there."
    assert transcript.no_speech_prob == pytest.approx(0.1)
    assert transcript.avg_logprob == pytest.approx(-0.3)
    assert transcript.language == "en" and transcript.audio_s == 1.5


def test_transcript_from_plain_json() -> None:
    said = transcript_from_answer({"text": "Hi."}, 0.5, None)
    assert said.text == "Hi." and said.no_speech_prob == 0.0 and said.language == "en"
    assert transcript_from_answer({"text": ""}, 0.5, None).no_speech_prob == 1.0
    with pytest.raises(RemoteFailure):
        transcript_from_answer({"error": "x"}, 0.5, None)


# --- audio bodies --------------------------------------------------------------------------


def wav_file(samples: np.ndarray, rate: int, channels: int = 1) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.astype("<i2").tobytes())
    return out.getvalue()


def feed_in_pieces(decoder: WavDecoder | Pcm16Decoder, data: bytes, size: int) -> np.ndarray:
    parts = [decoder.feed(data[i : i + size]) for i in range(0, len(data), size)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)


@pytest.mark.parametrize("size", [1, 3, 7, 44, 1000, 100_000])
def test_wav_decoded_in_pieces_of_any_size(size: int) -> None:
    samples = (np.sin(np.arange(2205) / 10) * 10000).astype(np.int16)
    decoder = WavDecoder()
    assert np.array_equal(feed_in_pieces(decoder, wav_file(samples, 22050), size), samples)
    assert decoder.sample_rate == 22050


def test_streamed_wav_with_unknown_sizes_and_extra_chunks() -> None:
    samples = np.arange(-500, 500, dtype=np.int16)
    fmt = struct.pack("<HHIIHH", 1, 1, 24000, 48000, 2, 16)
    data = (
        b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE"
        + b"fmt " + struct.pack("<I", len(fmt)) + fmt
        + b"LIST" + struct.pack("<I", 5) + b"INFOx\x00"  # odd size: padded
        + b"data" + struct.pack("<I", 0xFFFFFFFF) + samples.astype("<i2").tobytes()
    )  # fmt: skip
    decoder = WavDecoder()
    assert np.array_equal(feed_in_pieces(decoder, data, 5), samples)
    assert decoder.sample_rate == 24000


def test_stereo_wav_is_mixed_to_mono_and_data_size_is_honoured() -> None:
    left = np.full(100, 1000, dtype=np.int16)
    right = np.full(100, 3000, dtype=np.int16)
    stereo = np.stack([left, right], axis=1).reshape(-1)
    data = wav_file(stereo, 16000, channels=2) + b"trailing junk!"
    mono = feed_in_pieces(WavDecoder(), data, 13)
    assert mono.size == 100 and np.all(mono == 2000)


def test_not_a_pcm16_wav_is_refused() -> None:
    with pytest.raises(AudioStreamError):
        WavDecoder().feed(b"ID3\x04" + b"\x00" * 100)  # an MP3
    fmt = struct.pack("<HHIIHH", 3, 1, 16000, 64000, 4, 32)  # float32
    float_wav = b"RIFF\x00\x00\x00\x00WAVEfmt " + struct.pack("<I", 16) + fmt
    with pytest.raises(AudioStreamError):
        WavDecoder().feed(float_wav)
    with pytest.raises(AudioStreamError):
        WavDecoder().feed(b"RIFF\x00\x00\x00\x00WAVE" + b"junk" + struct.pack("<I", 70000))
        WavDecoder().feed(b"\x00" * 70000)


def test_pcm16_keeps_an_odd_byte_for_the_next_piece() -> None:
    samples = np.array([1, -2, 300, -32768, 32767], dtype=np.int16)
    assert np.array_equal(feed_in_pieces(Pcm16Decoder(24000), samples.tobytes(), 3), samples)


def test_wav_bytes_round_trip() -> None:
    audio = np.linspace(-1, 1, 1600, dtype=np.float32)
    with wave.open(io.BytesIO(wav_bytes(audio, 16000))) as wav:
        assert wav.getframerate() == 16000 and wav.getnchannels() == 1
        pcm = np.frombuffer(wav.readframes(1600), dtype="<i2")
    assert pcm[0] == -32767 and pcm[-1] == 32767


# --- settings ------------------------------------------------------------------------------


def test_stages_are_local_unless_configured() -> None:
    settings = load_settings(environ={})
    for stage in (settings.llm, settings.asr, settings.tts):
        assert stage.backend == "local" and stage.base_url is None and not stage.remote


def test_remote_stage_from_file_env_and_flags(tmp_path: Path) -> None:
    config = tmp_path / "chinwag.toml"
    config.write_text(
        '[llm]\nbackend = "openai"\nbase_url = "http://gpu-box:8080/v1/"\nmodel = "qwen"\n'
        '[tts]\nbackend = "openai"\nbase_url = "https://speech.lan/v1"\nresponse_format = "wav"\n'
    )
    env = {"CHINWAG_LLM__API_KEY": "sk-secret", "CHINWAG_ASR__BACKEND": "openai",
           "CHINWAG_ASR__BASE_URL": "http://10.0.0.5:8765/v1"}  # fmt: skip
    settings = load_settings(config, {"llm": {"timeout_s": 5}}, environ=env)
    assert settings.llm.remote and settings.llm.base_url == "http://gpu-box:8080/v1"
    assert settings.llm.api_key == "sk-secret" and settings.llm.timeout_s == 5
    assert settings.asr.remote and settings.asr.base_url == "http://10.0.0.5:8765/v1"
    assert settings.tts.remote and settings.tts.response_format == "wav"
    shown = settings_as_toml(settings)
    assert "sk-secret" not in shown and 'api_key = "***"' in shown


@pytest.mark.parametrize(
    ("values", "wanted"),
    [
        ({"backend": "openai"}, 'backend = "openai" needs base_url'),
        ({"backend": "openai", "base_url": "gpu-box:8080"}, "expected http://HOST[:PORT]/v1"),
        ({"base_url": "ftp://gpu-box/v1"}, "expected http://"),
        ({"base_url": "http://gpu-box:99999/v1"}, "not a valid port"),
        ({"base_url": "http://gpu-box/v1?key=1"}, "no query or fragment"),
        ({"backend": "remote"}, "'local' or 'openai'"),
        ({"tokenizer": "exact"}, "'auto' or 'estimate'"),
    ],
)
def test_bad_remote_settings_are_one_line(values: dict[str, str], wanted: str) -> None:
    overrides = {"llm": values}
    with pytest.raises(ConfigError) as caught:
        load_settings(overrides=overrides, environ={})
    line = settings_problem(caught.value, overrides=overrides, environ={})
    assert "\n" not in line and line.startswith("[llm]") and wanted in line, line
    assert "from the command line" in line
