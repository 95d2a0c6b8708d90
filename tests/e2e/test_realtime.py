"""`/v1/realtime` with the official `openai` SDK as the client, against the real models."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from openai import AsyncOpenAI
from openai.resources.realtime.realtime import AsyncRealtimeConnection

from clients.talk import read_wav
from server.app import Engines
from server.audio.pcm import resample
from tests.conftest import RunningServer, make_settings, start_server
from tests.speech import recording, to_16k_float, wer

CHUNK = 480  # 20 ms at 24 kHz


def pcm24k(name: str) -> np.ndarray:
    pcm, rate = read_wav(recording(name).path)
    return resample(pcm, rate, 24000)


def b64(pcm: np.ndarray) -> str:
    return base64.b64encode(pcm.astype("<i2").tobytes()).decode()


async def until(conn: AsyncRealtimeConnection, kind: str, seen: list[Any] | None = None) -> Any:
    async with asyncio.timeout(180):
        async for event in conn:
            if seen is not None:
                seen.append(event)
            if event.type == kind:
                return event
    raise AssertionError(f"connection ended before {kind}")


@pytest.fixture
async def conn(server: RunningServer) -> AsyncIterator[AsyncRealtimeConnection]:
    client = AsyncOpenAI(api_key="unused-locally", base_url=f"{server.http}/v1")
    async with client.realtime.connect(model="gpt-realtime") as connection:
        created = await connection.recv()
        assert created.type == "session.created"
        yield connection


async def stream(conn: AsyncRealtimeConnection, pcm: np.ndarray, pace: bool = True) -> None:
    for i in range(0, len(pcm), CHUNK):
        await conn.input_audio_buffer.append(audio=b64(pcm[i : i + CHUNK]))
        if pace:
            await asyncio.sleep(0.02)


async def test_text_conversation_over_two_turns(conn: AsyncRealtimeConnection) -> None:
    await conn.session.update(
        session={"type": "realtime", "output_modalities": ["text"], "max_output_tokens": 40}
    )
    updated = await until(conn, "session.updated")
    assert updated.session.output_modalities == ["text"]
    usages = []
    for question in ("My favourite colour is green.", "What did I just tell you?"):
        await conn.conversation.item.create(
            item={"type": "message", "role": "user",
                  "content": [{"type": "input_text", "text": question}]}
        )  # fmt: skip
        seen: list[Any] = []
        await conn.response.create()
        done = await until(conn, "response.done", seen)
        kinds = [e.type for e in seen]
        assert "response.created" in kinds and "response.output_text.delta" in kinds
        assert kinds.index("response.output_text.delta") < kinds.index("response.output_text.done")
        deltas = "".join(e.delta for e in seen if e.type == "response.output_text.delta")
        assert done.response.status == "completed"
        assert done.response.output[0].content[0].text == deltas and deltas.strip()
        usages.append(done.response.usage)
    # The second response saw the first exchange, mostly from the KV cache.
    assert usages[1].input_tokens > usages[0].input_tokens
    assert usages[1].input_token_details.cached_tokens >= usages[0].input_tokens


async def test_spoken_question_with_server_vad(
    conn: AsyncRealtimeConnection, engines: Engines
) -> None:
    await conn.session.update(
        session={
            "type": "realtime",
            "output_modalities": ["audio"],
            "max_output_tokens": 40,
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "turn_detection": {"type": "server_vad", "threshold": 0.5,
                                       "prefix_padding_ms": 300, "silence_duration_ms": 500},
                },
                "output": {"format": {"type": "audio/pcm", "rate": 24000}},
            },
        }
    )  # fmt: skip
    await until(conn, "session.updated")
    rec = recording("spk1_snt3.wav")
    silence = np.zeros(24000, dtype=np.int16)
    sender = asyncio.create_task(
        stream(conn, np.concatenate([pcm24k(rec.path.name), silence, silence]))
    )
    seen: list[Any] = []
    done = await until(conn, "response.done", seen)
    sender.cancel()
    kinds = [e.type for e in seen]
    for kind in ("input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                 "input_audio_buffer.committed",
                 "conversation.item.input_audio_transcription.completed", "response.created",
                 "response.output_audio_transcript.delta", "response.output_audio.delta",
                 "response.output_audio.done"):  # fmt: skip
        assert kind in kinds, kind
    transcript = next(
        e for e in seen if e.type == "conversation.item.input_audio_transcription.completed"
    )
    assert wer([rec.text], [transcript.transcript]) <= 0.2
    assert done.response.status == "completed"
    said = done.response.output[0].content[0].transcript
    audio = b"".join(
        base64.b64decode(e.delta) for e in seen if e.type == "response.output_audio.delta"
    )
    pcm = np.frombuffer(audio, dtype="<i2")
    heard = await asyncio.to_thread(engines.transcriber.transcribe, to_16k_float(pcm, 24000))
    assert wer([said], [heard.text]) <= 0.35  # the audio is the transcript, spoken


async def test_push_to_talk_commit_and_create(conn: AsyncRealtimeConnection) -> None:
    await conn.session.update(
        session={"type": "realtime", "output_modalities": ["text"], "max_output_tokens": 30,
                 "audio": {"input": {"turn_detection": None}}}
    )  # fmt: skip
    await until(conn, "session.updated")
    rec = recording("spk2_snt4.wav")
    await stream(conn, pcm24k(rec.path.name), pace=False)
    await conn.input_audio_buffer.commit()
    await conn.response.create()
    seen: list[Any] = []
    done = await until(conn, "response.done", seen)
    kinds = [e.type for e in seen]
    assert "input_audio_buffer.committed" in kinds
    assert "input_audio_buffer.speech_started" not in kinds  # no VAD in push-to-talk
    transcript = next(
        e for e in seen if e.type == "conversation.item.input_audio_transcription.completed"
    )
    assert wer([rec.text], [transcript.transcript]) <= 0.2
    # The response came after the transcript had joined the conversation.
    assert kinds.index("conversation.item.input_audio_transcription.completed") < kinds.index(
        "response.created"
    )
    assert done.response.status == "completed" and done.response.output[0].content[0].text.strip()


async def test_response_cancel_mid_reply(conn: AsyncRealtimeConnection) -> None:
    await conn.session.update(
        session={"type": "realtime", "output_modalities": ["text"], "max_output_tokens": 1000}
    )
    await until(conn, "session.updated")
    await conn.conversation.item.create(
        item={"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "Write a very long story about a lighthouse keeper."}]}
    )  # fmt: skip
    await conn.response.create()
    await until(conn, "response.output_text.delta")
    await conn.response.cancel()
    done = await until(conn, "response.done")
    assert done.response.status == "cancelled"
    assert done.response.usage.output_tokens < 300
    # Nothing to cancel now: an error, and the connection lives on.
    await conn.response.cancel()
    error = await until(conn, "error")
    assert error.error.code == "response_cancel_not_active"
    await conn.conversation.item.create(
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}
    )
    await conn.response.create(response={"max_output_tokens": 10})
    assert (await until(conn, "response.done")).response.status == "completed"


async def test_truncate_after_barge_in(conn: AsyncRealtimeConnection) -> None:
    await conn.session.update(
        session={"type": "realtime", "output_modalities": ["audio"], "max_output_tokens": 120,
                 "audio": {"input": {"turn_detection": {"type": "server_vad"}}}}
    )  # fmt: skip
    await until(conn, "session.updated")
    silence = np.zeros(CHUNK, dtype=np.int16)
    first, second = pcm24k("spk1_snt1.wav"), pcm24k("spk2_snt2.wav")
    seen: list[Any] = []

    async def talk() -> None:
        await stream(conn, first)
        while not any(e.type == "response.output_audio.delta" for e in seen):
            await stream(conn, silence)
        await stream(conn, second)  # talking over the reply
        while True:
            await stream(conn, silence)

    sender = asyncio.create_task(talk())
    try:
        started = await until(conn, "response.created", seen)
        interrupted = await until(conn, "input_audio_buffer.speech_started", seen)
        assert interrupted.item_id != seen[0].item_id
        # A client stops playback and says how much it played, as the SDK examples do.
        await conn.conversation.item.truncate(
            item_id=started.response.id.removeprefix("resp_"), content_index=0, audio_end_ms=400
        )
        truncated = await until(conn, "conversation.item.truncated", seen)
        assert truncated.audio_end_ms == 400
        # The cancelled response may end before or after the truncation is confirmed.
        first_done = next((e for e in seen if e.type == "response.done"), None) or await until(
            conn, "response.done", seen
        )
        assert first_done.response.id == started.response.id
        second_done = await until(conn, "response.done", seen)
        assert second_done.response.status == "completed"
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)


async def test_bad_events_get_errors_and_the_connection_lives(
    conn: AsyncRealtimeConnection,
) -> None:
    raw = conn._connection  # the SDK's websocket: to send what the SDK never would
    await raw.send("{this is not json")
    assert (await until(conn, "error")).error.code == "invalid_json"
    await conn.send({"type": "conversation.dance"})  # type: ignore[arg-type]
    error = await until(conn, "error")
    assert error.error.code == "invalid_event_type" and error.error.param == "type"
    await conn.send({"type": "input_audio_buffer.append", "audio": "%%%", "event_id": "e9"})
    error = await until(conn, "error")
    assert error.error.code == "invalid_value" and error.error.event_id == "e9"
    await conn.session.update(
        session={"type": "realtime", "tools": [{"type": "function", "name": "f"}]}
    )
    assert (await until(conn, "error")).error.code == "unsupported_tools"
    await conn.conversation.item.delete(item_id="nope")
    assert (await until(conn, "error")).error.code == "item_not_found"
    await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
    await until(conn, "session.updated")
    await conn.conversation.item.create(
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}
    )
    await conn.response.create(response={"max_output_tokens": 10})
    assert (await until(conn, "response.done")).response.status == "completed"


async def test_token_is_accepted_as_bearer(engines: Engines) -> None:
    running = await start_server(make_settings(server={"token": "s3cret"}), engines)
    try:
        good = AsyncOpenAI(api_key="s3cret", base_url=f"{running.http}/v1")
        async with good.realtime.connect(model="x") as connection:
            assert (await connection.recv()).type == "session.created"
        bad = AsyncOpenAI(api_key="wrong", base_url=f"{running.http}/v1")
        with pytest.raises(Exception, match="401"):
            async with bad.realtime.connect(model="x") as connection:
                await connection.recv()
    finally:
        await running.web.close()


async def test_metadata_out_of_band_and_retrieve(conn: AsyncRealtimeConnection) -> None:
    await conn.session.update(
        session={"type": "realtime", "output_modalities": ["text"],
                 "audio": {"input": {"transcription": {"model": "whisper-1"}}}}
    )  # fmt: skip
    updated = await until(conn, "session.updated")
    assert updated.session.audio.input.transcription.model == "whisper-1"
    await conn.conversation.item.create(
        item={"type": "message", "role": "user", "id": "q1",
              "content": [{"type": "input_text", "text": "Say hello."}]}
    )  # fmt: skip
    await until(conn, "conversation.item.added")
    await conn.conversation.item.retrieve(item_id="q1")
    retrieved = await until(conn, "conversation.item.retrieved")
    assert retrieved.item.id == "q1" and retrieved.item.content[0].text == "Say hello."
    # Items join the end of the conversation; anywhere else is refused, not misplaced.
    for previous, code in (("root", "unsupported_previous_item_id"), ("ghost", "item_not_found")):
        await conn.conversation.item.create(
            previous_item_id=previous,
            item={"type": "message", "role": "user",
                  "content": [{"type": "input_text", "text": "misplaced"}]},
        )  # fmt: skip
        error = await until(conn, "error")
        assert error.error.code == code and error.error.param == "previous_item_id"
    # An out-of-band response: its metadata comes back, and it stays out of the conversation.
    await conn.response.create(
        response={"conversation": "none", "metadata": {"topic": "greeting"},
                  "max_output_tokens": 15}
    )  # fmt: skip
    seen: list[Any] = []
    created = await until(conn, "response.created", seen)
    assert created.response.metadata == {"topic": "greeting"}
    assert created.response.conversation_id is None
    done = await until(conn, "response.done", seen)
    assert done.response.metadata == {"topic": "greeting"} and done.response.status == "completed"
    assert not any(e.type.startswith("conversation.item") for e in seen)
    await conn.conversation.item.retrieve(item_id=done.response.output[0].id, event_id="x1")
    error = await until(conn, "error")
    assert error.error.code == "item_retrieve_invalid_item_id" and error.error.event_id == "x1"
    # An in-conversation response is retrievable once done, as the history holds it.
    await conn.response.create(response={"max_output_tokens": 15})
    done = await until(conn, "response.done")
    await conn.response.cancel(response_id=done.response.id)  # too late: it ended
    error = await until(conn, "error")
    assert error.error.code == "response_cancel_not_active" and error.error.param == "response_id"
    await conn.conversation.item.retrieve(item_id=done.response.output[0].id)
    retrieved = await until(conn, "conversation.item.retrieved")
    assert retrieved.item.role == "assistant"
    assert retrieved.item.content[0].text == done.response.output[0].content[0].text
