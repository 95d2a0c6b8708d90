"""The MQTT bridge: devices on the local network talk to chinwag through their broker.

A thin transport, like the WebSocket one: each site (a device or room, one topic level) gets
one `Session` whose sink publishes to the site's topics, and commands become session calls.
An observer publishes what happens in every session that has a site, whatever its transport.
Topics, payloads, the state machine and limits are documented in docs/mqtt.md.

Uses aiomqtt, the maintained successor of asyncio-mqtt (same authors).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import random
import uuid
import wave
import weakref
from collections import OrderedDict
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit

import aiomqtt

from server.app import App
from server.config import ConfigError, MqttSettings
from server.errors import ChinwagError, ErrorCode
from server.pipeline.session import Session
from server.pipeline.text_split import PhraseSplitter, speakable
from server.protocol import native as proto

log = logging.getLogger(__name__)

INITIAL_BACKOFF_S = 0.5
KEEPALIVE_S = 30
# Incoming messages aiomqtt holds while we handle one (or wait for the models); beyond this
# it drops them, so a flood cannot grow memory.
INCOMING_QUEUE = 64
# One say's WAV; 4000 characters of text make about 10 MB at 22050 Hz.
MAX_WAV_BYTES = 32 * 1024 * 1024
# Payload bytes one outgoing queue may hold, besides its count of messages.
MAX_QUEUED_BYTES = 64 * 1024 * 1024
# Hermes say requests whose audio has not come back yet (a failed synthesis never answers).
MAX_PENDING_HERMES = 64
SHUTDOWN_PUBLISH_TIMEOUT_S = 2.0
PUBLISH_RETRY_S = 1.0
MAX_SITE_CHARS = 128

HERMES_SAY = "hermes/tts/say"
HERMES_SAY_FINISHED = "hermes/tts/sayFinished"
HERMES_TTS_ERROR = "hermes/error/tts"
HERMES_TEXT_CAPTURED = "hermes/asr/textCaptured"
HERMES_DEFAULT_SITE = "default"

State = str  # "idle" | "listening" | "thinking" | "speaking"


# --- addresses and topics ------------------------------------------------------------------


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None = field(repr=False)


def broker_address(settings: MqttSettings) -> BrokerAddress:
    """mqtt://[user:pass@]host[:port] or mqtts://...; the settings' credentials win."""
    url = settings.url or ""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ConfigError(f"[mqtt] url {url!r}: expected mqtt://HOST:PORT or mqtts://HOST:PORT")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"[mqtt] url {url!r}: only scheme, credentials, host and port")
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"[mqtt] url {url!r}: {exc}") from exc
    tls = scheme == "mqtts" or settings.tls
    username = settings.username or (unquote(parts.username) if parts.username else None)
    password = settings.password
    if password is None and parts.password is not None:
        password = unquote(parts.password)
    return BrokerAddress(parts.hostname, port or (8883 if tls else 1883), tls, username, password)


def valid_level(name: str) -> bool:
    """Usable as one topic level of a published topic: no separator, wildcard or control."""
    return 0 < len(name) <= MAX_SITE_CHARS and not any(
        ch in "/+#" or ord(ch) < 0x20 or ch == "\x7f" for ch in name
    )


class Topics:
    def __init__(self, prefix: str) -> None:
        levels = prefix.split("/")
        if not all(valid_level(level) for level in levels):
            raise ConfigError(f"[mqtt] topic_prefix {prefix!r}: levels must be non-empty, no + #")
        self.prefix = prefix
        self._depth = len(levels)
        self.status = f"{prefix}/status"
        self.error = f"{prefix}/error"  # errors that belong to no valid site
        self.commands = [f"{prefix}/+/ask", f"{prefix}/+/say"]

    def site(self, site: str, leaf: str) -> str:
        return f"{self.prefix}/{site}/{leaf}"

    def command(self, topic: str) -> tuple[str, str] | None:
        """(site, "ask" | "say") for a command topic, else None."""
        levels = topic.split("/")
        if len(levels) != self._depth + 2 or levels[-1] not in ("ask", "say"):
            return None
        if "/".join(levels[: self._depth]) != self.prefix:
            return None
        return levels[self._depth], levels[-1]


