"""The one place where every transport registers its sessions.

The hub admits sessions against `[limits] max_sessions` (all transports together), counts them
for /healthz and /metrics, finds them by id, and fans each session's events and state changes
out to observers (the MQTT bridge publishes them for home automation).

A transport registers a session for as long as it serves it:

    async with app.hub.opened(session):   # admits, then session.start()
        ...                               # read the client's messages
                                          # then session.close(), and it is gone from the hub

or, for sessions that outlive one connection (MQTT sites, Wyoming conversations),
`hub.open(session)` and `session.start()`, then `hub.close_and_forget(session)`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Protocol

from server.errors import ChinwagError, ErrorCode
from server.logs import log_failure

if TYPE_CHECKING:
    from server.config import LimitsSettings
    from server.metrics import Metrics
    from server.pipeline.session import Session
    from server.pipeline.state import SessionState
    from server.protocol.native import ServerEvent

log = logging.getLogger(__name__)


class SessionObserver(Protocol):
    """Sees every session's events and state changes. Both calls come on the event loop and
    must not block (queue work, never await)."""

    def on_event(self, session: Session, event: ServerEvent) -> None: ...

    def on_state(self, session: Session, previous: SessionState, state: SessionState) -> None: ...


class SessionHub:
    def __init__(self, limits: LimitsSettings, metrics: Metrics) -> None:
        self._limits = limits
        self._metrics = metrics
        self._sessions: dict[str, Session] = {}
        self._observers: list[SessionObserver] = []

    # --- admission and counting ------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._sessions.values()))

    @property
    def count(self) -> int:
        return len(self._sessions)

    @property
    def full(self) -> bool:
        """Whether a new session would be refused (the HTTP handshake answers 503)."""
        return len(self._sessions) >= self._limits.max_sessions

    def too_many(self) -> ChinwagError:
        return ChinwagError(
            ErrorCode.TOO_MANY_SESSIONS,
            f"the server holds {len(self._sessions)} sessions, its limit",
        )

    def open(self, session: Session) -> None:
        """Admit and register a session; ChinwagError(TOO_MANY_SESSIONS) when full."""
        if session.id in self._sessions:
            return
        if self.full:
            raise self.too_many()
        self._sessions[session.id] = session
        self._metrics.sessions_total.labels(session.transport).inc()
        self._metrics.sessions.set(len(self._sessions))

    def close(self, session: Session) -> None:
        """Forget a session (idempotent)."""
        if self._sessions.pop(session.id, None) is not None:
            self._metrics.sessions.set(len(self._sessions))

    async def close_and_forget(self, session: Session) -> None:
        """Close a session and forget it (forgotten even if closing fails)."""
        try:
            await session.close()
        finally:
            self.close(session)

    @asynccontextmanager
    async def opened(self, session: Session) -> AsyncIterator[Session]:
        """Admit the session and start it; close and forget it however the block ends."""
        self.open(session)
        try:
            await session.start()
            yield session
        finally:
            await self.close_and_forget(session)

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def __getitem__(self, session_id: str) -> Session:
        return self._sessions[session_id]

    # --- observers -------------------------------------------------------------------------

    def add_observer(self, observer: SessionObserver) -> None:
        self._observers.append(observer)

    def remove_observer(self, observer: SessionObserver) -> None:
        if observer in self._observers:
            self._observers.remove(observer)

    def notify_event(self, session: Session, event: ServerEvent) -> None:
        """Called by the session for every event it sends."""
        for observer in tuple(self._observers):
            try:
                observer.on_event(session, event)
            except Exception as exc:  # one broken observer must not break the others
                log_failure(log, "observer %r failed on %s", exc, observer, event.type)

    def notify_state(self, session: Session, previous: SessionState, state: SessionState) -> None:
        """Called by the session when its state changes."""
        for observer in tuple(self._observers):
            try:
                observer.on_state(session, previous, state)
            except Exception as exc:
                log_failure(log, "observer %r failed on state %s", exc, observer, state)
