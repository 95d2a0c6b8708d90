"""The decisions of `chinwag satellite` (clients/satellite.py, satellite_audio.py), without sockets
or sound cards."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from clients.satellite import Backoff, barge_in_default, mic_open
from clients.satellite_audio import PlaybackBuffer

ROOT = Path(__file__).resolve().parents[2]


def test_backoff_doubles_up_to_its_limit_and_starts_again_after_a_good_connection() -> None:
    backoff = Backoff(first_s=1.0, max_s=30.0, stable_s=30.0)
    assert [backoff.delay(None) for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff.delay(5.0) == 30  # a short connection does not reset it
    assert backoff.delay(45.0) == 1  # one that lasted does
    assert backoff.delay(None) == 2


def test_the_playback_buffer_pads_with_silence_and_counts_what_played() -> None:
    buffer = PlaybackBuffer(max_bytes=100)
    buffer.write(b"\x01\x02" * 10)
    assert buffer.read(8) == b"\x01\x02" * 4
    assert buffer.read(16) == b"\x01\x02" * 6 + bytes(4)
    assert buffer.played_bytes == 20 and buffer.pending == 0
    buffer.new_stream()
    assert buffer.played_bytes == 0


def test_the_playback_buffer_is_bounded_and_clear_drops_the_rest() -> None:
    buffer = PlaybackBuffer(max_bytes=10)
    buffer.write(bytes(range(16)))
    assert buffer.pending == 10 and buffer.dropped_bytes == 6
    assert buffer.read(2) == bytes([6, 7])  # the oldest went, whole samples
    buffer.clear()  # barge-in
    assert buffer.pending == 0
    assert buffer.read(4) == bytes(4)


def test_the_playback_buffer_is_safe_between_the_loop_and_the_audio_thread() -> None:
    buffer = PlaybackBuffer(max_bytes=1 << 20)
    read: list[bytes] = []

    def speaker() -> None:
        for _ in range(2000):
            read.append(buffer.read(2))

    thread = threading.Thread(target=speaker)
    thread.start()
    for _ in range(1000):
        buffer.write(b"\x01\x00")
    thread.join()
    assert sum(chunk.count(b"\x01\x00") for chunk in read) + buffer.pending // 2 == 1000


@pytest.mark.parametrize(
    ("barge_in", "playing", "open_"),
    [(True, True, True), (True, False, True), (False, False, True), (False, True, False)],
)
def test_the_microphone_is_silenced_while_a_reply_plays_without_barge_in(
    barge_in: bool, playing: bool, open_: bool
) -> None:
    assert mic_open(barge_in, playing) is open_


@pytest.mark.parametrize(
    ("choice", "wake_word", "from_file", "expected"),
    [
        ("auto", None, False, False),  # a speaker in the room, no wake word: it would hear itself
        ("auto", "okay_nabu", False, True),
        ("auto", None, True, True),
        ("on", None, False, True),
        ("off", "okay_nabu", True, False),
    ],
)
def test_barge_in_by_default_only_where_the_speaker_cannot_interrupt_itself(
    choice: str, wake_word: str | None, from_file: bool, expected: bool
) -> None:
    assert barge_in_default(choice, wake_word, from_file) is expected


def test_a_machine_without_a_sound_card_is_told_to_use_files() -> None:
    # This machine has no sound card (PortAudio lists no device); the command says so at once.
    import sounddevice

    if len(sounddevice.query_devices()) > 0:
        pytest.skip("this machine has sound devices")
    done = subprocess.run(
        [sys.executable, "-m", "server", "satellite", "--url", "ws://127.0.0.1:9/"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "no input sound device" in done.stderr and "--input-file" in done.stderr
