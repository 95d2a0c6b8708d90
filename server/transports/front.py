"""The port's front door: reads each connection's first request head and hands the connection
to the server that answers it.

Why two servers on one port: `websockets` (17) serves the WebSocket endpoints, the widget's
files, /healthz and /metrics, but refuses any request with a body (`Request.parse` raises),
and OpenAI's HTTP API is POST bodies: JSON, multipart uploads, chunked streams. aiohttp's
low-level server parses those (and keeps connections alive), so plain HTTP under /v1/ goes to
it. Routing by the first head costs one small buffer per new connection and no copy after:
the chosen protocol takes over the transport (`transport.set_protocol`) and gets the bytes
read so far, as if it had read them itself. Alternatives weighed: running everything on
aiohttp would mean rewriting the WebSocket endpoints, their backpressure and close handling
on another library; a second port would break "one port" for every deployment.

A connection whose head is not complete within HEAD_TIMEOUT_S is closed (the same bound as
websockets' opening handshake). A head over MAX_HEAD_BYTES, or one with a line longer than
aiohttp accepts, goes to websockets, which refuses it with a JSON error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

HEAD_TIMEOUT_S = 10.0
MAX_HEAD_BYTES = 16 * 1024
MAX_LINE_BYTES = 8190  # aiohttp's max_line_size and max_field_size
HTTP_PREFIX = "/v1/"

ProtocolFactory = Callable[[], asyncio.Protocol]


def wants_http(head: bytes) -> bool:
    """Whether a complete request head goes to the OpenAI HTTP server: a plain (not upgrade)
    request whose path is under /v1/, with lines aiohttp accepts."""
    lines = head.split(b"\r\n")
    if any(len(line) > MAX_LINE_BYTES for line in lines):
        return False
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        return False
    try:
        path = urlsplit(parts[1].decode("ascii")).path
    except (UnicodeDecodeError, ValueError):
        return False
    if not path.startswith(HTTP_PREFIX):
        return False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"upgrade" and b"websocket" in value.lower():
            return False
    return True


class FrontProtocol(asyncio.Protocol):
    """One new connection until its first request head is read."""

    def __init__(
        self,
        websocket: ProtocolFactory,
        http: ProtocolFactory | None,
        pending: set[FrontProtocol],
    ) -> None:
        self._websocket = websocket
        self._http = http
        self._pending = pending
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._pending.add(self)
        self._timer = asyncio.get_running_loop().call_later(HEAD_TIMEOUT_S, self.abort)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end >= 0:
            head = bytes(self._buffer[:end])
            http = self._http is not None and wants_http(head)
            self._hand_over(self._http if http and self._http else self._websocket)
        elif len(self._buffer) > MAX_HEAD_BYTES:
            self._hand_over(self._websocket)

    def eof_received(self) -> bool | None:
        self.abort()  # the client closed before sending a whole head
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._done()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()
        self._done()

    def _done(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pending.discard(self)

    def _hand_over(self, factory: ProtocolFactory) -> None:
        transport = self._transport
        assert transport is not None
        self._done()
        self._transport = None
        protocol = factory()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if not transport.is_closing():
            protocol.data_received(bytes(self._buffer))
        self._buffer.clear()
