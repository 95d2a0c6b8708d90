"""`/` and `/ws`: chinwag's native WebSocket protocol (docs/protocol.md).

A thin transport: text frames are decoded by `server.protocol.native` into session messages,
binary frames are microphone audio; the session's events go back through a `WebSocketSink`.
"""

from __future__ import annotations

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from server.app import App
from server.errors import ChinwagError
from server.pipeline.session import Session
from server.protocol import json_checks
from server.protocol import native as proto
from server.transports.sink import WebSocketSink


async def serve(app: App, connection: ServerConnection) -> None:
    """Run one native connection's session until the client goes."""
    session = Session(app, WebSocketSink(connection), transport="native")
    session.log.info("connected from %s", connection.remote_address)
    try:
        if app.hub.full:  # it filled up since the handshake was accepted
            await session.send_error(app.hub.too_many())
            await connection.close(CloseCode.TRY_AGAIN_LATER, "too many sessions")
            return
        async with app.hub.opened(session):
            await _read_loop(app, connection, session)
    except ConnectionClosed:
        pass
    finally:
        session.log.info("disconnected")


async def _read_loop(app: App, connection: ServerConnection, session: Session) -> None:
    limits = app.settings.limits
    async for frame in connection:
        try:
            json_checks.check_frame_size(frame, limits.max_message_bytes)
            if isinstance(frame, bytes):
                await session.handle_audio(frame)
                continue
            message = proto.decode_client_message(frame, limits.max_text_chars)
        except ChinwagError as exc:
            await session.send_error(exc)
            continue
        await session.handle(message)
