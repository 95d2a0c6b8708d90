"""What a session is doing, published by the session itself (MQTT `event/state`, metrics).

Transports and observers read it; none re-derives it from the event stream.
"""

from __future__ import annotations

from enum import StrEnum


class SessionState(StrEnum):
    IDLE = "idle"  # nothing in progress
    LISTENING = "listening"  # the person is speaking (or paused mid-turn)
    THINKING = "thinking"  # a turn is being transcribed or answered, nothing spoken yet
    SPEAKING = "speaking"  # reply audio is going out
    # Nothing in progress, and the microphone hears nothing until a wake word is said.
    WAITING_FOR_WAKE_WORD = "waiting_for_wake_word"


class StateTracker:
    """The state as the client sees it, moved on by each event the session sends.

    While the person is speaking the state stays `listening`: the end of an interrupted
    reply (barge-in) does not make the session look idle. Held (speculative) output is not
    seen until released, so it moves nothing until then. With a wake word, idle is
    `waiting_for_wake_word` from `wake.waiting` until `wake.detected` (then `listening`)."""

    def __init__(self) -> None:
        self.state = SessionState.IDLE
        self._in_speech = False
        self._waiting = False  # for a wake word

    @property
    def _idle(self) -> SessionState:
        return SessionState.WAITING_FOR_WAKE_WORD if self._waiting else SessionState.IDLE

    def feed(self, kind: str) -> SessionState | None:
        """The new state if an event of this type changes it."""
        new: SessionState | None = None
        if kind == "wake.waiting":
            self._waiting = True
            if self.state == SessionState.IDLE or (
                self.state == SessionState.LISTENING and not self._in_speech
            ):
                new = self._idle
        elif kind == "wake.detected":
            self._waiting, new = False, SessionState.LISTENING
        elif kind == "speech.started":
            self._in_speech, new = True, SessionState.LISTENING
        elif kind == "speech.stopped":
            self._in_speech = False
        elif kind in ("transcript", "reply.started"):
            self._in_speech, new = False, SessionState.THINKING
        elif kind == "output_audio.start":
            new = SessionState.SPEAKING
        elif kind in ("reply.done", "output_audio.done", "speech.discarded"):
            if kind == "speech.discarded":
                self._in_speech = False
            new = SessionState.LISTENING if self._in_speech else self._idle
        if new is None or new == self.state:
            return None
        self.state = new
        return new
