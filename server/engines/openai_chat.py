"""A ChatModel on any OpenAI-compatible server (`[llm] backend = "openai"`): llama.cpp's
llama-server, llama_cpp.server, vLLM, Ollama, another machine's chinwag.

Each reply is one streamed `POST /v1/chat/completions`, read on the RemoteClient's thread;
`step` hands the text that arrived to the reply's on_delta on the ChatRunner's worker, and
`end` of an unfinished reply cancels the request, which closes its connection: the server
sees the client go and stops generating (llama-server, llama_cpp.server and vLLM all check).
Several replies are several concurrent requests; the server batches them (llama-server with
`--parallel`, vLLM always). Nothing is evaluated ahead of a reply, so `prefill` does nothing.

History trimming needs the prompt's size in the server's tokens: the server's own tokenizer
counts each message's text where it offers one (llama-server `/tokenize`, llama_cpp.server
`/extras/tokenize/count`), counts are cached per message, and the chat template's few tokens
per message are allowed for generously; other servers get an estimate from the text's length
that errs on the large side.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from server.engines.base import (
    ChatMessage,
    Generation,
    GenerationStats,
    PromptTooLong,
    RemoteFailure,
    generate_alone,
)
from server.engines.remote import RemoteClient, error_message
from server.errors import ErrorCode
from server.prompts import GenerationSettings
from server.protocol.sse import SseDecoder, SseError

log = logging.getLogger(__name__)

Finish = Literal["stop", "length", "cancelled"]
# A chat template wraps each message in a few tokens (ChatML: <|im_start|>role\n...
# <|im_end|>\n, 5 tokens; Llama 3: 5; Gemma: 5) and opens the reply with a few more.
# Allowing 8 of each errs on the safe side for the templates we know.
TEMPLATE_TOKENS_PER_MESSAGE = 8
TEMPLATE_TOKENS_FOR_REPLY = 8
# Message texts whose token counts are kept (a digest each, not the text).
COUNT_CACHE_SIZE = 4096
# How long `step` waits for a stream's next text before going back to its caller, which
# looks for cancelled replies in between: the bound on how late a barge-in closes a stream.
STEP_WAIT_S = 0.02
# How long `end` waits for a cancelled request's connection to be closed.
CLOSE_WAIT_S = 2.0
# A server that did not answer the model and context questions is asked again after this.
PROBE_AGAIN_S = 30.0
# Longest wait for those questions and for token counts: they hold up the ChatRunner's
# worker (every reply), so a stalled server costs this, then estimates are used.
QUICK_TIMEOUT_S = 3.0
_PIECES = re.compile(r"\d|[^\W\d_]+|[^\w\s]")


def estimate_tokens(text: str) -> int:
    """Tokens `text` takes in a typical BPE vocabulary, erring on the large side.

    English runs about 4 bytes a token; a third of the UTF-8 length covers that, and scripts
    whose characters take 3 bytes (CJK: about a token each). Digits, which many tokenizers
    split one by one, and punctuation count at least one each."""
    by_length = math.ceil(len(text.encode("utf-8")) / 3)
    return max(by_length, len(_PIECES.findall(text)))


@dataclass(frozen=True)
class ChatChunk:
    """What one `chat.completion.chunk` of a stream says."""

    text: str
    finish_reason: str | None
    completion_tokens: int | None  # from `usage`, when the server sends it


def parse_chat_chunk(data: str, what: str) -> ChatChunk:
    """One SSE event's data of a streamed chat completion (not "[DONE]")."""
    try:
        chunk = json.loads(data)
    except ValueError:
        raise RemoteFailure(ErrorCode.REMOTE_ERROR, f"{what} sent a non-JSON chunk") from None
    if not isinstance(chunk, dict):
        raise RemoteFailure(ErrorCode.REMOTE_ERROR, f"{what} sent a chunk that is not an object")
    if "error" in chunk:  # llama-server and vLLM report a failure mid-stream this way
        message = error_message(json.dumps(chunk).encode())
        if _is_context_overflow(message):
            raise PromptTooLong(f"{what}: {message}")
        raise RemoteFailure(ErrorCode.REMOTE_ERROR, f"{what} failed mid-reply: {message}")
    text, finish = "", None
    choices = chunk.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        choice = choices[0]
        delta = choice.get("delta")
        if isinstance(delta, dict) and isinstance(delta.get("content"), str):
            text = delta["content"]
        if isinstance(choice.get("finish_reason"), str):
            finish = choice["finish_reason"]
    usage = chunk.get("usage")
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return ChatChunk(text, finish, tokens if isinstance(tokens, int) else None)


def _is_context_overflow(message: str) -> bool:
    lowered = message.lower()
    return "context" in lowered and any(
        word in lowered for word in ("exceed", "too long", "overflow", "maximum", "length")
    )