# --- payloads --------------------------------------------------------------------------------


def dumps(data: object) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def json_object(payload: bytes) -> dict[str, Any]:
    try:
        data = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ChinwagError(ErrorCode.INVALID_MESSAGE, "the payload is not UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        raise ChinwagError(ErrorCode.INVALID_JSON, f"not valid JSON: {exc.msg}") from exc
    if not isinstance(data, dict):
        raise ChinwagError(ErrorCode.INVALID_MESSAGE, "the payload must be a JSON object")
    return data


def has_speech(text: str) -> bool:
    """Whether a say of this text produces any audio (else no audio event ever comes)."""
    splitter = PhraseSplitter()
    return any(speakable(p).strip() for p in [*splitter.feed(text), *splitter.flush()])


def parse_command(kind: str, payload: bytes, max_text_chars: int) -> proto.ClientMessage:
    """An ask or say payload: plain text, or a JSON object with `text` (and `id`...)."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ChinwagError(ErrorCode.INVALID_MESSAGE, "the payload is not UTF-8 text") from exc
    if not text.lstrip().startswith("{"):
        return command(kind, {"text": text.strip()}, max_text_chars)
    data = json_object(payload)
    # Other keys are ignored: devices often send more than we need.
    allowed = ("text", "id", "sample_rate") if kind == "say" else ("text", "id")
    return command(kind, {k: data[k] for k in allowed if k in data}, max_text_chars)


def command(kind: str, fields: dict[str, Any], max_text_chars: int) -> proto.ClientMessage:
    """A session message from the fields of a command, validated as the WebSocket's are."""
    if "text" not in fields:
        raise ChinwagError(ErrorCode.INVALID_MESSAGE, "field 'text' is required")
    kind_type = "say" if kind == "say" else "user.message"
    message = proto.decode_client_message(json.dumps({"type": kind_type, **fields}), max_text_chars)
    if isinstance(message, proto.Say) and not has_speech(message.text):
        raise ChinwagError(ErrorCode.INVALID_MESSAGE, "the text has nothing to speak")
    return message


def wav_bytes(pcm: bytes, rate: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return buffer.getvalue()


# --- outgoing --------------------------------------------------------------------------------


class Outgoing(NamedTuple):
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


class OutBox:
    """Messages waiting to be published, oldest dropped (and counted) when full, so neither a
    flood nor an absent broker grows memory or blocks a session. Publishing awaits the broker
    one message at a time, which keeps each topic in order."""

    def __init__(self, name: str, maxsize: int, max_bytes: int = MAX_QUEUED_BYTES) -> None:
        self.name = name
        self.dropped = 0
        self._queue: asyncio.Queue[Outgoing] = asyncio.Queue(maxsize)
        self._bytes = 0  # of the payloads queued (WAVs are large)
        self._max_bytes = max_bytes
        # Taken but not confirmed: sent again after a reconnect (QoS 1 is at-least-once).
        self._pending: Outgoing | None = None

    def put(self, item: Outgoing) -> None:
        while not self._queue.empty() and (
            self._queue.full() or self._bytes + len(item.payload) > self._max_bytes
        ):
            self._bytes -= len(self._queue.get_nowait().payload)
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                log.warning("MQTT %s: queue full, %d dropped so far", self.name, self.dropped)
        self._queue.put_nowait(item)
        self._bytes += len(item.payload)

    async def publish_forever(self, client: aiomqtt.Client) -> None:
        while True:
            if self._pending is None:
                self._pending = await self._queue.get()
                self._bytes -= len(self._pending.payload)
            item = self._pending
            try:
                await client.publish(item.topic, item.payload, qos=item.qos, retain=item.retain)
            except ValueError as exc:  # e.g. a payload over MQTT's 256 MB
                log.error("MQTT: cannot publish on %s: %s", item.topic, exc)
            except aiomqtt.MqttError as exc:
                # A lost connection ends the receive loop, which ends this one; anything else
                # (a broker too slow to acknowledge) is retried.
                log.debug("MQTT %s: publishing on %s: %s; retrying", self.name, item.topic, exc)
                await asyncio.sleep(PUBLISH_RETRY_S)
                continue
            self._pending = None


# --- per-site sessions -----------------------------------------------------------------------


@dataclass(frozen=True)
class HermesRequest:
    site: str
    say_id: str | None
    session_id: str | None


class MqttSink:
    """A site session's EventSink: replies, audio and errors go to the site's topics.

    Only the answers to this site's commands are published here; everything the session does
    is also published as events by the bridge's observer."""

    def __init__(self, bridge: MqttBridge, site: str) -> None:
        self.bridge = bridge
        self.site = site
        self._reply_ids: dict[str, str] = {}  # reply_id -> the id the device sees
        self._stream: str | None = None
        self._rate = 0
        self._pcm = bytearray()
        self._cut = False
        self._hermes: OrderedDict[str, HermesRequest] = OrderedDict()

    @property
    def busy(self) -> bool:
        return bool(self._reply_ids) or self._stream is not None

    def expect_hermes(self, stream_id: str, request: HermesRequest) -> None:
        self._hermes[stream_id] = request
        while len(self._hermes) > MAX_PENDING_HERMES:
            self._hermes.popitem(last=False)

    def _publish(self, leaf: str, payload: bytes) -> None:
        self.bridge.publish(self.bridge.topics.site(self.site, leaf), payload)

    async def send(self, event: proto.ServerEvent) -> None:
        match event:
            case proto.ReplyStarted():
                self._reply_ids[event.reply_id] = event.message_id or event.reply_id
            case proto.ReplyDelta():
                reply_id = self._reply_ids.get(event.reply_id, event.reply_id)
                self._publish("reply/delta", dumps({"id": reply_id, "text": event.text}))
            case proto.ReplyDone():
                reply_id = self._reply_ids.pop(event.reply_id, event.reply_id)
                body: dict[str, Any] = {"id": reply_id, "text": event.text, "status": event.status}
                self._publish("reply", dumps(body))
            case proto.OutputAudioStart():
                self._stream, self._rate = event.stream_id, event.sample_rate
                self._pcm, self._cut = bytearray(), False
            case proto.OutputAudioDone():
                self._finish_audio(event)
            case proto.Error():
                body = {"code": event.code, "message": event.message, "source": event.source}
                self._publish("error", dumps(body))
            case _:
                pass  # the rest is for the observer's event topics

    async def send_audio(self, pcm: bytes) -> None:
        if self._stream is None:
            return
        if len(self._pcm) + len(pcm) > MAX_WAV_BYTES:
            if not self._cut:
                log.warning("MQTT site %s: say audio over %d bytes, cut", self.site, MAX_WAV_BYTES)
            self._cut = True
            return
        self._pcm.extend(pcm)

    def _finish_audio(self, done: proto.OutputAudioDone) -> None:
        if done.stream_id != self._stream:
            return
        pcm, rate = bytes(self._pcm), self._rate
        self._stream, self._pcm = None, bytearray()
        hermes = self._hermes.pop(done.stream_id, None)
        wav = wav_bytes(pcm, rate) if done.status == "completed" else None
        if hermes is not None:
            if wav is not None:
                self.bridge.publish(
                    f"hermes/audioServer/{hermes.site}/playBytes/{done.stream_id}", wav
                )
            # Always answered, so a satellite never waits for a say that was interrupted.
            body = {"id": hermes.say_id, "sessionId": hermes.session_id}
            self.bridge.publish(HERMES_SAY_FINISHED, dumps(body))
        elif wav is not None:
            self._publish("audio", wav)
        else:
            log.info("MQTT site %s: say %s %s: no audio", self.site, done.stream_id, done.status)


@dataclass
class _Site:
    session: Session
    sink: MqttSink


@dataclass
class StateTracker:
    """idle / listening / thinking / speaking, derived from one session's events.

    While the person is speaking the state stays `listening`: the end of an interrupted
    reply (barge-in) does not make the site look idle."""

    state: State = "idle"
    in_speech: bool = False

    def feed(self, kind: str) -> State | None:
        """The new state if this event changes it."""
        new: State | None = None
        if kind == "speech.started":
            self.in_speech, new = True, "listening"
        elif kind == "speech.stopped":
            self.in_speech = False
        elif kind in ("transcript", "reply.started"):
            self.in_speech, new = False, "thinking"
        elif kind == "output_audio.start":
            new = "speaking"
        elif kind in ("reply.done", "output_audio.done", "speech.discarded"):
            if kind == "speech.discarded":
                self.in_speech = False
            new = "listening" if self.in_speech else "idle"
        if new is None or new == self.state:
            return None
        self.state = new
        return new


# --- the bridge ------------------------------------------------------------------------------


async def _until_first_ends(*coros: Coroutine[Any, Any, None]) -> None:
    """Run the loops of one connection; when one ends (the connection failed), stop all."""
    tasks = [asyncio.create_task(c) for c in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        task.result()
    raise aiomqtt.MqttError("the connection loop ended")


class MqttBridge:
    """Joins the configured broker and serves sites until cancelled, reconnecting with
    exponential backoff. A broker that is away never stops the server."""

    def __init__(self, app: App, settings: MqttSettings) -> None:
        self.app = app
        self.settings = settings
        self.broker = broker_address(settings)  # ConfigError on a bad URL
        self.topics = Topics(settings.topic_prefix)
        limits = app.settings.limits
        self._replies = OutBox("replies", limits.max_queued_events)
        self._events = OutBox("events", limits.max_queued_events)
        # Least recently used first, for eviction.
        self._sites: OrderedDict[str, _Site] = OrderedDict()
        self._states: weakref.WeakKeyDictionary[Any, StateTracker] = weakref.WeakKeyDictionary()
        self._connected = False
        self.connections = 0  # successful connections so far

    # --- public ----------------------------------------------------------------------------

    def session(self, site: str) -> Session | None:
        found = self._sites.get(site)
        return found.session if found else None

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Queue an answer to a command; it waits for the broker if it is away."""
        self._replies.put(Outgoing(topic, payload, qos))

    async def run(self) -> None:
        self.app.observers.append(self._observe)
        delay = INITIAL_BACKOFF_S
        where = f"{self.broker.host}:{self.broker.port}"
        try:
            while True:
                before = self.connections
                try:
                    await self._connect_and_serve()
                except aiomqtt.MqttError as exc:
                    level = logging.WARNING if self.connections != before else logging.INFO
                    log.log(level, "MQTT broker %s: %s", where, exc)
                except Exception:
                    log.exception("MQTT bridge failed; reconnecting")
                if self.connections != before:
                    delay = INITIAL_BACKOFF_S  # it was up: the first retry comes quickly
                wait = delay * random.uniform(0.8, 1.0)  # jitter: many bridges, one broker
                log.info("MQTT: next attempt to reach %s in %.1f s", where, wait)
                await asyncio.sleep(wait)
                delay = min(delay * 2, self.settings.reconnect_max_s)
        finally:
            self.app.observers.remove(self._observe)
            await self._close_sites()

    # --- connection ------------------------------------------------------------------------

    async def _connect_and_serve(self) -> None:
        broker, settings = self.broker, self.settings
        tls = aiomqtt.TLSParameters(ca_certs=str(settings.ca_file) if settings.ca_file else None)
        client = aiomqtt.Client(
            broker.host,
            broker.port,
            username=broker.username,
            password=broker.password,
            identifier=settings.client_id,
            will=aiomqtt.Will(self.topics.status, b"offline", qos=1, retain=True),
            tls_params=tls if broker.tls else None,
            keepalive=KEEPALIVE_S,
            max_queued_incoming_messages=INCOMING_QUEUE,
        )
        async with client:
            self.connections += 1
            log.info("MQTT: connected to %s:%d", broker.host, broker.port)
            try:
                topics = [(t, 1) for t in self.topics.commands]
                if settings.hermes:
                    topics.append((HERMES_SAY, 1))
                await client.subscribe(topics)
                self._connected = True
                await _until_first_ends(
                    self._receive(client),
                    self._replies.publish_forever(client),
                    self._events.publish_forever(client),
                )
            except asyncio.CancelledError:
                # A clean disconnect does not fire the will: say it ourselves.
                with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                    async with asyncio.timeout(SHUTDOWN_PUBLISH_TIMEOUT_S):
                        await client.publish(self.topics.status, b"offline", qos=1, retain=True)
                raise
            finally:
                self._connected = False

    async def _receive(self, client: aiomqtt.Client) -> None:
        # Commands that came before the models were ready wait in aiomqtt's bounded queue.
        await self.app.ready.wait()
        await client.publish(self.topics.status, b"online", qos=1, retain=True)
        async for message in client.messages:
            try:
                await self._dispatch(message)
            except Exception:  # one bad message must never stop the bridge
                log.exception("MQTT: handling a message on %s failed", message.topic.value)

    # --- commands --------------------------------------------------------------------------

    async def _dispatch(self, message: aiomqtt.Message) -> None:
        topic = message.topic.value
        if message.retain:
            # Retained commands would replay on every reconnect.
            log.warning("MQTT: ignoring a retained message on %s", topic)
            return
        payload = message.payload
        if not isinstance(payload, bytes):
            payload = b"" if payload is None else str(payload).encode()
        if topic == HERMES_SAY:
            await self._hermes_say(payload)
            return
        command = self.topics.command(topic)
        if command is None:
            return
        site, kind = command
        try:
            if not valid_level(site):
                raise ChinwagError(ErrorCode.INVALID_MESSAGE, f"invalid site name {site!r}")
            self._check_size(payload)
            parsed = parse_command(kind, payload, self.app.settings.limits.max_text_chars)
            session = await self._site(site)
        except ChinwagError as exc:
            self._error(site, exc, source=kind)
            return
        await session.handle(parsed)

    def _check_size(self, payload: bytes) -> None:
        limit = self.app.settings.limits.max_message_bytes
        if len(payload) > limit:
            raise ChinwagError(
                ErrorCode.FRAME_TOO_LARGE, f"payload of {len(payload)} bytes; the limit is {limit}"
            )

    async def _hermes_say(self, payload: bytes) -> None:
        site: str | None = None  # named in errors even when it is not a valid one
        data: dict[str, Any] = {}
        try:
            self._check_size(payload)
            data = json_object(payload)
            raw_site = data.get("siteId") or HERMES_DEFAULT_SITE
            site = raw_site if isinstance(raw_site, str) else None
            if site is None or not valid_level(site):
                raise ChinwagError(ErrorCode.INVALID_MESSAGE, f"invalid siteId {raw_site!r}")
            say_id, session_id = data.get("id"), data.get("sessionId")
            if not isinstance(say_id, str | None) or not isinstance(session_id, str | None):
                raise ChinwagError(ErrorCode.INVALID_MESSAGE, "id and sessionId must be strings")
            # The request id is a topic level; an id that cannot be one gets a fresh uuid.
            request_id = say_id if say_id and valid_level(say_id) else uuid.uuid4().hex
            # `lang` and `volume` are accepted and ignored: the voice is the server's.
            fields = {k: v for k, v in (("text", data.get("text")), ("id", request_id)) if v}
            say = command("say", fields, self.app.settings.limits.max_text_chars)
            found = await self._site_entry(site)
        except ChinwagError as exc:
            self._error(site, exc, source="hermes/tts/say")
            self.publish(
                HERMES_TTS_ERROR,
                dumps(
                    {
                        "error": exc.message,
                        "context": exc.code.value,
                        "siteId": site,
                        "sessionId": data.get("sessionId"),
                    }
                ),
            )
            return
        found.sink.expect_hermes(request_id, HermesRequest(found.sink.site, say_id, session_id))
        await found.session.handle(say)

    def _error(self, site: str | None, exc: ChinwagError, source: str) -> None:
        self.app.metrics.errors.labels(exc.code.value).inc()
        log.info("MQTT %s from site %r rejected: %s: %s", source, site, exc.code, exc.message)
        topic = self.topics.site(site, "error") if site and valid_level(site) else self.topics.error
        body: dict[str, Any] = {"code": exc.code.value, "message": exc.message, "source": source}
        if topic == self.topics.error:
            body["site"] = site
        self.publish(topic, dumps(body))

    # --- sites -----------------------------------------------------------------------------

    async def _site(self, site: str) -> Session:
        return (await self._site_entry(site)).session

    async def _site_entry(self, site: str) -> _Site:
        found = self._sites.get(site)
        if found is not None:
            self._sites.move_to_end(site)
            return found
        if self.app.sessions >= self.app.settings.limits.max_sessions:
            await self._evict_one()
        sink = MqttSink(self, site)
        session = Session(self.app, sink, transport="mqtt")
        session.site = site
        entry = self._sites[site] = _Site(session, sink)
        self.app.sessions += 1
        self.app.metrics.sessions.set(self.app.sessions)
        session.log.info("MQTT site %s", site)
        await session.start()
        return entry

    async def _evict_one(self) -> None:
        """Make room: close the least recently used site that is not answering."""
        for name, entry in self._sites.items():
            if not entry.sink.busy:
                del self._sites[name]
                entry.session.log.info("MQTT site %s closed to make room", name)
                await self._close(entry)
                return
        raise ChinwagError(
            ErrorCode.TOO_MANY_SESSIONS,
            f"the server holds {self.app.sessions} sessions, its limit",
        )

    async def _close(self, entry: _Site) -> None:
        await entry.session.close()
        self.app.sessions -= 1
        self.app.metrics.sessions.set(self.app.sessions)

    async def _close_sites(self) -> None:
        sites, self._sites = list(self._sites.values()), OrderedDict()
        for entry in sites:
            await self._close(entry)

    # --- events of every session with a site -----------------------------------------------

    def _observe(self, session: Any, event: proto.ServerEvent) -> None:
        """Called on the loop for every event of every session: queue only, never wait."""
        site = getattr(session, "site", None)
        if not isinstance(site, str) or not valid_level(site):
            return
        tracker = self._states.get(session)
        if tracker is None:
            tracker = self._states[session] = StateTracker()
        previous = tracker.state
        new_state = tracker.feed(event.type)
        if not self._connected:
            return  # stale by the time the broker is back
        body = {"type": event.type, "session_id": session.id}
        body.update(event.model_dump(mode="json", exclude_none=True))
        leaf = "event/" + event.type.replace(".", "_")
        self._events.put(Outgoing(self.topics.site(site, leaf), dumps(body), qos=0))
        if new_state is not None:
            state = {"state": new_state, "previous": previous, "session_id": session.id}
            self._events.put(Outgoing(self.topics.site(site, "event/state"), dumps(state)))
        if self.settings.hermes and isinstance(event, proto.Transcript):
            captured = {
                "text": event.text.strip(),
                "likelihood": 1.0,  # Whisper gives no utterance confidence
                "seconds": round(event.transcribe_ms / 1000, 3),
                "siteId": site,
                "sessionId": session.id,
                "wakewordId": None,
            }
            self._events.put(Outgoing(HERMES_TEXT_CAPTURED, dumps(captured)))
