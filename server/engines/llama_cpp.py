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

The prompt is rendered with the chat template stored in the GGUF file and tokenized here, so
we know the prompt size exactly (for history trimming and usage counts) and how much of it
is already in the KV cache. Each sequence keeps the tokens it holds after its reply ends; a
new prompt goes to the sequence with the longest common prefix (the same conversation's
last turn, or a prefill of the words said so far), and the shared start of another sequence
(the system prompt) is linked in without evaluating it again (`llama_memory_seq_cp` shares
cells in a unified cache).
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from server.engines.base import ChatMessage, Generation, GenerationStats, PromptTooLong
from server.prompts import GenerationSettings

log = logging.getLogger(__name__)

# Used when a GGUF file carries no chat template (base models): plain ChatML.
_CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Stripped from a transcript before asking whether its words end a sentence.
_TRAILING = " \t\n.?!,;:\u2026"
# The repeat penalty looks at this many recent tokens (llama-cpp-python's default).
PENALTY_LAST_N = 64
_backend_lock = threading.Lock()
_backend_ready = False


class _Slot:
    """One sequence of the KV cache and the tokens it holds."""

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
        self.slot: _Slot | None = None
        self.pending: list[int] = []  # tokens to evaluate before the next sample
        self.generated = 0
        self.cached = 0
        self.first_token_s: float | None = None
        self.finish: Literal["stop", "length", "cancelled"] | None = None
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        self._held = ""  # text that may be the start of a stop string

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
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

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
        self._slots = [_Slot(i) for i in range(self.parallel)]
        self._seed = seed if seed >= 0 else llama_cpp.LLAMA_DEFAULT_SEED
        self.name = model_path.name
        self._lock = threading.RLock()
        self._piece = ctypes.create_string_buffer(256)
        self._punctuation: list[int] | None = None  # sentence-end tokens, found on first use
        metadata: dict[str, str] = self._model.metadata()
        template = metadata.get("tokenizer.chat_template") or _CHATML
        eos_id = self._model.token_eos()
        bos_id = self._model.token_bos()
        self._formatter: Any = Jinja2ChatFormatter(
            template=template,
            eos_token=self._token_text(eos_id, special=True),
            bos_token=self._token_text(bos_id, special=True) if bos_id >= 0 else "",
            add_generation_prompt=True,
            stop_token_ids=[eos_id],
        )

    # --- tokens ---------------------------------------------------------------------------

    def _token_bytes(self, token: int, *, special: bool = False) -> bytes:
        n = self._lib.llama_token_to_piece(
            self._model.vocab, token, self._piece, len(self._piece), 0, special
        )
        return bytes(self._piece.raw[: max(0, n)])

    def _token_text(self, token: int, *, special: bool = False) -> str:
        return self._token_bytes(token, special=special).decode("utf-8", errors="ignore")

    def _tokenize(self, text: str, *, add_bos: bool) -> list[int]:
        tokens: list[int] = self._model.tokenize(text.encode("utf-8"), add_bos, True)
        return tokens

    def _prompt(self, messages: Sequence[ChatMessage]) -> tuple[list[int], list[str]]:
        rendered = self._formatter(
            messages=[{"role": m.role, "content": m.content} for m in messages]
        )
        tokens = self._tokenize(rendered.prompt, add_bos=not rendered.added_special)
        stop = (
            rendered.stop
            if isinstance(rendered.stop, list)
            else [rendered.stop]
            if rendered.stop
            else []
        )
        return tokens, [s for s in stop if s]

    def _open_prompt(self, messages: Sequence[ChatMessage]) -> list[int]:
        """The prompt up to the end of the last message's text, without what closes it."""
        *earlier, last = messages
        marker = "\x00chinwag-open-end\x00"
        rendered = self._formatter(
            messages=[{"role": m.role, "content": m.content} for m in earlier]
            + [{"role": last.role, "content": marker}]
        )
        head, found, _ = rendered.prompt.partition(marker)
        if not found:  # a template that rewrites content: nothing safe to evaluate early
            return []
        return self._tokenize(head + last.content, add_bos=not rendered.added_special)

    def count_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return len(self._prompt(messages)[0])

    # --- the KV cache's sequences ---------------------------------------------------------

    @property
    def _memory(self) -> Any:
        return self._ctx.memory

    def _cells_used(self) -> int:
        # Shared cells count once per sequence: an overestimate, which only evicts sooner.
        return sum(len(slot.tokens) for slot in self._slots)

    def _forget(self, slot: _Slot, keep: int = 0) -> None:
        self._lib.llama_memory_seq_rm(self._memory, slot.seq_id, keep, -1)
        del slot.tokens[keep:]

    def _claim(self, tokens: list[int]) -> tuple[_Slot, int]:
        """A free sequence for this prompt, holding as much of its start as the cache has;
        returns it and the number of tokens it holds."""
        free = [slot for slot in self._slots if slot.owner is None]
        assert free, "more replies than sequences; ChatRunner admits at most `parallel`"

        def common(slot: _Slot) -> int:
            n = 0
            for a, b in zip(slot.tokens, tokens, strict=False):
                if a != b:
                    break
                n += 1
            return n

        # The same conversation (its start is all this slot holds, or most of it) wins; else
        # an empty slot; else the one used longest ago.
        best = max(free, key=lambda s: (common(s) * 2 >= len(s.tokens) > 0, common(s)))
        if not (common(best) * 2 >= len(best.tokens) > 0):
            best = min(free, key=lambda s: (len(s.tokens) > 0, s.used_at))
        held = common(best)
        self._forget(best, held)
        # Link in a longer shared start from any other sequence (the system prompt).
        donor = max(self._slots, key=common)
        shared = common(donor)
        if donor is not best and shared > held:
            self._forget(best)
            self._lib.llama_memory_seq_cp(self._memory, donor.seq_id, best.seq_id, 0, shared)
            best.tokens = tokens[:shared]
            held = shared
        best.used_at = time.monotonic()
        return best, held

    def _make_room(self, needed: int, keep: set[int]) -> bool:
        """Drop idle sequences' tokens (longest unused first) until `needed` cells fit."""
        idle = sorted(
            (
                s
                for s in self._slots
                if (s.owner is None or s.owner.done) and s.tokens and s.seq_id not in keep
            ),
            key=lambda s: s.used_at,
        )
        while self._cells_used() + needed > self.kv_cache_tokens and idle:
            self._forget(idle.pop(0))
        return self._cells_used() + needed <= self.kv_cache_tokens

    def _park_newer(
        self,
        gen: LlamaGeneration,
        active: Sequence[LlamaGeneration],
        in_batch: set[int],
        needed: int,
        keep: set[int],
    ) -> bool:
        """The cache is full of replies under way: drop the cells of the newest ones after
        `gen` (they evaluate their tokens again once there is room), so that older replies
        always progress. False if there is no newer one to park."""
        for victim in reversed(active):
            if victim is gen:
                return False
            slot = victim.slot
            if id(victim) in in_batch or slot is None or not slot.tokens:
                continue
            victim.pending = [*slot.tokens, *victim.pending]
            self._forget(slot)
            if self._make_room(needed, keep):
                return True
        return False

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
        tokens, stop = self._prompt(messages)
        room = self.context_size - len(tokens)
        if room < 1:
            raise PromptTooLong(
                f"the prompt takes {len(tokens)} tokens; the context holds {self.context_size}"
            )
        gen = LlamaGeneration(
            tokens, stop, min(settings.max_tokens, room), self._sampler(settings), on_delta, start
        )
        slot, held = self._claim(tokens)
        # The last prompt token is evaluated again for fresh logits.
        held = min(held, len(tokens) - 1)
        self._forget(slot, held)
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
            if not self._make_room(len(chunk), keep) and not self._park_newer(
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
                self._forget(gen.slot, len(gen.slot.tokens) - len(chunk))
            raise RuntimeError(f"llama_decode returned {code}")
        for gen, chunk in evaluated:
            gen.pending = gen.pending[len(chunk) :]
        now = time.monotonic()
        for gen, index in sample_at:
            assert gen.slot is not None
            gen.slot.used_at = now
            token = self._lib.llama_sampler_sample(gen.sampler.sampler, self._ctx.ctx, index)
            if self._lib.llama_vocab_is_eog(self._model.vocab, token):
                gen.finish = "stop"
                continue
            gen.generated += 1
            gen.emit(self._token_bytes(token))
            if gen.done:
                continue
            if gen.generated >= gen.max_tokens or len(gen.slot.tokens) + 1 >= self.context_size:
                gen.finish = "length"
                continue
            gen.pending = [token]

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
            gen = self._begin(messages, settings, on_delta)
            try:
                while not gen.done and not cancel.is_set():
                    self._step([gen])
            finally:
                stats = self._end(gen, cancelled=cancel.is_set())
            return stats

    def _prefill(self, messages: Sequence[ChatMessage], *, logits: bool = False) -> int:
        """Evaluate into the KV cache the prompt these messages start, up to the end of the
        last message's text: a reply to a longer or revised version of that message then
        evaluates only what differs. Returns the number of tokens evaluated. With `logits`,
        the last token is evaluated even if cached, so that its logits are the context's
        last (`_end_of_turn_probability` reads them); 0 then means they are not."""
        tokens = self._open_prompt(messages)
        if not tokens or len(tokens) >= self.context_size // 2:
            return 0
        if all(slot.owner is not None for slot in self._slots):
            return 0
        slot, held = self._claim(tokens)
        if logits and held == len(tokens):
            held -= 1
            self._forget(slot, held)
        rest = tokens[held:]
        if not rest:
            return 0
        if not self._make_room(len(rest), {slot.seq_id}):
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
                self._forget(slot)
                return done
            slot.tokens.extend(chunk)
            done += len(chunk)
        return done

    def _sentence_end_tokens(self, messages: Sequence[ChatMessage]) -> np.ndarray | None:
        """The tokens that would end the sentence after the last message's text: sentence
        punctuation ('.', '?', '!' and tokens that start with one, not '..') and the token
        that closes the message in the chat template (`<|im_end|>` in ChatML)."""
        closed = self._prompt(messages)[0]
        opened = self._open_prompt(messages)
        if not opened or closed[: len(opened)] != opened or len(closed) <= len(opened):
            return None
        if self._punctuation is None:
            found = []
            for token in range(self._model.n_vocab()):
                text = self._token_text(token).strip()
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

    def _clear_cache(self) -> None:
        """Forget every sequence not in use (tests: a cold cache, as after a restart)."""
        for slot in self._slots:
            if slot.owner is None:
                self._forget(slot)

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
            self._clear_cache()
