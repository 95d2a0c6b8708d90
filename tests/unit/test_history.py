import pytest

from server.engines.base import ChatMessage
from server.errors import ChinwagError, ErrorCode
from server.pipeline.history import messages_to_drop


def words(messages: list[ChatMessage]) -> int:
    return sum(len(m.content.split()) + 4 for m in messages)


def conversation(n: int) -> list[ChatMessage]:
    history: list[ChatMessage] = []
    for i in range(n):
        history.append(ChatMessage("user", f"question {i} " + "word " * 5))
        history.append(ChatMessage("assistant", f"answer {i} " + "word " * 5))
    history.append(ChatMessage("user", "last question"))
    return history


def test_nothing_dropped_when_it_fits() -> None:
    assert messages_to_drop("sys", conversation(3), lambda m: words(m) <= 1000) == 0


def test_oldest_exchanges_dropped_first_system_kept() -> None:
    history = conversation(5)
    seen: list[list[ChatMessage]] = []

    def fits(messages: list[ChatMessage]) -> bool:
        seen.append(messages)
        return words(messages) <= 60

    cut = messages_to_drop("be nice", history, fits)
    assert cut > 0 and cut % 2 == 0  # whole exchanges only
    kept = history[cut:]
    assert kept[0].role == "user"
    assert kept[-1].content == "last question"
    assert words([ChatMessage("system", "be nice"), *kept]) <= 60
    # Dropping one exchange fewer would not have fitted: the cut is minimal.
    assert words([ChatMessage("system", "be nice"), *history[cut - 2 :]]) > 60
    assert all(m[0] == ChatMessage("system", "be nice") for m in seen)


def test_overflow_when_last_message_alone_is_too_big() -> None:
    with pytest.raises(ChinwagError) as info:
        messages_to_drop("sys", [ChatMessage("user", "w " * 100)], lambda m: words(m) <= 20)
    assert info.value.code == ErrorCode.CONTEXT_OVERFLOW


def test_cancelled_turn_without_reply_keeps_alternation() -> None:
    # A user message with no answer followed by another user message is still droppable.
    history = [
        ChatMessage("user", "a " * 10),
        ChatMessage("user", "b " * 10),
        ChatMessage("assistant", "c " * 10),
        ChatMessage("user", "d"),
    ]
    cut = messages_to_drop("s", history, lambda m: words(m) <= 30)
    assert history[cut:][-1].content == "d"
