"""Lets latency-critical speech work have the CPU cores to itself.

On two cores, Piper synthesizing a reply's first phrase while llama.cpp keeps writing the rest
of the reply takes 2.5 times as long as alone (60 against 155 ms, measured in one process;
docs/performance.md). The listener hears nothing until that first phrase is ready, while the
model writes far faster than speech is spoken; so the model steps aside between two tokens
while urgent work runs (a transcription, a first phrase) and catches up afterwards.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class CpuPriority:
    """Thread-safe. `urgent()` marks latency-critical work; `yield_to_urgent()` is called by
    background work between two steps and waits while any urgent work runs, at most
    `max_pause_s` at a time so that background work never starves."""

    def __init__(self, *, enabled: bool = True, max_pause_s: float = 0.5) -> None:
        self.enabled = enabled
        self.max_pause_s = max_pause_s
        self._urgent = 0
        self._beside = 0
        self._idle = threading.Condition()

    @contextmanager
    def urgent(self) -> Iterator[None]:
        with self._idle:
            self._urgent += 1
        try:
            yield
        finally:
            with self._idle:
                self._urgent -= 1
                if self._urgent == 0:
                    self._idle.notify_all()

    @contextmanager
    def beside(self) -> Iterator[None]:
        """Marks speech work that is not urgent (a partial transcription, a later phrase):
        the model keeps going, on one core fewer (`sharing`)."""
        with self._idle:
            self._beside += 1
        try:
            yield
        finally:
            with self._idle:
                self._beside -= 1

    @property
    def sharing(self) -> bool:
        """Speech work runs (urgent or not): a model on all cores would fight it for them."""
        return self._urgent > 0 or self._beside > 0

    @property
    def busy(self) -> bool:
        return self._urgent > 0

    def yield_to_urgent(self) -> float:
        """Wait while urgent work runs; return the seconds waited."""
        if not self.enabled or self._urgent == 0:  # the common case, without the lock
            return 0.0
        start = time.perf_counter()
        with self._idle:
            self._idle.wait_for(lambda: self._urgent == 0, timeout=self.max_pause_s)
        return time.perf_counter() - start
