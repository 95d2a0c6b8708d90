"""Waiting for a wake word: a gate between one audio stream and its VAD.

While the gate waits, the audio goes to the wake word detector and a short ring buffer, and
nowhere else: the VAD hears nothing, so nothing is transcribed, answered, stored or logged.
When the wake word is heard, the VAD gets the audio from just after it (out of the ring
buffer: "hey jarvis what time is it" is one request, and the wake word fires a few hundred
milliseconds after it ends, when the request may already have begun), then the live audio.
After one turn (or a follow-up window) the gate waits again.

Blocking compute, called on the VAD thread with the stream's other audio work (AudioInput).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from server.audio.pcm import float32_to_int16
from server.audio.vad import SAMPLE_RATE
from server.config import WakeSettings
from server.engines.base import Float32Audio, WakeDetection, WakeWordDetector
from server.protocol.native import WakeOptions

RING_S = 2.0  # audio kept while waiting: the request's start is looked for in it
# The gap after the wake word is looked for in this much audio before the detection fired:
# the models fired 0.15-0.4 s after the word's end on Piper and espeak-ng speech.
SEARCH_S = 0.4
FRAME = 320  # 20 ms frames for the search
QUIET_RATIO = 10 ** (-15 / 10)  # 15 dB under the loudest frame held


@dataclass(frozen=True)
class WakePlan:
    """A stream's wake word settings, resolved from the session, the persona and [wake]."""

    words: tuple[str, ...]
    listen_s: float = 5.0
    follow_up_s: float = 0.0


def wake_plan(
    asked: WakeOptions | None, persona_words: tuple[str, ...] | None, defaults: WakeSettings
) -> WakePlan | None:
    """What the session asked for, else its persona's wake words, else [wake]'s; None: off."""
    words = (
        tuple(asked.words)
        if asked is not None
        else persona_words
        if persona_words is not None
        else tuple(defaults.wake_words)
    )
    if not words:
        return None
    listen_s = asked.listen_s if asked is not None and asked.listen_s is not None else None
    follow_up_s = asked.follow_up_s if asked is not None else None
    return WakePlan(
        words,
        listen_s=listen_s if listen_s is not None else defaults.listen_s,
        follow_up_s=follow_up_s if follow_up_s is not None else defaults.follow_up_s,
    )


@dataclass(frozen=True)
class WakeHeard:
    detection: WakeDetection
    at_s: float  # stream time where the detection fired
    request_s: float  # stream time where the request's audio (given to the VAD) starts


@dataclass(frozen=True)
class WakeWaitingAgain:
    """Back to waiting: after a turn (and its follow-up window), or nothing was said in time."""

    reason: str  # "turn" or "timeout"


@dataclass
class GateStep:
    heard: WakeHeard | None = None
    skip: int = 0  # samples the VAD did not hear, before `for_vad`
    for_vad: Float32Audio = field(default_factory=lambda: np.zeros(0, dtype=np.float32))


class WakeGate:
    def __init__(self, detector: WakeWordDetector, plan: WakePlan) -> None:
        self.detector = detector
        self.plan = plan
        self.waiting = True
        self._pos = 0  # stream samples seen
        self._vad_pos = 0  # stream samples the VAD has accounted for (heard or skipped)
        self._ring: deque[tuple[int, Float32Audio]] = deque()  # (first sample, chunk)
        self._deadline: int | None = None  # awake, idle: speech must begin by this sample
        self._deadline_reason = "timeout"

    @property
    def position(self) -> int:
        return self._pos

    def feed(self, audio: Float32Audio) -> GateStep:
        """The next chunk of 16 kHz float32 audio: what of it (and of the ring) the VAD gets."""
        start = self._pos
        self._pos += audio.size
        # The detector hears everything, awake or not, so its clock is the stream's.
        detections = self.detector.process(float32_to_int16(audio))
        if not self.waiting:
            self._vad_pos = self._pos
            return GateStep(for_vad=audio)
        self._remember(start, audio)
        if not detections:
            return GateStep()
        detection = detections[0]
        cut = self._request_start(detection.end_sample)
        request = self._slice(cut, self._pos)
        skip = cut - self._vad_pos
        self._ring.clear()
        self.waiting = False
        self._vad_pos = self._pos
        self._deadline = detection.end_sample + round(self.plan.listen_s * SAMPLE_RATE)
        self._deadline_reason = "timeout"
        heard = WakeHeard(detection, detection.end_sample / SAMPLE_RATE, cut / SAMPLE_RATE)
        return GateStep(heard=heard, skip=skip, for_vad=request)

    def turn_began(self) -> None:
        self._deadline = None

    def turn_ended(self) -> WakeWaitingAgain | None:
        """The VAD ended a turn: wait again now, or after the follow-up window."""
        if self.plan.follow_up_s <= 0:
            return self._wait("turn")
        self._deadline = self._pos + round(self.plan.follow_up_s * SAMPLE_RATE)
        self._deadline_reason = "turn"
        return None

    def check_deadline(self, in_speech: bool) -> WakeWaitingAgain | None:
        """Awake and no turn under way: past the deadline, wait again."""
        if self.waiting or in_speech or self._deadline is None or self._pos < self._deadline:
            return None
        return self._wait(self._deadline_reason)

    def _wait(self, reason: str) -> WakeWaitingAgain:
        self.waiting = True
        self._deadline = None
        self._ring.clear()
        return WakeWaitingAgain(reason)

    # --- the ring buffer ------------------------------------------------------------------

    def _remember(self, start: int, audio: Float32Audio) -> None:
        self._ring.append((start, audio.astype(np.float32, copy=True)))
        keep_from = self._pos - round(RING_S * SAMPLE_RATE)
        while self._ring and self._ring[0][0] + self._ring[0][1].size <= keep_from:
            self._ring.popleft()

    def _slice(self, begin: int, end: int) -> Float32Audio:
        parts = [
            chunk[max(begin - first, 0) : end - first]
            for first, chunk in self._ring
            if first < end and first + chunk.size > begin
        ]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def _request_start(self, fired_at: int) -> int:
        """Where the request begins: in the gap after the wake word when there is one (the
        last quiet 20 ms in the SEARCH_S before the detection fired), else where it fired.

        Cutting at the detection may lose the first ~0.3 s of a request said with no pause;
        cutting earlier without a gap to go by would give the ASR the wake word's end."""
        held_from = self._ring[0][0] if self._ring else self._pos
        fired_at = min(max(fired_at, held_from), self._pos)
        begin = max(held_from, fired_at - round(SEARCH_S * SAMPLE_RATE))
        frames = (fired_at - begin) // FRAME
        if frames == 0:
            return fired_at
        begin = fired_at - frames * FRAME
        energy = np.mean(self._slice(begin, fired_at).reshape(frames, FRAME) ** 2, axis=1)
        # Quiet: 15 dB under the loudest 20 ms held (the wake word itself).
        reference = self._loudest_frame(held_from, fired_at)
        quiet = np.nonzero(energy < reference * QUIET_RATIO)[0]
        if quiet.size == 0:
            return fired_at
        return begin + int(quiet[-1]) * FRAME

    def _loudest_frame(self, begin: int, end: int) -> float:
        audio = self._slice(begin, end)
        frames = audio.size // FRAME
        if frames == 0:
            return 0.0
        return float(np.max(np.mean(audio[: frames * FRAME].reshape(frames, FRAME) ** 2, axis=1)))
