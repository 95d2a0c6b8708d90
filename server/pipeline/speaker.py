"""Speaking a reply: phrases in, PCM frames out, and an account of what was heard."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Literal

import numpy as np

from server.audio.pcm import StreamResampler
from server.memory import release_memory
from server.pipeline.playback import SpokenReply
from server.pipeline.speech import SpeechRunner
from server.pipeline.text_split import speakable
from server.pipeline.turn_output import TurnOutput
from server.protocol import native as proto

Status = Literal["completed", "cancelled", "failed"]
RECENT_REPLIES = 8  # spoken replies a Realtime client may still truncate
# After a stream this long, the memory its synthesis used goes back to the system: glibc keeps
# freed memory in each thread's arena otherwise (about 60 MB after a 3,900-character `say`).
TRIM_AFTER_MS = 10_000.0


class Speaker:
    """One session's voice. Knows the reply being heard now and the last few, so a barge-in
    or a truncation keeps only the words that were played."""

    def __init__(
        self,
        speech: Callable[[], SpeechRunner],
        frame_s: float,
        log: logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self._speech = speech  # raises when the server runs without speech models
        self._frame_s = frame_s
        self._log = log
        # The reply whose audio went out last (it may still be playing after its turn ended).
        self.current: SpokenReply | None = None
        self._recent: collections.deque[SpokenReply] = collections.deque(maxlen=RECENT_REPLIES)

    def new_reply(self, stream_id: str) -> SpokenReply:
        spoken = SpokenReply(stream_id)
        self._recent.append(spoken)
        return spoken

    def find(self, stream_id: str) -> SpokenReply | None:
        return next((s for s in self._recent if s.stream_id == stream_id), None)

    def playing(self) -> SpokenReply | None:
        """The reply the listener is hearing now, if any."""
        current = self.current
        return current if current is not None and current.still_playing() else None

    async def speak(
        self,
        spoken: SpokenReply,
        phrases: asyncio.Queue[str | None],
        sample_rate: int | None,
        out: TurnOutput,
    ) -> None:
        """Synthesize phrases as they arrive (None ends them) and stream their audio.

        Always closes the stream it opened. Cancelling it stops at the next chunk of audio; the
        `output_audio.done` then says `cancelled`."""
        speech = self._speech()
        voice_rate = speech.synthesizer.sample_rate
        rate = sample_rate or voice_rate
        resampler = StreamResampler(voice_rate, rate, np.int16)
        frame = max(1, int(rate * self._frame_s))
        status: Status = "failed"
        started = False

        def mark_sent() -> None:
            spoken.mark_sent()
            self.current = spoken

        async def send(pcm: np.ndarray, text: str | None, *, more: bool = False) -> None:
            """`text`: a new phrase's first audio; `more`: more of the last phrase."""
            nonlocal started
            if not len(pcm):
                return
            if not started:
                self._log.debug("first audio of %s ready", spoken.stream_id)
                started = True
                await out.emit(proto.OutputAudioStart(stream_id=spoken.stream_id, sample_rate=rate))
            if text is not None:
                spoken.add(text, len(pcm) / rate * 1000)
            elif more:
                spoken.extend(len(pcm) / rate * 1000)
            else:  # the resampler's tail belongs to the last phrase
                spoken.sent_ms += len(pcm) / rate * 1000
            for i in range(0, len(pcm), frame):
                await out.send_audio(pcm[i : i + frame].astype("<i2").tobytes())
            # Playback (and so what was heard) starts when audio really leaves, not when a
            # speculative reply merely holds it.
            out.when_sent(mark_sent)

        def playback_end() -> float:
            """When the listener will have heard everything sent so far (monotonic): the
            next audio is needed then (from the client's playback reports, or real-time
            playback since the first frame). Held output plays from now at the earliest."""
            now = time.monotonic()
            return now + (spoken.sent_ms - spoken.played_ms(now)) / 1000

        try:
            while (phrase := await phrases.get()) is not None:
                text = speakable(phrase)
                if not started:
                    self._log.debug("first phrase of %s: %r", spoken.stream_id, text)
                if text.strip():
                    # Sent chunk by chunk: a voice that streams its decoder yields a sentence
                    # in pieces, the first long before the sentence is done.
                    # A first phrase is needed now; a later one when playback reaches it,
                    # so other replies' first phrases go before it (pipeline/scheduling.py).
                    chunks = speech.synthesize_chunks(
                        text, urgent=not started, needed_at=playback_end if started else None
                    )
                    added = False
                    async with contextlib.aclosing(chunks):
                        async for chunk in chunks:
                            pcm = resampler.process(chunk)
                            await send(pcm, None if added else phrase, more=added)
                            added = added or len(pcm) > 0
            await send(resampler.flush(), None)
            status = "completed"
        except asyncio.CancelledError:
            status = "cancelled"
            raise
        finally:
            if spoken.sent_ms >= TRIM_AFTER_MS:
                # Not awaited: a cancelled stream must not wait for it.
                asyncio.get_running_loop().run_in_executor(None, release_memory)
            if started:
                await out.emit(
                    proto.OutputAudioDone(
                        stream_id=spoken.stream_id,
                        status=status,
                        duration_ms=round(spoken.sent_ms, 1),
                    )
                )
