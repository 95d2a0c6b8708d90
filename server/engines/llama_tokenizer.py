"""The text side of the llama.cpp chat model: messages to prompt tokens, tokens to text.

`LlamaTokenizer` renders chat messages with the chat template stored in the GGUF file (plain
ChatML when it has none) and tokenizes them here, so the model knows the prompt's size exactly
(history trimming, usage counts) and how much of it is already in the KV cache; `open_prompt`
is a prompt left open after the last message's words, for prefilling while the person still
speaks. Separate from the model (server/engines/llama_cpp.py), which only evaluates tokens.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any

from server.engines.base import ChatMessage

# Used when a GGUF file carries no chat template (base models): plain ChatML.
_CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class LlamaTokenizer:
    """The chat template and the vocabulary of one loaded model (`_internals.LlamaModel`)."""

    def __init__(self, lib: Any, model: Any) -> None:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._lib = lib
        self._model = model
        self._piece = ctypes.create_string_buffer(256)
        metadata: dict[str, str] = model.metadata()
        template = metadata.get("tokenizer.chat_template") or _CHATML
        eos_id = model.token_eos()
        bos_id = model.token_bos()
        self._formatter: Any = Jinja2ChatFormatter(
            template=template,
            eos_token=self.token_text(eos_id, special=True),
            bos_token=self.token_text(bos_id, special=True) if bos_id >= 0 else "",
            add_generation_prompt=True,
            stop_token_ids=[eos_id],
        )

    def token_bytes(self, token: int, *, special: bool = False) -> bytes:
        n = self._lib.llama_token_to_piece(
            self._model.vocab, token, self._piece, len(self._piece), 0, special
        )
        return bytes(self._piece.raw[: max(0, n)])

    def token_text(self, token: int, *, special: bool = False) -> str:
        return self.token_bytes(token, special=special).decode("utf-8", errors="ignore")

    def tokenize(self, text: str, *, add_bos: bool) -> list[int]:
        tokens: list[int] = self._model.tokenize(text.encode("utf-8"), add_bos, True)
        return tokens

    def prompt(self, messages: Sequence[ChatMessage]) -> tuple[list[int], list[str]]:
        rendered = self._formatter(
            messages=[{"role": m.role, "content": m.content} for m in messages]
        )
        tokens = self.tokenize(rendered.prompt, add_bos=not rendered.added_special)
        stop = (
            rendered.stop
            if isinstance(rendered.stop, list)
            else [rendered.stop]
            if rendered.stop
            else []
        )
        return tokens, [s for s in stop if s]

    def open_prompt(self, messages: Sequence[ChatMessage]) -> list[int]:
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
        return self.tokenize(head + last.content, add_bos=not rendered.added_special)
