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
