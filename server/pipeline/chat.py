"""Runs chat replies on the one LLM, several at once, interleaved token by token."""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from server.engines.base import (
    ChatMessage,
    ChatModel,
    CountsAhead,
    Generation,
    GenerationStats,
    SharesCores,
)
from server.pipeline.admission import WaitLimit
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


@dataclass(eq=False)
class _Job:
    """A reply or a prefill waiting for the model or under way."""

    work: Callable[[], None] | None  # a prefill: runs on its own when the model is idle
    urgent: bool  # someone is waiting to hear this reply
    order: int
    future: Future[None]
    cancel: threading.Event
    start: Callable[[], Generation] | None = None  # a reply: begins its generation
    finish: Callable[[GenerationStats], None] | None = None
    generation: Generation | None = None
    deadline: float | None = None  # refused (admission control) if still waiting then


class ChatRunner:
    """The single model behind a single worker thread, interleaving replies.

    Up to `model.parallel` replies are under way at once: every step of the worker advances
    each by about a token (one batch on llama.cpp), so a new reply's first token never waits
    for another reply to finish. Replies a person is waiting to hear (`urgent`) are admitted
    before text replies, and one place is kept for them; a prefill runs only when no reply
    is waiting or under way. The model is free for the next reply as soon as a reply's last
    token is out, even if a slow client is still reading it. Deltas reach the event loop
    through an unbounded queue, which max_tokens bounds. A reply that waits for a place
    longer than `max_wait_s` is refused with `overloaded` (pipeline/admission.py).
    """

    def __init__(
        self,
        model: ChatModel,
        priority: CpuPriority | None = None,
        *,
        max_wait_s: float = 0.0,
        share_cores: bool = False,
    ) -> None:
        self.model = model
        # While speech work runs, the model steps on one thread fewer: llama.cpp's threads
        # wait for each other at every operation, so one of them preempted by Whisper or
        # Piper holds up the whole step (docs/performance.md, "Several voice sessions").
        self._sharer = model if share_cores and isinstance(model, SharesCores) else None
        self.priority = priority or CpuPriority(enabled=False)
        self.limit = WaitLimit(max_wait_s)
        self._lock = threading.Condition()
        self._waiting: list[_Job] = []
        self._active: list[_Job] = []  # touched by the worker thread only
        self._open = 0  # jobs submitted and not finished
        self._order = itertools.count()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="llm", daemon=True)
        self._thread.start()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for job in self._waiting:
                job.future.cancel()
            self._waiting.clear()
            self._lock.notify_all()

    @property
    def busy(self) -> bool:
        """A reply (or a prefill) is running or waiting for the model."""
        return self._open > 0

    def _submit(self, job: _Job) -> None:
        with self._lock:
            if self._closed:
                job.future.cancel()
                return
            self._open += 1
            job.future.add_done_callback(self._finished)
            self._waiting.append(job)
            self._lock.notify_all()

    def _finished(self, _job: Future[None]) -> None:
        with self._lock:
            self._open -= 1

    # --- the worker thread ----------------------------------------------------------------

    def _admit(self) -> list[_Job]:
        """Jobs to start now, in priority order (call with the lock held)."""
        self._waiting.sort(key=lambda j: (j.start is None, not j.urgent, j.order))
        parallel = max(1, self.model.parallel)
        # One place is kept for a reply someone is waiting to hear.
        text_places = parallel - 1 if parallel > 1 else 1
        admitted: list[_Job] = []
        running = len(self._active)
        now = time.monotonic()
        for job in list(self._waiting):
            if job.start is None:  # a prefill: only on an idle model
                if running or admitted or any(j.start is not None for j in self._waiting):
                    continue
            elif running >= (parallel if job.urgent else text_places):
                if self.limit.expired(job.deadline, now):
                    self._waiting.remove(job)
                    if not job.future.cancelled():
                        job.future.set_exception(self.limit.error("the reply"))
                continue
            self._waiting.remove(job)
            if not job.future.set_running_or_notify_cancel():
                continue  # cancelled while waiting
            admitted.append(job)
            running += 1
        return admitted

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._closed and not self._active and not self._waiting:
                    self._lock.wait()
                if self._closed:
                    break
                admitted = self._admit()
            if (sharer := self._sharer) is not None:
                sharer.use_threads(sharer.threads - 1 if self.priority.sharing else sharer.threads)
            for job in admitted:
                self._begin(job)
            self._advance()
            # Between two steps: let a transcription or a first phrase have the cores.
            self.priority.yield_to_urgent()
        for job in list(self._active):
            self._end(job, cancelled=True)

    def _begin(self, job: _Job) -> None:
        try:
            if job.start is None:
                assert job.work is not None
                job.work()
                job.future.set_result(None)
                return
            job.generation = job.start()
        except BaseException as exc:
            job.future.set_exception(exc)
            return
        self._active.append(job)

    def _advance(self) -> None:
        for job in [j for j in self._active if j.cancel.is_set()]:
            self._end(job, cancelled=True)
        running = [j.generation for j in self._active if j.generation is not None]
        if running:
            try:
                self.model.step(running)
            except BaseException as exc:
                for job in list(self._active):
                    self._end(job, cancelled=True, error=exc)
                return
        for job in [j for j in self._active if j.generation is None or j.generation.done]:
            self._end(job)

    def _end(
        self, job: _Job, *, cancelled: bool = False, error: BaseException | None = None
    ) -> None:
        self._active.remove(job)
        try:
            if job.generation is not None and job.finish is not None:
                job.finish(self.model.end(job.generation, cancelled=cancelled))
        except BaseException as exc:
            error = error or exc
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(None)

    # --- the event loop's side --------------------------------------------------------------

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
        evaluated = 0

        def work() -> None:
            nonlocal evaluated
            evaluated = self.model.prefill(self._fit(system_prompt, snapshot, budget)[0])

        job = _Job(work, False, next(self._order), Future(), threading.Event())
        self._submit(job)
        await asyncio.wrap_future(job.future)
        return evaluated

    async def reply(
        self,
        system_prompt: str,
        history: Sequence[ChatMessage],
        settings: GenerationSettings,
        on_delta: Callable[[str], Awaitable[None]],
        outcome: ChatOutcome,
        *,
        urgent: bool = False,
    ) -> None:
        """Stream one reply through on_delta. Cancelling the caller stops the model at its
        next token; `outcome` then still holds the counts of what was generated. `urgent`:
        someone is waiting to hear it (a voice turn); it goes before text replies."""
        loop = asyncio.get_running_loop()
        deltas: asyncio.Queue[str | None] = asyncio.Queue()
        cancel = threading.Event()
        submitted = time.perf_counter()
        snapshot = list(history)
        budget = self.model.context_size - settings.max_tokens

        def push(item: str | None) -> None:
            try:
                loop.call_soon_threadsafe(deltas.put_nowait, item)
            except RuntimeError:  # the loop is closing: nobody listens any more
                cancel.set()

        def start() -> Generation:
            outcome.queued_s = time.perf_counter() - submitted
            messages, outcome.dropped = self._fit(system_prompt, snapshot, budget)
            return self.model.begin(messages, settings, push)

        def finish(stats: GenerationStats) -> None:
            outcome.stats = stats

        if isinstance(self.model, CountsAhead):
            await asyncio.to_thread(
                self.model.count_ahead, [ChatMessage("system", system_prompt), *snapshot]
            )
        future: Future[None] = Future()
        future.add_done_callback(lambda _f: push(None))
        job = _Job(None, urgent, next(self._order), future, cancel, start, finish)
        job.deadline = self.limit.deadline(time.monotonic())
        self._submit(job)
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
            await asyncio.wrap_future(future)
        except BaseException:
            # Cancelled (barge-in, new message, disconnect) or the sink failed. A reply still
            # waiting never starts; a running one stops at the next step, and waiting for
            # that (milliseconds) keeps its counts.
            cancel.set()
            if not future.cancel():
                waiter = asyncio.wrap_future(future)
                # Retrieved, else asyncio logs "exception was never retrieved" with its repr,
                # which quotes the prompt (a UnicodeEncodeError carries the whole string).
                waiter.add_done_callback(_consume_result)
                await asyncio.shield(asyncio.wait([waiter]))
                future.add_done_callback(_consume_result)
            raise


def _consume_result(job: Future[Any] | asyncio.Future[Any]) -> None:
    if not job.cancelled() and job.exception() is not None:
        log.debug("abandoned generation failed: %r", job.exception())
