"""One connected client's conversation: persona, history, and the reply in progress.

Transports translate their wire format into `handle()` calls and deliver the events the
session sends to its `EventSink`; the session never knows which transport it serves.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from typing import Any, Protocol

from pydantic import ValidationError

from server.app import App
from server.engines.base import ChatMessage
from server.errors import ChinwagError, ErrorCode
from server.pipeline.chat import ChatOutcome
from server.prompts import GenerationSettings, Persona
from server.protocol import native as proto

log = logging.getLogger(__name__)


class EventSink(Protocol):
    async def send(self, event: proto.ServerEvent) -> None: ...


class SessionLogger(logging.LoggerAdapter[logging.Logger]):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{self.extra['session'] if self.extra else '?'}] {msg}", kwargs


class Session:
    def __init__(self, app: App, sink: EventSink, *, transport: str = "native") -> None:
        self.app = app
        self.sink = sink
        self.id = uuid.uuid4().hex[:12]
        self.site: str | None = None
        self.log = SessionLogger(log, {"session": self.id})
        self.persona: Persona = app.personas.get(None)
        self.generation: GenerationSettings = self.persona.generation
        self.history: list[ChatMessage] = []
        self._turn: asyncio.Task[None] | None = None
        self._reply_ids = itertools.count(1)
        app.metrics.sessions_total.labels(transport).inc()

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        await self.app.ready.wait()
        await self.sink.send(self._started_event())

    async def close(self) -> None:
        await self.cancel_turn()

    # --- input -------------------------------------------------------------------------

    async def handle(self, message: proto.ClientMessage) -> None:
        """Act on one client message. Errors become `error` events; the session goes on."""
        try:
            await self._dispatch(message)
        except ChinwagError as exc:
            await self.send_error(exc, source=message.type)

    async def _dispatch(self, message: proto.ClientMessage) -> None:
        match message:
            case proto.UserMessage():
                await self.cancel_turn()
                reply_id = f"r{next(self._reply_ids)}-{self.id}"
                self._turn = asyncio.create_task(
                    self._text_turn(message, reply_id), name=f"turn-{reply_id}"
                )
            case proto.Cancel():
                if not await self.cancel_turn():
                    raise ChinwagError(ErrorCode.NO_ACTIVE_REPLY, "no reply is in progress")
            case proto.SessionStart():
                await self.cancel_turn()
                self._configure(message.persona, message.generation)
                self.site = message.site
                self.history.clear()
                await self.sink.send(self._started_event())
            case proto.SessionUpdate():
                self._configure(message.persona, message.generation)
                await self.sink.send(
                    proto.SessionUpdated(
                        persona=self.persona.name, generation=self.generation.model_dump()
                    )
                )
            case _:
                raise ChinwagError(ErrorCode.UNKNOWN_TYPE, f"unhandled message {message.type!r}")

    def _configure(self, persona_name: str | None, overrides: dict[str, Any] | None) -> None:
        # Validate everything before changing anything, so a bad update changes nothing.
        persona = self.app.personas.get(persona_name) if persona_name else self.persona
        base = persona.generation if persona_name else self.generation
        try:
            generation = GenerationSettings.model_validate(
                {**base.model_dump(), **(overrides or {})}
            )
        except ValidationError as exc:
            raise ChinwagError(
                ErrorCode.INVALID_MESSAGE, "generation: " + proto.describe_validation_error(exc)
            ) from exc
        self.persona, self.generation = persona, generation

    async def send_error(self, exc: ChinwagError, source: str | None = None) -> None:
        self.app.metrics.errors.labels(exc.code.value).inc()
        await self.sink.send(proto.error_event(exc, source))

    def _started_event(self) -> proto.SessionStarted:
        assert self.app.chat is not None
        return proto.SessionStarted(
            session_id=self.id,
            persona=self.persona.name,
            personas=self.app.personas.names(),
            generation=self.generation.model_dump(),
            model=self.app.chat.model.name,
            context_size=self.app.chat.model.context_size,
        )

    # --- turns -------------------------------------------------------------------------

    async def cancel_turn(self) -> bool:
        """Cancel the reply in progress and wait until its `reply.done` is out."""
        turn = self._turn
        if turn is None or turn.done():
            return False
        turn.cancel()
        # The turn task swallows its own cancellation after reporting it.
        await asyncio.gather(turn, return_exceptions=True)
        return True

    async def _text_turn(self, message: proto.UserMessage, reply_id: str) -> None:
        chat = self.app.chat
        assert chat is not None
        metrics = self.app.metrics
        start = time.perf_counter()
        parts: list[str] = []
        first_token_s: float | None = None
        outcome: ChatOutcome | None = None
        status = "failed"
        self.history.append(ChatMessage("user", message.text))

        async def on_delta(delta: str) -> None:
            nonlocal first_token_s
            if first_token_s is None:
                first_token_s = time.perf_counter() - start
            parts.append(delta)
            await self.sink.send(proto.ReplyDelta(reply_id=reply_id, text=delta))

        try:
            await self.sink.send(proto.ReplyStarted(reply_id=reply_id, message_id=message.id))
            outcome = await chat.reply(
                self.persona.system_prompt, self.history, self.generation, on_delta
            )
            status = "cancelled" if outcome.stats.finish_reason == "cancelled" else "completed"
            del self.history[: outcome.dropped]
        except asyncio.CancelledError:
            status = "cancelled"
        except ChinwagError as exc:
            await self.send_error(exc, source=message.type)
        except Exception:
            self.log.exception("reply %s failed", reply_id)
            await self.send_error(
                ChinwagError(ErrorCode.INTERNAL_ERROR, "the reply failed; see the server log"),
                source=message.type,
            )
        finally:
            text = "".join(parts)
            # History keeps whole exchanges only; a cancelled reply keeps what was sent.
            if text:
                self.history.append(ChatMessage("assistant", text))
            elif self.history and self.history[-1].role == "user":
                self.history.pop()
            metrics.turns.labels(status).inc()
            await self._send_done(reply_id, status, text, outcome, first_token_s, start)

    async def _send_done(
        self,
        reply_id: str,
        status: str,
        text: str,
        outcome: ChatOutcome | None,
        first_token_s: float | None,
        start: float,
    ) -> None:
        metrics = self.app.metrics
        total_s = time.perf_counter() - start
        usage = timings = None
        finish_reason = status if status != "completed" else None
        if outcome is not None:
            stats = outcome.stats
            finish_reason = stats.finish_reason
            gen_s = stats.total_s - (stats.first_token_s or 0.0)
            tps = (stats.completion_tokens - 1) / gen_s if stats.completion_tokens > 1 and gen_s > 0 else None
            usage = proto.Usage(
                prompt_tokens=stats.prompt_tokens,
                cached_prompt_tokens=stats.cached_prompt_tokens,
                completion_tokens=stats.completion_tokens,
            )
            timings = proto.ReplyTimings(
                queued_ms=round(outcome.queued_s * 1000, 1),
                first_token_ms=round(first_token_s * 1000, 1) if first_token_s is not None else None,
                total_ms=round(total_s * 1000, 1),
                tokens_per_second=round(tps, 1) if tps else None,
            )
            metrics.queue_wait.observe(outcome.queued_s)
            metrics.completion_tokens.inc(stats.completion_tokens)
            metrics.prompt_tokens.labels("cache").inc(stats.cached_prompt_tokens)
            metrics.prompt_tokens.labels("evaluated").inc(
                stats.prompt_tokens - stats.cached_prompt_tokens
            )
            if tps:
                metrics.tokens_per_second.observe(tps)
        if first_token_s is not None:
            metrics.time_to_first_token.observe(first_token_s)
        await self.sink.send(
            proto.ReplyDone(
                reply_id=reply_id,
                status=status,  # type: ignore[arg-type]
                text=text,
                finish_reason=finish_reason,
                usage=usage,
                timings=timings,
            )
        )
