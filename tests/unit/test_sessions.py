"""The session hub: admission, counting across transports, lookup, observer fan-out."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

import pytest

from server.config import LimitsSettings
from server.errors import ChinwagError, ErrorCode
from server.metrics import Metrics
from server.pipeline.session import Session
from server.pipeline.state import SessionState
from server.protocol import native as proto
from server.sessions import SessionHub


@dataclass
class FakeSession:
    """What the hub uses of a session."""

    transport: str = "native"
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    started: bool = False
    closed: bool = False

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True


def hub(max_sessions: int = 2) -> tuple[SessionHub, Metrics]:
    metrics = Metrics()
    return SessionHub(LimitsSettings(max_sessions=max_sessions), metrics), metrics


def as_session(fake: FakeSession) -> Session:
    return fake  # type: ignore[return-value]


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_admission_counts_every_transport_together() -> None:
    sessions, metrics = hub(max_sessions=2)
    native, mqtt = FakeSession("native"), FakeSession("mqtt")
    sessions.open(as_session(native))
    assert not sessions.full
    sessions.open(as_session(mqtt))
    assert sessions.full and sessions.count == len(sessions) == 2
    with pytest.raises(ChinwagError) as refused:
        sessions.open(as_session(FakeSession("realtime")))
    assert refused.value.code is ErrorCode.TOO_MANY_SESSIONS
    assert "2 sessions" in refused.value.message
    assert sample(metrics, "chinwag_sessions_active") == 2
    assert sample(metrics, "chinwag_sessions_opened_total", transport="native") == 1
    assert sample(metrics, "chinwag_sessions_opened_total", transport="mqtt") == 1
    assert sample(metrics, "chinwag_sessions_opened_total", transport="realtime") is None
    assert sessions.get(native.id) is as_session(native) and sessions[mqtt.id] is as_session(mqtt)
    sessions.close(as_session(native))
    sessions.close(as_session(native))  # idempotent
    assert not sessions.full and sessions.get(native.id) is None
    assert sample(metrics, "chinwag_sessions_active") == 1
    assert list(sessions) == [as_session(mqtt)]


async def test_opened_starts_closes_and_forgets_even_on_error() -> None:
    sessions, metrics = hub()
    fake = FakeSession()
    with pytest.raises(RuntimeError):
        async with sessions.opened(as_session(fake)) as session:
            assert fake.started and sessions.get(session.id) is session
            raise RuntimeError("the connection broke")
    assert fake.closed and sessions.count == 0
    assert sample(metrics, "chinwag_sessions_active") == 0


async def test_close_and_forget_forgets_even_when_closing_fails() -> None:
    sessions, metrics = hub()
    fine, broken = FakeSession(), FakeSession()

    async def fail() -> None:
        raise RuntimeError("closing failed")

    broken.close = fail  # type: ignore[method-assign]
    for fake in (fine, broken):
        sessions.open(as_session(fake))
    await sessions.close_and_forget(as_session(fine))
    with pytest.raises(RuntimeError, match="closing failed"):
        await sessions.close_and_forget(as_session(broken))
    assert fine.closed and sessions.count == 0
    assert sample(metrics, "chinwag_sessions_active") == 0


async def test_opened_refuses_when_full_without_starting() -> None:
    sessions, _ = hub(max_sessions=1)
    sessions.open(as_session(FakeSession()))
    late = FakeSession()
    with pytest.raises(ChinwagError):
        async with sessions.opened(as_session(late)):
            pass
    assert not late.started and sessions.count == 1


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def on_event(self, session: Session, event: proto.ServerEvent) -> None:
        self.seen.append((session.id, event.type))

    def on_state(self, session: Session, previous: SessionState, state: SessionState) -> None:
        self.seen.append((session.id, f"{previous}->{state}"))


class Broken:
    def on_event(self, session: Session, event: proto.ServerEvent) -> None:
        raise ValueError("observer bug")

    def on_state(self, session: Session, previous: SessionState, state: SessionState) -> None:
        raise ValueError("observer bug")


def test_observers_see_events_and_states_and_a_broken_one_harms_no_other(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sessions, _ = hub()
    first, broken, last = Recorder(), Broken(), Recorder()
    for observer in (first, broken, last):
        sessions.add_observer(observer)
    session = as_session(FakeSession())
    event = proto.ReplyDelta(reply_id="r1", text="hi")
    with caplog.at_level(logging.ERROR, logger="server.sessions"):
        sessions.notify_event(session, event)
        sessions.notify_state(session, SessionState.IDLE, SessionState.THINKING)
    expected = [(session.id, "reply.delta"), (session.id, "idle->thinking")]
    assert first.seen == expected and last.seen == expected
    assert len([r for r in caplog.records if "observer" in r.getMessage()]) == 2
    sessions.remove_observer(first)
    sessions.remove_observer(first)  # removing twice is harmless
    sessions.notify_event(session, event)
    assert len(first.seen) == 2 and len(last.seen) == 3
