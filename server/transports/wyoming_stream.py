"""Wyoming events over one TCP connection, both ways, bounded and with a send timeout.

`EventStream` reads events with their sizes checked from the header before anything else is
read (server/protocol/wyoming_framing.py) and writes one event at a time, dropping a peer that
does not read within `SEND_TIMEOUT_S`; `Gone` is how a write says the peer is no longer there.
Separate from the server because the satellites chinwag drives
(server/transports/wyoming_satellite.py) talk over the same kind of stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from wyoming.event import Event, async_write_event

from server.errors import ChinwagError, ChinwagException, ErrorCode
from server.protocol.wyoming_framing import build_event, parse_header

# Logs as the Wyoming server, as before this module was split from it (one name to filter on).
log = logging.getLogger("server.transports.wyoming")

# A client that cannot take an event within this time is considered gone.
SEND_TIMEOUT_S = 30.0


class Gone(ChinwagException):
    """The peer went away (or stopped reading); the connection ends."""


class EventStream:
    """Wyoming events over one TCP connection, both ways: reads bounded by `max_event_bytes`
    (checked from the header before anything else is read), writes one at a time with a
    timeout. Used by the server's connections and by the satellites chinwag drives."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        max_event_bytes: int,
        peer: str,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.max_event_bytes = max_event_bytes
        self.peer = peer
        self.gone = False
        self._write_lock = asyncio.Lock()

    async def read(self) -> Event | None:
        """The next event; None when the peer closed the connection. ChinwagError for an
        event that is too large or not Wyoming."""
        try:
            line = await self.reader.readline()
            if not line:
                return None
            header = parse_header(line, self.max_event_bytes)
            data = await self.reader.readexactly(header.data_length) if header.data_length else b""
            payload = (
                await self.reader.readexactly(header.payload_length)
                if header.payload_length
                else b""
            )
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        except ValueError as exc:  # readline: a line over the stream's limit
            raise ChinwagError(ErrorCode.FRAME_TOO_LARGE, "event header too long") from exc
        return build_event(header, data, payload)

    async def write(self, event: Event) -> None:
        """Send one event; a peer that is gone or too slow raises Gone (and is dropped)."""
        if self.gone:
            raise Gone
        async with self._write_lock:
            try:
                async with asyncio.timeout(SEND_TIMEOUT_S):
                    await async_write_event(event, self.writer)
            except TimeoutError:
                log.warning("Wyoming peer %s too slow to read; dropping it", self.peer)
                self.drop()
                raise Gone from None
            except (ConnectionError, RuntimeError) as exc:
                self.drop()
                raise Gone from exc

    def drop(self) -> None:
        self.gone = True
        self.writer.transport.abort()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()
