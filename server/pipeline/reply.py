"""The reply part of a turn: transcript → LLM → phrase splitter → speaker, and its record.

Every function here runs inside one turn's task. Cancelling the task stops the model at its
next token and the voice at its next phrase; `reply.done` (and `output_audio.done`) still go
out, from `finally`, and the CancelledError goes on up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from server.engines.base import (
    ChatMessage,
    PromptTooLong,
    Reconsider,
    RemoteFailure,
    UnsupportedAudio,
)
from server.errors import ChinwagError, ErrorCode
from server.logs import log_failure
from server.metrics import Metrics
from server.pipeline.admission import APOLOGY
from server.pipeline.chat import ChatOutcome, ChatRunner
from server.pipeline.conversation import Conversation
from server.pipeline.figures import FigureCheck
from server.pipeline.grounding import ReplyPlan, SaidAnswer, counted
from server.pipeline.speaker import Speaker, Status
from server.pipeline.speech import SpeechRunner
from server.pipeline.text_split import PhraseSplitter
from server.pipeline.transcripts import is_probably_not_speech
from server.pipeline.turn import TurnContext, Utterance
from server.pipeline.turn_output import TurnOutput
from server.prompts import GenerationSettings
from server.protocol import native as proto

LOG_FAILURE = "%s %s failed"


class ReplySettings(Protocol):
    """What a reply is asked with; the session provides it."""

    generation: GenerationSettings

    def system_prompt(self, instructions: str | None = None) -> str: ...

    def plan_reply(self, question: str | None, instructions: str | None = None) -> ReplyPlan:
        """The system prompt for a reply to `question` (None: to the conversation as it
        stands), with the site's facts that match it, or an answer said without the model."""
        ...

    async def said_usage(
        self, text: str, history: Sequence[ChatMessage], system_prompt: str | None = None
    ) -> proto.Usage | None:
        """The usage of a reply said without the model: the prompt it would have read."""
        ...


class CommandStage(Protocol):
    """Answers commands without the model (pipeline/intents.py); False: not a command."""

    async def respond(
        self,
        ctx: TurnContext,
        text: str,
        message_id: str | None,
        *,
        speak: bool,
        sample_rate: int | None,
    ) -> bool: ...

    def asr_prompt(self) -> str | None:
        """Words Whisper should expect in this session's speech, if any."""
        ...

    def reconsider(self) -> Reconsider | None:
        """How a turn's first transcript is read again (heard again without the prompt,
        several readings of a command misheard), or None: it stands."""
        ...


