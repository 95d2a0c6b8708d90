"""The default ChatModel: a GGUF model through llama-cpp-python, on the CPU, with several
replies generated at once.

One llama.cpp context holds up to `parallel` sequences in one unified KV cache. Every step
decodes one batch: the next token of each reply under way plus a chunk of a new reply's
prompt (continuous batching), so a new reply's first token never waits for another reply to
finish, and on a CPU the batch costs little more than one token (the weights are read once
per step). Measured against the alternatives in docs/performance.md ("Several replies at
once"): switching one sequence in and out of llama-cpp-python's high-level `Llama` costs a
re-evaluation of the whole other conversation, and `save_state`/`load_state` copies about
70 MB per switch.

This module loads the model and builds and evaluates the batches. Its parts are modules of
their own: the prompt, rendered with the GGUF file's chat template and tokenized by chinwag so
that its size and cached part are known exactly (llama_tokenizer.py); which sequence of the KV
cache a prompt goes to, keeping the longest common prefix and linking in a shared system
prompt, and what is dropped when the cache is full (llama_cache.py); one reply under way, with
its stop strings (llama_generation.py).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from server.engines.base import (
    ChatMessage,
    Generation,
    GenerationStats,
    PromptTooLong,
    generate_alone,
)
from server.engines.llama_cache import KvSequences
from server.engines.llama_generation import LlamaGeneration
from server.engines.llama_tokenizer import LlamaTokenizer
from server.prompts import GenerationSettings

log = logging.getLogger(__name__)

# Stripped from a transcript before asking whether its words end a sentence.
_TRAILING = " \t\n.?!,;:\u2026"
# The repeat penalty looks at this many recent tokens (llama-cpp-python's default).
PENALTY_LAST_N = 64
_backend_lock = threading.Lock()
_backend_ready = False


class LlamaCppChatModel:
    """Call it from one worker thread (ChatRunner's scheduler); a lock guards against
    accidental concurrent use (tests and benchmarks call `generate` directly)."""

    def __init__(
        self,
        model_path: Path,
        *,
        context_size: int = 2048,
        threads: int = 0,
        batch_size: int = 256,
        seed: int = -1,
        parallel: int = 8,
        kv_cache_tokens: int = 0,
    ) -> None:
        import llama_cpp
        from llama_cpp import _internals
        from llama_cpp._logger import set_verbose

        global _backend_ready
        if not model_path.is_file():
            raise FileNotFoundError(
                f"LLM weights not found at {model_path}; run `chinwag models fetch` "
                "or set [llm] model_path"
            )
        set_verbose(False)
        with _backend_lock:
            if not _backend_ready:
                llama_cpp.llama_backend_init()
                _backend_ready = True
        self._lib: Any = llama_cpp
        n_threads = threads or os.cpu_count() or 1
        self.threads = self._threads_now = n_threads
        self._model: Any = _internals.LlamaModel(
            path_model=str(model_path),
            params=llama_cpp.llama_model_default_params(),
            verbose=False,
        )
        self.parallel = max(1, parallel)
        self.context_size = min(context_size, self._model.n_ctx_train() or context_size)
        self.kv_cache_tokens = max(kv_cache_tokens or 2 * self.context_size, self.context_size)
        self.batch_size = batch_size
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self.kv_cache_tokens
        params.n_batch = batch_size + self.parallel
        params.n_ubatch = batch_size + self.parallel
        params.n_seq_max = self.parallel
        params.kv_unified = True
        params.n_threads = n_threads
        params.n_threads_batch = n_threads
        self._ctx: Any = _internals.LlamaContext(model=self._model, params=params, verbose=False)
        self._batch: Any = _internals.LlamaBatch(
            n_tokens=batch_size + self.parallel, embd=0, n_seq_max=1, verbose=False
        )
        self._internals: Any = _internals
        self._cache = KvSequences(llama_cpp, self._ctx, self.parallel, self.kv_cache_tokens)
        self._seed = seed if seed >= 0 else llama_cpp.LLAMA_DEFAULT_SEED
        self.name = model_path.name
        self._lock = threading.RLock()
        self._punctuation: list[int] | None = None  # sentence-end tokens, found on first use
        self._end_of_generation: list[int] | None = None  # found on first use
        self._text = LlamaTokenizer(llama_cpp, self._model)

    def count_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return len(self._text.prompt(messages)[0])

    def count_text_tokens(self, text: str) -> int:
        return len(self._text.tokenize(text, add_bos=False)) if text else 0

    # --- generation -----------------------------------------------------------------------

    def _sampler(self, settings: GenerationSettings) -> Any:
        sampler = self._internals.LlamaSampler()
        sampler.add_penalties(
            n_vocab=self._model.n_vocab(),
            penalty_last_n=PENALTY_LAST_N,
            penalty_repeat=settings.repeat_penalty,
            penalty_freq=0.0,
            penalty_present=0.0,
        )
        if settings.temperature == 0.0:
            sampler.add_greedy()
        else:
            sampler.add_top_k(settings.top_k)
            sampler.add_top_p(settings.top_p, 1)
            sampler.add_min_p(0.05, 1)
            sampler.add_temp(settings.temperature)
            sampler.add_dist(settings.seed if settings.seed is not None else self._seed)
        return sampler

    def _begin(
        self,
        messages: Sequence[ChatMessage],
        settings: GenerationSettings,
        on_delta: Callable[[str], None],
    ) -> LlamaGeneration:
        """Start a reply: tokenize, take a sequence. Nothing is evaluated until `step`."""
        start = time.perf_counter()
        tokens, stop = self._text.prompt(messages)
        room = self.context_size - len(tokens)
        if room < 1:
            raise PromptTooLong(
                f"the prompt takes {len(tokens)} tokens; the context holds {self.context_size}"
            )
        gen = LlamaGeneration(
            tokens, stop, min(settings.max_tokens, room), self._sampler(settings), on_delta, start
        )
        slot, held = self._cache.claim(tokens)
        # The last prompt token is evaluated again for fresh logits.
        held = min(held, len(tokens) - 1)
        self._cache.forget(slot, held)
        slot.owner = gen
        gen.slot, gen.cached, gen.pending = slot, held, tokens[held:]
        return gen

    def _step(self, generations: Sequence[Generation]) -> None:
        """Advance these replies by one batch: a token each for those under way, and up to
        `batch_size` prompt tokens for the others. Deltas go out through their on_delta."""
        mine = [g for g in generations if isinstance(g, LlamaGeneration)]
        batch = self._batch.batch
        batch.n_tokens = 0
        budget = self.batch_size
        sample_at: list[tuple[LlamaGeneration, int]] = []
        evaluated: list[tuple[LlamaGeneration, list[int]]] = []
        active = [g for g in mine if not g.done and g.slot is not None]
        keep = {g.slot.seq_id for g in active if g.slot is not None}
        # Replies under way first (one token each), then prompts, oldest first.
        for gen in sorted(active, key=lambda g: len(g.pending) > 1):
            if len(gen.pending) > 1 and budget <= 0:
                break
            chunk = gen.pending[: max(1, budget)] if len(gen.pending) > 1 else gen.pending
            if not self._cache.make_room(len(chunk), keep) and not self._cache.park_newer(
                gen, active, {id(g) for g, _ in evaluated}, len(chunk), keep
            ):
                continue  # the newest of the replies that do not fit waits for room
            assert gen.slot is not None
            pos = len(gen.slot.tokens)
            for i, token in enumerate(chunk):
                j = batch.n_tokens
                batch.token[j] = token
                batch.pos[j] = pos + i
                batch.n_seq_id[j] = 1
                batch.seq_id[j][0] = gen.slot.seq_id
                batch.logits[j] = False
                batch.n_tokens += 1
            if len(chunk) == len(gen.pending):
                batch.logits[batch.n_tokens - 1] = True
                sample_at.append((gen, batch.n_tokens - 1))
            gen.slot.tokens.extend(chunk)  # counted as used before the next one's room check
            evaluated.append((gen, chunk))
            budget -= len(chunk)
        if batch.n_tokens == 0:
            if active and not evaluated:
                raise RuntimeError("the KV cache cannot hold the replies under way")
            return
        code = self._lib.llama_decode(self._ctx.ctx, batch)
        if code != 0:
            for gen, chunk in evaluated:  # nothing of this batch is in the cache
                assert gen.slot is not None
                self._cache.forget(gen.slot, len(gen.slot.tokens) - len(chunk))
            raise RuntimeError(f"llama_decode returned {code}")
        for gen, chunk in evaluated:
            gen.pending = gen.pending[len(chunk) :]
        now = time.monotonic()
        for gen, index in sample_at:
            assert gen.slot is not None
            gen.slot.used_at = now
            token = self._lib.llama_sampler_sample(gen.sampler.sampler, self._ctx.ctx, index)
            if not gen.has_words and self._lib.llama_vocab_is_eog(self._model.vocab, token):
                token = self._sample_without_end(gen, index)
            if self._lib.llama_vocab_is_eog(self._model.vocab, token):
                gen.finish = "stop"
                continue
            gen.generated += 1
            gen.emit(self._text.token_bytes(token))
            if gen.done:
                continue
            if gen.generated >= gen.max_tokens or len(gen.slot.tokens) + 1 >= self.context_size:
                gen.finish = "length"
                continue
            gen.pending = [token]

    def _sample_without_end(self, gen: LlamaGeneration, index: int) -> int:
        """Sample again with end-of-generation ruled out, for a reply with no words yet. A
        small model sometimes ends a reply before its first token (seen with SmolLM2-135M on
        a short spoken turn); a turn that gets no words at all is worse than any short
        reply. `max_tokens` still bounds it."""
        if self._end_of_generation is None:
            vocab = self._model.vocab
            self._end_of_generation = [
                t for t in range(self._model.n_vocab()) if self._lib.llama_vocab_is_eog(vocab, t)
            ]
        logits = self._lib.llama_get_logits_ith(self._ctx.ctx, index)
        for token in self._end_of_generation:
            logits[token] = -np.inf
        return int(self._lib.llama_sampler_sample(gen.sampler.sampler, self._ctx.ctx, index))

    def _end(self, generation: Generation, *, cancelled: bool = False) -> GenerationStats:
        """Finish a reply (done or not) and free its sequence; its tokens stay cached."""
        gen = generation
        assert isinstance(gen, LlamaGeneration)
        if gen.slot is not None:
            gen.slot.owner = None
            gen.slot.used_at = time.monotonic()
            gen.slot = None
        gen.sampler.close()
        if cancelled and not gen.done:
            gen.finish = "cancelled"
        if gen.finish != "cancelled":
            gen.flush()
        return GenerationStats(
            prompt_tokens=len(gen.prompt),
            cached_prompt_tokens=gen.cached,
            completion_tokens=gen.generated,
            finish_reason=gen.finish or "length",
            first_token_s=gen.first_token_s,
            total_s=time.perf_counter() - gen.start,
        )

    def generate(
        self,
        messages: Sequence[ChatMessage],
        settings: GenerationSettings,
        on_delta: Callable[[str], None],
        cancel: threading.Event,
    ) -> GenerationStats:
        """One reply on its own (tests, benchmarks, warm-up); the server uses begin/step."""
        with self._lock:
            return generate_alone(self, messages, settings, on_delta, cancel)

    def _prefill(self, messages: Sequence[ChatMessage], *, logits: bool = False) -> int:
        """Evaluate into the KV cache the prompt these messages start, up to the end of the
        last message's text: a reply to a longer or revised version of that message then
        evaluates only what differs. Returns the number of tokens evaluated. With `logits`,
        the last token is evaluated even if cached, so that its logits are the context's
        last (`_end_of_turn_probability` reads them); 0 then means they are not."""
        tokens = self._text.open_prompt(messages)
        if not tokens or len(tokens) >= self.context_size // 2:
            return 0
        if all(slot.owner is not None for slot in self._cache.slots):
            return 0
        slot, held = self._cache.claim(tokens)
        if logits and held == len(tokens):
            held -= 1
            self._cache.forget(slot, held)
        rest = tokens[held:]
        if not rest:
            return 0
        if not self._cache.make_room(len(rest), {slot.seq_id}):
            return 0
        batch = self._batch.batch
        done = 0
        while done < len(rest):
            chunk = rest[done : done + self.batch_size]
            batch.n_tokens = 0
            for i, token in enumerate(chunk):
                batch.token[i] = token
                batch.pos[i] = len(slot.tokens) + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = slot.seq_id
                batch.logits[i] = False
            batch.n_tokens = len(chunk)
            batch.logits[len(chunk) - 1] = True
            if self._lib.llama_decode(self._ctx.ctx, batch) != 0:
                self._cache.forget(slot)
                return done
            slot.tokens.extend(chunk)
            done += len(chunk)
        return done

    def _sentence_end_tokens(self, messages: Sequence[ChatMessage]) -> np.ndarray | None:
        """The tokens that would end the sentence after the last message's text: sentence
        punctuation ('.', '?', '!' and tokens that start with one, not '..') and the token
        that closes the message in the chat template (`<|im_end|>` in ChatML)."""
        closed = self._text.prompt(messages)[0]
        opened = self._text.open_prompt(messages)
        if not opened or closed[: len(opened)] != opened or len(closed) <= len(opened):
            return None
        if self._punctuation is None:
            found = []
            for token in range(self._model.n_vocab()):
                text = self._text.token_text(token).strip()
                if text[:1] in (".", "?", "!") and not text.startswith(".."):
                    found.append(token)
            self._punctuation = found
        return np.array(sorted({*self._punctuation, closed[len(opened)]}))

    def _sentence_end_probability(self, messages: Sequence[ChatMessage]) -> float | None:
        *earlier, last = messages
        # Whisper ends every transcript with punctuation, pause or not: the model is asked
        # whether the words themselves end a sentence.
        bare = last.content.rstrip(_TRAILING)
        if not bare:
            return None
        messages = [*earlier, ChatMessage(last.role, bare)]
        ends = self._sentence_end_tokens(messages)
        if ends is None or self._prefill(messages, logits=True) == 0:
            return None
        # The last evaluated batch asked for logits at its last token only: row -1.
        row = self._lib.llama_get_logits_ith(self._ctx.ctx, -1)
        scores = np.ctypeslib.as_array(row, shape=(self._model.n_vocab(),)).astype(np.float64)
        weights = np.exp(scores - scores.max())
        return float(weights[ends].sum() / weights.sum())

    def warm_up(self) -> None:
        """Evaluate a tiny prompt once so the first real turn does not pay for page faults."""
        self.generate(
            [ChatMessage("user", "Hi")],
            GenerationSettings(max_tokens=1, temperature=0.0),
            lambda _delta: None,
            threading.Event(),
        )
        self.clear_cache()

    # --- the public calls, one at a time -------------------------------------------------

    def begin(
        self,
        messages: Sequence[ChatMessage],
        settings: GenerationSettings,
        on_delta: Callable[[str], None],
    ) -> LlamaGeneration:
        """Start a reply: tokenize, take a sequence. Nothing is evaluated until `step`."""
        with self._lock:
            return self._begin(messages, settings, on_delta)

    def use_threads(self, n: int) -> None:
        """Threads for the next steps (1 to the configured number); from the worker thread."""
        n = max(1, min(n, self.threads))
        if n != self._threads_now:
            with self._lock:
                self._ctx.set_n_threads(n, n)
                self._threads_now = n

    def step(self, generations: Sequence[Generation]) -> None:
        """Advance these replies by one batch: a token each for those under way, and up to
        `batch_size` prompt tokens for the others. Deltas go out through their on_delta."""
        with self._lock:
            self._step(generations)

    def end(self, generation: Generation, *, cancelled: bool = False) -> GenerationStats:
        """Finish a reply (done or not) and free its sequence; its tokens stay cached."""
        with self._lock:
            return self._end(generation, cancelled=cancelled)

    def prefill(self, messages: Sequence[ChatMessage]) -> int:
        """Evaluate into the KV cache the prompt these messages start, up to the end of the
        last message's text: a reply to a longer or revised version of that message then
        evaluates only what differs. Returns the number of tokens evaluated."""
        with self._lock:
            return self._prefill(messages)

    def sentence_end_probability(self, messages: Sequence[ChatMessage]) -> float | None:
        """The model's probability that the last message's words end a sentence: that the
        next token after them (trailing punctuation removed) is sentence punctuation or the
        end of the message, an end-of-turn signal read from the chat model (as LiveKit's
        turn detector reads a fine-tuned small LM). Measured as an end-of-turn rule by
        `bench/pause_cuts.py --chat-model` and not kept (docs/performance.md, issue 16); the
        server does not call it. Evaluates the words into the KV cache as `prefill` does.
        None when it cannot tell (no free sequence, a template that hides the end of a
        message). The first call reads the whole vocabulary for the punctuation (0.2-0.8 s)."""
        with self._lock:
            return self._sentence_end_probability(messages)

    def clear_cache(self) -> None:
        """Forget every sequence not in use (tests: a cold cache, as after a restart)."""
        with self._lock:
            self._cache.clear()
