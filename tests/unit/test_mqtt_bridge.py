"""The MQTT bridge as an observer of the session hub, without a broker."""

from __future__ import annotations

import json
from types import SimpleNamespace

from server.app import App
from server.pipeline.session import Session
from server.pipeline.state import SessionState
from server.prompts import PersonaLibrary
from server.protocol import native as proto
from server.transports.mqtt import MqttBridge, Outgoing
from tests.conftest import make_settings


def bridge() -> MqttBridge:
    settings = make_settings(mqtt={"url": "mqtt://127.0.0.1:1"})
    personas = PersonaLibrary.load(settings.prompts.directory, settings.prompts.default_persona)
    made = MqttBridge(App(settings=settings, personas=personas), settings.mqtt)
    made._connected = True  # as while the broker is up
    return made


def session(site: str | None) -> Session:
    return SimpleNamespace(id="abc", site=site)  # type: ignore[return-value]


def queued(made: MqttBridge) -> list[Outgoing]:
    items = []
    while not made._events._queue.empty():
        items.append(made._events._queue.get_nowait())
    return items


def test_the_session_state_is_published_as_reported() -> None:
    made = bridge()
    made.on_state(session("kitchen"), SessionState.THINKING, SessionState.SPEAKING)
    (state,) = queued(made)
    assert state.topic == "chinwag/kitchen/event/state" and state.qos == 1
    assert json.loads(state.payload) == {
        "state": "speaking",
        "previous": "thinking",
        "session_id": "abc",
    }
    # Sessions without a (valid) site, or a broker that is away: nothing.
    made.on_state(session(None), SessionState.IDLE, SessionState.THINKING)
    made.on_state(session("a/b"), SessionState.IDLE, SessionState.THINKING)
    made._connected = False
    made.on_state(session("kitchen"), SessionState.SPEAKING, SessionState.IDLE)
    assert queued(made) == []


def test_events_and_hermes_text_captured() -> None:
    made = bridge()
    transcript = proto.Transcript(
        utterance_id="u1", text=" Hi. ", duration_ms=900, transcribe_ms=80
    )
    made.on_event(session("kitchen"), transcript)
    event, captured = queued(made)
    assert event.topic == "chinwag/kitchen/event/transcript" and event.qos == 0
    assert json.loads(event.payload) == {
        "type": "transcript",
        "session_id": "abc",
        "utterance_id": "u1",
        "text": " Hi. ",
        "duration_ms": 900,
        "transcribe_ms": 80,
    }
    assert captured.topic == "hermes/asr/textCaptured"
    assert json.loads(captured.payload)["siteId"] == "kitchen"


def test_the_bridge_observes_the_hub_only_while_it_runs() -> None:
    made = bridge()
    hub = made.app.hub
    hub.add_observer(made)
    hub.notify_state(session("hall"), SessionState.IDLE, SessionState.LISTENING)
    hub.remove_observer(made)
    hub.notify_state(session("hall"), SessionState.LISTENING, SessionState.IDLE)
    assert [json.loads(o.payload)["state"] for o in queued(made)] == ["listening"]
