"""Turn taking: which turn runs, which is prepared, what a pause carries over.

One turn runs at a time (a typed message, an utterance's transcript and reply, a `say`).
While the person pauses, the reply to what they said so far may be prepared with its output
held (a speculation): kept when the pause turns out to end the turn, thrown away unseen when
they go on. An utterance whose answer was interrupted before a word of it was heard is
carried, and joined to what they say next: they only paused.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from server.engines.base import Float32Audio
from server.pipeline.conversation import Conversation
from server.pipeline.speaker import Speaker
from server.pipeline.turn import Turn, TurnContext, Utterance
from server.pipeline.turn_output import TurnOutput
from server.protocol import native as proto

TurnWork = Callable[[TurnContext], Coroutine[Any, Any, None]]


class TurnPhase(StrEnum):
    IDLE = "idle"  # no turn runs and none is prepared
    PREPARING = "preparing"  # a speculative turn runs with its output held
    ANSWERING = "answering"  # a turn runs (transcribing, replying or speaking)


@dataclass(frozen=True)
class Speculation:
    """A reply prepared during a pause, for the utterance so far."""

    utterance: Utterance
    turn: Turn


class TurnManager:
    def __init__(
        self,
        *,
        speaker: Speaker,
        conversation: Conversation,
        emit: Callable[[proto.ServerEvent], Awaitable[None]],
        send_audio: Callable[[bytes], Awaitable[None]],
        log: logging.LoggerAdapter[logging.Logger],
        name: str,
    ) -> None:
        self._speaker = speaker
        self._conversation = conversation
        self._emit = emit
        self._send_audio = send_audio
        self._log = log
        self._name = name
        self.turn: Turn | None = None
        self.speculation: Speculation | None = None
        self.carry: Utterance | None = None

    @property
    def phase(self) -> TurnPhase:
        if self.turn is not None and self.turn.running:
            return TurnPhase.ANSWERING
        if self.speculation is not None:
            return TurnPhase.PREPARING
        return TurnPhase.IDLE

    def output(self, *, held: bool = False) -> TurnOutput:
        return TurnOutput(self._emit, self._send_audio, held=held)

    # --- running turns ------------------------------------------------------------------

    async def start(self, work: TurnWork, utterance: Utterance | None = None) -> Turn:
        """Cancel the turn in progress, then run this one."""
        await self.cancel()
        context = TurnContext(self.output(), utterance)
        self.turn = Turn(asyncio.create_task(work(context), name=f"turn-{self._name}"), context)
        return self.turn

    async def cancel(self) -> bool:
        """Cancel the turn in progress and wait until its closing events are out.

        False when no turn was running."""
        turn = self.turn
        if turn is None or not turn.running:
            return False
        # A task cancelled before its first step never runs its body, so it would close
        # nothing it stands for (a superseded message would get no `reply.done`): let it
        # begin, then cancel it, and it answers with `status: cancelled` from `finally`.
        coro = turn.task.get_coro()
        if inspect.iscoroutine(coro) and inspect.getcoroutinestate(coro) == inspect.CORO_CREATED:
            await asyncio.sleep(0)  # its first step was scheduled first: it runs now
        turn.task.cancel()
        await asyncio.gather(turn.task, return_exceptions=True)
        return True

    # --- the person speaks --------------------------------------------------------------

    def join_carry(self, audio: Float32Audio) -> tuple[Float32Audio, str | None]:
        """An utterance interrupted by a mere pause goes in front of the next one; returns
        the audio and the id of the utterance it joins."""
        if self.carry is None:
            return audio, None
        return np.concatenate([self.carry.audio, audio]), self.carry.id

    async def barge_in(self, *, join_pause: bool) -> None:
        """The person speaks: stop talking, and keep only what they heard.

        join_pause: when the interrupted turn had not said anything yet, the person only
        paused; its utterance is joined to the one now starting."""
        turn = self.turn
        turn_running = turn is not None and turn.running
        if (
            join_pause
            and turn is not None
            and turn_running
            and not turn.context.said_something
            and turn.context.utterance is not None
        ):
            self.carry = turn.context.utterance
        playing = self._speaker.playing()
        if playing is not None:
            playing.stop()
            await self._emit(proto.OutputAudioClear(stream_id=playing.stream_id))
        if turn_running:
            await self.cancel()  # its reply.done carries heard_text
        elif playing is not None:
            # Fully generated, but the listener stopped it part-way: shorten the history.
            heard = playing.heard()
            self._conversation.replace(playing.stream_id, heard)
            await self._emit(proto.ReplyTruncated(reply_id=playing.stream_id, heard_text=heard))

    # --- speculation --------------------------------------------------------------------

    def speculate(self, utterance: Utterance, work: TurnWork) -> None:
        """Prepare the reply to `utterance` with its output held (call discard first)."""
        assert self.speculation is None, "discard the previous speculation first"
        context = TurnContext(self.output(held=True), utterance)
        task = asyncio.create_task(work(context), name=f"speculative-{self._name}")
        self.speculation = Speculation(utterance, Turn(task, context))

    async def discard_speculation(self) -> None:
        """The person went on speaking (or the audio was dropped): the prepared reply is
        thrown away and was never seen."""
        speculation, self.speculation = self.speculation, None
        if speculation is not None:
            speculation.turn.context.out.discard()
            speculation.turn.task.cancel()
            await asyncio.gather(speculation.turn.task, return_exceptions=True)

    async def confirm(self, utterance_id: str) -> bool:
        """The turn ended where the person paused: the reply prepared meanwhile becomes the
        turn and its held output goes out. False if nothing was prepared for it."""
        speculation = self.speculation
        if speculation is None or speculation.utterance.id != utterance_id:
            return False
        self._log.debug("turn confirmed: releasing the speculative reply")
        self.speculation = None
        self.carry = None
        await self.cancel()
        self.turn = speculation.turn
        await speculation.turn.context.out.release()
        return True

    async def close(self) -> None:
        await self.discard_speculation()
        await self.cancel()
