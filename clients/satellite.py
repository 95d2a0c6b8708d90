"""`chinwag satellite`: an always-listening satellite of chinwag's own (docs/satellites.md).

A microphone in and a speaker out (PortAudio through `sounddevice`), or an audio file in and a
WAV file out for machines without sound cards, over the native WebSocket protocol: one
session whose site is the satellite's name, an audio stream the server's VAD (and wake word,
with --wake-word) turns into turns, the reply played as it comes. Made to run for months as a
systemd service: a lost server is tried again after 1 s, 2 s, 4 s... up to 30 s.

Barge-in: the server interrupts a reply when the person speaks over it and says
`output_audio.clear`; the satellite then drops what it has not played yet. Without echo
cancellation the microphone hears the satellite's own speaker, so by default the microphone
sends silence while a reply plays, unless a wake word is set (the server hears nothing then
until the wake word, so "okay nabu, stop" interrupts and the reply's own words do not).

The parts that decide (Backoff, mic_open; PlaybackBuffer in satellite_audio.py) are plain code,
unit-tested in tests/unit/test_satellite_client.py. The sound, in and out, is in
clients/satellite_audio.py; the sound devices are imported only when used.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI

from clients.satellite_audio import (
    AudioSink,
    AudioSource,
    Fatal,
    FileSink,
    FileSource,
    MicrophoneSource,
    SpeakerSink,
    check_devices,
)
from clients.talk import AudioFileError

log = logging.getLogger("chinwag.satellite")

REPORT_EVERY_S = 0.5  # how often the satellite tells the server how much it has played
FIRST_RETRY_S = 1.0
MAX_RETRY_S = 30.0
STABLE_S = 30.0  # a connection that lasted this long starts the next retry at 1 s again


# --- the parts that decide ---------------------------------------------------------------------


class Backoff:
    """Reconnection delays: 1 s, 2 s, 4 s... up to `max_s`; back to the first after a
    connection that lasted `stable_s`."""

    def __init__(
        self, first_s: float = FIRST_RETRY_S, max_s: float = MAX_RETRY_S, stable_s: float = STABLE_S
    ) -> None:
        self.first_s, self.max_s, self.stable_s = first_s, max_s, stable_s
        self._next = first_s

    def delay(self, connected_for_s: float | None) -> float:
        """The wait before the next attempt, after a connection that lasted this long (None:
        it never connected)."""
        if connected_for_s is not None and connected_for_s >= self.stable_s:
            self._next = self.first_s
        delay = self._next
        self._next = min(self._next * 2, self.max_s)
        return delay


def mic_open(barge_in: bool, playing: bool) -> bool:
    """Whether the microphone's audio goes to the server now (else silence does: the server's
    clock and VAD go on, and the speaker's own words are not heard as the person's)."""
    return barge_in or not playing


def barge_in_default(choice: str, wake_word: str | None, from_file: bool) -> bool:
    """--barge-in auto: on with a wake word (nothing is heard before it) or a file (no
    speaker in the room), off otherwise (the microphone would hear the speaker)."""
    if choice == "auto":
        return wake_word is not None or from_file
    return choice == "on"


# --- the satellite -----------------------------------------------------------------------------


@dataclass
class SatelliteOptions:
    url: str
    name: str = "satellite"
    wake_word: str | None = None
    persona: str | None = None
    token: str | None = None
    barge_in: bool = False
    # A file source: stop once it is sent and nothing has happened for this long.
    linger_s: float = 3.0


@dataclass
class Turns:
    """What the satellite has seen of the conversation (for file runs and for the log)."""

    replies: list[str] = field(default_factory=list)
    busy: bool = False  # a turn is under way (speech heard, reply not done)
    last_activity: float = field(default_factory=time.monotonic)


class Satellite:
    def __init__(self, options: SatelliteOptions, source: AudioSource, sink: AudioSink) -> None:
        self.options = options
        self.source = source
        self.sink = sink
        self.turns = Turns()
        self.connections = 0
        self._stream_id: str | None = None
        self._audio_open = False

    async def run(self) -> int:
        """Serve until stopped (a microphone) or until the file is answered (a file)."""
        backoff = Backoff()
        try:
            while True:
                began: float | None = None
                try:
                    headers = (
                        {"Authorization": f"Bearer {self.options.token}"}
                        if self.options.token
                        else None
                    )
                    async with connect(
                        self.options.url, additional_headers=headers, open_timeout=30
                    ) as ws:
                        began = time.monotonic()
                        self.connections += 1
                        if await self._serve(ws):
                            return 0 if self.turns.replies else 1
                except InvalidStatus as exc:
                    status = exc.response.status_code
                    if status in (401, 403):
                        raise Fatal(f"the server refused the token ({status})") from exc
                    log.warning("server answered %d; retrying", status)
                except (OSError, ConnectionClosed, TimeoutError) as exc:
                    log.warning("connection to %s lost or refused: %s", self.options.url, exc)
                delay = backoff.delay(None if began is None else time.monotonic() - began)
                log.info("reconnecting in %.0f s", delay)
                await asyncio.sleep(delay)
        finally:
            self.sink.close()

    async def _serve(self, ws: ClientConnection) -> bool:
        """One connection; True when a file run is over."""
        first = json.loads(await asyncio.wait_for(ws.recv(), 600))
        if first.get("type") != "session.started":
            raise Fatal(f"unexpected first event {first}")
        start: dict[str, Any] = {"type": "session.start", "site": self.options.name}
        if self.options.persona:
            start["persona"] = self.options.persona
        if self.options.wake_word:
            start["wake"] = {"words": [self.options.wake_word]}
        await ws.send(json.dumps(start))
        started = await self._next_event(ws)
        if started.get("type") == "error":
            raise Fatal(f"{started['code']}: {started['message']}")
        await ws.send(
            json.dumps(
                {
                    "type": "audio.start",
                    "sample_rate": self.source.rate,
                    "interrupt": self.options.barge_in,
                }
            )
        )
        log.info("listening as %s%s", self.options.name, self._waiting_for())
        sender = asyncio.create_task(self._send_audio(ws), name="satellite-mic")
        reporter = asyncio.create_task(self._report(ws), name="satellite-playback")
        receiver = asyncio.create_task(self._receive(ws), name="satellite-speaker")
        tasks = (sender, reporter, receiver)
        try:
            # Whichever ends first ends the connection: a lost socket, a microphone error,
            # or (a file run) the last answer.
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not receiver:
                    task.result()  # raises what ended it
            return receiver.result() if receiver in done else False
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _waiting_for(self) -> str:
        return f", waiting for {self.options.wake_word}" if self.options.wake_word else ""

    async def _next_event(self, ws: ClientConnection) -> dict[str, Any]:
        while True:
            frame = await ws.recv()
            if isinstance(frame, str):
                event: dict[str, Any] = json.loads(frame)
                return event

    async def _send_audio(self, ws: ClientConnection) -> None:
        async for frame in self.source.frames():
            if not mic_open(self.options.barge_in, self._audio_open or self.sink.playing):
                frame = bytes(len(frame))
            await ws.send(frame)

    async def _report(self, ws: ClientConnection) -> None:
        """How much of the reply has played, so that a barge-in keeps exactly the words that
        were heard (the server's `playback`)."""
        while True:
            await asyncio.sleep(REPORT_EVERY_S)
            playing = self._audio_open or self.sink.playing
            if self.sink.reports and self._stream_id is not None and playing:
                report = {
                    "type": "playback",
                    "stream_id": self._stream_id,
                    "played_ms": round(self.sink.played_ms(), 1),
                }
                await ws.send(json.dumps(report))

    async def _receive(self, ws: ClientConnection) -> bool:
        turns = self.turns
        while True:
            try:
                async with asyncio.timeout(0.5):
                    frame = await ws.recv()
            except TimeoutError:
                if self._file_run_over():
                    await ws.send(json.dumps({"type": "audio.stop"}))
                    return True
                continue
            turns.last_activity = time.monotonic()
            if isinstance(frame, bytes):
                self.sink.write(frame)
                continue
            event = json.loads(frame)
            self._on_event(event)

    def _on_event(self, event: dict[str, Any]) -> None:
        turns = self.turns
        kind = event.get("type")
        if kind == "wake.detected":
            log.info("wake word %s", event.get("wake_word_id"))
        elif kind == "speech.started":
            turns.busy = True
        elif kind == "transcript":
            log.info("heard: %s", event.get("text"))
        elif kind in ("speech.discarded",):
            turns.busy = False
        elif kind == "output_audio.start":
            self._stream_id = str(event["stream_id"])
            self._audio_open = True
            self.sink.start(self._stream_id, int(event["sample_rate"]))
        elif kind == "output_audio.done":
            self._audio_open = False
        elif kind == "output_audio.clear":
            self.sink.clear()  # barge-in: what has not played is dropped
            self._audio_open = False
        elif kind == "reply.done":
            turns.busy = False
            text = str(event.get("heard_text") or event.get("text") or "")
            if event.get("status") == "completed" or text:
                turns.replies.append(text)
            log.info("said (%s): %s", event.get("status"), text)
        elif kind == "error":
            log.warning("server: %s: %s", event.get("code"), event.get("message"))
            turns.busy = False

    def _file_run_over(self) -> bool:
        turns = self.turns
        quiet = time.monotonic() - turns.last_activity >= self.options.linger_s
        idle = not turns.busy and not self._audio_open and not self.sink.playing
        return self.source.finished.is_set() and quiet and idle


# --- the command -------------------------------------------------------------------------------


def _device(value: str | None) -> str | int | None:
    if value is None:
        return None
    return int(value) if value.isdigit() else value


async def run_satellite(
    options: SatelliteOptions,
    *,
    input_file: Path | None,
    output_file: Path | None,
    input_device: str | None = None,
    output_device: str | None = None,
) -> int:
    try:
        source: AudioSource = (
            FileSource(input_file)
            if input_file is not None
            else MicrophoneSource(_device(input_device))
        )
        sink: AudioSink = (
            FileSink(output_file)
            if output_file is not None
            else SpeakerSink(_device(output_device))
        )
    except (OSError, AudioFileError) as exc:
        print(f"chinwag satellite: {exc}", file=sys.stderr)
        return 2
    try:
        check_devices(source, sink)
    except Fatal as exc:
        print(f"chinwag satellite: {exc}", file=sys.stderr)
        return 2
    satellite = Satellite(options, source, sink)
    # systemd stops a service with SIGTERM: end the connection cleanly, exit 0.
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await satellite.run()
    except (Fatal, InvalidURI) as exc:
        print(f"chinwag satellite: {exc}", file=sys.stderr)
        return 2
    except asyncio.CancelledError:
        log.info("stopped")
        return 0
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
