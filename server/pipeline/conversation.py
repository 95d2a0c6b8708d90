"""One session's conversation history: plain data, no I/O, no asyncio."""

from __future__ import annotations

from server.engines.base import ChatMessage, Role


class Conversation:
    """The messages the model answers, oldest first.

    Editing by id serves the OpenAI Realtime transport (items are added, deleted and
    truncated by the client); `commit_reply` keeps whole exchanges only.
    """

    def __init__(self) -> None:
        self.messages: list[ChatMessage] = []

    def __len__(self) -> int:
        return len(self.messages)

    def add(self, role: Role, text: str, message_id: str | None = None) -> ChatMessage:
        message = ChatMessage(role, text, message_id)
        self.messages.append(message)
        return message

    def clear(self) -> None:
        self.messages.clear()

    def delete(self, message_id: str) -> bool:
        for index, message in enumerate(self.messages):
            if message.id == message_id:
                del self.messages[index]
                return True
        return False

    def replace(self, message_id: str, text: str) -> bool:
        for index, message in enumerate(self.messages):
            if message.id == message_id:
                self.messages[index] = ChatMessage(message.role, text, message_id)
                return True
        return False

    def drop_oldest(self, count: int) -> None:
        """Leading messages the model's context could no longer hold."""
        del self.messages[:count]

    def withdraw(self, asked: ChatMessage | None) -> None:
        """A question whose reply never happened (a speculative reply thrown away)."""
        if asked is not None and asked in self.messages:
            self.messages.remove(asked)

    def commit_reply(self, asked: ChatMessage | None, kept: str, reply_id: str) -> None:
        """The reply as the listener got it (all of it, or what was heard of it).

        Nothing kept: the question goes too, so the history holds whole exchanges only."""
        if kept.strip():
            self.messages.append(ChatMessage("assistant", kept, reply_id))
        elif asked is not None and self.messages and self.messages[-1] is asked:
            self.messages.pop()
