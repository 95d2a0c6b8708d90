"""Sending to one WebSocket client, shared by the native and the Realtime endpoints."""

from __future__ import annotations

import asyncio
import logging

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from server.protocol import native as proto

log = logging.getLogger(__name__)

# A client that cannot take an event within this time is considered gone.
SEND_TIMEOUT_S = 30.0


class WebSocketSink:
    """Delivers session events as text frames and audio as binary frames.

    `send` waits for the socket (backpressure). Once the client is gone, or has not taken a
    frame for SEND_TIMEOUT_S, the connection is dropped and later sends do nothing: the read
    loop then ends and closes the session, so the pipeline never handles transport failures.
    """

    def __init__(self, connection: ServerConnection) -> None:
        self.connection = connection
        self.gone = False

    async def _send(self, frame: str | bytes) -> None:
        if self.gone:
            return
        try:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                await self.connection.send(frame)
        except ConnectionClosed:
            self.gone = True
        except TimeoutError:
            self.gone = True
            log.warning("client %s too slow to read; dropping it", self.connection.remote_address)
            self.connection.transport.abort()

    async def send(self, event: proto.ServerEvent) -> None:
        await self._send(proto.encode_event(event))

    async def send_text(self, text: str) -> None:
        await self._send(text)

    async def send_audio(self, pcm: bytes) -> None:
        await self._send(pcm)
