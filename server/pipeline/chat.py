"""Runs chat replies on the one LLM, one at a time, in the order they were asked for."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from server.engines.base import ChatMessage, ChatModel, GenerationStats
from server.pipeline.history import messages_to_drop
from server.pipeline.priority import CpuPriority
from server.prompts import GenerationSettings

log = logging.getLogger(__name__)


@dataclass
class ChatOutcome:
    """Filled in by ChatRunner.reply, also when the reply is cancelled part-way."""

    stats: GenerationStats | None = None
    dropped: int = 0  # leading history messages that no longer fit and were left out
    queued_s: float = 0.0  # time spent waiting for other sessions' replies


class ChatRunner:
    """The single model behind a single worker thread.

    The thread pool's own FIFO queue gives every session its turn in arrival order; the model
    is free for the next reply as soon as the worker returns, even if a slow client is still
    reading the previous one. Deltas reach the event loop through an unbounded queue, which
    max_tokens bounds.
    """

    def __init__(self, model: ChatModel, priority: CpuPriority | None = None) -> None:
        self.model = model
        self.priority = priority or CpuPriority(enabled=False)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llm")
        # Jobs submitted and not finished; discarded from the worker thread when done.
        self._pending: set[Future[Any]] = set()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def busy(self) -> bool:
        """A reply (or a prefill) is running or waiting for the model."""
        return bool(self._pending)

    def _submit(self, work: Callable[[], Any]) -> Future[Any]:
        job = self._executor.submit(work)
        self._pending.add(job)
        job.add_done_callback(self._pending.discard)
        return job

    def _fit(
        self, system_prompt: str, snapshot: Sequence[ChatMessage], budget: int
    ) -> tuple[list[ChatMessage], int]:
        """The messages the model sees, and how many leading ones of `snapshot` did not fit."""
        dropped = messages_to_drop(
            system_prompt, snapshot, lambda msgs: self.model.count_prompt_tokens(msgs) <= budget
        )
        return [ChatMessage("system", system_prompt), *snapshot[dropped:]], dropped

    async def prefill(
        self,
        system_prompt: str,
        history: Sequence[ChatMessage],
        partial: ChatMessage,
        settings: GenerationSettings,
    ) -> int:
        """Evaluate the prompt of a reply to `partial` (the words said so far) while the person
        is still speaking, so the reply itself evaluates only what changed. Skipped while the
        model has other work, so it never delays a reply. Returns the tokens evaluated."""
        if self.busy:
            return 0
        snapshot = [*history, partial]
        budget = self.model.context_size - settings.max_tokens

        def work() -> int:
            return self.model.prefill(self._fit(system_prompt, snapshot, budget)[0])

        return int(await asyncio.wrap_future(self._submit(work)))

    async def reply(
        self,
        system_prompt: str,
        history: Sequence[ChatMessage],
        settings: GenerationSettings,
        on_delta: Callable[[str], Awaitable[None]],
        outcome: ChatOutcome,
    ) -> None:
        """Stream one reply through on_delta. Cancelling the caller stops the model at its
        next token; `outcome` then still holds the counts of what was generated."""
        loop = asyncio.get_running_loop()
        deltas: asyncio.Queue[str | None] = asyncio.Queue()
        cancel = threading.Event()
        submitted = time.perf_counter()
        snapshot = list(history)
        budget = self.model.context_size - settings.max_tokens

        def push(item: str | None) -> None:
            if item is not None:
                # Between two tokens: let a transcription or a first phrase have the cores.
                self.priority.yield_to_urgent()
            try:
                loop.call_soon_threadsafe(deltas.put_nowait, item)
            except RuntimeError:  # the loop is closing: nobody listens any more
                cancel.set()

        def work() -> None:
            outcome.queued_s = time.perf_counter() - submitted
            try:
                messages, outcome.dropped = self._fit(system_prompt, snapshot, budget)
                outcome.stats = self.model.generate(messages, settings, push, cancel)
            finally:
                push(None)

        job = self._submit(work)
        try:
            finished = False
            while not finished:
                parts = [await deltas.get()]
                # Whatever queued up while the last delta was being sent goes out as one:
                # fewer frames when the client or the loop falls behind, no added delay.
                while not deltas.empty():
                    parts.append(deltas.get_nowait())
                finished = parts[-1] is None
                text = "".join(p for p in parts if p is not None)
                if text:
                    await on_delta(text)
            await asyncio.wrap_future(job)
        except BaseException:
            # Cancelled (barge-in, new message, disconnect) or the sink failed. A reply still
            # waiting in the queue never starts; a running one stops at its next token, and
            # waiting for that (milliseconds) keeps its counts.
            cancel.set()
            if not job.cancel():
                waiter = asyncio.wrap_future(job)
                # Retrieved, else asyncio logs "exception was never retrieved" with its repr,
                # which quotes the prompt (a UnicodeEncodeError carries the whole string).
                waiter.add_done_callback(_consume_result)
                await asyncio.shield(asyncio.wait([waiter]))
                job.add_done_callback(_consume_result)
            raise


def _consume_result(job: Future[Any] | asyncio.Future[Any]) -> None:
    if not job.cancelled() and job.exception() is not None:
        log.debug("abandoned generation failed: %r", job.exception())
