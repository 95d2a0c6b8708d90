"""`chinwag talk` reads the audio files people have (issue 17 item 10): real files in each
format, written here with PyAV (FFmpeg) or the standard library's wave; a file that is not
audio is one clear line and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
import wave
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest

from clients.talk import AudioFileError, read_audio
from server import PROJECT_ROOT

TONE_HZ = 440.0
SECONDS = 1.0


def tone(rate: int, channels: int = 1) -> npt.NDArray[np.float32]:
    """(channels, samples) of a 440 Hz tone at half scale, in float32 -1..1."""
    t = np.arange(int(rate * SECONDS)) / rate
    wave_ = (0.5 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)
    return np.tile(wave_, (channels, 1))


def write_with_av(
    path: Path, codec: str, rate: int, channels: int = 1, sample_format: str | None = None
) -> Path:
    """Encode the tone into `path` (the container from its suffix) with `codec`."""
    layout = "mono" if channels == 1 else "stereo"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        assert isinstance(stream, av.AudioStream)
        if sample_format is not None:
            stream.format = sample_format
        planar = tone(rate, channels)
        frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout=layout)
        frame.sample_rate = rate
        # Codecs with a fixed frame size (AAC: 1024 samples) take frames of exactly that.
        size = stream.codec_context.frame_size or None
        resampler = av.AudioResampler(
            format=stream.format.name, layout=layout, rate=rate, frame_size=size
        )
        for part in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(part):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def dominant_hz(pcm: npt.NDArray[np.int16], rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
    return float(np.argmax(spectrum) * rate / len(pcm))


FORMATS = [
    # name, codec, rate, channels, sample format, expected rate
    ("a.flac", "flac", 44100, 1, "s16", 44100),
    ("stereo.flac", "flac", 48000, 2, "s32", 48000),
    ("s24.wav", "pcm_s24le", 48000, 1, None, 48000),
    ("s32.wav", "pcm_s32le", 16000, 2, None, 16000),
    ("float.wav", "pcm_f32le", 22050, 1, None, 22050),
    ("u8.wav", "pcm_u8", 8000, 1, None, 8000),
    ("hi-res.wav", "pcm_s24le", 96000, 2, None, 48000),  # resampled into 8-48 kHz
    ("a.mp3", "libmp3lame", 44100, 2, None, 44100),
    ("a.ogg", "libopus", 48000, 1, None, 48000),
    ("a.opus", "libopus", 48000, 2, None, 48000),
]


@pytest.mark.parametrize(
    ("name", "codec", "rate", "channels", "sample_format", "expected_rate"),
    FORMATS,
    ids=[f[0] for f in FORMATS],
)
def test_reads_common_formats(
    tmp_path: Path,
    name: str,
    codec: str,
    rate: int,
    channels: int,
    sample_format: str | None,
    expected_rate: int,
) -> None:
    path = write_with_av(tmp_path / name, codec, rate, channels, sample_format)
    pcm, got_rate = read_audio(path)
    assert got_rate == expected_rate
    assert pcm.dtype == np.int16 and pcm.ndim == 1  # mono
    assert abs(len(pcm) / got_rate - SECONDS) < 0.1  # codecs pad a little
    assert abs(dominant_hz(pcm, got_rate) - TONE_HZ) < 5
    peak = np.abs(pcm.astype(np.int32)).max()
    assert 0.3 * 32767 < peak < 0.9 * 32767, peak  # about half scale, downmix not clipped


def test_a_16_bit_wav_is_read_exactly(tmp_path: Path) -> None:
    samples = (tone(16000)[0] * 32767).astype("<i2")
    path = tmp_path / "plain.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(samples.tobytes())
    pcm, rate = read_audio(path)
    assert rate == 16000 and np.array_equal(pcm, samples)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"These are my notes, not a recording.\n" * 20, "not an audio file"),
        (b"", "not an audio file"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "not an audio file"),  # a WAV cut after 16 bytes
    ],
)
def test_not_audio_is_a_clear_error(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "notes.wav"
    path.write_bytes(content)
    with pytest.raises(AudioFileError) as caught:
        read_audio(path)
    message = str(caught.value)
    assert str(path) in message and reason in message and "\n" not in message


def test_a_video_without_sound_says_so(tmp_path: Path) -> None:
    path = tmp_path / "silent.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=1)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
        for packet in stream.encode(frame.reformat(format="yuv420p")):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with pytest.raises(AudioFileError, match="no audio stream"):
        read_audio(path)


def test_chinwag_talk_with_a_text_file_exits_2_with_one_line(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not audio\n")
    done = subprocess.run(
        [sys.executable, "-m", "server", "talk", "--url", "ws://127.0.0.1:9/", str(notes)],
        cwd=PROJECT_ROOT,
        env={k: v for k, v in os.environ.items() if k != "PYTHONASYNCIODEBUG"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("chinwag: ") and "notes.txt" in lines[0]
    assert "Traceback" not in done.stderr
