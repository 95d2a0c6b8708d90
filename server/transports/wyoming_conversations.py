"""Home Assistant's conversations with chinwag over Wyoming, one session each.

A `transcript` sent to the Wyoming server is a user message in a conversation named by its
`conversation_id`; `Conversations` keeps a session with its history for each, in a bounded
map that closes the least recently used and the idle ones, and collects each reply through a
`ConversationSink` as an `Answer`. Separate from the connections
(server/transports/wyoming_connection.py) because a conversation outlives the connection that
asked in it: Home Assistant opens a connection per request.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from server.errors import ChinwagError, ErrorCode
from server.pipeline.session import Session
from server.protocol import native as proto

if TYPE_CHECKING:
    from server.app import App
    from server.config import WyomingSettings


@dataclass
class Answer:
    text: str = ""
    error: ChinwagError | None = None


class ConversationSink:
    """A conversation session's EventSink: collects the reply of the message asked."""

    def __init__(self) -> None:
        self.waiter: asyncio.Future[Answer] | None = None
        self._error: ChinwagError | None = None

    async def send(self, event: proto.ServerEvent) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if isinstance(event, proto.Error):
            self._error = proto.error_of(event)
        elif isinstance(event, proto.ReplyDone):
            error, self._error = self._error, None
            if event.status == "completed" or (error is None and event.text.strip()):
                waiter.set_result(Answer(event.text))
            else:
                waiter.set_result(
                    Answer(
                        error=error
                        or ChinwagError(ErrorCode.INTERNAL_ERROR, f"the reply {event.status}")
                    )
                )

    async def send_audio(self, pcm: bytes) -> None:
        pass  # conversation replies are text; Home Assistant speaks them with its TTS


@dataclass
class Conversation:
    session: Session
    sink: ConversationSink
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_used: float = field(default_factory=time.monotonic)


class Conversations:
    """Home Assistant's conversations by `conversation_id`, each a session with its history:
    at most `max_conversations`, the least recently used closed first, and any idle for
    `conversation_idle_s` closed. A request without an id gets a session of its own."""

    def __init__(self, app: App, persona: str, settings: WyomingSettings) -> None:
        self.app = app
        self.persona = persona
        self.max = settings.max_conversations
        self.idle_s = settings.conversation_idle_s
        self._items: OrderedDict[str, Conversation] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, conversation_id: str) -> Conversation | None:
        return self._items.get(conversation_id)

    async def ask(self, conversation_id: str | None, text: str) -> Answer:
        """The assistant's answer to `text` in this conversation (one at a time in each)."""
        await self.expire()
        if conversation_id is None:
            conversation = await self._open()
            try:
                return await self._ask(conversation, text)
            finally:
                await self._close(conversation)
        found = self._items.get(conversation_id)
        if found is None:
            await self._make_room()
            opened = await self._open()
            found = self._items.get(conversation_id)
            if found is not None:  # opened meanwhile by a concurrent request
                await self._close(opened)
            else:
                found = self._items[conversation_id] = opened
        conversation = found
        self._items.move_to_end(conversation_id)
        return await self._ask(conversation, text)

    async def _ask(self, conversation: Conversation, text: str) -> Answer:
        async with conversation.lock:
            conversation.last_used = time.monotonic()
            waiter: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
            conversation.sink.waiter = waiter
            session = conversation.session
            try:
                await session.handle(proto.UserMessage(text=text))
                return await waiter
            except asyncio.CancelledError:
                # The client went away: stop the reply (what was said so far stays).
                await session.cancel_turn()
                raise
            finally:
                conversation.sink.waiter = None
                conversation.last_used = time.monotonic()

    async def _open(self) -> Conversation:
        sink = ConversationSink()
        session = Session(self.app, sink, transport="wyoming")
        self.app.hub.open(session)
        try:
            await session.start()
            await session.handle(proto.SessionStart(persona=self.persona))
        except BaseException:
            await self._close(Conversation(session, sink))
            raise
        return Conversation(session, sink)

    async def _close(self, conversation: Conversation) -> None:
        await self.app.hub.close_and_forget(conversation.session)

    async def _make_room(self) -> None:
        while len(self._items) >= self.max or (self.app.hub.full and self._items):
            for cid, conversation in self._items.items():
                if not conversation.lock.locked():
                    del self._items[cid]
                    await self._close(conversation)
                    break
            else:
                raise self.app.hub.too_many()

    async def expire(self) -> None:
        now = time.monotonic()
        for cid, conversation in list(self._items.items()):
            idle = now - conversation.last_used > self.idle_s
            if idle and not conversation.lock.locked() and self._items.get(cid) is conversation:
                del self._items[cid]
                await self._close(conversation)

    async def close(self) -> None:
        items, self._items = list(self._items.values()), OrderedDict()
        for conversation in items:
            await self._close(conversation)
