"""Voice end to end: real recordings streamed at real-time pace to a real server with the
real models (Silero VAD, faster-whisper, SmolLM2, Piper)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect

from clients.talk import TalkResult, read_wav, talk_turn
from server.app import Engines
from tests.conftest import Client, RunningServer, make_settings, start_server
from tests.speech import load_16k, normalise, recording, recordings, to_16k_float, wer

SHORT_REPLIES = {"type": "session.update", "generation": {"max_tokens": 40, "temperature": 0.0}}


async def open_session(server: RunningServer, *setup: dict[str, Any]) -> ClientConnection:
    ws = await connect(server.url, max_size=None)
    assert json.loads(await ws.recv())["type"] == "session.started"
    for message in setup:
        await ws.send(json.dumps(message))
        assert json.loads(await ws.recv())["type"].startswith("session.")
    return ws


async def converse(server: RunningServer, path: Path) -> TalkResult:
    pcm, rate = read_wav(path)
    ws = await open_session(server, SHORT_REPLIES)
    try:
        return await talk_turn(ws, pcm, rate, timeout=240)
    finally:
        await ws.close()


@pytest.fixture(scope="module")
async def conversations(engines: Engines) -> dict[str, TalkResult]:
    """Every recording spoken to the server at once, each on its own session. Admission
    control is off: the 14 turns' transcriptions go single file through one Whisper worker,
    and on a loaded machine the last ones waited past the default 10 s limit and were refused
    as `overloaded` (that rule has its own tests, test_admission)."""
    running = await start_server(make_settings(limits={"max_reply_wait_s": 0}), engines)
    try:
        recs = recordings()
        results = await asyncio.gather(*(converse(running, r.path) for r in recs))
    finally:
        await running.web.close()
    return {r.path.name: res for r, res in zip(recs, results, strict=True)}


async def test_streamed_transcripts_match_offline_accuracy(
    conversations: dict[str, TalkResult], engines: Engines
) -> None:
    recs = recordings()
    streamed = [conversations[r.path.name].transcript for r in recs]
    offline = [
        (await asyncio.to_thread(engines.transcriber.transcribe, load_16k(r))).text for r in recs
    ]
    references = [r.text for r in recs]
    streamed_wer, offline_wer = wer(references, streamed), wer(references, offline)
    print(f"WER streamed {streamed_wer:.3f}, offline {offline_wer:.3f}")
    assert streamed_wer <= offline_wer + 0.02


async def test_every_turn_gets_a_spoken_reply(conversations: dict[str, TalkResult]) -> None:
    for name, result in conversations.items():
        assert not result.discarded, name
        assert result.status == "completed", name
        assert result.reply.strip(), name
        assert result.audio_rate == 22050, name
        assert len(result.audio) > 0.3 * 22050 * 2, f"{name}: under 0.3 s of reply audio"
        kinds = [e["type"] for e in result.events]
        # Every stream is start / chunks / done, in order.
        assert (
            kinds.index("speech.started")
            < kinds.index("speech.stopped")
            < kinds.index("transcript")
        )
        assert (
            kinds.index("reply.started")
            < kinds.index("output_audio.start")
            < kinds.index("output_audio.done")
        )
        assert set(result.timings_ms) >= {
            "speech_end_to_transcript", "speech_end_to_first_token", "speech_end_to_first_audio"
        }  # fmt: skip


async def test_reply_audio_round_trips_through_whisper(
    conversations: dict[str, TalkResult], engines: Engines
) -> None:
    replies, heard = [], []
    for result in list(conversations.values())[:4]:
        pcm = np.frombuffer(bytes(result.audio), dtype="<i2")
        transcript = await asyncio.to_thread(
            engines.transcriber.transcribe, to_16k_float(pcm, result.audio_rate)
        )
        replies.append(result.reply)
        heard.append(transcript.text)
    error = wer(replies, heard)
    print("round trip WER", error, list(zip(replies, heard, strict=True)))
    assert error <= 0.3


async def test_noise_alone_never_starts_a_turn(server: RunningServer) -> None:
    ws = await open_session(server)
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 10 ** (-30 / 20) * 32768, 16000 * 3).astype(np.int16)
    pcm = np.concatenate([noise, np.zeros(16000, dtype=np.int16)])
    await ws.send(json.dumps({"type": "audio.start", "sample_rate": 16000}))
    for i in range(0, len(pcm), 320):
        await ws.send(pcm[i : i + 320].astype("<i2").tobytes())
        await asyncio.sleep(0.02)
    await ws.send(json.dumps({"type": "audio.stop"}))
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1.5):
            frame = await ws.recv()
            pytest.fail(f"noise produced an event: {frame!r}")
    await ws.close()


async def test_speaking_during_a_reply_interrupts_it(server: RunningServer) -> None:
    first, second = recording("spk1_snt1.wav"), recording("spk2_snt2.wav")
    ws = await open_session(
        server, {"type": "session.update", "generation": {"max_tokens": 120, "temperature": 0.0}}
    )
    pcm1, rate = read_wav(first.path)
    pcm2, _ = read_wav(second.path)
    await ws.send(json.dumps({"type": "audio.start", "sample_rate": rate}))
    events: list[dict[str, Any]] = []
    speaking = asyncio.Event()

    async def listen() -> None:
        while True:
            frame = await ws.recv()
            if isinstance(frame, bytes):
                speaking.set()
            else:
                events.append(json.loads(frame))

    async def stream(pcm: np.ndarray) -> None:
        for i in range(0, len(pcm), 320):
            await ws.send(pcm[i : i + 320].astype("<i2").tobytes())
            await asyncio.sleep(0.02)

    listener = asyncio.create_task(listen())
    silence = np.zeros(320, dtype=np.int16)
    await stream(pcm1)
    while not speaking.is_set():  # silence until the reply is heard
        await stream(silence)
    await stream(pcm2)  # the person talks over the reply
    for _ in range(600):
        await stream(silence)
        dones = [e for e in events if e["type"] == "reply.done"]
        if len(dones) >= 2 and sum(e["type"] == "output_audio.done" for e in events) >= 2:
            break
    listener.cancel()
    await ws.close()

    transcripts = [e for e in events if e["type"] == "transcript"]
    replies = [e for e in events if e["type"] == "reply.started"]
    assert len(transcripts) == 2 and len(replies) == 2, [e["type"] for e in events]
    first_reply = replies[0]["reply_id"]
    clears = [e for e in events if e["type"] == "output_audio.clear"]
    assert clears and clears[0]["stream_id"] == first_reply
    cut = [
        e
        for e in events
        if e.get("reply_id") == first_reply and e["type"] in ("reply.done", "reply.truncated")
    ]
    interrupted = [e for e in cut if e["type"] == "reply.truncated" or e["status"] == "cancelled"]
    assert interrupted, cut
    # What was kept is what was heard: a prefix of the reply, never more.
    full = next(e["text"] for e in cut if e["type"] == "reply.done")
    heard = interrupted[0]["heard_text"]
    assert len(heard) < len(full.strip()) and full.strip().startswith(
        heard.split(" ")[0] if heard else ""
    )
    # The next reply answers the second utterance.
    assert wer([second.text], [transcripts[1]["text"]]) <= 0.35
    assert replies[1]["message_id"] == transcripts[1]["utterance_id"]
    last = [e for e in events if e["type"] == "reply.done"][-1]
    assert last["reply_id"] == replies[1]["reply_id"] and last["status"] == "completed"


async def test_partial_transcripts_while_speaking(server: RunningServer) -> None:
    rec = recording("lj050_0131.wav")  # the longest: about 7 s
    pcm, rate = read_wav(rec.path)
    ws = await open_session(server)
    client = Client(ws)
    await client.send(
        {
            "type": "audio.start",
            "sample_rate": rate,
            "task": "transcribe",
            "partial_transcripts": True,
        }
    )
    step = rate // 50
    for i in range(0, len(pcm), step):
        await ws.send(pcm[i : i + step].astype("<i2").tobytes())
        await asyncio.sleep(0.02)
    await client.send({"type": "audio.stop"})
    events = await client.until("transcript", timeout=60)
    partials = [e["text"] for e in events if e["type"] == "transcript.partial"]
    assert partials, [e["type"] for e in events]
    # Partials are what was said so far: their words come from the final transcript.
    final_words = set(normalise(events[-1]["text"]).split())
    assert set(normalise(partials[0]).split()) & final_words
    await ws.close()


async def test_push_to_talk(server: RunningServer) -> None:
    rec = recording("spk1_snt4.wav")
    pcm, rate = read_wav(rec.path)
    ws = await open_session(server, SHORT_REPLIES)
    client = Client(ws)
    await client.send({"type": "audio.start", "sample_rate": rate, "mode": "push_to_talk"})
    for i in range(0, len(pcm), 1600):  # faster than real time: the client decides the end
        await ws.send(pcm[i : i + 1600].astype("<i2").tobytes())
    await client.send({"type": "audio.stop"})
    events = await client.until("reply.done", timeout=120)
    transcript = next(e for e in events if e["type"] == "transcript")
    assert wer([rec.text], [transcript["text"]]) <= 0.2
    assert events[-1]["status"] == "completed" and events[-1]["text"].strip()
    await ws.close()


async def test_transcribe_only(server: RunningServer) -> None:
    rec = recording("spk1_snt5.wav")
    pcm, rate = read_wav(rec.path)
    ws = await open_session(server)
    client = Client(ws)
    await client.send({"type": "audio.start", "sample_rate": rate, "task": "transcribe"})
    for i in range(0, len(pcm), 320):
        await ws.send(pcm[i : i + 320].astype("<i2").tobytes())
    await client.send({"type": "audio.stop"})
    events = await client.until("transcript", timeout=60)
    assert wer([rec.text], [events[-1]["text"]]) <= 0.2
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1.5):
            event = await client.event()
            pytest.fail(f"transcribe-only must not answer: {event}")
    await ws.close()


async def test_say_speaks_text(server: RunningServer, engines: Engines) -> None:
    ws = await open_session(server)
    text = "The kitchen timer has finished."
    await ws.send(json.dumps({"type": "say", "text": text, "id": "t1", "sample_rate": 16000}))
    audio = bytearray()
    events = []
    while True:
        frame = await asyncio.wait_for(ws.recv(), 60)
        if isinstance(frame, bytes):
            audio.extend(frame)
            continue
        events.append(json.loads(frame))
        if events[-1]["type"] == "output_audio.done":
            break
    assert events[0] == {"type": "output_audio.start", "stream_id": "t1", "sample_rate": 16000,
                         "format": "pcm16", "channels": 1}  # fmt: skip
    assert events[-1]["status"] == "completed"
    pcm = np.frombuffer(bytes(audio), dtype="<i2")
    assert abs(events[-1]["duration_ms"] - len(pcm) / 16) < 5
    heard = await asyncio.to_thread(engines.transcriber.transcribe, to_16k_float(pcm, 16000))
    assert wer([text], [heard.text]) <= 0.2
    await ws.close()


@pytest.mark.parametrize(
    ("messages", "code"),
    [
        ([{"type": "audio.start", "sample_rate": 4000}], "invalid_audio_format"),
        ([{"type": "audio.start", "sample_rate": 96000}], "invalid_audio_format"),
        (
            [{"type": "audio.start", "sample_rate": 16000, "output_sample_rate": 1}],
            "invalid_audio_format",
        ),
        ([{"type": "audio.start", "sample_rate": "fast"}], "invalid_message"),
        ([{"type": "audio.start", "sample_rate": 16000}, b"\x00\x01\x02"], "invalid_audio_format"),
        ([{"type": "audio.start", "sample_rate": 16000}, b"\x00" * 5000], "frame_too_large"),
        ([b"\x00\x00"], "audio_not_started"),
        ([{"type": "audio.stop"}], "audio_not_started"),
        ([{"type": "say", "text": "hi", "sample_rate": 3}], "invalid_audio_format"),
    ],
)
async def test_bad_audio_input_gets_an_error_and_the_session_goes_on(
    server: RunningServer, messages: list[dict[str, Any] | bytes], code: str
) -> None:
    ws = await open_session(server)
    client = Client(ws)
    for message in messages:
        await ws.send(message if isinstance(message, bytes) else json.dumps(message))
    event = await client.event()
    assert event["type"] == "error" and event["code"] == code, event
    # The session is still usable, for speech too.
    await ws.send(json.dumps({"type": "say", "text": "Still here."}))
    assert (await client.until("output_audio.done"))[-1]["status"] == "completed"
    await ws.close()


async def test_utterance_over_the_limit(engines: Engines) -> None:
    running = await start_server(make_settings(vad={"max_utterance_s": 1.0}), engines)
    try:
        rec = recording("lj050_0131.wav")
        pcm, rate = read_wav(rec.path)
        ws = await open_session(running)
        client = Client(ws)
        await client.send({"type": "audio.start", "sample_rate": rate})
        step = rate // 50
        for i in range(0, len(pcm), step):
            await ws.send(pcm[i : i + step].astype("<i2").tobytes())
        event = await client.until("error", timeout=60)
        assert event[-1]["code"] == "utterance_too_long"
        assert not any(e["type"] == "transcript" for e in event)  # the cut turn is not answered
        await client.send({"type": "audio.stop"})
        with contextlib.suppress(TimeoutError):
            while True:  # read what is left, as a well-behaved client does, then leave
                await client.event(timeout=2)
        await ws.close()
    finally:
        await running.web.close()


def test_talk_cli_against_a_served_server(tmp_path: Path) -> None:
    """The outside check: `chinwag serve` and `chinwag talk --json --out` as processes."""
    chinwag = [sys.executable, "-m", "server"]
    ready = tmp_path / "port"
    server = subprocess.Popen(
        [*chinwag, "serve", "--port", "0", "--ready-file", str(ready)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        for _ in range(600):
            if ready.exists() or server.poll() is not None:
                break
            time.sleep(0.2)
        assert ready.exists(), server.stderr.read() if server.stderr else ""
        url = f"ws://127.0.0.1:{ready.read_text()}"
        out = tmp_path / "reply.wav"
        wav = recording("lj050_0131.wav").path  # the 22.05 kHz one
        talk = subprocess.run(
            [*chinwag, "talk", "--url", url, str(wav), "--json", "--out", str(out)],
            capture_output=True, text=True, timeout=240, env={**os.environ},
        )  # fmt: skip
        assert talk.returncode == 0, talk.stderr
        result = json.loads(talk.stdout)
        assert result["transcript"].strip() and result["reply"].strip()
        for name in (
            "speech_end_to_transcript",
            "speech_end_to_first_token",
            "speech_end_to_first_audio",
        ):
            assert result["timings_ms"][name] > 0
        with wave.open(str(out)) as reply:
            # The reply's audio, however short the model's reply ("I'm" once: 0.28 s).
            assert reply.getframerate() == 22050 and reply.getnframes() > 0
            assert abs(reply.getnframes() / 22.05 - result["reply_audio_ms"]) < 1
        chat = subprocess.run(
            [*chinwag, "chat", "--url", url, "What is the capital of France?"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert chat.returncode == 0 and chat.stdout.strip(), chat.stderr
        interactive = subprocess.run(
            [*chinwag, "chat", "--url", url], input="Hello!\nName a colour.\n",
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert interactive.returncode == 0, interactive.stderr
        assert len([line for line in interactive.stdout.splitlines() if line.strip()]) >= 2
    finally:
        server.terminate()
        server.wait(20)
