"""The conversation history and the session's published state: plain data, no I/O."""

from __future__ import annotations

from server.pipeline.conversation import Conversation
from server.pipeline.state import SessionState, StateTracker


def test_edit_by_id() -> None:
    c = Conversation()
    c.add("user", "hi", "m1")
    c.add("assistant", "hello there", "r1")
    assert c.replace("r1", "hello") and c.messages[1].content == "hello"
    assert c.messages[1].role == "assistant" and c.messages[1].id == "r1"
    assert not c.replace("nope", "x")
    assert c.delete("m1") and [m.id for m in c.messages] == ["r1"]
    assert not c.delete("m1")


def test_commit_keeps_whole_exchanges_only() -> None:
    c = Conversation()
    asked = c.add("user", "tell me a story", "u1")
    c.commit_reply(asked, "  ", "r1")  # nothing was heard: the question goes too
    assert c.messages == []
    asked = c.add("user", "again", "u2")
    c.commit_reply(asked, "Once upon", "r2")
    assert [(m.role, m.content) for m in c.messages] == [
        ("user", "again"),
        ("assistant", "Once upon"),
    ]


def test_withdraw_and_drop_oldest() -> None:
    c = Conversation()
    for i in range(3):
        c.add("user", f"q{i}", f"u{i}")
    c.withdraw(c.messages[-1])
    c.withdraw(None)
    assert [m.id for m in c.messages] == ["u0", "u1"]
    c.drop_oldest(1)
    assert [m.id for m in c.messages] == ["u1"]


def feed(tracker: StateTracker, *kinds: str) -> list[SessionState | None]:
    return [tracker.feed(kind) for kind in kinds]


def test_state_follows_a_spoken_turn() -> None:
    t = StateTracker()
    changes = feed(
        t,
        "speech.started",
        "speech.stopped",
        "transcript",
        "reply.started",
        "reply.delta",
        "output_audio.start",
        "output_audio.done",
        "reply.done",
    )
    assert [c for c in changes if c is not None] == [
        SessionState.LISTENING,
        SessionState.THINKING,
        SessionState.SPEAKING,
        SessionState.IDLE,
    ]


def test_barge_in_stays_listening() -> None:
    t = StateTracker()
    feed(t, "speech.started", "speech.stopped", "transcript", "output_audio.start")
    assert t.state is SessionState.SPEAKING
    assert t.feed("speech.started") is SessionState.LISTENING
    # The interrupted reply ends while the person speaks: still listening, not idle.
    assert feed(t, "output_audio.done", "reply.done") == [None, None]
    assert t.state.value == "listening"
    assert t.feed("speech.discarded") is SessionState.IDLE
