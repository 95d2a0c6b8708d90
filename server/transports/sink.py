"""Sending to one WebSocket client, shared by the native and the Realtime endpoints."""

from __future__ import annotations

import asyncio
import logging

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from server.protocol import native as proto

log = logging.getLogger(__name__)

# The one rule for clients that stop reading (docs/security.md, "Load and fairness"): a client
# is dropped once something it should have taken has waited this long: an event or audio
# frame that cannot be written because its buffers are full, or a keepalive ping it has not
# answered (a client that reads nothing answers no ping, even when all its output fitted in
# the buffers). Read each time, so that tests can shorten them.
SEND_TIMEOUT_S = 30.0
# How often an idle connection is pinged, i.e. how soon a client that stopped reading is
# noticed when nothing is being sent to it.
KEEPALIVE_INTERVAL_S = 10.0
KEEPALIVE_REASON = "keepalive ping timeout"  # what websockets closes with


class WebSocketSink:
    """Delivers session events as text frames and audio as binary frames.

    `send` waits for the socket (backpressure). Once the client is gone, or has not taken a
    frame for SEND_TIMEOUT_S, the connection is dropped and later sends do nothing: the read
    loop then ends and closes the session, so the pipeline never handles transport failures.
    Either way of being dropped for not reading is logged once, at WARNING, with the peer's
    address only.
    """

    def __init__(self, connection: ServerConnection) -> None:
        self.connection = connection
        self.gone = False
        self._watcher = asyncio.get_running_loop().create_task(
            self._log_keepalive_drop(), name="sink-watch"
        )

    async def _log_keepalive_drop(self) -> None:
        await self.connection.wait_closed()
        sent = getattr(self.connection.protocol, "close_sent", None)
        if sent is not None and sent.reason == KEEPALIVE_REASON:
            self._log_drop("answered no keepalive ping")

    def _log_drop(self, why: str) -> None:
        log.warning(
            "client %s dropped: %s for %.0f s",
            self.connection.remote_address,
            why,
            SEND_TIMEOUT_S,
        )

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
            self._log_drop("took no data")
            self.connection.transport.abort()

    async def send(self, event: proto.ServerEvent) -> None:
        await self._send(proto.encode_event(event))

    async def send_text(self, text: str) -> None:
        await self._send(text)

    async def send_audio(self, pcm: bytes) -> None:
        await self._send(pcm)
