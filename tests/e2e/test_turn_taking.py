"""Turn taking with the real models: pauses, speculative replies, the end of a turn."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import connect

from bench.pause_cuts import spoken_half
from bench.voice_set import VOICES
from server.app import Engines
from server.audio.pcm import resample
from tests.conftest import RunningServer
from tests.speech import normalise


def speech(engines: Engines, text: str) -> np.ndarray:
    """Piper speech at 16 kHz, with the silence at both ends trimmed."""
    pcm = np.concatenate(list(engines.synthesizer.synthesize(text)))
    pcm = resample(pcm, engines.synthesizer.sample_rate, 16000)
    loud = np.nonzero(np.abs(pcm.astype(np.int32)) > 500)[0]
    return pcm[loud[0] : loud[-1] + 1]


@dataclass
class Conversation:
    events: list[dict[str, Any]] = field(default_factory=list)
    session: Any = None  # the server's Session object, to look at its history afterwards
    speculated: bool = False  # a speculative reply existed at some point


async def converse(server: RunningServer, pcm: np.ndarray, max_tokens: int = 30) -> Conversation:
    """Stream at real-time pace, then silence, until the reply is done."""
    result = Conversation()
    async with connect(server.url, max_size=None) as ws:
        result.session = server.app.hub[json.loads(await ws.recv())["session_id"]]
        await ws.send(
            json.dumps({"type": "session.update", "generation": {"max_tokens": max_tokens}})
        )
        await ws.recv()
        await ws.send(json.dumps({"type": "audio.start", "sample_rate": 16000}))

        async def listen() -> None:
            while True:
                frame = await ws.recv()
                if isinstance(frame, str):
                    result.events.append(json.loads(frame))

        listener = asyncio.create_task(listen())
        padded = np.concatenate([pcm, np.zeros(16000 * 8, dtype=np.int16)])
        for i in range(0, len(padded), 320):
            await ws.send(padded[i : i + 320].astype("<i2").tobytes())
            await asyncio.sleep(0.02)
            result.speculated = result.speculated or result.session.turns.speculation is not None
            if any(e["type"] == "reply.done" for e in result.events):
                break
        await asyncio.sleep(0.5)  # anything late would show up here
        listener.cancel()
    return result


async def test_a_pause_mid_sentence_keeps_one_turn_and_the_speculation_is_unseen(
    server: RunningServer, engines: Engines
) -> None:
    first = speech(engines, "The weather in the mountains today is")
    second = speech(engines, "sunny and warm.")
    pause = np.zeros(int(16000 * 0.3), dtype=np.int16)
    events = (await converse(server, np.concatenate([first, pause, second]))).events
    kinds = [e["type"] for e in events]
    assert kinds.count("speech.started") == 1 and kinds.count("speech.stopped") == 1, kinds
    transcripts = [e["text"] for e in events if e["type"] == "transcript"]
    assert len(transcripts) == 1, kinds
    words = normalise(transcripts[0]).split()
    assert "weather" in words and "sunny" in words  # both halves, one turn
    assert kinds.count("reply.started") == 1 and kinds.count("reply.done") == 1


async def test_a_discarded_speculation_never_reaches_the_history(
    server: RunningServer, engines: Engines
) -> None:
    first = speech(engines, "Please tell me about the")
    second = speech(engines, "history of Rome.")
    pause = np.zeros(int(16000 * 0.45), dtype=np.int16)  # long enough to speculate
    result = await converse(server, np.concatenate([first, pause, second]), max_tokens=20)
    assert result.speculated, "the pause should have started a speculative reply"
    kinds = [e["type"] for e in result.events]
    assert kinds.count("transcript") == 1 and kinds.count("reply.started") == 1, kinds
    # The history holds the one confirmed exchange, with the whole sentence.
    history = result.session.history
    assert [m.role for m in history] == ["user", "assistant"]
    assert "rome" in normalise(history[0].content)


@pytest.mark.parametrize(
    "first, second",
    [("Set a timer", "for ten minutes."), ("Play the song", "that we heard yesterday.")],
)
async def test_a_pause_before_a_soft_onset_keeps_one_turn(
    server: RunningServer, first: str, second: str
) -> None:
    """espeak-ng says "for" and "that" with a soft onset that Silero hears 50-80 ms late, so
    without the onset rule ([vad] onset_rise_db) it counted these 300 ms pauses as 352-384 ms
    of silence, and a first part that reads as complete ("Set a timer.") ended the turn
    (bench/pause_cuts.py; docs/performance.md, issue 16)."""
    voice = next(v for v in VOICES if v.name == "en-us-175")
    one = spoken_half(first + ",", voice, seed=1)
    two = spoken_half(second, voice, seed=2)
    quiet = np.zeros(16000 * 3 // 10, dtype=np.int16)  # the pause, and before the speech
    events = (await converse(server, np.concatenate([quiet, one, quiet, two]))).events
    kinds = [e["type"] for e in events]
    assert kinds.count("speech.started") == 1 and kinds.count("speech.stopped") == 1, kinds
    transcripts = [e["text"] for e in events if e["type"] == "transcript"]
    assert len(transcripts) == 1, kinds
    words = normalise(transcripts[0]).split()
    assert first.split()[-1].lower() in words, [(e["type"], e.get("text")) for e in events]
    assert normalise(second).split()[-1] in words, transcripts
    assert kinds.count("reply.done") == 1
