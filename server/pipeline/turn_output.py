"""Where a turn's events go: to the client at once, or held while the turn is speculative."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from server.protocol.native import ServerEvent


class TurnOutput:
    """A speculative turn (started when the person paused, before the turn was confirmed)
    writes here with held=True: nothing reaches the client until release(), and discard()
    drops it all, so a reply that is thrown away was never seen."""

    def __init__(
        self,
        emit: Callable[[ServerEvent], Awaitable[None]],
        send_audio: Callable[[bytes], Awaitable[None]],
        *,
        held: bool = False,
    ) -> None:
        self._emit = emit
        self._send_audio = send_audio
        self.held = held
        self.discarded = False
        self._buffer: list[ServerEvent | bytes] = []
        self._on_release: list[Callable[[], None]] = []
        self._on_discard: list[Callable[[], None]] = []

    def when_sent(self, callback: Callable[[], None]) -> None:
        """Call back when output really starts to go out (now, or at release)."""
        if self.held:
            self._on_release.append(callback)
        else:
            callback()

    def when_discarded(self, callback: Callable[[], None]) -> None:
        """Call back if the held output is thrown away (undo what the turn changed)."""
        if self.held and not self.discarded:
            self._on_discard.append(callback)

    async def emit(self, event: ServerEvent) -> None:
        if self.discarded:
            return
        if self.held:
            self._buffer.append(event)
        else:
            await self._emit(event)

    async def send_audio(self, pcm: bytes) -> None:
        if self.discarded:
            return
        if self.held:
            self._buffer.append(pcm)
        else:
            await self._send_audio(pcm)

    async def release(self) -> None:
        """Send what was held, in order, then pass everything straight through."""
        for callback in self._on_release:
            callback()
        self._on_release.clear()
        self._on_discard.clear()
        while self._buffer:  # the turn may add more while we await the socket
            item = self._buffer.pop(0)
            if isinstance(item, bytes):
                await self._send_audio(item)
            else:
                await self._emit(item)
        self.held = False

    def discard(self) -> None:
        self.discarded = True
        self._buffer.clear()
        self._on_release.clear()
        callbacks, self._on_discard = self._on_discard, []
        for callback in callbacks:
            callback()
