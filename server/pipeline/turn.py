"""The records of one turn: what it answers, where its output goes, what it has said."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from server.engines.base import Float32Audio
from server.pipeline.playback import SpokenReply
from server.pipeline.turn_output import TurnOutput


@dataclass(frozen=True)
class Utterance:
    """What the person said in one go: its id (`speech.started`) and 16 kHz audio."""

    id: str
    audio: Float32Audio = field(repr=False, compare=False)


@dataclass
class TurnContext:
    """Given to a turn's work: its output, and where it records the reply it speaks."""

    out: TurnOutput
    # The utterance it answers: joined to the next one when the person only paused.
    utterance: Utterance | None = None
    spoken: SpokenReply | None = None  # set when its reply begins to speak

    @property
    def said_something(self) -> bool:
        """Some of its reply's audio has reached the client."""
        return self.spoken is not None and self.spoken.first_sent_at is not None


@dataclass
class Turn:
    """A turn's task and context. A speculative turn holds its output until confirmed."""

    task: asyncio.Task[None]
    context: TurnContext

    @property
    def running(self) -> bool:
        return not self.task.done()
