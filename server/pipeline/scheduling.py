"""A worker thread that runs the most urgent job first: earliest deadline first.

Whisper and Piper each run on one thread (the models are thread-confined, and two passes at
once on two cores only slow each other). When several people talk at once, jobs queue there,
and the order decides who waits: a reply's first phrase, which someone waits for in silence,
must not queue behind another reply's later phrase, which has the earlier phrases' playing
time to spare. Each job carries the moment it is needed by (a first phrase or a turn's
transcription: now; a later phrase: when playback reaches it) and the worker takes the
earliest. No job starves: a waiting job's deadline stays put while newer jobs get later ones.

concurrent.futures' executors are first come first served and have no way to reorder, hence
this small queue (a heap under a condition variable).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")
DEFER_POLL_S = 0.02  # how often a deferred job looks whether it may start


@dataclass(frozen=True)
class JobTrace:
    """How one job went: for the metrics and the debug log (where a turn's time goes)."""

    worker: str
    kind: str  # e.g. "asr_turn", "tts_first", "tts_later"
    queued_s: float  # from submission to start
    run_s: float
    late_s: float  # finished this long after its deadline (negative: ahead of it)


@dataclass(eq=False)
class _Job:
    func: Callable[[], Any]
    deadline: float
    kind: str
    submitted: float
    future: concurrent.futures.Future[Any]


class DeadlineWorker:
    """One thread; `run` queues a job and awaits its result. Thread-safe; jobs cancelled while
    queued are removed at once and never run; a running job finishes (Whisper and Piper
    cannot be interrupted) and its result is dropped."""

    def __init__(
        self,
        name: str,
        on_done: Callable[[JobTrace], None] | None = None,
        *,
        defer_while: Callable[[], bool] | None = None,
        defer_slack_s: float = 1.0,
    ) -> None:
        """defer_while: while it is true (urgent work runs elsewhere, e.g. a turn's
        transcription), a job due more than `defer_slack_s` from now does not start: it
        would take a core from someone waiting. It starts once that is over, or once it is
        due within the slack."""
        self.name = name
        self._on_done = on_done
        self._defer_while = defer_while
        self._defer_slack_s = defer_slack_s
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Job]] = []
        self._order = itertools.count()
        self._running: _Job | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    async def run(
        self, func: Callable[[], T], *, deadline: float | None = None, kind: str = "job"
    ) -> T:
        """Run `func` on the worker thread once every job with an earlier deadline has run
        (`deadline` in time.monotonic() seconds; None: now)."""
        entry = self._push(func, deadline, kind)
        try:
            result: T = await asyncio.wrap_future(entry[2].future)
            return result
        except asyncio.CancelledError:
            self._withdraw(entry)
            raise

    def submit(
        self, func: Callable[[], Any], *, deadline: float | None = None, kind: str = "job"
    ) -> concurrent.futures.Future[Any]:
        """Queue `func` without waiting for it (e.g. closing a generator the worker pulls
        from). Raises RuntimeError once the worker is closed."""
        return self._push(func, deadline, kind)[2].future

    def _push(
        self, func: Callable[[], Any], deadline: float | None, kind: str
    ) -> tuple[float, int, _Job]:
        now = time.monotonic()
        job = _Job(
            func, now if deadline is None else deadline, kind, now, concurrent.futures.Future()
        )
        entry = (job.deadline, next(self._order), job)
        with self._cond:
            if self._closed:
                raise RuntimeError(f"the {self.name} worker is closed")
            heapq.heappush(self._heap, entry)
            self._cond.notify()
        return entry

    def _withdraw(self, entry: tuple[float, int, _Job]) -> None:
        with self._cond:
            if entry in self._heap:
                self._heap.remove(entry)
                heapq.heapify(self._heap)
        entry[2].future.cancel()

    def waiting(self, *, due_by: float | None = None) -> int:
        """Jobs queued (not running), or only those whose deadline is at or before `due_by`."""
        with self._cond:
            if due_by is None:
                return len(self._heap)
            return sum(1 for deadline, _, _ in self._heap if deadline <= due_by)

    def running_kind(self) -> str | None:
        job = self._running
        return job.kind if job is not None else None

    def has(self, kinds: frozenset[str]) -> bool:
        """A job of one of these kinds is queued or running."""
        with self._cond:
            running = self._running
            if running is not None and running.kind in kinds:
                return True
            return any(job.kind in kinds for _, _, job in self._heap)

    def close(self) -> None:
        """Stop taking jobs; queued ones are cancelled, a running one finishes."""
        with self._cond:
            self._closed = True
            pending, self._heap = self._heap, []
            self._cond.notify_all()
        for _, _, job in pending:
            job.future.cancel()

    def _report(self, trace: JobTrace) -> None:
        try:
            self._on_done(trace)  # type: ignore[misc]
        except Exception:  # a failing report must not stop the worker
            logging.getLogger(__name__).exception("reporting a %s job failed", self.name)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    if not self._heap:
                        self._cond.wait()
                        continue
                    spare_s = self._heap[0][0] - time.monotonic() - self._defer_slack_s
                    if spare_s > 0 and self._defer_while is not None and self._defer_while():
                        # Look again soon: the urgent work ends, or a new job comes first.
                        self._cond.wait(min(spare_s, DEFER_POLL_S))
                        continue
                    break
                _, _, job = heapq.heappop(self._heap)
                if not job.future.set_running_or_notify_cancel():
                    continue  # cancelled between the await and the withdrawal
                self._running = job
            started = time.monotonic()
            try:
                job.future.set_result(job.func())
            except BaseException as exc:  # the caller gets it, as from an executor
                job.future.set_exception(exc)
            finally:
                ended = time.monotonic()
                with self._cond:
                    self._running = None
                if self._on_done is not None:
                    self._report(
                        JobTrace(
                            self.name,
                            job.kind,
                            queued_s=started - job.submitted,
                            run_s=ended - started,
                            late_s=ended - job.deadline,
                        )
                    )