class Responder:
    def __init__(
        self,
        *,
        chat: Callable[[], ChatRunner],
        speech: Callable[[], SpeechRunner],
        conversation: Conversation,
        speaker: Speaker,
        persona: ReplySettings,
        metrics: Metrics,
        splitter: Callable[[], PhraseSplitter],
        next_id: Callable[[str], str],
        log: logging.LoggerAdapter[logging.Logger],
        commands: CommandStage | None = None,
    ) -> None:
        self._chat = chat
        self._speech = speech
        self._conversation = conversation
        self._speaker = speaker
        self._persona = persona
        self._metrics = metrics
        self._new_splitter = splitter
        self._next_id = next_id
        self._log = log
        self._commands = commands

    async def send_error(self, out: TurnOutput, exc: ChinwagError, source: str | None) -> None:
        self._metrics.errors.labels(exc.code.value).inc()
        await out.emit(proto.error_event(exc, source))

    # --- a spoken turn ------------------------------------------------------------------

    async def voice_turn(
        self,
        ctx: TurnContext,
        utterance: Utterance,
        start: proto.AudioStart,
        joins: str | None = None,
        on_transcript: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        """Transcribe an utterance, then (as the stream asked) answer it or just keep it."""
        out = ctx.out
        try:
            began = time.perf_counter()
            commands = self._commands
            prompt = commands.asr_prompt() if commands is not None else None
            reconsider = commands.reconsider() if commands is not None else None
            transcript = await self._speech().transcribe(
                utterance.audio, prompt=prompt, reconsider=reconsider
            )
            transcribe_ms = round((time.perf_counter() - began) * 1000, 1)
            self._log.debug("transcribed in %.0f ms: %r", transcribe_ms, transcript.text)
            if on_transcript is not None:
                await on_transcript(transcript.text)
            if is_probably_not_speech(transcript):
                await out.emit(
                    proto.SpeechDiscarded(
                        utterance_id=utterance.id, reason="not_speech", text=transcript.text
                    )
                )
                return
            await out.emit(
                proto.Transcript(
                    utterance_id=utterance.id,
                    text=transcript.text,
                    duration_ms=round(transcript.audio_s * 1000, 1),
                    transcribe_ms=transcribe_ms,
                    joins=joins,
                )
            )
            if start.task == "converse" and start.respond:
                await self.reply(
                    ctx,
                    transcript.text,
                    utterance.id,
                    speak=start.speak,
                    sample_rate=start.output_sample_rate,
                )
            elif start.task == "converse":
                self._conversation.add("user", transcript.text, utterance.id)
        except asyncio.CancelledError:
            raise  # before the reply began nothing was started; the reply closes its own
        except ChinwagError as exc:  # the transcription was refused: the server is busy
            await self.send_error(out, exc, "audio")
            if exc.code is ErrorCode.OVERLOADED and start.speak and start.respond:
                await self.apologize(ctx, start.output_sample_rate)
        except UnsupportedAudio as exc:
            await self.send_error(
                out, ChinwagError(ErrorCode.INVALID_AUDIO_FORMAT, str(exc)), "audio"
            )
        except RemoteFailure as exc:  # the remote ASR server failed
            self._log.warning("transcription of %s failed: %s", utterance.id, exc.message)
            await self.send_error(out, exc, "audio")
        except Exception as exc:
            log_failure(self._log, LOG_FAILURE, exc, "voice turn", utterance.id)
            await self.send_error(
                out,
                ChinwagError(ErrorCode.INTERNAL_ERROR, "transcription failed; see the server log"),
                "audio",
            )

    # --- saying given text --------------------------------------------------------------

    async def say(self, ctx: TurnContext, message: proto.Say) -> None:
        stream_id = message.id or self._next_id("s")
        phrases: asyncio.Queue[str | None] = asyncio.Queue()
        splitter = PhraseSplitter()
        for phrase in [*splitter.feed(message.text), *splitter.flush()]:
            phrases.put_nowait(phrase)
        phrases.put_nowait(None)
        ctx.spoken = self._speaker.new_reply(stream_id)
        try:
            await self._speaker.speak(ctx.spoken, phrases, message.sample_rate, ctx.out)
        except RemoteFailure as exc:  # the remote TTS server failed
            self._log.warning("say %s failed: %s", stream_id, exc.message)
            await self.send_error(ctx.out, exc, "say")

    async def apologize(self, ctx: TurnContext, sample_rate: int | None) -> None:
        """A voice turn refused by admission control hears why, as its own audio stream."""
        await self.say(ctx, proto.Say(text=APOLOGY, sample_rate=sample_rate))

    # --- the model's answer -------------------------------------------------------------

    async def reply(
        self,
        ctx: TurnContext,
        text: str | None,
        message_id: str | None,
        *,
        speak: bool,
        sample_rate: int | None = None,
        instructions: str | None = None,
    ) -> None:
        """Stream the model's answer (and, when speaking, its audio) to a new user message,
        or (text None) to the conversation as it stands."""
        commands = self._commands
        # A command is answered in milliseconds without the model (pipeline/intents.py).
        if (
            text is not None
            and commands is not None
            and await commands.respond(ctx, text, message_id, speak=speak, sample_rate=sample_rate)
        ):
            return
        chat: ChatRunner | SaidAnswer = self._chat()
        out = ctx.out
        reply_id = self._next_id("r")
        start = time.perf_counter()
        parts: list[str] = []
        first_token_s: float | None = None
        outcome = ChatOutcome()
        status: Status = "failed"
        cancelled: asyncio.CancelledError | None = None
        refused = False  # by admission control: no reply, and the question is withdrawn
        speaking: asyncio.Task[None] | None = None
        phrases: asyncio.Queue[str | None] = asyncio.Queue()
        splitter = self._new_splitter()
        counting: asyncio.Task[proto.Usage | None] | None = None
        if speak:
            ctx.spoken = self._speaker.new_reply(reply_id)
            speaking = asyncio.create_task(
                self._speaker.speak(ctx.spoken, phrases, sample_rate, out)
            )
        conversation = self._conversation
        asked = conversation.add("user", text, message_id) if text is not None else None
        generation = self._persona.generation

        async def on_delta(delta: str) -> None:
            nonlocal first_token_s
            if first_token_s is None:
                self._log.debug("first token of %s", reply_id)
                first_token_s = time.perf_counter() - start
            parts.append(delta)
            await out.emit(proto.ReplyDelta(reply_id=reply_id, text=delta))
            if speak:
                for phrase in splitter.feed(delta):
                    phrases.put_nowait(phrase)

        try:
            await out.emit(proto.ReplyStarted(reply_id=reply_id, message_id=message_id))
            # Site knowledge embeds the question (milliseconds of numpy): off the event loop.
            plan = await asyncio.to_thread(self._persona.plan_reply, text, instructions)
            if plan.answer is not None:
                # The site's facts, an honest "I don't know" or a refusal: said, not generated.
                chat = SaidAnswer(plan.answer)
            figures = plan.figure_check() if plan.answer is None else None
            say = on_delta if figures is None else _checking(figures, on_delta)
            # _FigureNotGiven: the model is stopped, it stated a figure the facts do not hold.
            with contextlib.suppress(_FigureNotGiven):
                # A reply someone waits to hear goes before text replies.
                await chat.reply(
                    plan.system_prompt,
                    conversation.messages,
                    generation,
                    say,
                    outcome,
                    urgent=speak,
                )
            if figures is not None:
                if tail := figures.flush():
                    await on_delta(tail)
                if figures.stopped:
                    await on_delta(figures.honest_line(plan.unknown))
            if (note := plan.correction("".join(parts))) is not None:
                await on_delta(note)  # the reply claimed an action nothing took
            if plan.answer is not None:
                # Counted while it is spoken; reply.done carries it (as HTTP's usage does).
                counting = asyncio.create_task(
                    self._persona.said_usage(
                        "".join(parts), list(conversation.messages), plan.system_prompt
                    )
                )
            if speaking is not None:
                for phrase in splitter.flush():
                    phrases.put_nowait(phrase)
                phrases.put_nowait(None)
                await speaking
            status = "completed"
        except asyncio.CancelledError as exc:
            status, cancelled = "cancelled", exc
        except ChinwagError as exc:
            if isinstance(exc, RemoteFailure):  # a remote LLM or TTS server failed
                self._log.warning("reply %s failed: %s", reply_id, exc.message)
            await self.send_error(out, exc, "user.message")
            if exc.code is ErrorCode.OVERLOADED:
                refused = True
                if speaking is not None:
                    # Nothing was generated: the apology is the reply's only phrase.
                    phrases.put_nowait(APOLOGY)
                    phrases.put_nowait(None)
                    await speaking
        except PromptTooLong as exc:
            await self.send_error(
                out, ChinwagError(ErrorCode.CONTEXT_OVERFLOW, str(exc)), "user.message"
            )
        except Exception as exc:
            log_failure(self._log, LOG_FAILURE, exc, "reply", reply_id)
            await self.send_error(
                out,
                ChinwagError(ErrorCode.INTERNAL_ERROR, "the reply failed; see the server log"),
                "user.message",
            )
        finally:
            if speaking is not None and not speaking.done():
                speaking.cancel()
                await asyncio.gather(speaking, return_exceptions=True)
            conversation.drop_oldest(outcome.dropped)
            if out.discarded:
                # A speculative reply thrown away: it never happened, for the history too.
                conversation.withdraw(asked)
                if counting is not None:
                    counting.cancel()
            elif refused:
                # Never answered: the history does not keep the question (nor the apology).
                conversation.withdraw(asked)
                total_s = time.perf_counter() - start
                await out.emit(done_event(reply_id, status, "", None, outcome, None, total_s))
            else:
                full = "".join(parts)
                spoken = ctx.spoken if speak else None
                heard = spoken.heard() if spoken is not None and status != "completed" else None
                kept = full if heard is None else heard

                def commit() -> None:
                    # Whole exchanges only; of an interrupted reply, what was heard.
                    conversation.commit_reply(asked, kept, reply_id)
                    self._metrics.turns.labels(status).inc()

                # A speculative reply counts once it is released; thrown away after it
                # finished, it takes its question with it.
                out.when_sent(commit)
                out.when_discarded(lambda: conversation.withdraw(asked))
                total_s = time.perf_counter() - start
                record_metrics(self._metrics, outcome, first_token_s)
                said = await counted(counting, self._log)
                await out.emit(
                    done_event(reply_id, status, full, heard, outcome, first_token_s, total_s, said)
                )
        if cancelled is not None:
            raise cancelled


def done_event(
    reply_id: str,
    status: Status,
    text: str,
    heard: str | None,
    outcome: ChatOutcome,
    first_token_s: float | None,
    total_s: float,
    said: proto.Usage | None = None,
) -> proto.ReplyDone:
    """`reply.done` with the usage and timings of the generation; `said`: the usage of a
    reply said without the model (no generation, no timings)."""
    usage, timings = said, None
    finish_reason: str | None = status if status != "completed" else None
    if outcome.stats is not None:
        stats = outcome.stats
        finish_reason = stats.finish_reason
        usage = proto.Usage(
            prompt_tokens=stats.prompt_tokens,
            cached_prompt_tokens=stats.cached_prompt_tokens,
            completion_tokens=stats.completion_tokens,
        )
        tps = tokens_per_second(outcome)
        timings = proto.ReplyTimings(
            queued_ms=round(outcome.queued_s * 1000, 1),
            first_token_ms=round(first_token_s * 1000, 1) if first_token_s is not None else None,
            total_ms=round(total_s * 1000, 1),
            tokens_per_second=round(tps, 1) if tps else None,
        )
    return proto.ReplyDone(
        reply_id=reply_id,
        status=status,
        text=text,
        heard_text=heard,
        finish_reason=finish_reason,
        usage=usage,
        timings=timings,
    )


def tokens_per_second(outcome: ChatOutcome) -> float | None:
    """Generation speed after the first token (which the prompt's evaluation delays)."""
    stats = outcome.stats
    if stats is None:
        return None
    gen_s = stats.total_s - (stats.first_token_s or 0.0)
    if stats.completion_tokens > 1 and gen_s > 0:
        return (stats.completion_tokens - 1) / gen_s
    return None


def record_metrics(metrics: Metrics, outcome: ChatOutcome, first_token_s: float | None) -> None:
    if outcome.stats is not None:
        stats = outcome.stats
        metrics.queue_wait.observe(outcome.queued_s)
        metrics.completion_tokens.inc(stats.completion_tokens)
        metrics.prompt_tokens.labels("cache").inc(stats.cached_prompt_tokens)
        metrics.prompt_tokens.labels("evaluated").inc(
            stats.prompt_tokens - stats.cached_prompt_tokens
        )
        if tps := tokens_per_second(outcome):
            metrics.tokens_per_second.observe(tps)
    if first_token_s is not None:
        metrics.time_to_first_token.observe(first_token_s)


class _FigureNotGiven(Exception):
    """Stops the model: its reply states a figure that neither the question nor the facts
    hold (figures.py)."""


def _checking(
    figures: FigureCheck, on_delta: Callable[[str], Awaitable[None]]
) -> Callable[[str], Awaitable[None]]:
    async def say(delta: str) -> None:
        if text := figures.feed(delta):
            await on_delta(text)
        if figures.stopped:
            raise _FigureNotGiven

    return say
