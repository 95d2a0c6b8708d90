"""chinwag drives Wyoming satellites (`[wyoming] satellites`, docs/satellites.md).

chinwag connects out to each `wyoming-satellite`, as Home Assistant's wyoming integration
does (assist_satellite.py): `describe`, `run-satellite`, pings, and for every `run-pipeline`
one pipeline run on the satellite's own `Session` (registered with `app.hub`, its site the
satellite's name, so its events and state are published like any other session's). A lost
connection is tried again, after 1 s, then 2, 4... up to `satellite_reconnect_max_s`.

A run feeds the microphone audio to the session's listener (chinwag's VAD ends the turn),
passes the session's events back as Wyoming events (`voice-started`, `voice-stopped`,
`transcript`, the reply audio, `synthesize` with the reply's text, `error`), and ends when
the satellite says it has `played` the reply (or when the audio must have played: old
satellites never say). Audio that comes while a run answers (the satellite hears its own
speaker) is dropped: a satellite turn is not barged in.

Wire translation is server.protocol.wyoming_satellite; the event framing is the Wyoming
server's `EventStream` (server/transports/wyoming_stream.py); a run's state and its session's
sink are in wyoming_satellite_run.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from typing import TYPE_CHECKING

from wyoming.event import Event

from server.errors import ChinwagError, ErrorCode
from server.logs import log_failure
from server.pipeline.session import Session
from server.protocol import native as proto
from server.protocol import wyoming as wire
from server.protocol import wyoming_satellite as sat
from server.protocol.wyoming_framing import MAX_HEADER_BYTES, error_event
from server.transports.wyoming_satellite_run import RunState, SatelliteSink, drain, next_or_done
from server.transports.wyoming_stream import EventStream, Gone

if TYPE_CHECKING:
    from server.app import App
    from server.config import WyomingSettings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
INFO_TIMEOUT_S = 10.0
# chinwag pings every PING_EVERY_S; a satellite that has answered a ping once and then stays
# silent for PING_TIMEOUT_S is taken for gone (old satellites never answer: TCP tells).
PING_EVERY_S = 5.0
PING_TIMEOUT_S = 15.0
PAUSE_TIMEOUT_S = 2.0
# A connection that lasted this long starts the next reconnection at 1 s again.
STABLE_S = 30.0
FIRST_RETRY_S = 1.0
# Microphone chunks waiting for the run (~4 s of 1024-sample chunks); then the reader waits.
RUN_AUDIO_CHUNKS = 64
# How long the reader waits for room in that queue before dropping the oldest chunk.
MIC_WAIT_S = 2.0
# An always-on satellite whose run failed: the next run waits this long, doubling while runs
# keep failing (no tight loop).
RESTART_AFTER_ERROR_S = 1.0


class SatelliteLink:
    """One configured satellite: connects, serves while connected, reconnects with backoff."""

    _ids = itertools.count(1)

    def __init__(self, app: App, settings: WyomingSettings, uri: str) -> None:
        self.app = app
        self.settings = settings
        self.uri = uri
        self.host, self.port = wire.parse_tcp_uri(uri)
        self.persona = settings.satellite_persona or settings.persona
        self.site = sat.site_name(None, self.host, self.port)
        self.connected = asyncio.Event()  # run-satellite sent; cleared when the link is lost
        self.connections = 0  # how many times it connected (reconnections: connections - 1)
        self.session: Session | None = None
        self.run_state: RunState | None = None
        self._stream: EventStream | None = None
        self._runs: asyncio.Task[None] | None = None
        self._audio: asyncio.Queue[sat.MicAudio | None] | None = None
        self._detected: str | None = None  # the satellite's own wake word, until a run starts
        self._pongs = 0
        self._last_pong = 0.0
        self._warned_no_wake = False
        self.dropped_chunks = 0  # microphone audio dropped because the VAD was behind

    # --- the connection loop ------------------------------------------------------------

    async def run(self) -> None:
        """Forever: connect, serve, and after a loss wait 1 s, 2 s, 4 s... and again."""
        delay = FIRST_RETRY_S
        while True:
            began: float | None = None
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    reader, writer = await asyncio.open_connection(
                        self.host, self.port, limit=MAX_HEADER_BYTES + 2
                    )
                began = time.monotonic()
                await self._serve(reader, writer)
                log.info("satellite %s (%s): disconnected", self.site, self.uri)
            except (OSError, TimeoutError) as exc:
                log.info("satellite %s: cannot connect (%s)", self.uri, exc)
            except ChinwagError as exc:
                log.warning("satellite %s: %s: %s", self.uri, exc.code, exc.message)
            except Exception as exc:
                log_failure(log, "satellite %s failed", exc, self.uri)
            if began is not None and time.monotonic() - began >= STABLE_S:
                delay = FIRST_RETRY_S
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.satellite_reconnect_max_s)

    async def send(self, event: Event) -> None:
        """Send an event to the satellite; a lost satellite is noticed by the reader."""
        stream = self._stream
        if stream is None:
            return
        with contextlib.suppress(Gone):
            await stream.write(event)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stream = EventStream(reader, writer, self.settings.max_event_bytes, self.uri)
        self._stream = stream
        pinger: asyncio.Task[None] | None = None
        try:
            await stream.write(sat.describe_event())
            info = await self._read_info(stream)
            self.site = sat.site_name(info.name, self.host, self.port)
            session = Session(self.app, SatelliteSink(self), transport="wyoming-satellite")
            self.app.hub.open(session)  # ChinwagError(TOO_MANY_SESSIONS) when full
            self.session = session
            await session.start()  # waits for the models
            await session.handle(proto.SessionStart(persona=self.persona, site=self.site))
            await stream.write(sat.run_satellite_event())
            self.connections += 1
            self._pongs = 0
            self.connected.set()
            log.info("satellite %s (%s): running", self.site, self.uri)
            pinger = asyncio.create_task(self._ping(stream), name=f"satellite-ping-{self.site}")
            while (event := await stream.read()) is not None:
                try:
                    await self._act(sat.read_satellite_event(event))
                except ChinwagError as exc:
                    self.app.metrics.errors.labels(exc.code.value).inc()
                    await self.send(error_event(exc))
        except Gone:
            pass
        finally:
            self.connected.clear()
            if pinger is not None:
                pinger.cancel()
                await asyncio.gather(pinger, return_exceptions=True)
            await self._stop_runs()
            opened, self.session = self.session, None
            if opened is not None:
                await self.app.hub.close_and_forget(opened)
            self._stream = None
            stream.drop()
            await stream.close()

    async def _read_info(self, stream: EventStream) -> sat.SatelliteInfo:
        """The satellite's `info` (events before it are not for us yet and are dropped)."""
        async with asyncio.timeout(INFO_TIMEOUT_S):
            while (event := await stream.read()) is not None:
                action = sat.read_satellite_event(event)
                if isinstance(action, sat.SatelliteInfo):
                    return action
        raise Gone

    async def _ping(self, stream: EventStream) -> None:
        for number in itertools.count(1):
            await asyncio.sleep(PING_EVERY_S)
            silent = time.monotonic() - self._last_pong
            if self._pongs and silent > PING_TIMEOUT_S:
                log.warning("satellite %s: no pong for %.0f s; reconnecting", self.site, silent)
                stream.drop()
                return
            await self.send(sat.ping_event(str(number)))

    # --- the satellite's events ---------------------------------------------------------

    async def _act(self, action: sat.SatelliteAction) -> None:
        match action:
            case sat.MicAudio():
                await self._mic(action)
            case sat.PingReceived():
                await self.send(sat.pong_event(action.text))
            case sat.PongReceived():
                self._pongs += 1
                self._last_pong = time.monotonic()
            case sat.PipelineRequest():
                await self._start_runs(action)
            case sat.WakeWordDetected():
                self._detected = action.name or "wake word"
                log.info("satellite %s: its wake word %r", self.site, self._detected)
            case sat.AudioPlayed():
                if self.run_state is not None:
                    self.run_state.played.set()
            case sat.MicStopped():
                run, queue = self.run_state, self._audio
                if queue is not None and run is not None and not run.answering:
                    await queue.put(None)
            case _:
                pass

    async def _mic(self, audio: sat.MicAudio) -> None:
        runs = self._runs
        if (runs is None or runs.done()) and self._detected is not None:
            # Satellites that detect their wake word and stream without `run-pipeline`
            # (Home Assistant starts a run at speech-to-text for them too).
            await self._start_runs(sat.PipelineRequest("asr", "tts", False))
        run, queue = self.run_state, self._audio
        if queue is None:
            return  # no run listens: dropped, as Home Assistant drops it
        if run is not None and run.hears_itself:
            return  # not a turn
        # Once the reply has played, and between two runs of an always-on satellite, the
        # audio waits for the next run. Bounded: a satellite faster than the VAD waits (TCP),
        # but not so long that a ping goes unanswered (newer satellites drop a server that
        # does not answer within 5 s): then the oldest audio is dropped.
        try:
            async with asyncio.timeout(MIC_WAIT_S):
                await queue.put(audio)
        except TimeoutError:
            with contextlib.suppress(asyncio.QueueEmpty):
                queue.get_nowait()
            queue.put_nowait(audio)
            self.dropped_chunks += 1
            if self.dropped_chunks == 1 or self.dropped_chunks % 100 == 0:
                log.warning("satellite %s: audio dropped, the VAD is behind", self.site)

    # --- pipeline runs ------------------------------------------------------------------

    async def _start_runs(self, request: sat.PipelineRequest) -> None:
        await self._stop_runs()
        self._detected = None
        self._audio = asyncio.Queue(RUN_AUDIO_CHUNKS)
        self._runs = asyncio.create_task(self._run_pipelines(request), name=f"sat-{self.site}")

    async def _stop_runs(self) -> None:
        task, self._runs = self._runs, None
        if task is not None and not task.done():
            task.cancel()
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        self.run_state = None
        self._audio = None

    async def _run_pipelines(self, request: sat.PipelineRequest) -> None:
        """One run, or (always-streaming satellites) one after the other until told
        otherwise."""
        try:
            await self._run_series(request)
        finally:
            queue, self._audio = self._audio, None
            if queue is not None:
                drain(queue)

    async def _run_series(self, request: sat.PipelineRequest) -> None:
        pause = RESTART_AFTER_ERROR_S
        while True:
            failed = False
            try:
                failed = not await self._run_once(request)
            except ChinwagError as exc:
                failed = True
                self.app.metrics.errors.labels(exc.code.value).inc()
                await self.send(error_event(exc))
            except Exception as exc:
                failed = True
                log_failure(log, "satellite %s: the pipeline run failed", exc, self.site)
                await self.send(
                    error_event(
                        ChinwagError(ErrorCode.INTERNAL_ERROR, "the run failed; see the log")
                    )
                )
            if not request.restarts:
                return
            if failed:  # a run that keeps failing is tried less and less often
                await asyncio.sleep(pause)
                pause = min(pause * 2, self.settings.satellite_reconnect_max_s)
            else:
                pause = RESTART_AFTER_ERROR_S

    async def _wake_for(self, session: Session, request: sat.PipelineRequest) -> None:
        """The run's stream waits for the wake word when the run starts at the wake stage
        (the satellite's names, else `satellite_wake_words`); from `asr` it does not (the
        satellite heard its own)."""
        words = list(request.wake_words or self.settings.satellite_wake_words)
        if not request.wake:
            words = []
        elif not words and not self._warned_no_wake:
            self._warned_no_wake = True
            log.warning(
                "satellite %s asks for the wake stage and [wyoming] satellite_wake_words is "
                "empty: every utterance it hears is answered",
                self.site,
            )
        if words:
            known = self.app.wake_engine().available
            unknown = [word for word in words if word not in known]
            if unknown:
                raise ChinwagError(
                    ErrorCode.UNKNOWN_WAKE_WORD,
                    f"unknown wake word {', '.join(unknown)}; available: {', '.join(known)}",
                )
        await session.handle(proto.SessionUpdate(wake=proto.WakeOptions(words=words)))

    async def _run_once(self, request: sat.PipelineRequest) -> bool:
        """One pipeline run; True when it completed without an error."""
        session = self.session
        if session is None:
            raise Gone
        queue = self._audio
        assert queue is not None
        run = self.run_state = RunState(request)
        rate: int | None = None
        try:
            while not run.finished.is_set():
                audio = await next_or_done(queue, run.finished)
                if audio is None:
                    break  # the satellite stopped streaming, or the answer is complete
                if run.answering:
                    continue
                if rate is None:
                    await self._wake_for(session, request)
                    rate = audio.rate
                    await session.handle(
                        proto.AudioStart(
                            sample_rate=rate,
                            mode="vad",
                            task="converse" if request.respond else "transcribe",
                            interrupt=False,
                            speak=request.speak,
                            output_sample_rate=request.output_rate,
                        )
                    )
                elif audio.rate != rate:
                    raise ChinwagError(
                        ErrorCode.INVALID_AUDIO_FORMAT,
                        f"audio at {audio.rate} Hz in a {rate} Hz stream",
                    )
                await session.handle_audio(audio.pcm)
            drain(queue)  # a reader waiting to queue more is let go (that audio is dropped)
            if run.answering:
                await run.finished.wait()
            if run.audio_started is not None:
                wait = sat.played_wait_s(run.audio_s, time.monotonic() - run.audio_started)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await run.played.wait()
            return run.error is None
        finally:
            self.run_state = None
            if rate is not None:
                # The stream ends without answering anything more: what was buffered is
                # dropped first (clear_audio), then the empty stream closes.
                await session.clear_audio()
                await session.handle(proto.AudioStop())


class WyomingSatellites:
    """Every configured satellite's link, each running on its own task."""

    def __init__(self, app: App, settings: WyomingSettings) -> None:
        self.links = [SatelliteLink(app, settings, uri) for uri in settings.satellites]
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(link.run(), name=f"satellite-{link.uri}") for link in self.links
        ]

    async def close(self) -> None:
        # As Home Assistant does: tell each satellite to stop streaming before hanging up.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(PAUSE_TIMEOUT_S):
                await asyncio.gather(
                    *(link.send(sat.pause_satellite_event()) for link in self.links)
                )
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
