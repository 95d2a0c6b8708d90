"""`talk_turn` over a scripted connection: which reply is the answer to a recording."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

import numpy as np

from clients.talk import talk_turn


class ScriptedConnection:
    """Sends the scripted events once the client has sent some audio (so the recording's end,
    which is at its start for silence, has passed)."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = [json.dumps(e) for e in events]
        self.sent: list[str | bytes] = []
        self.audio_out = asyncio.Event()

    async def send(self, data: str | bytes) -> None:
        self.sent.append(data)
        if isinstance(data, bytes):
            self.audio_out.set()

    async def recv(self) -> str:
        await self.audio_out.wait()
        await asyncio.sleep(0)
        return self.events.pop(0)


def reply(reply_id: str, status: str, text: str) -> list[dict[str, Any]]:
    return [
        {"type": "reply.started", "reply_id": reply_id},
        {"type": "reply.done", "reply_id": reply_id, "status": status, "text": text},
    ]


async def run(events: list[dict[str, Any]]) -> str:
    connection = ScriptedConnection(events)
    silence = np.zeros(1600, dtype=np.int16)
    result = await talk_turn(cast(Any, connection), silence, 16000, timeout=5)
    return result.reply


async def test_a_reply_spoken_over_is_not_the_answer_even_when_it_ends_late() -> None:
    # A pause inside the recording ended a turn; the rest of the recording spoke over its
    # reply, whose cancellation reached the client only after the recording's end.
    started, done = reply("r1", "cancelled", "")
    events = [
        started,
        {"type": "speech.started", "utterance_id": "u2"},
        done,
        {"type": "transcript", "utterance_id": "u2", "text": "the whole question"},
        *reply("r2", "completed", "The answer."),
    ]
    assert await run(events) == "The answer."


async def test_a_reply_that_completed_before_the_person_spoke_again_still_counts() -> None:
    events = [
        {"type": "transcript", "utterance_id": "u1", "text": "a question"},
        *reply("r1", "completed", "The answer."),
    ]
    assert await run(events) == "The answer."


async def test_a_cancelled_reply_nobody_spoke_over_is_reported() -> None:
    assert await run(reply("r1", "cancelled", "Half of")) == "Half of"
