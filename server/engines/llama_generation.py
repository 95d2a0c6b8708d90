"""One reply under way in the llama.cpp chat model, and the KV cache sequence it runs in.

`LlamaGeneration` is the handle `LlamaCppChatModel.begin` returns: the reply's prompt, its
sampler, the tokens still to evaluate, and the text sent so far, with the end of the text held
back while it may be the start of a stop string (a stop string split over tokens is never
sent). `Slot` is one sequence of the shared KV cache and the tokens it holds. Separate from
the model (server/engines/llama_cpp.py) because neither touches llama.cpp: this is the plain
bookkeeping the model's batches are built from.
"""

from __future__ import annotations

import codecs
import time
from collections.abc import Callable
from typing import Any, Literal


class Slot:
    def __init__(self, seq_id: int) -> None:
        self.seq_id = seq_id
        self.tokens: list[int] = []
        self.owner: LlamaGeneration | None = None
        self.used_at = 0.0


class LlamaGeneration:
    """One reply under way (the handle `begin` returns and `step` advances)."""

    def __init__(
        self,
        prompt: list[int],
        stop: list[str],
        max_tokens: int,
        sampler: Any,
        on_delta: Callable[[str], None],
        start: float,
    ) -> None:
        self.prompt = prompt
        self.stop = stop
        self.max_tokens = max_tokens
        self.sampler = sampler
        self.on_delta = on_delta
        self.start = start
        self.slot: Slot | None = None
        self.pending: list[int] = []  # tokens to evaluate before the next sample
        self.generated = 0
        self.cached = 0
        self.first_token_s: float | None = None
        self.finish: Literal["stop", "length", "cancelled"] | None = None
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        self._held = ""  # text that may be the start of a stop string
        self.has_words = False  # anything but white space sent or held

    @property
    def done(self) -> bool:
        return self.finish is not None

    def emit(self, piece: bytes) -> None:
        text = self._held + self._utf8.decode(piece)
        for stop in self.stop:
            at = text.find(stop)
            if at >= 0:
                self._send(text[:at])
                self._held = ""
                self.finish = "stop"
                return
        keep = max((_overlap(text, stop) for stop in self.stop), default=0)
        self._held = text[len(text) - keep :] if keep else ""
        self.has_words = self.has_words or bool(text.strip())
        self._send(text[: len(text) - keep])

    def flush(self) -> None:
        self._send(self._held + self._utf8.decode(b"", final=True))
        self._held = ""

    def _send(self, text: str) -> None:
        if text:
            if self.first_token_s is None:
                self.first_token_s = time.perf_counter() - self.start
            self.on_delta(text)


def _overlap(text: str, stop: str) -> int:
    """Length of the longest end of `text` that begins `stop`."""
    for n in range(min(len(text), len(stop) - 1), 0, -1):
        if stop.startswith(text[-n:]):
            return n
    return 0
