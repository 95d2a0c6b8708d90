"""Server-sent events, decoded: bytes in as they arrive, events out. No I/O.

The OpenAI-compatible servers stream chat completions as `text/event-stream`
(https://html.spec.whatwg.org/multipage/server-sent-events.html): `data:` lines, a blank line
ends an event, `:` lines are comments (keep-alive pings). aiohttp has no SSE client and the
client libraries that add one (aiohttp-sse-client, httpx-sse) pull in a second HTTP stack or
are not kept up, while the format is twenty lines to parse; so it is parsed here, incrementally
and with a bound on how much one event may hold.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

# Largest event (all its lines) kept while waiting for its end: a chat chunk is well under
# 1 KB; a server that never ends an event must not grow our memory.
MAX_EVENT_BYTES = 1024 * 1024


class SseError(ValueError):
    """The stream is not server-sent events we can read (an event over MAX_EVENT_BYTES)."""


@dataclass(frozen=True)
class SseEvent:
    data: str
    event: str = "message"
    id: str | None = None


class SseDecoder:
    """Feed it the response body in chunks of any size; it returns the events completed."""

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._max = max_event_bytes
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""  # text not yet ended by a line break
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self._size = 0  # characters held for the event under way
        self._started = False  # a byte-order mark is skipped at the very start only

    def feed(self, chunk: bytes) -> list[SseEvent]:
        text = self._utf8.decode(chunk)
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        buffer = self._buffer + text
        events: list[SseEvent] = []
        start = 0
        while True:
            cr, lf = buffer.find("\r", start), buffer.find("\n", start)
            ends = [i for i in (cr, lf) if i >= 0]
            if not ends:
                break
            end = min(ends)
            if buffer[end] == "\r":
                if end + 1 == len(buffer):
                    break  # "\r" last: a "\n" may follow in the next chunk
                after = end + 2 if buffer[end + 1] == "\n" else end + 1
            else:
                after = end + 1
            event = self._line_done(buffer[start:end])
            if event is not None:
                events.append(event)
            start = after
        self._buffer = buffer[start:]
        if self._size + len(self._buffer) > self._max:
            raise SseError(f"an event of over {self._max} characters")
        return events

    def _line_done(self, line: str) -> SseEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment: keep-alive
        self._size += len(line) + 1
        if self._size > self._max:
            raise SseError(f"an event of over {self._max} characters")
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\x00" not in value:
            self._id = value
        # "retry" and unknown fields: nothing to do for a one-shot stream.
        return None

    def _dispatch(self) -> SseEvent | None:
        data, event = self._data, self._event
        self._data, self._event, self._size = [], "", 0
        if not data:
            return None
        return SseEvent(data="\n".join(data), event=event or "message", id=self._id)
