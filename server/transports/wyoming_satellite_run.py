"""A satellite's pipeline run as its session sees it (transports/wyoming_satellite.py drives
the runs): RunState, what the run has seen of the session's events, and SatelliteSink, the
session's events as the satellite's Wyoming events."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from server.protocol import native as proto
from server.protocol import wyoming as wire
from server.protocol import wyoming_satellite as sat
from server.protocol.wyoming_audio import audio_chunk_event, audio_start_event, audio_stop_event
from server.protocol.wyoming_framing import error_event

if TYPE_CHECKING:
    from server.transports.wyoming_satellite import SatelliteLink


class RunState:
    """What one pipeline run has seen of its session's events (set by the sink)."""

    def __init__(self, request: sat.PipelineRequest) -> None:
        self.request = request
        self.answering = False  # the utterance is over: mic audio is dropped from here on
        self.finished = asyncio.Event()  # the answer (or transcript) is complete
        self.played = asyncio.Event()
        self.error: str | None = None
        self.reply_text = ""
        self.audio_rate = 0
        self.audio_bytes = 0
        self.audio_started: float | None = None
        self.audio_open = False

    def observe(self, event: proto.ServerEvent) -> None:
        match event:
            case proto.SpeechStopped():
                self.answering = True
            case proto.SpeechDiscarded():
                self.answering = False  # noise or silence: go on listening
            case proto.Transcript() if not self.request.respond:
                self.finished.set()
            case proto.ReplyDone():
                self.reply_text = event.heard_text or event.text
                self.finished.set()
            case proto.OutputAudioStart():
                self.audio_rate = event.sample_rate
                self.audio_started = time.monotonic()
                self.audio_open = True
            case proto.OutputAudioDone():
                self.audio_open = False
            case proto.Error():
                self.error = event.code
                if self.answering:
                    self.finished.set()
            case _:
                pass

    @property
    def hears_itself(self) -> bool:
        """From the end of the utterance until the reply has played, the satellite's
        microphone hears the satellite's speaker (no echo cancellation)."""
        return (self.answering or self.finished.is_set()) and not self.played.is_set()

    @property
    def audio_s(self) -> float:
        return self.audio_bytes / 2 / self.audio_rate if self.audio_rate else 0.0


class SatelliteSink:
    """The satellite session's EventSink: its events become the satellite's Wyoming events."""

    def __init__(self, link: SatelliteLink) -> None:
        self.link = link
        self.rate = 0  # of the audio being sent (a run's reply, or an announcement)

    async def send(self, event: proto.ServerEvent) -> None:
        run = self.link.run_state
        if run is not None:
            run.observe(event)
        match event:
            case proto.WakeWaiting():
                await self.link.send(sat.detect_event(event.wake_words))
            case proto.WakeDetected():
                await self.link.send(sat.detection_event(event.wake_word_id))
            case proto.SpeechStarted():
                await self.link.send(sat.voice_started_event())
            case proto.SpeechStopped():
                await self.link.send(sat.voice_stopped_event())
            case proto.Transcript():
                await self.link.send(wire.transcript_event(event.text, None))
            case proto.OutputAudioStart():
                self.rate = event.sample_rate
                await self.link.send(audio_start_event(event.sample_rate))
            case proto.OutputAudioDone():
                await self.link.send(audio_stop_event())
            case proto.ReplyDone() if event.text.strip() and (run is None or run.request.speak):
                # The text the satellite's --synthesize-command gets (its audio streamed as
                # it was written; the full text is known only now).
                await self.link.send(sat.synthesize_event((event.heard_text or event.text).strip()))
            case proto.Error():
                await self.link.send(error_event(proto.error_of(event)))
            case _:
                pass

    async def send_audio(self, pcm: bytes) -> None:
        run = self.link.run_state
        if run is not None:
            run.audio_bytes += len(pcm)
        if self.rate:
            await self.link.send(audio_chunk_event(self.rate, pcm))


def drain(queue: asyncio.Queue[sat.MicAudio | None]) -> None:
    while not queue.empty():
        queue.get_nowait()


async def next_or_done(
    queue: asyncio.Queue[sat.MicAudio | None], done: asyncio.Event
) -> sat.MicAudio | None:
    """The next microphone chunk, or None once `done` is set."""
    if done.is_set():
        return None
    getter = asyncio.ensure_future(queue.get())
    waiter = asyncio.ensure_future(done.wait())
    try:
        finished, _ = await asyncio.wait({getter, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not getter.done():
            getter.cancel()
    if getter in finished and not getter.cancelled():
        return getter.result()
    return None
