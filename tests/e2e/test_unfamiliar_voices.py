"""Speech the human recordings do not cover, end to end: Piper's voice at 24 kHz streamed at
real-time pace to a real server, over the native protocol and over `/v1/realtime`. Whisper's
short window once heard these sentences twice at the speculative pause (issue 16)."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import pytest
from websockets.asyncio.client import connect

from clients.talk import read_wav, send_paced, talk_turn
from tests.conftest import RunningServer
from tests.speech import Recording, piper_recordings, repeated_run, wer

SHORT_REPLIES = {"type": "session.update", "generation": {"max_tokens": 20, "temperature": 0.0}}


def heard_once(rec: Recording, transcript: str) -> None:
    assert repeated_run(transcript) is None, transcript
    assert wer([rec.text], [transcript]) <= 0.2, transcript


@pytest.mark.parametrize("rec", piper_recordings(), ids=lambda r: r.path.stem)
async def test_native_transcript_says_the_sentence_once(
    server: RunningServer, rec: Recording
) -> None:
    pcm, rate = read_wav(rec.path)
    async with connect(server.url, max_size=None) as ws:
        assert json.loads(await ws.recv())["type"] == "session.started"
        await ws.send(json.dumps(SHORT_REPLIES))
        assert json.loads(await ws.recv())["type"] == "session.updated"
        result = await talk_turn(ws, pcm, rate, timeout=240)
    assert result.status == "completed"
    heard_once(rec, result.transcript)


@pytest.mark.parametrize("rec", piper_recordings(), ids=lambda r: r.path.stem)
async def test_realtime_transcript_says_the_sentence_once(
    server: RunningServer, rec: Recording
) -> None:
    pcm, rate = read_wav(rec.path)
    assert rate == 24000  # the Realtime API's own rate: sent as it is
    transcripts: dict[str, str] = {}
    async with connect(f"{server.url.rstrip('/')}/v1/realtime", max_size=None) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        update = {"type": "realtime", "max_output_tokens": 20}
        await ws.send(json.dumps({"type": "session.update", "session": update}))
        assert json.loads(await ws.recv())["type"] == "session.updated"

        async def append(frame: bytes) -> None:
            audio = base64.b64encode(frame).decode()
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))

        mark: dict[str, float] = {}
        sender = asyncio.create_task(send_paced(append, pcm, rate, time.perf_counter(), mark))
        try:
            async with asyncio.timeout(240):
                while True:
                    event = json.loads(await ws.recv())
                    kind = event["type"]
                    assert kind != "error", event
                    if kind == "conversation.item.input_audio_transcription.completed":
                        transcripts[event["item_id"]] = event["transcript"]
                    elif kind == "conversation.item.deleted":
                        transcripts.pop(event["item_id"], None)  # joined to the next one
                    elif kind == "response.done" and "speech_end" in mark:
                        break
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
    heard_once(rec, " ".join(transcripts.values()))
