"""What the listener has heard of a spoken reply, so an interruption keeps only that."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SpokenPhrase:
    text: str
    start_ms: float  # position in the output audio stream
    duration_ms: float


def heard_text(phrases: list[SpokenPhrase], played_ms: float) -> str:
    """The text of the phrases played so far; a phrase cut short keeps its words pro rata."""
    heard: list[str] = []
    for phrase in phrases:
        if played_ms >= phrase.start_ms + phrase.duration_ms:
            heard.append(phrase.text)
            continue
        if played_ms > phrase.start_ms and phrase.duration_ms > 0:
            words = phrase.text.split()
            share = (played_ms - phrase.start_ms) / phrase.duration_ms
            keep = int(len(words) * share)
            if keep:
                heard.append(" ".join(words[:keep]))
        break
    return " ".join(part.strip() for part in heard if part.strip())


@dataclass
class SpokenReply:
    """One output audio stream as sent: phrases, and when playback began."""

    stream_id: str
    phrases: list[SpokenPhrase] = field(default_factory=list)
    sent_ms: float = 0.0
    first_sent_at: float | None = None  # monotonic time of the first frame
    reported_ms: float | None = None  # the client's own playback report
    reported_at: float | None = None
    stopped_at: float | None = None  # the client was told to drop the rest

    def add(self, text: str, duration_ms: float) -> None:
        self.phrases.append(SpokenPhrase(text, self.sent_ms, duration_ms))
        self.sent_ms += duration_ms

    def extend(self, duration_ms: float) -> None:
        """More audio of the last phrase (its synthesis streams)."""
        if self.phrases:
            last = self.phrases[-1]
            longer = last.duration_ms + duration_ms
            self.phrases[-1] = SpokenPhrase(last.text, last.start_ms, longer)
        self.sent_ms += duration_ms

    def mark_sent(self) -> None:
        if self.first_sent_at is None:
            self.first_sent_at = time.monotonic()

    def stop(self) -> None:
        if self.stopped_at is None:
            self.stopped_at = time.monotonic()

    def report(self, played_ms: float) -> None:
        self.reported_ms = min(played_ms, self.sent_ms)
        self.reported_at = time.monotonic()

    def played_ms(self, now: float | None = None) -> float:
        """Best estimate of what has been played: the client's report moved on by the clock,
        or, without reports, real-time playback from the first frame sent."""
        now = time.monotonic() if now is None else now
        if self.stopped_at is not None:
            now = min(now, self.stopped_at)
        if self.reported_ms is not None and self.reported_at is not None:
            played = self.reported_ms + (now - self.reported_at) * 1000
        elif self.first_sent_at is not None:
            played = (now - self.first_sent_at) * 1000
        else:
            played = 0.0
        return max(0.0, min(played, self.sent_ms))

    def still_playing(self, now: float | None = None) -> bool:
        if self.first_sent_at is None or self.stopped_at is not None:
            return False
        return self.played_ms(now) < self.sent_ms

    def heard(self, now: float | None = None) -> str:
        return heard_text(self.phrases, self.played_ms(now))