def context_from_server(models: Any, props: Any) -> int | None:
    """The context size a server states: vLLM's `max_model_len` in /v1/models, llama-server's
    `n_ctx` in /props (per slot, what one request may use); None when it says nothing."""
    if isinstance(props, dict):
        settings = props.get("default_generation_settings")
        for source in (settings, props):
            if isinstance(source, dict) and isinstance(source.get("n_ctx"), int):
                n_ctx: int = source["n_ctx"]
                if n_ctx > 0:
                    return n_ctx
    if isinstance(models, dict) and isinstance(models.get("data"), list):
        for model in models["data"]:
            if isinstance(model, dict) and isinstance(model.get("max_model_len"), int):
                max_len: int = model["max_model_len"]
                return max_len
    return None


def first_model_id(models: Any) -> str | None:
    """The first model a server lists in /v1/models."""
    if isinstance(models, dict) and isinstance(models.get("data"), list):
        for model in models["data"]:
            if isinstance(model, dict) and isinstance(model.get("id"), str):
                model_id: str = model["id"]
                return model_id
    return None


class RemoteGeneration:
    """One reply under way: its request runs on the client's loop, its text waits in
    `_arrived` until `step` passes it on (guarded by the model's condition)."""

    def __init__(
        self, on_delta: Callable[[str], None], prompt_tokens: int, max_tokens: int
    ) -> None:
        self.on_delta = on_delta
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.start = time.perf_counter()
        self.first_token_s: float | None = None
        self.chunks = 0  # text chunks received: a token each on llama.cpp and vLLM
        self.usage_tokens: int | None = None
        self.finish: Finish | None = None  # set by `step` once the stream's text is out
        self.error: BaseException | None = None
        self.closed = threading.Event()  # the request is over, its connection closed
        self.request: Any = None  # the concurrent future of the request
        # Written on the client's loop, read by `step`, under the model's condition:
        self._arrived: list[str] = []
        self._over: Finish | None = None

    @property
    def done(self) -> bool:
        return self.finish is not None


