"""The default ChatModel: a GGUF model through llama-cpp-python, on the CPU.

The prompt is rendered with the chat template stored in the GGUF file and tokenized here, so
we know the prompt size exactly (for history trimming and usage counts) and how much of it
llama.cpp reuses from its KV cache: llama-cpp-python keeps the evaluated tokens of the last
call and only evaluates the part of a new prompt after the longest common prefix, so the
system prompt and earlier turns cost nothing on the next turn of the same conversation.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from server.engines.base import ChatMessage, GenerationStats, PromptTooLong
from server.prompts import GenerationSettings

log = logging.getLogger(__name__)

# Used when a GGUF file carries no chat template (base models): plain ChatML.
_CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class LlamaCppChatModel:
    """Not thread-safe: one generation at a time, from one worker thread."""

    def __init__(
        self,
        model_path: Path,
        *,
        context_size: int = 2048,
        threads: int = 0,
        batch_size: int = 256,
        seed: int = -1,
    ) -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        if not model_path.is_file():
            raise FileNotFoundError(
                f"LLM weights not found at {model_path}; run `chinwag models fetch` "
                "or set [llm] model_path"
            )
        n_threads = threads or os.cpu_count() or 1
        # Typed as Any: llama-cpp-python's TypedDict unions cost more casts than they catch.
        self._llm: Any = Llama(
            model_path=str(model_path),
            n_ctx=context_size,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            n_batch=batch_size,
            seed=seed if seed >= 0 else 0xFFFFFFFF,
            verbose=False,
        )
        self.name = model_path.name
        self.context_size = self._llm.n_ctx()
        metadata: dict[str, str] = self._llm.metadata
        template = metadata.get("tokenizer.chat_template") or _CHATML
        eos_id = self._llm.token_eos()
        bos_id = self._llm.token_bos()
        self._formatter: Any = Jinja2ChatFormatter(
            template=template,
            eos_token=self._token_text(eos_id),
            bos_token=self._token_text(bos_id) if bos_id >= 0 else "",
            add_generation_prompt=True,
            stop_token_ids=[eos_id],
        )
        self._lock = threading.Lock()  # guards against accidental concurrent use

    def _token_text(self, token: int) -> str:
        text: bytes = self._llm.detokenize([token], special=True)
        return text.decode("utf-8", errors="ignore")

    def _prompt(self, messages: Sequence[ChatMessage]) -> tuple[list[int], list[str]]:
        rendered = self._formatter(
            messages=[{"role": m.role, "content": m.content} for m in messages]
        )
        tokens: list[int] = self._llm.tokenize(
            rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True
        )
        stop = (
            rendered.stop
            if isinstance(rendered.stop, list)
            else [rendered.stop]
            if rendered.stop
            else []
        )
        return tokens, stop

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
        tokens: list[int] = self._llm.tokenize(
            (head + last.content).encode("utf-8"),
            add_bos=not rendered.added_special,
            special=True,
        )
        return tokens

    def prefill(self, messages: Sequence[ChatMessage]) -> int:
        """Evaluate into the KV cache the prompt these messages start, up to the end of the
        last message's text: a reply to a longer or revised version of that message then
        evaluates only what differs. Returns the number of tokens evaluated."""
        with self._lock:
            tokens = self._open_prompt(messages)
            if not tokens or len(tokens) >= self.context_size // 2:
                return 0
            cached = self._common_prefix(tokens)
            if cached >= len(tokens):
                return 0
            self._llm.n_tokens = cached  # eval() drops the KV cache from there on
            self._llm.eval(tokens[cached:])
            return len(tokens) - cached

    def _common_prefix(self, tokens: Sequence[int]) -> int:
        cached = self._llm.input_ids[: self._llm.n_tokens]
        n = 0
        for a, b in zip(cached, tokens, strict=False):
            if a != b:
                break
            n += 1
        return n

    def count_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return len(self._prompt(messages)[0])

    def cached_prefix(self, tokens: Sequence[int]) -> int:
        """How many leading tokens of this prompt are already in the KV cache."""
        # llama-cpp-python re-evaluates the last prompt token to get fresh logits.
        return min(self._common_prefix(tokens), len(tokens) - 1)

    def warm_up(self) -> None:
        """Evaluate a tiny prompt once so the first real turn does not pay for page faults."""
        self.generate(
            [ChatMessage("user", "Hi")],
            GenerationSettings(max_tokens=1, temperature=0.0),
            lambda _delta: None,
            threading.Event(),
        )

    def generate(
        self,
        messages: Sequence[ChatMessage],
        settings: GenerationSettings,
        on_delta: Callable[[str], None],
        cancel: threading.Event,
    ) -> GenerationStats:
        with self._lock:
            return self._generate(messages, settings, on_delta, cancel)

    def _generate(
        self,
        messages: Sequence[ChatMessage],
        settings: GenerationSettings,
        on_delta: Callable[[str], None],
        cancel: threading.Event,
    ) -> GenerationStats:
        start = time.perf_counter()
        tokens, stop = self._prompt(messages)
        room = self.context_size - len(tokens)
        if room < 1:
            raise PromptTooLong(
                f"the prompt takes {len(tokens)} tokens; the context holds {self.context_size}"
            )
        cached = self.cached_prefix(tokens)
        sampled = 0

        def count_sampled(_ids: Any, logits: Any) -> Any:
            # Called once per sampled token: an exact completion-token count.
            nonlocal sampled
            sampled += 1
            return logits

        from llama_cpp import LogitsProcessorList

        stream = self._llm.create_completion(
            prompt=tokens,
            max_tokens=min(settings.max_tokens, room),
            temperature=settings.temperature,
            top_p=settings.top_p,
            top_k=settings.top_k,
            repeat_penalty=settings.repeat_penalty,
            seed=settings.seed,
            stop=stop,
            stream=True,
            logits_processor=LogitsProcessorList([count_sampled]),
        )
        first_token_s: float | None = None
        finish_reason: str = "length"
        try:
            for chunk in stream:
                if cancel.is_set():
                    finish_reason = "cancelled"
                    break
                choice = chunk["choices"][0]
                text = choice["text"]
                if text:
                    if first_token_s is None:
                        first_token_s = time.perf_counter() - start
                    on_delta(text)
                if choice.get("finish_reason"):
                    finish_reason = choice["finish_reason"]
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        if cancel.is_set():
            finish_reason = "cancelled"
        return GenerationStats(
            prompt_tokens=len(tokens),
            cached_prompt_tokens=cached,
            completion_tokens=sampled,
            finish_reason="stop"
            if finish_reason == "stop"
            else "cancelled"
            if finish_reason == "cancelled"
            else "length",
            first_token_s=first_token_s,
            total_s=time.perf_counter() - start,
        )
