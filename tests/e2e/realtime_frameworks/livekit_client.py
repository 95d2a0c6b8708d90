"""LiveKit Agents 1.8 (livekit-plugins-openai RealtimeModel) against chinwag, driven without a
LiveKit server: defaults, only the URL changed.

Run in .venv-frameworks/livekit by tests/e2e/test_realtime_frameworks.py: a typed turn through
generate_reply (which matches its reply by the response's metadata), a spoken turn and an
interruption handled as an AgentSession does (interrupt, then truncate to what was played)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import aiohttp
from common import ServerEvents, args, pcm24k, report, silence
from livekit import rtc
from livekit.agents import llm
from livekit.plugins.openai.realtime import RealtimeModel

CHUNK = 480  # 20 ms


async def main() -> None:
    opts = args()
    seen = ServerEvents()
    raw, changed = seen.raw, seen.changed
    errors: list[str] = []
    replies: list[asyncio.Task[dict[str, Any]]] = []

    async def drain(ev: llm.GenerationCreatedEvent) -> dict[str, Any]:
        text: list[str] = []
        audio_ms = 0.0

        async def read_text(stream: Any) -> None:
            async for piece in stream:
                text.append(str(piece))

        async def read_audio(stream: Any) -> None:
            nonlocal audio_ms
            async for frame in stream:
                audio_ms += frame.duration * 1000

        async for message in ev.message_stream:
            await asyncio.gather(read_text(message.text_stream), read_audio(message.audio_stream))
        changed.set()
        return {"response_id": ev.response_id, "user_initiated": ev.user_initiated,
                "text": "".join(text), "audio_ms": audio_ms}  # fmt: skip

    def on_raw(event: dict[str, Any]) -> None:
        seen.add(event)

    def on_error(event: llm.RealtimeModelError) -> None:
        errors.append(repr(event.error)[:300])
        changed.set()

    until, server = seen.until, seen.of

    result: dict[str, Any] = {"framework": "livekit-agents"}
    async with aiohttp.ClientSession() as http:
        model = RealtimeModel(
            base_url=opts.url + "/v1", api_key="unused-locally", http_session=http
        )
        session = model.session()
        session.on("openai_server_event_received", on_raw)
        session.on("error", on_error)
        session.on("generation_created", lambda ev: replies.append(asyncio.create_task(drain(ev))))

        async def stream(pcm: Any) -> None:
            for i in range(0, len(pcm), CHUNK):
                piece = pcm[i : i + CHUNK]
                session.push_audio(rtc.AudioFrame(piece.tobytes(), 24000, 1, len(piece)))
                await asyncio.sleep(0.02)

        async def say(text: str) -> llm.GenerationCreatedEvent:
            ctx = session.chat_ctx.copy()
            ctx.add_message(role="user", content=text)
            await session.update_chat_ctx(ctx)
            return await session.generate_reply()  # times out after 10 s if unmatched

        updated = await until(lambda: server("session.updated"))
        result["session"] = updated[-1]["session"]
        # 1. A typed turn.
        created = await say("What is the capital of France?")
        typed = await until(lambda: replies[0].done() and replies[0].result())
        result["typed"] = {"user_initiated": created.user_initiated, "reply": typed}
        # 2. A spoken turn, answered by the server's turn detection.
        mark = len(raw)
        await stream(pcm24k(opts.question))
        speaker = asyncio.create_task(stream(silence(30)))
        await until(lambda: len(replies) >= 2 and replies[1].done())
        speaker.cancel()
        heard = server("conversation.item.input_audio_transcription.completed", mark)
        result["spoken"] = {"transcript": heard[0]["transcript"] if heard else None,
                            "reply": replies[1].result()}  # fmt: skip
        # 3. An interruption, as an AgentSession handles one: stop, truncate to what played.
        mark = len(raw)
        created = await say("Tell me a long story about a lighthouse keeper and a storm.")
        result["interrupt_user_initiated"] = created.user_initiated
        await until(lambda: server("response.output_audio.delta", mark))
        talking = asyncio.create_task(stream(pcm24k(opts.interruption)))
        started = await until(lambda: server("input_audio_buffer.speech_started", mark))
        session.interrupt()
        played = sum(
            len(base64.b64decode(e["delta"])) for e in server("response.output_audio.delta", mark)
        )
        item_id = server("response.output_item.added", mark)[0]["item"]["id"]
        session.truncate(message_id=item_id, modalities=["audio"], audio_end_ms=played // 96)
        await talking
        speaker = asyncio.create_task(stream(silence(30)))
        await until(lambda: len(server("response.done", mark)) >= 2)
        speaker.cancel()
        result["speech_started"] = started[0]["item_id"]
        result["interrupted"] = [d["response"] for d in server("response.done", mark)]
        await asyncio.sleep(1)
        result["events"] = [e.get("type") for e in raw]
        result["errors"] = errors
        result["server_errors"] = [e["error"] for e in server("error")]
        await session.aclose()
        await model.aclose()
    report(result)


if __name__ == "__main__":
    asyncio.run(main())
