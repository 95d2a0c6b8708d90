"""The Wyoming server: Home Assistant uses chinwag for speech-to-text, text-to-speech and as a
conversation agent (docs/home-assistant.md).

A thin transport on the session core (docs/architecture.md): an asyncio TCP server, one
`Session` per connection that makes a speech request (registered with `app.hub` for as long
as the connection lasts), and one per conversation (`conversation_id`) kept in a bounded,
expiring map. Wire translation is pure code in server.protocol.wyoming (and its siblings);
the transport is the sockets, the tasks and the sessions: this module accepts connections,
announces the server (zeroconf) and expires conversations; one connection and its requests
are wyoming_connection.py, the conversations wyoming_conversations.py, the bounded event
stream both ways wyoming_stream.py.

- `describe` is answered at once, from the settings, even while the models load.
- Speech-to-text: the audio goes to the session's listener as a `transcribe` stream (push to
  talk: `audio-stop` ends the utterance; with `use_vad`, chinwag's VAD ends it and the
  transcript goes out then). Whisper's readings of silence and noise come back as "".
- Text-to-speech: the session's `Speaker` says each phrase as soon as it is complete: one
  audio segment for a `synthesize`, one per phrase in a `synthesize-start` ... `-stop`
  stream (then `synthesize-stopped`), all at the voice's rate, 16-bit mono.
- Conversation: a `transcript` is a user message to the conversation's session; the reply
  comes back as `handled` (or `not-handled`, or `error`).

A failure is answered with `error{text, code}` and ends the connection (Home Assistant opens
a connection per request and, for speech, reads until the answer or the end of the
connection). One request at a time per connection; a `describe` is answered meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import TYPE_CHECKING, Any

from server import __version__
from server.logs import log_failure
from server.protocol.wyoming_framing import MAX_HEADER_BYTES
from server.protocol.wyoming_info import build_info, voice_of
from server.transports.wyoming_connection import Connection
from server.transports.wyoming_conversations import Conversations

if TYPE_CHECKING:
    from server.app import App
    from server.config import WyomingSettings

log = logging.getLogger(__name__)

EXPIRE_EVERY_S = 30.0


class WyomingServer:
    def __init__(self, app: App, settings: WyomingSettings) -> None:
        self.app = app
        self.settings = settings
        persona = app.personas.get(settings.persona).name
        self.info_event = build_info(app.settings, persona, __version__).event()
        self.voices = [voice_of(app.settings.tts.voice_path)]
        self.conversations = Conversations(app, persona, settings)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._expiry: asyncio.Task[None] | None = None
        self._zeroconf: Any = None
        self.host = "127.0.0.1"
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(
            self._accept, host, port, limit=MAX_HEADER_BYTES + 2
        )
        self.host = host
        self.port = self._server.sockets[0].getsockname()[1]
        self._expiry = asyncio.create_task(self._expire_forever(), name="wyoming-expiry")
        log.info("Wyoming server on tcp://%s:%d", host, self.port)
        if self.settings.zeroconf:
            try:
                await self._announce()
            except Exception as exc:  # discovery is a convenience: the server still serves
                log_failure(log, "Wyoming: zeroconf announcement failed", exc)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await Connection(self, reader, writer).serve()
        finally:
            self._connections.discard(task)

    async def _expire_forever(self) -> None:
        while True:
            await asyncio.sleep(EXPIRE_EVERY_S)
            try:
                await self.conversations.expire()
            except Exception as exc:
                log_failure(log, "Wyoming: expiring conversations failed", exc)

    async def _announce(self) -> None:
        """mDNS `_wyoming._tcp.local.` so Home Assistant discovers this server."""
        from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

        address = self.host if self.host not in ("", "0.0.0.0", "::") else _lan_address()
        if address.startswith("127.") or address == "::1":
            log.warning("Wyoming: zeroconf announces %s, which only this machine reaches", address)
        name = self.settings.zeroconf_name
        info = AsyncServiceInfo(
            "_wyoming._tcp.local.",
            f"{name}._wyoming._tcp.local.",
            addresses=[socket.inet_pton(_family(address), address)],
            port=self.port,
            properties={"version": __version__},
            server=f"{socket.gethostname()}.local.",
        )
        zeroconf = AsyncZeroconf()
        await zeroconf.async_register_service(info)
        self._zeroconf = (zeroconf, info)
        log.info("Wyoming: announced as %s on %s:%d", name, address, self.port)

    async def close(self) -> None:
        if self._zeroconf is not None:
            zeroconf, info = self._zeroconf
            self._zeroconf = None
            with contextlib.suppress(Exception):
                await zeroconf.async_unregister_service(info)
                await zeroconf.async_close()
        if self._expiry is not None:
            self._expiry.cancel()
            await asyncio.gather(self._expiry, return_exceptions=True)
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self.conversations.close()
        if self._server is not None:
            await self._server.wait_closed()


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _lan_address() -> str:
    """This machine's address on the local network (a UDP connect sends no packet)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("224.0.0.251", 5353))
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"
