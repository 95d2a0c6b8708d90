"""The MQTT bridge: devices on the local network talk to chinwag through their broker.

A thin transport, like the WebSocket ones: each site (a device or room, one topic level) gets
one `Session` whose sink publishes to the site's topics, and commands become session calls.
As an observer of app.hub it publishes the events and states of every session that has a site,
whatever its transport. Topics and payloads are pure code in server.protocol.mqtt; this module
keeps the connection, the outgoing queues, reconnects and the sites. See docs/mqtt.md.

Uses aiomqtt, the maintained successor of asyncio-mqtt (same authors).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import OrderedDict
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import aiomqtt

from server.app import App
from server.config import MqttSettings
from server.errors import ChinwagError, ErrorCode
from server.logs import log_failure
from server.pipeline.session import Session
from server.protocol import json_checks
from server.protocol import mqtt as wire
from server.protocol import native as proto
from server.protocol.mqtt import (
    HERMES_SAY,
    HERMES_SAY_FINISHED,
    HERMES_TEXT_CAPTURED,
    HERMES_TTS_ERROR,
    Topics,
    valid_level,
)

if TYPE_CHECKING:
    from server.pipeline.state import SessionState

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

    @property
    def empty(self) -> bool:
        """Nothing waits to be published."""
        return self._queue.empty() and self._pending is None

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
                self._publish("reply/delta", wire.reply_delta_payload(reply_id, event.text))
            case proto.ReplyDone():
                reply_id = self._reply_ids.pop(event.reply_id, event.reply_id)
                self._publish("reply", wire.reply_payload(reply_id, event.text, event.status))
            case proto.OutputAudioStart():
                self._stream, self._rate = event.stream_id, event.sample_rate
                self._pcm, self._cut = bytearray(), False
            case proto.OutputAudioDone():
                self._finish_audio(event)
            case proto.Error():
                self._publish("error", wire.error_payload(event.code, event.message, event.source))
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
        wav = wire.wav_bytes(pcm, rate) if done.status == "completed" else None
        if hermes is not None:
            if wav is not None:
                self.bridge.publish(wire.hermes_play_bytes(hermes.site, done.stream_id), wav)
            # Always answered, so a satellite never waits for a say that was interrupted.
            payload = wire.say_finished_payload(hermes.say_id, hermes.session_id)
            self.bridge.publish(HERMES_SAY_FINISHED, payload)
        elif wav is not None:
            self._publish("audio", wav)
        else:
            log.info("MQTT site %s: say %s %s: no audio", self.site, done.stream_id, done.status)


@dataclass
class _Site:
    session: Session
    sink: MqttSink


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
    exponential backoff. A broker that is away never stops the server.

    A SessionObserver of app.hub: publishes the events and states of sessions with a site."""

    def __init__(self, app: App, settings: MqttSettings) -> None:
        self.app = app
        self.settings = settings
        self.broker = wire.broker_address(settings)  # ConfigError on a bad URL
        self.topics = Topics(settings.topic_prefix)
        limits = app.settings.limits
        self._replies = OutBox("replies", limits.max_queued_events)
        self._events = OutBox("events", limits.max_queued_events)
        # Least recently used first, for eviction.
        self._sites: OrderedDict[str, _Site] = OrderedDict()
        self._connected = False
        self.connections = 0  # successful connections so far

    # --- public ----------------------------------------------------------------------------

    def session(self, site: str) -> Session | None:
        found = self._sites.get(site)
        return found.session if found else None

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Queue an answer to a command; it waits for the broker if it is away."""
        self._replies.put(Outgoing(topic, payload, qos))

    async def drain(self, timeout_s: float) -> None:
        """Shutting down: wait (at most timeout_s) until what is queued is published, e.g.
        the final /reply of an ask whose turn the shutdown cancelled."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while self._connected and not (  # noqa: ASYNC110 - polls the publishers' queues
                    self._replies.empty and self._events.empty
                ):
                    await asyncio.sleep(0.02)

    async def run(self) -> None:
        self.app.hub.add_observer(self)
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
                except Exception as exc:
                    log_failure(log, "MQTT bridge failed; reconnecting", exc)
                if self.connections != before:
                    delay = INITIAL_BACKOFF_S  # it was up: the first retry comes quickly
                wait = delay * random.uniform(0.8, 1.0)  # jitter: many bridges, one broker
                log.info("MQTT: next attempt to reach %s in %.1f s", where, wait)
                await asyncio.sleep(wait)
                delay = min(delay * 2, self.settings.reconnect_max_s)
        finally:
            self.app.hub.remove_observer(self)
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
            except Exception as exc:  # one bad message must never stop the bridge
                log_failure(log, "MQTT: handling a message on %s failed", exc, message.topic.value)

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
            limits = self.app.settings.limits
            json_checks.check_frame_size(payload, limits.max_message_bytes, "payload")
            parsed = wire.parse_command(kind, payload, limits.max_text_chars)
            session = await self._site(site)
        except ChinwagError as exc:
            self._error(site, exc, source=kind)
            return
        await session.handle(parsed)

    async def _hermes_say(self, payload: bytes) -> None:
        limits = self.app.settings.limits
        try:
            request = wire.parse_hermes_say(
                payload, limits.max_message_bytes, limits.max_text_chars
            )
        except wire.HermesSayError as exc:
            self._hermes_error(exc)
            return
        try:
            found = await self._site_entry(request.site)
        except ChinwagError as exc:  # no room for the site's session
            self._hermes_error(wire.HermesSayError(exc, request.site, request.session_id))
            return
        hermes = HermesRequest(found.sink.site, request.say_id, request.session_id)
        found.sink.expect_hermes(request.request_id, hermes)
        await found.session.handle(request.say)

    def _hermes_error(self, exc: wire.HermesSayError) -> None:
        self._error(exc.site, exc, source=HERMES_SAY)
        self.publish(HERMES_TTS_ERROR, wire.hermes_tts_error_payload(exc))

    def _error(self, site: str | None, exc: ChinwagError, source: str) -> None:
        self.app.metrics.errors.labels(exc.code.value).inc()
        log.info("MQTT %s from site %r rejected: %s: %s", source, site, exc.code, exc.message)
        if site and valid_level(site):
            topic, unsited = self.topics.site(site, "error"), False
        else:
            topic, unsited = self.topics.error, True
        payload = wire.error_payload(
            exc.code.value, exc.message, source, site=site, unsited=unsited
        )
        self.publish(topic, payload)

    # --- sites -----------------------------------------------------------------------------

    async def _site(self, site: str) -> Session:
        return (await self._site_entry(site)).session

    async def _site_entry(self, site: str) -> _Site:
        found = self._sites.get(site)
        if found is not None:
            self._sites.move_to_end(site)
            return found
        if self.app.hub.full:
            await self._evict_one()
        sink = MqttSink(self, site)
        session = Session(self.app, sink, transport="mqtt")
        session.site = site
        if self.settings.persona is not None:
            try:
                session.persona = self.app.personas.get(self.settings.persona)
                session.generation = session.persona.generation
            except ChinwagError:
                log.warning(
                    "MQTT: no persona %r; site %s uses the default", self.settings.persona, site
                )
        self.app.hub.open(session)
        entry = self._sites[site] = _Site(session, sink)
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
        raise self.app.hub.too_many()

    async def _close(self, entry: _Site) -> None:
        await self.app.hub.close_and_forget(entry.session)

    async def _close_sites(self) -> None:
        sites, self._sites = list(self._sites.values()), OrderedDict()
        for entry in sites:
            await self._close(entry)

    # --- events of every session with a site -----------------------------------------------

    # SessionObserver: called on the loop for every session; queue only, never wait.

    def on_event(self, session: Session, event: proto.ServerEvent) -> None:
        if isinstance(event, proto.Intent) and self._connected and valid_level(event.site):
            # Every session's commands, with a site or not: this is how the home acts.
            intent_topic = self.topics.site(event.site, "intent")
            self._events.put(Outgoing(intent_topic, wire.intent_payload(event, session.id)))
            if self.settings.hermes:
                hermes = wire.hermes_intent_payload(event, session.id)
                self._events.put(Outgoing(wire.hermes_intent_topic(event), hermes))
        site = self._site_of(session)
        if site is None or not self._connected:
            return  # stale by the time the broker is back
        leaf = wire.event_leaf(event)
        payload = wire.event_payload(event, session.id)
        self._events.put(Outgoing(self.topics.site(site, leaf), payload, qos=0))
        if self.settings.hermes and isinstance(event, proto.Transcript):
            captured = wire.text_captured_payload(event, site, session.id)
            self._events.put(Outgoing(HERMES_TEXT_CAPTURED, captured))
        if (
            self.settings.hermes
            and isinstance(event, proto.WakeDetected)
            and valid_level(event.wake_word_id)
        ):
            hotword = wire.hotword_detected_payload(event, site, session.id)
            topic = wire.hermes_hotword_topic(event.wake_word_id)
            self._events.put(Outgoing(topic, hotword))

    def on_state(self, session: Session, previous: SessionState, state: SessionState) -> None:
        site = self._site_of(session)
        if site is None or not self._connected:
            return
        payload = wire.state_payload(session.id, previous, state)
        self._events.put(Outgoing(self.topics.site(site, "event/state"), payload))

    @staticmethod
    def _site_of(session: Session) -> str | None:
        site = session.site
        return site if site is not None and valid_level(site) else None
