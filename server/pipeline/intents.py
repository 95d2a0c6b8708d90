"""A session's intent stage: commands answered in milliseconds, without the chat model.

`Responder.reply` asks `SessionIntents.respond` first (for personas with `intents = true`).
The recognizer (server/intents/recognizer.py) runs on a worker thread; when it recognises a
command the turn is answered here, through the same events as a model's reply:

    reply.started, intent, reply.delta (the confirmation), output audio, reply.done

The `intent` event is what the home acts on: the MQTT bridge publishes it as Hermes
`hermes/intent/<name>` and `chinwag/<site>/intent`. A refusal ("I don't know a device called
toaster.") is said the same way, with no `intent` event. The clock and timers are answered
here; timers fire on this session (`timer.finished`, then a spoken announcement).

A speculative turn (pipeline/turn_output.py) holds its events until it is confirmed: so is the
intent (the bridge sees it only once it is sent), and a timer starts only then.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from server.engines.base import ChatMessage, MoreReadings, Reconsider, Rereading, Transcript
from server.errors import ConfigError
from server.intents import hearing, number_doubt
from server.intents.hearing import heard_the_prompt
from server.intents.home import load_home
from server.intents.recognizer import (
    IntentRecognizer,
    Recognized,
    Refused,
    Understanding,
    now_slots,
    settled_by,
    slot_variables,
)
from server.intents.timers import Timer, TimerBook, TimerLimit, finished_speech, seconds_of
from server.pipeline.grounding import counted
from server.pipeline.text_split import PhraseSplitter, speakable
from server.protocol import native as proto

if TYPE_CHECKING:
    from server.config import IntentsSettings
    from server.metrics import Metrics
    from server.pipeline.conversation import Conversation
    from server.pipeline.speaker import Speaker, Status
    from server.pipeline.turn import TurnContext
    from server.prompts import Persona

log = logging.getLogger(__name__)

RECENT = 8  # understandings kept per session
NUMBER_DOUBT = "ambiguous_number"  # Refused.reason: a number asked about (number_doubt.py)
# The usage of a reply said without the model, from its text and the history it answers
# (Session.said_usage).
SaidUsage = Callable[[str, Sequence[ChatMessage]], Coroutine[Any, Any, proto.Usage | None]]


@functools.lru_cache(maxsize=4)
def _load(
    devices: Path | None,
    mtime: float,
    language: str,
    repair: bool,
    own_sentences: bool,
    sentences: Path | None,
    sentences_mtime: float,
) -> IntentRecognizer:
    recognizer = IntentRecognizer(
        load_home(devices),
        language,
        repair=repair,
        own_sentences=own_sentences,
        sentences=(sentences,) if sentences is not None else (),
    )
    recognizer.warm_up()
    return recognizer


def load_recognizer(settings: IntentsSettings) -> IntentRecognizer | None:
    """The recognizer for these settings (cached: the templates load once per devices file).
    Blocking, about a second the first time: call it from a worker thread at start-up."""
    if not settings.enabled:
        return None
    devices = settings.devices
    mtime = devices.stat().st_mtime if devices is not None and devices.exists() else 0.0
    sentences = settings.sentences
    if sentences is not None and not sentences.is_file():
        raise ConfigError(f"[intents] sentences: no such file: {sentences}")
    return _load(
        devices,
        mtime,
        settings.language,
        settings.repair,
        settings.own_sentences,
        sentences,
        sentences.stat().st_mtime if sentences is not None else 0.0,
    )


def _phrases(text: str) -> list[str]:
    splitter = PhraseSplitter()  # whole sentences: the text is all there
    return [p for p in [*splitter.feed(text), *splitter.flush()] if speakable(p).strip()]


@dataclass(frozen=True)
class Handled:
    """What the stage answers: the words, the `intent` event (none for a refusal), and what
    to do once the answer is really sent (start a timer)."""

    speech: str
    intent: Recognized | None = None
    handled_by: Literal["home", "chinwag"] = "home"
    then: Callable[[], None] | None = None
    match_ms: float = 0.0


class SessionIntents:
    def __init__(
        self,
        *,
        recognizer: Callable[[], IntentRecognizer | None],
        settings: IntentsSettings,
        persona: Callable[[], Persona],
        site: Callable[[], str | None],
        conversation: Conversation,
        speaker: Speaker,
        metrics: Metrics,
        next_id: Callable[[str], str],
        emit: Callable[[proto.ServerEvent], Awaitable[None]],
        announce: Callable[[str], Awaitable[None]],
        log: logging.LoggerAdapter[logging.Logger],
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], dt.datetime] = dt.datetime.now,
        said_usage: SaidUsage | None = None,
    ) -> None:
        self._recognizer = recognizer
        self._settings = settings
        self._persona = persona
        self._site = site
        self._conversation = conversation
        self._speaker = speaker
        self._metrics = metrics
        self._next_id = next_id
        self._emit = emit
        self._announce = announce
        self._log = log
        self._clock = clock
        self._now = now
        self._said_usage = said_usage
        self.timers = TimerBook(settings.max_timers, settings.max_timer_s)
        self._alarm: asyncio.Task[None] | None = None
        self._closed = False
        # Touched on the event loop's worker threads and the ASR worker (reconsider).
        self._recent: dict[tuple[str, str | None], tuple[Understanding, float]] = {}
        self._recent_lock = threading.Lock()
        # The answers that would settle the question the last turn asked (Refused.choices).
        self._asked: tuple[tuple[str, str], ...] = ()

    @property
    def enabled(self) -> bool:
        return self._persona().intents and self._recognizer() is not None

    def asr_prompt(self) -> str | None:
        """What Whisper is told to expect in this session: the home's names, when it takes
        commands ([asr] prompt_with_home)."""
        recognizer = self._recognizer()
        if not (self._settings.asr_prompt and self._persona().intents and recognizer):
            return None
        return recognizer.home.asr_prompt()

    def begins_command(self, said: str) -> bool:
        """Whether the words so far (of an utterance still being spoken) begin like a
        command, in a session that takes commands ([intents] prefill_commands)."""
        recognizer = self._recognizer()
        if recognizer is None or self._settings.prefill_commands or not self._persona().intents:
            return False
        return recognizer.begins_command(said)

    def reconsider(self) -> Reconsider | None:
        """How a turn's first transcript is read again in a session that takes commands (on
        the ASR worker, inside the transcription's job; engines/base.py):

        - made with the home's prompt, it is made again without it when Whisper wrote the
          prompt's list back instead of the words ("Turn on the light, ceiling fan, room,")
          or heard "unlock" as "and lock" (heard_the_prompt);
        - when what was heard is no command, several readings of the same audio are asked
          for ([intents] n_best), and the one command they agree on is taken (hearing.py);
        - when it is still no command, the home's sentences close to it are scored against
          the audio ([intents] rescore, rescore.py);
        - when it is a command with a number that the audio does not tell from its usual
          confusion (4 or 40, 14 or 40), the speaker is asked (number_doubt.py; also with
          [intents] rescore): the turn finds that answer kept for the transcript.
        """
        recognizer = self._recognizer()
        if recognizer is None or not self._persona().intents:
            return None
        prompt, site = self.asr_prompt(), self._site()
        settings = self._settings

        def reconsider(first: Transcript, more: MoreReadings) -> Transcript:
            heard = hearing.reconsidered(
                first,
                more,
                recognizer,
                site,
                prompt=prompt,
                readings=settings.n_best,
                max_gap=settings.n_best_gap,
                unsure_below=settings.n_best_unsure_below,
                understand=lambda text: self._understand_now(recognizer, text, site),
                rescoring=settings.rescore,
            )
            if settings.rescore and isinstance(more, Rereading):
                self._check_numbers(recognizer, heard.text, site, more, prompt)
            return heard

        return reconsider

    def _check_numbers(
        self,
        recognizer: IntentRecognizer,
        text: str,
        site: str | None,
        more: Rereading,
        prompt: str | None,
    ) -> None:
        """A command heard with a number its confusion may stand for is kept as a question
        (blocking: on the ASR worker, the audio's encoder output at hand)."""
        found = self._understand_now(recognizer, text, site)
        again = isinstance(found, Refused) and found.reason == NUMBER_DOUBT
        if again:
            # Asked about on an earlier turn: this turn's audio decides afresh.
            found = self._understood(recognizer, text, site, keep=False)[0]
        answer = found
        if isinstance(found, Recognized):
            began = time.perf_counter()
            doubt = number_doubt.doubt(text, lambda texts: more.score(list(texts), prompt))
            if doubt is not None:
                self._log.debug(
                    "%r: %d or %d? (%.0f ms)",
                    text,
                    doubt.heard,
                    doubt.other,
                    (time.perf_counter() - began) * 1000,
                )
                choices = ((str(doubt.heard), text), (str(doubt.other), doubt.other_text))
                answer = Refused(found.intent, text, doubt.question, NUMBER_DOUBT, choices)
        if again or answer is not found:
            with self._recent_lock:
                self._recent[(text, site)] = (answer, 0.0)

    # --- recognising --------------------------------------------------------------------------

    async def understand(self, text: str) -> tuple[Understanding, float]:
        """The recognizer's answer, on a worker thread; the last few are kept, so the turn
        that follows a pause's speculative check does not match the same words again."""
        recognizer = self._recognizer()
        if recognizer is None:
            return None, 0.0
        site = self._site()
        with self._recent_lock:
            found = self._recent.get((text, site))
        if found is not None:
            return found
        return await asyncio.to_thread(self._understood, recognizer, text, site)

    def _understood(
        self, recognizer: IntentRecognizer, text: str, site: str | None, *, keep: bool = True
    ) -> tuple[Understanding, float]:
        """The recognizer's answer, kept (blocking: on a worker thread)."""
        began = time.perf_counter()
        understood = recognizer.understand(text, site)
        found = (understood, (time.perf_counter() - began) * 1000)
        if not keep:
            return found
        with self._recent_lock:
            self._recent[(text, site)] = found
            while len(self._recent) > RECENT:
                del self._recent[next(iter(self._recent))]
        return found

    def _understand_now(
        self, recognizer: IntentRecognizer, text: str, site: str | None
    ) -> Understanding:
        """As `understand`, blocking (on the ASR worker): the turn then finds it kept."""
        with self._recent_lock:
            found = self._recent.get((text, site))
        return (found or self._understood(recognizer, text, site))[0]

    async def is_command(self, text: str) -> bool:
        """Whether these words are a whole command (recognised or refused) for this session."""
        if not self.enabled:
            return False
        found, _ = await self.understand(text)
        return found is not None

    async def handle(self, text: str) -> Handled | None:
        """What to answer to `text`, or None: not a command, the model answers."""
        if not self.enabled:
            return None
        asked, self._asked = self._asked, ()
        found, match_ms = await self.understand(text)
        if asked and not isinstance(found, Recognized):
            # The answer to the question of the turn before ("4 or 40?" -> "forty"; "lock or
            # unlock?" -> "unlock it", no device called "it"); a whole command stands alone.
            chosen = settled_by(text, asked)
            recognizer = self._recognizer()
            if chosen is not None and recognizer is not None:
                # Not the kept answer: that is the question itself ("... to 4%." asked).
                found, match_ms = await asyncio.to_thread(
                    self._understood, recognizer, chosen, self._site(), keep=False
                )
        self._log.debug("intent stage: %.1f ms, %s", match_ms, type(found).__name__)
        if found is None:
            return None
        if isinstance(found, Refused):
            self._asked = found.choices
            return Handled(found.speech, match_ms=match_ms)
        handled = self._local(found) if found.local else Handled(found.speech, found)
        return Handled(handled.speech, handled.intent, handled.handled_by, handled.then, match_ms)

    # --- answering -----------------------------------------------------------------------------

    async def respond(
        self,
        ctx: TurnContext,
        text: str,
        message_id: str | None,
        *,
        speak: bool,
        sample_rate: int | None,
    ) -> bool:
        """Answer `text` if it is a command (True); False: the model answers it."""
        handled = await self.handle(text)
        if handled is None:
            return False
        await self._answer(ctx, text, message_id, handled, speak=speak, sample_rate=sample_rate)
        return True

    async def _answer(
        self,
        ctx: TurnContext,
        text: str,
        message_id: str | None,
        handled: Handled,
        *,
        speak: bool,
        sample_rate: int | None,
    ) -> None:
        """The reply events of a model's answer, with the stage's words; whole exchanges go
        into the history as `Responder.reply` commits them."""
        out, conversation = ctx.out, self._conversation
        reply_id = self._next_id("r")
        start = time.perf_counter()
        asked = conversation.add("user", text, message_id)
        status: Status = "failed"
        cancelled: asyncio.CancelledError | None = None
        first_ms: float | None = None
        spoken = None
        counting: asyncio.Task[proto.Usage | None] | None = None
        try:
            await out.emit(proto.ReplyStarted(reply_id=reply_id, message_id=message_id))
            if handled.intent is not None:
                await out.emit(self._intent_event(reply_id, handled))
            if handled.then is not None:
                out.when_sent(handled.then)
            if handled.speech:
                first_ms = (time.perf_counter() - start) * 1000
                await out.emit(proto.ReplyDelta(reply_id=reply_id, text=handled.speech))
                if self._said_usage is not None:
                    # Counted while it is spoken, as a reply of the model would be.
                    counting = asyncio.create_task(
                        self._said_usage(handled.speech, list(conversation.messages))
                    )
            phrases = _phrases(handled.speech) if speak else []
            if phrases:
                spoken = ctx.spoken = self._speaker.new_reply(reply_id)
                queue: asyncio.Queue[str | None] = asyncio.Queue()
                for phrase in [*phrases, None]:
                    queue.put_nowait(phrase)
                await self._speaker.speak(spoken, queue, sample_rate, out)
            status = "completed"
        except asyncio.CancelledError as exc:
            status, cancelled = "cancelled", exc
        finally:
            if out.discarded:
                conversation.withdraw(asked)
                if counting is not None:
                    counting.cancel()
            else:
                heard = spoken.heard() if spoken is not None and status != "completed" else None
                kept = handled.speech if heard is None else heard

                def commit() -> None:
                    conversation.commit_reply(asked, kept, reply_id)
                    self._metrics.turns.labels(status).inc()

                out.when_sent(commit)
                out.when_discarded(lambda: conversation.withdraw(asked))
                total_ms = round((time.perf_counter() - start) * 1000, 1)
                timings = proto.ReplyTimings(
                    queued_ms=0.0,
                    first_token_ms=round(first_ms, 1) if first_ms is not None else None,
                    total_ms=total_ms,
                    tokens_per_second=None,
                )
                await out.emit(
                    proto.ReplyDone(
                        reply_id=reply_id,
                        status=status,
                        text=handled.speech,
                        heard_text=heard,
                        finish_reason="intent" if status == "completed" else status,
                        usage=await counted(counting, self._log),
                        timings=timings,
                    )
                )
        if cancelled is not None:
            raise cancelled

    def _intent_event(self, reply_id: str, handled: Handled) -> proto.Intent:
        found = handled.intent
        assert found is not None
        return proto.Intent(
            reply_id=reply_id,
            name=found.intent,
            text=found.text,
            site=self._site() or self._settings.default_site,
            confidence=1.0,
            slots=[proto.IntentSlot(name=s.name, value=s.value, text=s.text) for s in found.slots],
            targets=[
                proto.IntentTarget(entity_id=t.entity_id, name=t.name, domain=t.domain, area=t.area)
                for t in found.targets
            ],
            area=found.area,
            handled_by=handled.handled_by,
            speech=handled.speech,
            match_ms=round(handled.match_ms, 2),
        )

    # --- what chinwag answers itself -----------------------------------------------------------

    def _render(self, found: Recognized, **extra: Any) -> str:
        recognizer = self._recognizer()
        if recognizer is None:
            return ""
        try:
            return recognizer.render_local(found, extra)
        except Exception as exc:  # a packaged template that wants something we lack
            self._log.debug("response of %s: %s", found.intent, exc)
            return ""

    def _local(self, found: Recognized) -> Handled:
        intent = found.intent
        values = {s.name: s.value for s in found.slots}
        now = self._clock()
        if intent in ("HassGetCurrentTime", "HassGetCurrentDate"):
            speech = self._render(found, **now_slots(self._now()))
            return Handled(speech or "Sorry, I can't tell.", found, "chinwag")
        if intent == "HassNevermind":
            return Handled("", found, "chinwag")
        if intent == "HassStartTimer":
            seconds = seconds_of(values)
            name = str(values["name"]).strip() if values.get("name") else None
            try:
                self.timers.check_room(seconds)
            except TimerLimit as exc:
                return Handled(str(exc))
            speech = self._render(found) or f"Timer set for {seconds:g} seconds"
            return Handled(speech, found, "chinwag", lambda: self._start_timer(seconds, name))
        if intent == "HassTimerStatus":
            timers = [t.status(now) for t in self._matching(values)]
            return Handled(self._render(found, timers=timers) or "No timers.", found, "chinwag")
        if intent == "HassCancelAllTimers":
            count = len(self.timers.timers)
            speech = self._render(found, canceled=count)
            return Handled(speech, found, "chinwag", self._cancel_all)
        matching = self._matching(values)
        if not matching:
            return Handled(self._error("timer_not_found"))
        if len(matching) > 1:
            return Handled(self._error("multiple_timers_matched"))
        timer = matching[0]
        action: Callable[[], None]
        if intent == "HassCancelTimer":
            action = functools.partial(self._cancel, timer)
        elif intent == "HassPauseTimer":
            action = functools.partial(self._change, TimerBook.pause, timer)
        elif intent == "HassUnpauseTimer":
            action = functools.partial(self._change, TimerBook.resume, timer)
        else:  # HassIncreaseTimer, HassDecreaseTimer
            delta = seconds_of(values) * (1 if intent == "HassIncreaseTimer" else -1)
            action = functools.partial(self._add, timer, delta)
        return Handled(self._render(found) or "Done.", found, "chinwag", action)

    def _error(self, key: str) -> str:
        recognizer = self._recognizer()
        return recognizer.responses.error(key) if recognizer is not None else "Sorry."

    def _matching(self, values: dict[str, Any]) -> list[Timer]:
        name = values.get("name")
        started = seconds_of(values, prefix="start_")
        return self.timers.find(str(name) if name else None, started or None)

    # --- timers --------------------------------------------------------------------------------

    def _start_timer(self, seconds: float, name: str | None) -> None:
        try:
            timer = self.timers.start(seconds, name, self._clock())
        except TimerLimit as exc:  # filled up since the answer was prepared
            self._log.info("timer not started: %s", exc)
            return
        self._log.debug("timer %s: %.0f s", timer.id, seconds)
        self._rearm()

    def _cancel(self, timer: Timer) -> None:
        self.timers.remove(timer)
        self._rearm()

    def _cancel_all(self) -> None:
        self.timers.timers.clear()
        self._rearm()

    def _change(self, change: Callable[[Timer, float], None], timer: Timer) -> None:
        change(timer, self._clock())
        self._rearm()

    def _add(self, timer: Timer, seconds: float) -> None:
        self.timers.add(timer, seconds, self._clock())
        self._rearm()

    def _rearm(self) -> None:
        """One task per session sleeps until the next timer is due."""
        if self._alarm is not None and not self._alarm.done():
            self._alarm.cancel()
        self._alarm = None
        deadline = self.timers.next_deadline()
        if deadline is not None and not self._closed:
            self._alarm = asyncio.create_task(self._ring(deadline), name="timers")

    async def _ring(self, deadline: float) -> None:
        await asyncio.sleep(max(0.0, deadline - self._clock()))
        done = self.timers.finished(self._clock())
        self._alarm = None
        self._rearm()
        for timer in done:
            if self._closed:
                return
            try:
                await self._emit(
                    proto.TimerFinished(
                        timer_id=timer.id,
                        name=timer.name,
                        seconds=round(timer.seconds, 1),
                        site=self._site() or self._settings.default_site,
                    )
                )
                await self._announce(finished_speech(timer))
            except Exception as exc:  # the client went away meanwhile
                self._log.info("timer %s: announcement failed: %s", timer.id, type(exc).__name__)

    async def announce(
        self, ctx: TurnContext, text: str, *, speak: bool, sample_rate: int | None
    ) -> None:
        """Say `text` as a reply of its own (a timer that finished); not kept in history."""
        out = ctx.out
        reply_id = self._next_id("r")
        status: Status = "failed"
        spoken = None
        try:
            await out.emit(proto.ReplyStarted(reply_id=reply_id))
            await out.emit(proto.ReplyDelta(reply_id=reply_id, text=text))
            if speak:
                spoken = ctx.spoken = self._speaker.new_reply(reply_id)
                queue: asyncio.Queue[str | None] = asyncio.Queue()
                for phrase in [*_phrases(text), None]:
                    queue.put_nowait(phrase)
                await self._speaker.speak(spoken, queue, sample_rate, out)
            status = "completed"
        except asyncio.CancelledError:
            status = "cancelled"
            raise
        finally:
            heard = spoken.heard() if spoken is not None and status != "completed" else None
            await out.emit(
                proto.ReplyDone(
                    reply_id=reply_id,
                    status=status,
                    text=text,
                    heard_text=heard,
                    finish_reason="timer",
                )
            )

    async def close(self) -> None:
        self._closed = True  # a timer announcing right now says nothing more
        self.timers.timers.clear()
        alarm, self._alarm = self._alarm, None
        if alarm is not None:
            alarm.cancel()
            await asyncio.gather(alarm, return_exceptions=True)


__all__ = [
    "Handled",
    "SessionIntents",
    "heard_the_prompt",
    "load_recognizer",
    "slot_variables",
]
