"""Pipecat 1.14 (OpenAIRealtimeLLMService) against chinwag: defaults, only the URL changed.

Run in .venv-frameworks/pipecat by tests/e2e/test_realtime_frameworks.py. The pipeline is the
one Pipecat's examples build around the service (user aggregator, service, assistant
aggregator), with frames queued where a transport would put them: a typed turn, a spoken turn
and an interruption (talking over a spoken answer). Prints one JSON report."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from common import ServerEvents, args, pcm24k, report, silence
from pipecat.frames.frames import InputAudioRawFrame, LLMMessagesAppendFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.services.openai.realtime import events
from pipecat.services.openai.realtime.llm import OpenAIRealtimeLLMService

CHUNK = 480  # 20 ms


async def main() -> None:
    opts = args()
    seen = ServerEvents()
    raw = seen.raw
    parse = events.parse_server_event

    def watch(message: str) -> Any:  # every server event, as the service parses it
        seen.add(json.loads(message))
        return parse(message)

    events.parse_server_event = watch

    until, server = seen.until, seen.of

    llm = OpenAIRealtimeLLMService(
        api_key="unused-locally", base_url=opts.url.replace("http", "ws", 1) + "/v1/realtime"
    )
    # Long answers, so that there is a reply to talk over in step 3.
    system = "You are a storyteller: answer everything with a long story of many sentences."
    context = LLMContext([{"role": "system", "content": system}])
    pair = LLMContextAggregatorPair(context)
    worker = PipelineWorker(Pipeline([pair.user(), llm, pair.assistant()]))
    runner = asyncio.create_task(PipelineRunner(handle_sigint=False).run(worker))

    async def stream(pcm: Any) -> None:
        for i in range(0, len(pcm), CHUNK):
            frame = InputAudioRawFrame(
                audio=pcm[i : i + CHUNK].tobytes(), sample_rate=24000, num_channels=1
            )
            await worker.queue_frame(frame)
            await asyncio.sleep(0.02)

    async def say(text: str) -> None:
        message = {"role": "user", "content": text}
        await worker.queue_frame(LLMMessagesAppendFrame([message], run_llm=True))

    result: dict[str, Any] = {"framework": "pipecat"}
    updated = await until(lambda: server("session.updated"))
    result["session"] = updated[-1]["session"]
    # 1. A typed turn.
    mark = len(raw)
    await say("What is the capital of France?")
    result["typed"] = (await until(lambda: server("response.done", mark)))[0]["response"]
    # 2. A spoken turn, answered by the server's turn detection.
    mark = len(raw)
    await stream(pcm24k(opts.question))
    speaker = asyncio.create_task(stream(silence(30)))
    done = await until(lambda: server("response.done", mark))
    speaker.cancel()
    heard = server("conversation.item.input_audio_transcription.completed", mark)
    result["spoken"] = {"transcript": heard[0]["transcript"] if heard else None,
                        "response": done[0]["response"]}  # fmt: skip
    # 3. An interruption: ask again aloud and talk over the answer once it is heard.
    mark = len(raw)
    await stream(pcm24k(opts.question))
    speaker = asyncio.create_task(stream(silence(30)))
    await until(lambda: server("response.output_audio.delta", mark))
    speaker.cancel()
    await stream(pcm24k(opts.interruption))
    speaker = asyncio.create_task(stream(silence(30)))
    await until(lambda: len(server("response.done", mark)) >= 2)
    speaker.cancel()
    result["interrupted"] = [d["response"] for d in server("response.done", mark)]
    await asyncio.sleep(1)
    result["events"] = [e.get("type") for e in raw]
    result["server_errors"] = [e["error"] for e in server("error")]
    await worker.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    report(result)


if __name__ == "__main__":
    asyncio.run(main())
