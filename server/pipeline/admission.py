"""Admission control: a turn that cannot start within the configured time is refused.

A reply waits for the model when every place (`[llm] parallel`) is taken by other sessions'
replies; a turn's transcription waits when other sessions' transcriptions are ahead of it on
the one Whisper worker. Past `[limits] max_reply_wait_s` of such waiting the turn is refused
with `overloaded` instead of waiting without end: the person learns at once that the server is
busy (a voice turn hears it), and the work that would have come too late is never done. Work
that can start at once is never refused, however small the limit.
"""

from __future__ import annotations

from server.errors import ChinwagError, ErrorCode

# Said (synthesized like any reply) to a voice turn that was refused.
APOLOGY = "Sorry, I'm busy with other people right now. Please ask me again in a moment."


class WaitLimit:
    """The rule, without clocks or threads: `max_wait_s` 0 turns it off."""

    def __init__(self, max_wait_s: float) -> None:
        self.max_wait_s = max_wait_s

    def deadline(self, submitted: float) -> float | None:
        """When work submitted at `submitted` (a monotonic time) must have started."""
        return submitted + self.max_wait_s if self.max_wait_s > 0 else None

    def expired(self, deadline: float | None, now: float) -> bool:
        """Whether work still waiting at `now` has waited too long."""
        return deadline is not None and now >= deadline

    def error(self, what: str) -> ChinwagError:
        return overloaded(what, self.max_wait_s)


def overloaded(what: str, max_wait_s: float) -> ChinwagError:
    return ChinwagError(
        ErrorCode.OVERLOADED,
        f"the server is busy: {what} did not start within {max_wait_s:g} s; try again shortly",
    )
