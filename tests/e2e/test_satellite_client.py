"""`chinwag satellite` (the real command, in its own process) with a file for a microphone and
a file for a speaker, against a real server: what it wrote must transcribe back (real
Whisper) to the reply's text."""

from __future__ import annotations

import asyncio
import sys
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from clients.talk import read_wav
from server.app import Engines
from server.audio.pcm import float32_to_int16
from server.protocol import native as proto
from tests.conftest import RunningServer, make_settings, start_server
from tests.e2e.test_satellites import SiteEvents, write_wav
from tests.speech import espeak_16k, load_16k, recording, to_16k_float, wer

pytestmark = [pytest.mark.slow, pytest.mark.models]

ROOT = Path(__file__).resolve().parents[2]
QUESTION = recording("spk1_snt3.wav")


@pytest.fixture
async def served(engines: Engines) -> AsyncIterator[RunningServer]:
    # 20 ms frames of 16 kHz audio are 640 bytes: the default frame limit holds them.
    running = await start_server(make_settings(), engines)
    yield running
    await running.web.close()


async def run_satellite(served: RunningServer, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server",
        "satellite",
        "--url",
        f"ws://127.0.0.1:{served.web.port}/",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(300):
            _, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, err.decode(errors="replace")


def played(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as wav:
        rate = wav.getframerate()
    pcm, _ = read_wav(path)
    return pcm, rate


async def test_the_satellite_speaks_the_reply_into_its_output_file(
    served: RunningServer, engines: Engines, tmp_path: Path
) -> None:
    site = SiteEvents("pi-hall")
    served.app.hub.add_observer(site)
    out = tmp_path / "out.wav"
    try:
        code, log = await run_satellite(
            served,
            "--name",
            "pi-hall",
            "--input-file",
            str(QUESTION.path),
            "--output-file",
            str(out),
        )
        assert code == 0, log[-3000:]
        transcripts = site.of(proto.Transcript)
        assert len(transcripts) == 1 and isinstance(transcripts[0], proto.Transcript)
        assert wer([QUESTION.text], [transcripts[0].text]) <= 0.2
        done = site.of(proto.ReplyDone)[0]
        assert isinstance(done, proto.ReplyDone) and done.status == "completed"
        pcm, rate = await asyncio.to_thread(played, out)
        assert len(pcm) > 0.5 * rate
        heard = await asyncio.to_thread(engines.transcriber.transcribe, to_16k_float(pcm, rate))
        print("satellite client round trip:", done.text, "|", heard.text)
        # Whisper tiny may repeat the end of a clip ("... the single syllable air. The air
        # contains only the single syll"): the reply's words are checked against as many
        # heard words, from the start.
        said = " ".join(heard.text.split()[: len(done.text.split()) + 1])
        assert wer([done.text], [said]) <= 0.35, (done.text, heard.text)
    finally:
        served.app.hub.remove_observer(site)


async def test_with_a_wake_word_only_what_follows_it_is_answered(
    served: RunningServer, tmp_path: Path
) -> None:
    question = float32_to_int16(load_16k(QUESTION))
    gap = np.zeros(int(1.5 * 16000), dtype=np.int16)
    pause = np.zeros(int(0.3 * 16000), dtype=np.int16)
    wav = tmp_path / "ask-twice.wav"
    write_wav(wav, np.concatenate([question, gap, espeak_16k("hey jarvis"), pause, question]))
    site = SiteEvents("pi-porch")
    served.app.hub.add_observer(site)
    try:
        code, log = await run_satellite(
            served,
            "--name",
            "pi-porch",
            "--wake-word",
            "hey_jarvis",
            "--input-file",
            str(wav),
            "--output-file",
            str(tmp_path / "out.wav"),
        )
        assert code == 0, log[-3000:]
        kinds = [e.type for e in site.events]
        assert kinds.count("wake.detected") == 1
        assert kinds.index("wake.detected") < kinds.index("speech.started")
        assert len(site.of(proto.Transcript)) == 1
        assert len(site.of(proto.ReplyDone)) == 1
    finally:
        served.app.hub.remove_observer(site)
