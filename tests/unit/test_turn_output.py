import asyncio

from server.pipeline.turn_output import TurnOutput
from server.protocol import native as proto


def make(held: bool) -> tuple[TurnOutput, list[object]]:
    sent: list[object] = []

    async def emit(event: proto.ServerEvent) -> None:
        sent.append(event)

    async def send_audio(pcm: bytes) -> None:
        sent.append(pcm)

    return TurnOutput(emit, send_audio, held=held), sent


def test_held_output_goes_out_in_order_at_release() -> None:
    async def run() -> None:
        out, sent = make(held=True)
        marks: list[str] = []
        await out.emit(proto.ReplyStarted(reply_id="r1"))
        await out.send_audio(b"\x00\x01")
        out.when_sent(lambda: marks.append("playing"))
        assert sent == [] and marks == []  # nothing seen while speculative
        await out.release()
        assert sent == [proto.ReplyStarted(reply_id="r1"), b"\x00\x01"]
        assert marks == ["playing"]
        await out.emit(proto.ReplyDelta(reply_id="r1", text="hi"))  # straight through now
        assert sent[-1] == proto.ReplyDelta(reply_id="r1", text="hi")

    asyncio.run(run())


def test_discarded_output_is_never_sent() -> None:
    async def run() -> None:
        out, sent = make(held=True)
        await out.emit(proto.ReplyStarted(reply_id="r1"))
        out.discard()
        await out.emit(proto.ReplyDelta(reply_id="r1", text="late"))
        await out.send_audio(b"\x00\x00")
        assert sent == []

    asyncio.run(run())


def test_direct_output_passes_through() -> None:
    async def run() -> None:
        out, sent = make(held=False)
        marks: list[int] = []
        await out.send_audio(b"\x01\x00")
        out.when_sent(lambda: marks.append(1))
        assert sent == [b"\x01\x00"] and marks == [1]

    asyncio.run(run())
