"""The OpenAI Agents SDK (openai-agents 0.24) against chinwag, defaults and only the URL changed.

Run in .venv-frameworks/agents by tests/e2e/test_realtime_frameworks.py: a typed turn, a spoken
turn and an interruption. Prints one JSON report (the raw server events it saw, by type)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from agents.realtime import RealtimeAgent, RealtimeRunner
from common import ServerEvents, args, pcm24k, report, silence

INSTRUCTIONS = "You are a friendly assistant. Answer in one short sentence."
CHUNK = 480  # 20 ms


async def main() -> None:
    opts = args()
    os.environ.setdefault("OPENAI_API_KEY", "unused-locally")
    url = opts.url.replace("http", "ws", 1) + "/v1/realtime?model=gpt-realtime"
    runner = RealtimeRunner(RealtimeAgent(name="Assistant", instructions=INSTRUCTIONS))
    session = await runner.run(model_config={"url": url})
    seen = ServerEvents()
    raw, changed = seen.raw, seen.changed
    errors: list[str] = []

    async def consume() -> None:
        async for event in session:
            if event.type == "error":
                errors.append(repr(event.error)[:300])
            elif event.type == "raw_model_event" and event.data.type == "raw_server_event":
                seen.add(event.data.data)
            changed.set()

    until, server = seen.until, seen.of

    async def stream(pcm: Any) -> None:
        for i in range(0, len(pcm), CHUNK):
            await session.send_audio(pcm[i : i + CHUNK].tobytes())
            await asyncio.sleep(0.02)

    result: dict[str, Any] = {"framework": "openai-agents"}
    async with session:
        reader = asyncio.create_task(consume())
        updated = await until(lambda: server("session.updated"))
        result["session"] = updated[-1]["session"]
        # 1. A typed turn.
        mark = len(raw)
        await session.send_message("What is the capital of France?")
        done = await until(lambda: server("response.done", mark))
        result["typed"] = done[0]["response"]
        # 2. A spoken turn, ended by the server's turn detection (semantic_vad by default).
        mark = len(raw)
        await stream(pcm24k(opts.question))
        speaker = asyncio.create_task(stream(silence(30)))
        done = await until(lambda: server("response.done", mark))
        speaker.cancel()
        heard = server("conversation.item.input_audio_transcription.completed", mark)
        result["spoken"] = {"transcript": heard[0]["transcript"] if heard else None,
                            "response": done[0]["response"]}  # fmt: skip
        await until(lambda: server("conversation.item.retrieved", mark), 20)
        # 3. An interruption: talk over a long spoken answer.
        mark = len(raw)
        await session.send_message("Tell me a long story about a lighthouse keeper and a storm.")
        await until(lambda: server("response.output_audio.delta", mark))
        await stream(pcm24k(opts.interruption))
        speaker = asyncio.create_task(stream(silence(30)))
        await until(lambda: len(server("response.done", mark)) >= 2)
        speaker.cancel()
        result["interrupted"] = [d["response"] for d in server("response.done", mark)]
        await asyncio.sleep(1)  # the truncate and retrieve the SDK sends after it
        result["events"] = [e.get("type") for e in raw]
        result["errors"] = errors + [str(e.get("error")) for e in server("error")]
        reader.cancel()
    report(result)


if __name__ == "__main__":
    asyncio.run(main())