class OpenAIChatModel:
    """Blocking like every ChatModel; `begin`/`step`/`end` from one worker (ChatRunner)."""

    def __init__(
        self,
        client: RemoteClient,
        *,
        model: str | None = None,
        context_size: int | None = None,
        default_context_size: int = 2048,
        parallel: int = 8,
        tokenizer: Literal["auto", "estimate"] = "auto",
        sampling_extras: bool = True,
    ) -> None:
        self._client = client
        self._model = model
        self._context_set = context_size
        self.context_size = context_size or default_context_size
        self.parallel = max(1, parallel)
        self.name = model or "remote"
        self._sampling_extras = sampling_extras
        # "extras" (llama_cpp.server), "tokenize" (llama-server), "estimate", or None: not
        # known yet (the server was not reachable when last asked).
        self._tokenizer: str | None = "estimate" if tokenizer == "estimate" else None
        self._counts: collections.OrderedDict[bytes, int] = collections.OrderedDict()
        self._counts_lock = threading.Lock()
        self._changed = threading.Condition()
        self._probed_at: float | None = None  # when the server was last asked about itself
        self._answered = False  # ... and whether it answered
        self._tokenizer_retry_at = 0.0  # the tokenizer was unreachable: estimate until then

    # --- what the server says about itself ----------------------------------------------------

    def probe(self) -> bool:
        """Ask the server for its model and context size (and which tokenizer it has).
        Blocking; a server that does not answer is asked again later. True if it answered."""
        self._probed_at = time.monotonic()
        self._tokenizer_retry_at = 0.0
        try:
            models = self._client.run(
                self._client.get_json(self._client.url("models")), QUICK_TIMEOUT_S
            )
        except RemoteFailure as exc:
            log.warning("LLM server not ready: %s", exc)
            return False
        self._answered = True
        if self._model is None:
            self._model = first_model_id(models)
        self.name = self._model or "remote"
        props: Any = None
        if self._context_set is None:
            with contextlib.suppress(RemoteFailure):  # only llama-server has /props
                props = self._client.run(
                    self._client.get_json(self._client.url("props", root=True)), QUICK_TIMEOUT_S
                )
            if (found := context_from_server(models, props)) is not None:
                self.context_size = found
        if self._tokenizer is None:
            self._count_with_server(["Hello"])  # finds the tokenizer endpoint
        log.info(
            "remote LLM %s, context %d tokens, tokens counted by %s",
            self.name,
            self.context_size,
            self._tokenizer or "estimate",
        )
        return True

    def _probe_if_due(self) -> None:
        if self._probed_at is None or (
            not self._answered and time.monotonic() - self._probed_at > PROBE_AGAIN_S
        ):
            self.probe()

    # --- prompt size ---------------------------------------------------------------------------

    def count_ahead(self, messages: Sequence[ChatMessage]) -> None:
        """Count (and cache) these messages' tokens now, off the ChatRunner's worker."""
        self.count_prompt_tokens(messages)

    def count_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        self._probe_if_due()
        keys = [_digest(m.content) for m in messages]
        counted: dict[bytes, int] = {}
        missing: dict[bytes, str] = {}
        with self._counts_lock:
            for key, message in zip(keys, messages, strict=True):
                if key in self._counts:
                    self._counts.move_to_end(key)
                    counted[key] = self._counts[key]
                else:
                    missing[key] = message.content
        estimates = {key: estimate_tokens(text) for key, text in missing.items()}
        if missing and self._total(keys, {**counted, **estimates}) <= self.context_size // 4:
            # Far below the context, an estimate decides nothing a count would not; it spares
            # a round trip to the server before the reply (most turns of most conversations).
            return self._total(keys, {**counted, **estimates})
        if missing:
            server = self._count_with_server(list(missing.values()))
            if server is not None:
                new = dict(zip(missing, server, strict=True))
                with self._counts_lock:
                    self._counts.update(new)
                    while len(self._counts) > COUNT_CACHE_SIZE:
                        self._counts.popitem(last=False)
            else:  # estimated: not cached, the server may count them next time
                new = estimates
            counted.update(new)
        return self._total(keys, counted)

    def count_text_tokens(self, text: str) -> int:
        if not text:
            return 0
        self._probe_if_due()
        counts = self._count_with_server([text])
        return counts[0] if counts is not None else estimate_tokens(text)

    @staticmethod
    def _total(keys: list[bytes], counts: dict[bytes, int]) -> int:
        """The prompt's size from its messages' counts, with the chat template's allowance."""
        return TEMPLATE_TOKENS_FOR_REPLY + sum(
            counts[key] + TEMPLATE_TOKENS_PER_MESSAGE for key in keys
        )

    def _count_with_server(self, texts: list[str]) -> list[int] | None:
        """The server's token counts of these texts, or None (estimate them)."""
        if self._tokenizer == "estimate" or time.monotonic() < self._tokenizer_retry_at:
            return None
        try:
            return self._client.run(self._count_all(texts), QUICK_TIMEOUT_S)
        except RemoteFailure as exc:
            if exc.code != ErrorCode.REMOTE_ERROR:
                # Down, slow or refusing us: estimates for a while; the chat request itself
                # tells the client what is wrong.
                self._tokenizer_retry_at = time.monotonic() + PROBE_AGAIN_S
            log.debug("token counts estimated: %s", exc)
            return None

    async def _count_all(self, texts: list[str]) -> list[int]:
        if self._tokenizer is None:
            for kind in ("extras", "tokenize"):
                try:
                    counts = [await self._count_one(kind, texts[0])]
                except RemoteFailure as exc:
                    if exc.code != ErrorCode.REMOTE_ERROR:
                        raise  # not an answer about this endpoint
                    continue
                self._tokenizer = kind
                rest = await asyncio.gather(*(self._count_one(kind, t) for t in texts[1:]))
                return counts + list(rest)
            self._tokenizer = "estimate"
            raise RemoteFailure(ErrorCode.REMOTE_ERROR, "the server has no tokenizer endpoint")
        kind = self._tokenizer
        return list(await asyncio.gather(*(self._count_one(kind, t) for t in texts)))

    async def _count_one(self, kind: str, text: str) -> int:
        client = self._client
        if kind == "extras":  # llama_cpp.server
            body: dict[str, Any] = {"input": text}
            if self._model:
                body["model"] = self._model
            answer = await client.post_json(client.url("extras/tokenize/count", root=True), body)
            count = answer.get("count") if isinstance(answer, dict) else None
        else:  # llama-server
            answer = await client.post_json(
                client.url("tokenize", root=True), {"content": text, "add_special": False}
            )
            tokens = answer.get("tokens") if isinstance(answer, dict) else None
            count = len(tokens) if isinstance(tokens, list) else None
        if not isinstance(count, int):
            raise RemoteFailure(ErrorCode.REMOTE_ERROR, "the tokenizer's answer has no count")
        return count

    # --- replies -----------------------------------------------------------------------------

    def begin(
        self,
        messages: Sequence[ChatMessage],
        settings: GenerationSettings,
        on_delta: Callable[[str], None],
    ) -> RemoteGeneration:
        prompt_tokens = self.count_prompt_tokens(messages)
        room = self.context_size - prompt_tokens
        if room < 1:
            raise PromptTooLong(
                f"the prompt takes about {prompt_tokens} tokens; "
                f"the remote context holds {self.context_size}"
            )
        gen = RemoteGeneration(on_delta, prompt_tokens, min(settings.max_tokens, room))
        body: dict[str, Any] = {
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": True,
            "max_tokens": gen.max_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            # Servers that count usage say so in a last chunk (OpenAI, vLLM, llama-server).
            "stream_options": {"include_usage": True},
        }
        if self._model:
            body["model"] = self._model
        if settings.seed is not None and settings.seed >= 0:
            body["seed"] = settings.seed
        if self._sampling_extras:
            body["top_k"] = settings.top_k
            body["repeat_penalty"] = settings.repeat_penalty
        gen.request = self._client.submit(self._stream(gen, body))
        return gen

    async def _stream(self, gen: RemoteGeneration, body: dict[str, Any]) -> None:
        """The request, on the client's loop: text into gen, then its end (or error)."""
        over: Finish = "stop"
        client = self._client
        try:
            async with client.request("POST", client.url("chat/completions"), json=body) as resp:
                decoder = SseDecoder()
                finish_reason: str | None = None
                done = False
                async for data in resp.content.iter_any():
                    for event in decoder.feed(data):
                        if event.data.strip() == "[DONE]":
                            done = True
                            break
                        chunk = parse_chat_chunk(event.data, client.what)
                        if chunk.completion_tokens is not None:
                            gen.usage_tokens = chunk.completion_tokens
                        finish_reason = chunk.finish_reason or finish_reason
                        if chunk.text:
                            self._arrive(gen, chunk.text)
                    if done:
                        break
                if not done and finish_reason is None:
                    # llama_cpp.server, for one, ends the stream so on a prompt over its context.
                    hint = (
                        ""
                        if gen.chunks
                        else (" before it began (is [llm] context_size over the server's context?)")
                    )
                    raise RemoteFailure(
                        ErrorCode.REMOTE_ERROR, f"{client.what} ended the reply part-way{hint}"
                    )
                over = "length" if finish_reason == "length" else "stop"
        except asyncio.CancelledError:
            over = "cancelled"
            raise
        except RemoteFailure as exc:
            if exc.code == ErrorCode.REMOTE_ERROR and _is_context_overflow(exc.message):
                # Refused as too long (HTTP 400): our count or context size was off.
                gen.error = PromptTooLong(exc.message)
            else:
                gen.error = exc
        except PromptTooLong as exc:
            gen.error = exc
        except SseError as exc:
            gen.error = RemoteFailure(ErrorCode.REMOTE_ERROR, f"{client.what}: {exc}")
        except Exception as exc:
            log.warning("remote reply failed: %s", type(exc).__name__)
            gen.error = RemoteFailure(
                ErrorCode.REMOTE_ERROR, f"{client.what}: unexpected {type(exc).__name__}"
            )
        finally:
            with self._changed:
                gen._over = over
                self._changed.notify_all()
            gen.closed.set()

    def _arrive(self, gen: RemoteGeneration, text: str) -> None:
        with self._changed:
            gen._arrived.append(text)
            gen.chunks += 1
            self._changed.notify_all()

    def step(self, generations: Sequence[Generation]) -> None:
        """Pass on what arrived for these replies; wait briefly (STEP_WAIT_S) if nothing did."""
        mine = [g for g in generations if isinstance(g, RemoteGeneration) and not g.done]
        with self._changed:
            if not any(g._arrived or g._over for g in mine):
                self._changed.wait(STEP_WAIT_S)
            news = [(g, "".join(g._arrived), g._over) for g in mine]
            for gen in mine:
                gen._arrived.clear()
        for gen, text, over in news:
            if text:
                if gen.first_token_s is None:
                    gen.first_token_s = time.perf_counter() - gen.start
                gen.on_delta(text)
            if over is not None:
                gen.finish = over

    def end(self, generation: Generation, *, cancelled: bool = False) -> GenerationStats:
        gen = generation
        assert isinstance(gen, RemoteGeneration)
        if not gen.closed.is_set():
            # Cancelling the request's task closes its connection (RemoteClient.request).
            gen.request.cancel()
            gen.closed.wait(CLOSE_WAIT_S)
        if cancelled and not gen.done:
            gen.finish = "cancelled"
        if gen.error is not None and gen.finish != "cancelled":
            raise gen.error
        return GenerationStats(
            prompt_tokens=gen.prompt_tokens,
            cached_prompt_tokens=0,  # the server's cache is its own business
            completion_tokens=gen.usage_tokens if gen.usage_tokens is not None else gen.chunks,
            finish_reason=gen.finish or "stop",
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
        return generate_alone(self, messages, settings, on_delta, cancel)

    def prefill(self, messages: Sequence[ChatMessage]) -> int:
        return 0  # the server evaluates the prompt when the request comes (and caches it)

    def close(self) -> None:
        self._client.close()


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", errors="surrogatepass"), digest_size=16).digest()
