import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from server.audio.pcm import (
    SILENCE_DBFS,
    StreamResampler,
    check_sample_rate,
    decode_pcm16,
    encode_pcm16,
    float32_to_int16,
    int16_to_float32,
    resample,
    rms_dbfs,
)
from server.errors import ChinwagError, ErrorCode

RATE_PAIRS = [(22050, 16000), (24000, 16000), (16000, 22050), (48000, 16000)]
# Irregular sizes, so chunk borders fall everywhere relative to the filter.
CHUNK_SIZES = [1, 7, 160, 333, 480, 1024, 2, 4000]


@pytest.mark.parametrize("rate", [8000, 11025, 16000, 22050, 24000, 44100, 48000])
def test_supported_sample_rates(rate: int) -> None:
    check_sample_rate(rate)


@pytest.mark.parametrize("rate", [0, -16000, 7999, 48001, 96000])
def test_unsupported_sample_rates(rate: int) -> None:
    with pytest.raises(ChinwagError) as info:
        check_sample_rate(rate)
    assert info.value.code == ErrorCode.INVALID_AUDIO_FORMAT
    assert str(rate) in info.value.message
    assert "8000" in info.value.message and "48000" in info.value.message


def test_non_integer_sample_rate() -> None:
    for rate in (True, 16000.0, "16000"):
        with pytest.raises(ChinwagError) as info:
            check_sample_rate(rate)  # type: ignore[arg-type]
        assert info.value.code == ErrorCode.INVALID_AUDIO_FORMAT


def test_decode_little_endian() -> None:
    audio = decode_pcm16(b"\x01\x00\xff\xff\x00\x80\xff\x7f")
    assert audio.dtype == np.int16
    assert audio.tolist() == [1, -1, -32768, 32767]
    audio[0] = 5  # a writable copy, not a view on the frame
    assert encode_pcm16(decode_pcm16(b"\x01\x00")) == b"\x01\x00"


def test_decode_empty_frame() -> None:
    audio = decode_pcm16(b"")
    assert audio.dtype == np.int16
    assert audio.size == 0


@pytest.mark.parametrize("size", [1, 3, 641])
def test_decode_odd_byte_count(size: int) -> None:
    with pytest.raises(ChinwagError) as info:
        decode_pcm16(b"\x00" * size)
    assert info.value.code == ErrorCode.INVALID_AUDIO_FORMAT
    assert str(size) in info.value.message


def test_encode_decode_round_trip() -> None:
    audio = np.arange(-32768, 32768, 7, dtype=np.int16)
    assert np.array_equal(decode_pcm16(encode_pcm16(audio)), audio)


def test_int16_float32_round_trip_is_exact() -> None:
    audio = np.arange(-32768, 32768, dtype=np.int16)
    as_float = int16_to_float32(audio)
    assert as_float.dtype == np.float32
    assert as_float.min() == -1.0 and as_float.max() < 1.0
    assert np.array_equal(float32_to_int16(as_float), audio)


def test_float32_to_int16_clips_and_rounds() -> None:
    audio = np.array([1.5, -2.0, 1.0, -1.0, 0.5, 1e-5, np.nan], dtype=np.float32)
    assert float32_to_int16(audio).tolist() == [32767, -32768, 32767, -32768, 16384, 0, 0]


def _chunks(audio: npt.NDArray[Any], sizes: list[int]) -> list[npt.NDArray[Any]]:
    out: list[npt.NDArray[Any]] = []
    i = k = 0
    while i < audio.size:
        n = sizes[k % len(sizes)]
        out.append(audio[i : i + n])
        i, k = i + n, k + 1
    return out


@pytest.mark.parametrize(("in_rate", "out_rate"), RATE_PAIRS)
def test_stream_resampler_matches_one_shot_float32(in_rate: int, out_rate: int) -> None:
    t = np.arange(in_rate * 2) / in_rate
    audio = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    expected = resample(audio, in_rate, out_rate)
    resampler = StreamResampler(in_rate, out_rate, np.float32)
    parts = [resampler.process(chunk) for chunk in _chunks(audio, CHUNK_SIZES)]
    streamed = np.concatenate([*parts, resampler.flush()])
    assert streamed.dtype == np.float32
    assert streamed.size == expected.size == round(audio.size * out_rate / in_rate)
    assert np.max(np.abs(streamed - expected)) < 1e-4
    # No clicks at chunk borders: away from the onset transient, a 440 Hz tone of amplitude
    # 0.5 never moves more than its maximum slope per sample.
    assert np.max(np.abs(np.diff(streamed[200:-200]))) < 2 * np.pi * 440 * 0.5 / out_rate * 1.05


@pytest.mark.parametrize(("in_rate", "out_rate"), RATE_PAIRS)
def test_stream_resampler_matches_one_shot_int16(in_rate: int, out_rate: int) -> None:
    rng = np.random.default_rng(7)
    audio = (rng.standard_normal(in_rate) * 3000).astype(np.int16)
    expected = resample(audio, in_rate, out_rate)
    resampler = StreamResampler(in_rate, out_rate, np.int16)
    parts = [resampler.process(chunk) for chunk in _chunks(audio, CHUNK_SIZES)]
    streamed = np.concatenate([*parts, resampler.flush()])
    assert streamed.dtype == np.int16
    assert streamed.size == expected.size
    # soxr rounds int16 output a little differently per call: a couple of LSB at most.
    error = np.abs(streamed.astype(np.int32) - expected.astype(np.int32))
    assert error.max() <= 2
    assert error.mean() < 0.5


def test_stream_resampler_reusable_after_flush() -> None:
    audio = np.random.default_rng(1).standard_normal(4000).astype(np.float32) * 0.1
    resampler = StreamResampler(24000, 16000)
    first = np.concatenate([resampler.process(audio), resampler.flush()])
    second = np.concatenate([resampler.process(audio), resampler.flush()])
    assert np.array_equal(first, second)


def test_stream_resampler_identity() -> None:
    resampler = StreamResampler(16000, 16000, np.int16)
    assert resampler.is_identity
    chunk = np.arange(100, dtype=np.int16)
    assert np.array_equal(resampler.process(chunk), chunk)
    assert resampler.flush().size == 0
    audio = np.ones(10, dtype=np.float32)
    assert resample(audio, 16000, 16000) is audio


def test_stream_resampler_rejects_wrong_input() -> None:
    resampler = StreamResampler(24000, 16000, np.float32)
    with pytest.raises(ValueError):
        resampler.process(np.zeros(10, dtype=np.int16))
    with pytest.raises(ValueError):
        resampler.process(np.zeros((10, 2), dtype=np.float32))


def test_resample_empty() -> None:
    assert resample(np.zeros(0, dtype=np.float32), 22050, 16000).size == 0


def test_rms_dbfs() -> None:
    assert rms_dbfs(np.full(1000, 32767, dtype=np.int16)) == pytest.approx(0.0, abs=0.01)
    t = np.arange(16000) / 16000
    sine = float32_to_int16((0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32))
    assert rms_dbfs(sine) == pytest.approx(20 * math.log10(0.5 / math.sqrt(2)), abs=0.01)
    assert rms_dbfs(np.zeros(100, dtype=np.int16)) == SILENCE_DBFS
    assert rms_dbfs(np.zeros(0, dtype=np.int16)) == SILENCE_DBFS
    # No int16 overflow when squaring.
    assert rms_dbfs(np.full(10, -32768, dtype=np.int16)) == pytest.approx(0.0, abs=0.01)
