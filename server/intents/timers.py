"""Timers a session keeps: pure bookkeeping on a clock passed in (no asyncio, no sleeping).

The session side (server/pipeline/intents.py) schedules the wake-ups and announces the timers
that finish; here are the durations, the remaining time, pausing, adding time, and which
timer a request means ("cancel the pasta timer", "cancel the 5 minute timer").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_TIMER_S = 24 * 3600


@dataclass
class Timer:
    id: str
    seconds: float  # as asked
    name: str | None
    started_at: float
    # The deadline while running; while paused, None and `left_s` holds the time left.
    ends_at: float | None
    left_s: float = 0.0

    @property
    def running(self) -> bool:
        return self.ends_at is not None

    def remaining(self, now: float) -> float:
        return max(0.0, self.ends_at - now) if self.ends_at is not None else self.left_s

    def describe(self) -> str:
        """'5 minute', '1 hour and 30 minute', '10 second' (as in 'your 5 minute timer')."""
        return duration_words(self.seconds, adjective=True)

    def status(self, now: float) -> dict[str, Any]:
        """What Home Assistant's HassTimerStatus template reads of a timer."""
        left = round(self.remaining(now))
        start = round(self.seconds)
        return {
            "id": self.id,
            "name": self.name,
            "area": None,
            "is_active": self.running,
            "total_seconds_left": left,
            "rounded_hours_left": left // 3600,
            "rounded_minutes_left": (left % 3600) // 60,
            "rounded_seconds_left": left % 60,
            "start_hours": start // 3600,
            "start_minutes": (start % 3600) // 60,
            "start_seconds": start % 60,
        }


def duration_words(seconds: float, *, adjective: bool = False) -> str:
    whole = round(seconds)
    parts = []
    for unit, size in (("hour", 3600), ("minute", 60), ("second", 1)):
        count, whole = divmod(whole, size)
        if count:
            plural = "" if adjective or count == 1 else "s"
            parts.append(f"{count} {unit}{plural}")
    if not parts:
        return "0 second" if adjective else "0 seconds"
    return " and ".join([", ".join(parts[:-1]), parts[-1]] if len(parts) > 1 else parts)


def seconds_of(values: dict[str, Any], prefix: str = "") -> float:
    """hours/minutes/seconds slot values (start_hours... with prefix="start_") in seconds."""
    total = 0.0
    for unit, size in (("hours", 3600), ("minutes", 60), ("seconds", 1)):
        value = values.get(prefix + unit)
        if isinstance(value, int | float):
            total += float(value) * size
        elif isinstance(value, str):
            try:
                total += float(value) * size
            except ValueError:
                continue
    return total


class TimerLimit(Exception):
    """Too many timers, or one too long: the message says which."""


@dataclass
class TimerBook:
    """The timers of one session: at most `max_timers`, each at most `max_seconds`."""

    max_timers: int = 8
    max_seconds: float = MAX_TIMER_S
    timers: dict[str, Timer] = field(default_factory=dict)
    _count: int = 0

    def start(self, seconds: float, name: str | None, now: float) -> Timer:
        self.check_room(seconds)
        self._count += 1
        timer = Timer(f"t{self._count}", seconds, name, now, now + seconds)
        self.timers[timer.id] = timer
        return timer

    def check_room(self, seconds: float) -> None:
        """TimerLimit (with what to say) unless a timer of this length can start."""
        if seconds <= 0:
            raise TimerLimit("A timer needs a length.")
        if seconds > self.max_seconds:
            raise TimerLimit(
                f"Sorry, a timer can be at most {duration_words(self.max_seconds)} long."
            )
        if len(self.timers) >= self.max_timers:
            raise TimerLimit(f"Sorry, I can only keep {self.max_timers} timers at once.")

    def find(self, name: str | None, seconds: float | None) -> list[Timer]:
        """The timers a request means: by name, by the length asked, or the only one."""
        timers = list(self.timers.values())
        if name:
            wanted = " ".join(name.lower().split())
            return [t for t in timers if t.name and " ".join(t.name.lower().split()) == wanted]
        if seconds:
            return [t for t in timers if round(t.seconds) == round(seconds)]
        return timers

    def remove(self, timer: Timer) -> None:
        self.timers.pop(timer.id, None)

    def finished(self, now: float) -> list[Timer]:
        """Remove and return the timers whose time is up."""
        done = [t for t in self.timers.values() if t.ends_at is not None and t.ends_at <= now]
        for timer in done:
            self.remove(timer)
        return done

    def next_deadline(self) -> float | None:
        deadlines = [t.ends_at for t in self.timers.values() if t.ends_at is not None]
        return min(deadlines) if deadlines else None

    @staticmethod
    def pause(timer: Timer, now: float) -> None:
        if timer.ends_at is not None:
            timer.left_s, timer.ends_at = timer.remaining(now), None

    @staticmethod
    def resume(timer: Timer, now: float) -> None:
        if timer.ends_at is None:
            timer.ends_at = now + timer.left_s

    def add(self, timer: Timer, seconds: float, now: float) -> None:
        """Add (or, negative, take away) time; never below zero nor past the limit."""
        left = min(max(0.0, timer.remaining(now) + seconds), self.max_seconds)
        timer.seconds = max(0.0, timer.seconds + seconds)
        if timer.ends_at is not None:
            timer.ends_at = now + left
        else:
            timer.left_s = left


def finished_speech(timer: Timer) -> str:
    if timer.name:
        return f"Your {timer.name} timer is done."
    return f"Your {timer.describe()} timer is done."
