"""POST /v1/chat/completions (transports/openai_http.py routes it here): the persona's reply
plan, then the plan's words or the model's reply in the ChatRunner's queue, whole or as
server-sent events, with the caller's stop sequences and token counts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from server.app import App
from server.engines.base import PromptTooLong
from server.errors import ChinwagError, ErrorCode
from server.pipeline.chat import ChatOutcome, ChatRunner
from server.pipeline.grounding import ReplyPlan, SaidAnswer, count_said, plan_reply
from server.prompts import GenerationSettings, Persona
from server.protocol import openai_http as oa
from server.protocol import openai_http_chat as oa_chat
from server.transports.openai_http_requests import STREAMING, chat_runner, persona_of, read_body


async def chat_completions(app: App, request: web.Request) -> web.StreamResponse:
    settings = app.settings
    body = await read_body(request, settings.http.max_body_bytes)
    chat_request = oa_chat.parse_chat_request(body, settings.limits.max_text_chars)
    persona = persona_of(app, chat_request.model)
    generation = _generation(persona.generation, chat_request)
    conversation = oa_chat.conversation_of(chat_request.messages)
    plan = await _plan(persona, conversation)
    system_prompt = plan.system_prompt
    runner: ChatRunner | SaidAnswer = (
        SaidAnswer(plan.answer) if plan.answer is not None else chat_runner(app)
    )
    reply = _Reply(chat_request, oa_chat.completion_id(), oa_chat.now(), plan)
    if not chat_request.stream:
        text, outcome = await reply.run(runner, system_prompt, conversation, generation, None)
        return web.json_response(
            oa_chat.completion(
                reply.ident,
                chat_request.model,
                reply.created,
                text,
                reply.finish_reason(outcome),
                await reply.usage(outcome, app, conversation, text),
            )
        )
    response = _event_stream()
    await response.prepare(request)
    request[STREAMING] = True
    include_usage = chat_request.include_usage

    async def send(
        delta: dict[str, Any] | None,
        finish_reason: oa_chat.FinishReason | None = None,
        usage: dict[str, int] | None = None,
    ) -> None:
        chunk = oa_chat.chunk(
            reply.ident,
            chat_request.model,
            reply.created,
            delta,
            finish_reason,
            usage_=usage,
            include_usage=include_usage,
        )
        await response.write(oa_chat.sse(chunk))

    try:
        await send({"role": "assistant", "content": ""})

        async def on_text(text: str) -> None:
            await send({"content": text})

        text, outcome = await reply.run(runner, system_prompt, conversation, generation, on_text)
        await send({}, reply.finish_reason(outcome))
        if include_usage:
            await send(None, usage=await reply.usage(outcome, app, conversation, text))
    except (oa.OpenAIError, ChinwagError) as exc:
        error = exc if isinstance(exc, oa.OpenAIError) else oa.OpenAIError.from_chinwag(exc)
        await response.write(oa_chat.sse_error(error))
    await response.write(oa_chat.SSE_DONE)
    await response.write_eof()
    return response


class _Stopped(Exception):
    """A stop sequence was found: the reply ends here (raised through ChatRunner.reply,
    which stops the model)."""


async def _plan(persona: Persona, conversation: oa_chat.Conversation) -> ReplyPlan:
    """The persona's plan for the last user message, as on every other way in: the site's
    facts, an honest "I don't know", a command declined (HTTP chat acts on nothing), or the
    model with the caller's system message (else the persona's) and the facts that match."""
    last = conversation.history[-1] if conversation.history else None
    question = last.content if last is not None and last.role == "user" else None
    system_prompt = conversation.system_prompt or persona.system_prompt
    # Site knowledge embeds the question (milliseconds of numpy): off the event loop.
    return await asyncio.to_thread(
        plan_reply,
        system_prompt,
        question,
        persona.knowledge,
        persona.knowledge_settings,
        guard=persona.honest_actions,
    )


class _FigureNotGiven(Exception):
    """Stops the model: its reply states a figure the question and the facts do not hold."""


class _Reply:
    """One chat completion's text, stop sequences and counts."""

    def __init__(
        self, request: oa_chat.ChatRequest, ident: str, created: int, plan: ReplyPlan
    ) -> None:
        self.request = request
        self.ident = ident
        self.created = created
        self.plan = plan
        self.scanner = oa_chat.StopScanner(request.stops)

    async def run(
        self,
        runner: ChatRunner | SaidAnswer,
        system_prompt: str,
        conversation: oa_chat.Conversation,
        generation: GenerationSettings,
        on_text: Callable[[str], Awaitable[None]] | None,
    ) -> tuple[str, ChatOutcome]:
        """The reply's text (stop sequences cut off), sent through on_text as it comes."""
        outcome = ChatOutcome()
        parts: list[str] = []

        async def on_delta(delta: str) -> None:
            text = self.scanner.feed(delta)
            if text:
                parts.append(text)
                if on_text is not None:
                    await on_text(text)
            if self.scanner.stopped:
                raise _Stopped

        figures = self.plan.figure_check() if self.plan.answer is None else None

        async def checked(delta: str) -> None:
            if figures is None:
                await on_delta(delta)
                return
            if text := figures.feed(delta):
                await on_delta(text)
            if figures.stopped:
                raise _FigureNotGiven

        try:
            # _FigureNotGiven: the model stated a figure the facts do not hold; stopped.
            with contextlib.suppress(_FigureNotGiven):
                await runner.reply(
                    system_prompt, conversation.history, generation, checked, outcome, urgent=False
                )
            if figures is not None:
                if tail := figures.flush():
                    await on_delta(tail)
                if figures.stopped:
                    await on_delta(figures.honest_line(self.plan.unknown))
            # A reply that claims an action nothing took gets the honest line, as elsewhere.
            note = self.plan.correction("".join(parts))
            if note is not None:
                await on_delta(note)
        except _Stopped:
            pass
        except PromptTooLong as exc:
            raise oa.OpenAIError(
                HTTPStatus.BAD_REQUEST,
                ErrorCode.CONTEXT_OVERFLOW,
                f"the messages do not fit the model's context ({exc})",
                param="messages",
            ) from None
        tail = self.scanner.flush()
        if tail:
            parts.append(tail)
            if on_text is not None:
                await on_text(tail)
        return "".join(parts), outcome

    def finish_reason(self, outcome: ChatOutcome) -> oa_chat.FinishReason:
        stats = outcome.stats
        if not self.scanner.stopped and stats is not None and stats.finish_reason == "length":
            return "length"
        return "stop"

    async def usage(
        self, outcome: ChatOutcome, app: App, conversation: oa_chat.Conversation, text: str
    ) -> dict[str, int]:
        """The model's counts of its reply; for an answer the plan says word for word (no
        model ran), the prompt the model would have read and the text said, counted with the
        model's tokenizer (nothing to count with while the models load)."""
        stats = outcome.stats
        if stats is not None:
            return oa_chat.usage(stats.prompt_tokens, stats.completion_tokens)
        if self.plan.answer is None or app.chat is None:
            return oa_chat.usage(0, 0)
        prompt_tokens, completion_tokens = await count_said(
            app.chat.model, self.plan.system_prompt, conversation.history, text
        )
        return oa_chat.usage(prompt_tokens, completion_tokens)


def _generation(base: GenerationSettings, request: oa_chat.ChatRequest) -> GenerationSettings:
    """The persona's settings with the request's overrides, checked by the same rules."""
    overrides: dict[str, Any] = {}
    if request.token_limit is not None:
        overrides["max_tokens"] = request.token_limit
    for name in ("temperature", "top_p", "seed"):
        value = getattr(request, name)
        if value is not None:
            overrides[name] = value
    try:
        return GenerationSettings.model_validate({**base.model_dump(), **overrides})
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in first["loc"])
        param = "max_completion_tokens" if field == "max_tokens" else field
        raise oa.invalid(f"{param}: {first['msg']}", param) from None


def _event_stream() -> web.StreamResponse:
    return web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # reverse proxies: do not hold the events back
        }
    )
