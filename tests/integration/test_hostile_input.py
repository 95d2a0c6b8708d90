"""Bad input over a real socket (issue 17 items 5-8): every bad frame is an `error` event with
a code, and the connection goes on. A real server on 127.0.0.1:0 with the fake engines (the
decoders and transports are what is tested; the models are not involved)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import (
    Client,
    RunningServer,
    fake_engines,
    make_settings,
    serving,
)

DEEP_ARRAYS = "[" * 100_000 + "]" * 100_000  # 200 kB: under the size limit below
LONG_INTEGER = '{"type": "user.message", "text": "hi", "id": ' + "9" * 5000 + "}"
BAD_JSON = [
    DEEP_ARRAYS,
    LONG_INTEGER,
    "9" * 5000,
    '{"type": "user.message", "text": "hi", "x": NaN}',
    '{"type": "user.message", "text": "hi", "x": 1e999}',
    '{"type": "user.message", "text": "\\ud800"}',
    "{" * 40 + "}" * 40,
]


@pytest.fixture(scope="module")
async def fake_server() -> AsyncIterator[RunningServer]:
    settings = make_settings(limits={"max_message_bytes": 512 * 1024})
    async with serving(fake_engines(), settings) as running:
        yield running


@pytest.fixture
async def native(fake_server: RunningServer) -> AsyncIterator[Client]:
    async with connect(fake_server.url, max_size=None) as ws:
        client = Client(ws)
        await client.until("session.started", timeout=10)
        yield client


class RealtimeClient:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, event: dict[str, Any] | str) -> None:
        await self.ws.send(event if isinstance(event, str) else json.dumps(event))

    async def event(self, timeout: float = 10) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        return data

    async def until(self, kind: str, timeout: float = 10) -> dict[str, Any]:
        while True:
            event = await self.event(timeout)
            if event["type"] == kind:
                return event

    async def session(self) -> dict[str, Any]:
        """The session as the server has it now (a no-op update echoes it)."""
        await self.send({"type": "session.update", "session": {}})
        session: dict[str, Any] = (await self.until("session.updated"))["session"]
        return session

    async def works(self) -> None:
        """A normal text response still completes."""
        await self.send({"type": "session.update", "session": {"output_modalities": ["text"]}})
        await self.until("session.updated")
        await self.send(
            {
                "type": "conversation.item.create",
                "item": {"type": "message", "role": "user", "content": [
                    {"type": "input_text", "text": "Hello?"}]},
            }
        )  # fmt: skip
        await self.send({"type": "response.create"})
        assert (await self.until("response.done"))["response"]["status"] == "completed"


@pytest.fixture
async def realtime(fake_server: RunningServer) -> AsyncIterator[RealtimeClient]:
    async with connect(f"{fake_server.url}v1/realtime", max_size=None) as ws:
        client = RealtimeClient(ws)
        assert (await client.event())["type"] == "session.created"
        yield client


# --- item 6 (and 7): JSON that parses badly in any way -----------------------------------------


@pytest.mark.parametrize("frame", BAD_JSON, ids=range(len(BAD_JSON)))
async def test_native_answers_bad_json_with_invalid_json(native: Client, frame: str) -> None:
    await native.ws.send(frame)
    event = await native.event(timeout=10)
    assert event["type"] == "error" and event["code"] == "invalid_json", event
    assert (await native.ask("Still there?"))[-1]["status"] == "completed"


@pytest.mark.parametrize("frame", BAD_JSON, ids=range(len(BAD_JSON)))
async def test_realtime_answers_bad_json_with_invalid_json(
    realtime: RealtimeClient, frame: str
) -> None:
    await realtime.send(frame)
    event = await realtime.until("error")
    assert event["error"]["code"] == "invalid_json", event
    await realtime.works()


async def test_realtime_lone_surrogate_is_an_error_with_the_event_id(
    realtime: RealtimeClient,
) -> None:
    """Item 7: no more abrupt 1006 close; the error names the event."""
    frame = json.dumps(
        {
            "type": "conversation.item.create",
            "event_id": "ev-7",
            "item": {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "X"}]},
        }
    ).replace('"X"', '"\\udc00"')  # fmt: skip
    await realtime.send(frame)
    error = (await realtime.until("error"))["error"]
    assert error["code"] == "invalid_json" and error["event_id"] == "ev-7"
    await realtime.works()


# --- item 5: session.update of wrong types or ranges -------------------------------------------

TD = "session.audio.input.turn_detection"
BAD_UPDATES: list[tuple[dict[str, Any], str, str]] = [
    ({"audio": {"input": {"turn_detection": {"threshold": "high"}}}}, "invalid_value",
     f"{TD}.threshold"),
    ({"audio": {"input": {"turn_detection": {"silence_duration_ms": "long"}}}}, "invalid_value",
     f"{TD}.silence_duration_ms"),
    ({"audio": {"input": {"turn_detection": {"threshold": 5}}}}, "invalid_value",
     f"{TD}.threshold"),
    ({"audio": {"input": {"turn_detection": {"silence_duration_ms": 10}}}}, "invalid_value",
     f"{TD}.silence_duration_ms"),
    ({"audio": {"input": {"turn_detection": {"prefix_padding_ms": -1}}}}, "invalid_value",
     f"{TD}.prefix_padding_ms"),
    ({"audio": {"input": {"turn_detection": {"prefix_padding_ms": 1.5}}}}, "invalid_value",
     f"{TD}.prefix_padding_ms"),
    ({"audio": {"input": {"turn_detection": {"threshold": True}}}}, "invalid_value",
     f"{TD}.threshold"),
    ({"audio": {"input": {"turn_detection": {"create_response": "yes"}}}}, "invalid_value",
     f"{TD}.create_response"),
    ({"audio": {"input": {"turn_detection": {"interrupt_response": 1}}}}, "invalid_value",
     f"{TD}.interrupt_response"),
    ({"audio": {"input": {"turn_detection": {"idle_timeout_ms": "soon"}}}}, "invalid_value",
     f"{TD}.idle_timeout_ms"),
    ({"audio": {"input": {"turn_detection": 7}}}, "invalid_value", TD),
    ({"audio": {"input": {"turn_detection": {"type": 3}}}}, "invalid_value", f"{TD}.type"),
    ({"audio": {"input": {"turn_detection": {"type": "psychic_vad"}}}},
     "unsupported_turn_detection", f"{TD}.type"),
    ({"audio": {"input": {"format": {"type": "audio/pcmu"}}}}, "unsupported_format",
     "session.audio.input.format"),
    ({"audio": {"input": {"format": "pcm"}}}, "invalid_value", "session.audio.input.format"),
    ({"audio": {"input": {"transcription": "whisper"}}}, "invalid_value",
     "session.audio.input.transcription"),
    ({"audio": {"input": 5}}, "invalid_value", "session.audio.input"),
    ({"audio": "loud"}, "invalid_value", "session.audio"),
    ({"audio": {"output": {"voice": 3}}}, "invalid_value", "session.audio.output.voice"),
    ({"audio": {"output": {"speed": 9}}}, "invalid_value", "session.audio.output.speed"),
    ({"instructions": ["be", "nice"]}, "invalid_value", "session.instructions"),
    ({"output_modalities": "text"}, "invalid_value", "session.output_modalities"),
    ({"output_modalities": ["text", "audio"]}, "invalid_value", "session.output_modalities"),
    ({"max_output_tokens": 0}, "invalid_value", "session.max_output_tokens"),
    ({"max_output_tokens": "lots"}, "invalid_value", "session.max_output_tokens"),
    ({"max_output_tokens": True}, "invalid_value", "session.max_output_tokens"),
    ({"tools": "none"}, "invalid_value", "session.tools"),
    ({"tools": [{"type": "function"}]}, "unsupported_tools", "session.tools"),
    ({"type": "transcription"}, "invalid_value", "session.type"),
    ({"model": 4}, "invalid_value", "session.model"),
    ({"tracing": 1}, "invalid_value", "session.tracing"),
    ({"include": "all"}, "invalid_value", "session.include"),
]  # fmt: skip


@pytest.mark.parametrize(("session", "code", "param"), BAD_UPDATES, ids=range(len(BAD_UPDATES)))
async def test_bad_session_update_is_an_error_and_changes_nothing(
    realtime: RealtimeClient, session: dict[str, Any], code: str, param: str
) -> None:
    before = await realtime.session()
    # Valid changes in the same update must not be applied either.
    update = {"instructions": "Talk like a pirate.", "max_output_tokens": 7, **session}
    await realtime.send({"type": "session.update", "event_id": "upd-1", "session": update})
    event = await realtime.event()
    assert event["type"] == "error", event
    assert event["error"]["code"] == code and event["error"]["param"] == param, event
    assert event["error"]["event_id"] == "upd-1"
    assert await realtime.session() == before
    # Audio still flows with the old settings (threshold 5 once failed here, at the append).
    await realtime.send({"type": "input_audio_buffer.append", "audio": "AAAA" * 20})
    await realtime.works()


async def test_the_session_object_sent_back_is_accepted(realtime: RealtimeClient) -> None:
    """A client may echo the session it was given: every field of it passes the checks."""
    session = await realtime.session()
    await realtime.send({"type": "session.update", "session": session})
    assert (await realtime.until("session.updated"))["session"] == session


async def test_good_turn_detection_is_applied(realtime: RealtimeClient) -> None:
    td = {"type": "server_vad", "threshold": 0.7, "prefix_padding_ms": 200,
          "silence_duration_ms": 800, "create_response": False, "interrupt_response": False,
          "idle_timeout_ms": None}  # fmt: skip
    await realtime.send({"type": "session.update", "session": {"audio": {"input": {
        "turn_detection": td}}}})  # fmt: skip
    session = (await realtime.until("session.updated"))["session"]
    assert session["audio"]["input"]["turn_detection"] == td
    await realtime.send({"type": "input_audio_buffer.append", "audio": "AAAA" * 20})
    await realtime.works()


# --- item 8: errors about nested fields echo the event_id --------------------------------------

NESTED_ERRORS: list[tuple[dict[str, Any], str]] = [
    ({"type": "session.update", "session": {"instructions": 5}}, "session.instructions"),
    ({"type": "session.update", "session": "everything"}, "session"),
    ({"type": "response.create", "response": {"instructions": 5}}, "response.instructions"),
    ({"type": "response.create", "response": {"output_modalities": ["smell"]}},
     "response.output_modalities"),
    ({"type": "response.create", "response": []}, "response"),
    ({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
      "content": "hello"}}, "item.content"),
    ({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
      "content": [{"type": "input_audio", "audio": "%%%"}]}}, "item.content[0].audio"),
    ({"type": "conversation.item.truncate", "item_id": "x", "audio_end_ms": "5"}, "audio_end_ms"),
    ({"type": "conversation.item.truncate", "item_id": "x", "audio_end_ms": -5}, "audio_end_ms"),
    ({"type": "conversation.item.truncate", "item_id": "x", "audio_end_ms": 5,
      "content_index": "0"}, "content_index"),
    ({"type": "input_audio_buffer.append", "audio": 12}, "audio"),
]  # fmt: skip


@pytest.mark.parametrize(("event", "param"), NESTED_ERRORS, ids=range(len(NESTED_ERRORS)))
async def test_nested_field_errors_echo_the_event_id(
    realtime: RealtimeClient, event: dict[str, Any], param: str
) -> None:
    await realtime.send({**event, "event_id": "client-42"})
    error = (await realtime.until("error"))["error"]
    assert error["param"] == param and error["event_id"] == "client-42", error
    await realtime.works()
