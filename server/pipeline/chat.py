"""Runs chat replies on the one LLM, one at a time, in the order they were asked for."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from server.engines.base import ChatMessage, ChatModel, GenerationStats
from server.pipeline.history import messages_to_drop
from server.prompts import GenerationSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChatOutcome:
    stats: GenerationStats
    text: str
    dropped: int  # leading history messages that no longer fit and were left out
    queued_s: float  # time spent waiting for other sessions' replies


class ChatRunner:
    """The single model behind a single worker thread.

    The thread pool's own FIFO queue gives every session its turn in arrival order; the model
    is free for the next reply as soon as the worker returns, even if a slow client is still
    reading the previous one. Deltas reach the event loop through an unbounded queue, which
    max_tokens bounds.
    """

    def __init__(self, model: ChatModel) -> None:
        self.model = model
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llm")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def run_blocking(self, func: Callable[[], object]) -> object:
        """Run other model work (warm-up, benchmarks) in the model's thread, in turn."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, func)

    async def reply(
        self,
        system_prompt: str,
        history: Sequence[ChatMessage],
        settings: GenerationSettings,
        on_delta: Callable[[str], Awaitable[None]],
    ) -> ChatOutcome:
        loop = asyncio.get_running_loop()
        deltas: asyncio.Queue[str | None] = asyncio.Queue()
        cancel = threading.Event()
        submitted = time.perf_counter()
        started: list[float] = []
        snapshot = list(history)
        budget = self.model.context_size - settings.max_tokens

        def push(item: str | None) -> None:
            try:
                loop.call_soon_threadsafe(deltas.put_nowait, item)
            except RuntimeError:  # the loop is closing: nobody listens any more
                cancel.set()

        def work() -> tuple[int, GenerationStats]:
            started.append(time.perf_counter())
            try:
                if cancel.is_set():
                    raise asyncio.CancelledError
                dropped = messages_to_drop(
                    system_prompt,
                    snapshot,
                    lambda msgs: self.model.count_prompt_tokens(msgs) <= budget,
                )
                messages = [ChatMessage("system", system_prompt), *snapshot[dropped:]]
                return dropped, self.model.generate(messages, settings, push, cancel)
            finally:
                push(None)

        future = loop.run_in_executor(self._executor, work)
        parts: list[str] = []
        try:
            while (delta := await deltas.get()) is not None:
                parts.append(delta)
                await on_delta(delta)
            dropped, stats = await future
        except BaseException:
            # Cancelled (barge-in, new message, disconnect) or the sink failed: stop the model
            # at its next token; a reply still waiting in the queue never starts.
            cancel.set()
            future.cancel()
            future.add_done_callback(_consume_result)
            raise
        queued_s = (started[0] if started else submitted) - submitted
        return ChatOutcome(stats=stats, text="".join(parts), dropped=dropped, queued_s=queued_s)


def _consume_result(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.debug("abandoned generation failed: %r", future.exception())
