"""Log-probabilities of a text under the chat model's weights, for judging (not generating).

`LlamaScorer` evaluates a prompt and a continuation in a small llama.cpp context of its own,
on the weights the chat model has already loaded (no second copy in memory), and returns how
likely each continuation token is. `bench/judge.py` uses it to measure whether the chat model
can judge that a passage answers a question (docs/performance.md, "A judge from the chat
model": measured and not kept, so this lives in bench/, not in server/). Its own context:
the chat model's KV cache and its sequences are left alone. It reads the chat model's loaded
llama.cpp objects (private attributes) rather than loading the weights a second time.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from server.engines.base import ChatMessage
from server.engines.llama_cpp import LlamaCppChatModel


class LlamaScorer:
    """Scores texts with `chat`'s model; one call at a time (a lock guards it)."""

    def __init__(self, chat: LlamaCppChatModel, *, context_size: int = 1024, threads: int = 0):
        lib: Any = chat._lib
        internals: Any = chat._internals
        params = lib.llama_context_default_params()
        params.n_ctx = context_size
        params.n_batch = context_size
        params.n_ubatch = context_size
        params.n_seq_max = 1
        params.n_threads = params.n_threads_batch = threads or chat.threads
        self._lib = lib
        self._model: Any = chat._model
        self._ctx: Any = internals.LlamaContext(model=chat._model, params=params, verbose=False)
        self._batch: Any = internals.LlamaBatch(
            n_tokens=context_size, embd=0, n_seq_max=1, verbose=False
        )
        self.context_size = context_size
        self.text = chat._text
        self.bos = int(chat._model.token_bos())  # a base model's prompts start with it
        self._lock = threading.Lock()
        self._held: list[int] = []  # the tokens in the KV cache, reused as a prefix

    def tokenize(self, text: str) -> list[int]:
        return self.text.tokenize(text, add_bos=False)

    def chat_prompt(self, messages: Sequence[ChatMessage]) -> list[int]:
        """The prompt of a reply to these messages (the assistant's turn opened)."""
        return self.text.prompt(messages)[0]

    def logprobs(self, prompt: Sequence[int], continuation: Sequence[int]) -> np.ndarray:
        """log P of each continuation token after the prompt and the tokens before it."""
        tokens = [*prompt, *continuation]
        if not prompt or not continuation or len(tokens) > self.context_size:
            raise ValueError(f"{len(tokens)} tokens do not fit a {self.context_size} context")
        rows = self._evaluate(tokens, first=len(prompt) - 1)[:-1]  # the last predicts beyond
        picked = rows[np.arange(len(continuation)), np.asarray(continuation)]
        return np.asarray(picked - _logsumexp(rows), dtype=np.float64)

    def next_token_logprobs(self, prompt: Sequence[int]) -> np.ndarray:
        """log P of every vocabulary token right after the prompt."""
        rows = self._evaluate(list(prompt), first=len(prompt) - 1)
        return np.asarray(rows[-1] - _logsumexp(rows[-1:])[0], dtype=np.float64)

    def _evaluate(self, tokens: list[int], first: int) -> np.ndarray:
        """Logits at positions first .. len(tokens)-1. What the last call evaluated is kept
        in the KV cache and its common prefix with these tokens is not evaluated again (the
        same passage asked about twice)."""
        n_vocab = self._model.n_vocab()
        with self._lock:
            common = 0
            for a, b in zip(self._held, tokens[: first + 1], strict=False):
                if a != b:
                    break
                common += 1
            common = min(common, first)  # the first position asked for is evaluated
            memory = self._lib.llama_get_memory(self._ctx.ctx)
            self._lib.llama_memory_seq_rm(memory, 0, common, -1)
            self._held = self._held[:common]
            batch = self._batch.batch
            batch.n_tokens = len(tokens) - common
            for i, token in enumerate(tokens[common:]):
                batch.token[i] = token
                batch.pos[i] = common + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = common + i >= first
            if self._lib.llama_decode(self._ctx.ctx, batch) != 0:
                self._lib.llama_memory_clear(memory, True)
                self._held = []
                raise RuntimeError("llama_decode failed")
            self._held = list(tokens)
            rows = [
                np.ctypeslib.as_array(
                    self._lib.llama_get_logits_ith(self._ctx.ctx, i), shape=(n_vocab,)
                ).astype(np.float64)
                for i in range(first - common, len(tokens) - common)
            ]
        return np.stack(rows)


def _logsumexp(rows: np.ndarray) -> np.ndarray:
    top = rows.max(axis=1, keepdims=True)
    return np.asarray((top + np.log(np.exp(rows - top).sum(axis=1, keepdims=True)))[:, 0])
