import json
from typing import Any

from server.protocol import native as proto
from server.protocol import realtime as rt
from server.transports.realtime import RealtimeSink


class Recorder:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def send_text(self, text: str) -> None:
        self.events.append(json.loads(text))


async def test_a_joined_utterance_deletes_the_item_it_continues() -> None:
    ws = Recorder()
    sink = RealtimeSink(ws, rt.RealtimeConfig(model="m", instructions="be brief"))  # type: ignore[arg-type]
    await sink.send(
        proto.Transcript(
            utterance_id="u2",
            text="one turn, two parts",
            duration_ms=2000,
            transcribe_ms=90,
            joins="u1",
        )
    )
    kinds = [(e["type"], e.get("item_id")) for e in ws.events]
    assert kinds[0] == ("conversation.item.deleted", "u1")
    assert ("conversation.item.input_audio_transcription.completed", "u2") in kinds


async def test_a_plain_transcript_deletes_nothing() -> None:
    ws = Recorder()
    sink = RealtimeSink(ws, rt.RealtimeConfig(model="m", instructions="be brief"))  # type: ignore[arg-type]
    await sink.send(
        proto.Transcript(utterance_id="u1", text="hello", duration_ms=900, transcribe_ms=60)
    )
    assert all(e["type"] != "conversation.item.deleted" for e in ws.events)
