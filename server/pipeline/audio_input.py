"""One session's microphone stream: PCM frames in, turn events out.

Frames are decoded on the loop (cheap, and bad input must be answered at once), then resampled
and run through the VAD on the VAD thread, in order, through a bounded queue: a client that
sends faster than the VAD keeps up is slowed down by TCP, not buffered without limit.
"""

from __future__ import annotations

import numpy as np

from server.audio.pcm import StreamResampler, check_sample_rate, int16_to_float32
from server.audio.vad import (
    SAMPLE_RATE,
    SpeechStarted,
    SpeechStopped,
    StreamingVad,
    VadConfig,
    VadEvent,
)
from server.config import VadSettings
from server.pipeline.wake import GateStep, WakeGate, WakeHeard, WakeWaitingAgain
from server.protocol.native import AudioStart

InputEvent = VadEvent | WakeHeard | WakeWaitingAgain


def vad_config(defaults: VadSettings, start: AudioStart) -> VadConfig:
    options = start.vad

    def pick(name: str) -> float:
        value = getattr(options, name, None) if options is not None else None
        return float(value if value is not None else getattr(defaults, name))

    return VadConfig(
        threshold=pick("threshold"),
        min_speech_ms=int(pick("min_speech_ms")),
        silence_ms=int(pick("silence_ms")),
        prefix_padding_ms=int(pick("prefix_padding_ms")),
        max_utterance_s=defaults.max_utterance_s,
        onset_rise_db=defaults.onset_rise_db or None,
        # Pauses let the session start answering before the turn is confirmed.
        report_pauses=defaults.speculate
        and start.mode == "vad"
        and start.task == "converse"
        and start.respond,
    )


class AudioInput:
    """Blocking compute only; the session calls feed()/finish() on the VAD thread."""

    def __init__(self, start: AudioStart, vad: StreamingVad, wake: WakeGate | None = None) -> None:
        check_sample_rate(start.sample_rate)
        if start.output_sample_rate is not None:
            check_sample_rate(start.output_sample_rate)
        self.start = start
        self.vad = vad
        # Waiting for a wake word (pipeline/wake.py): the VAD hears only what the gate lets by.
        self.wake = wake
        self._resampler = StreamResampler(start.sample_rate, SAMPLE_RATE, np.float32)
        self._held: list[np.ndarray] = []  # frames waiting to be batched (see hold)
        self._held_samples = 0

    def feed(self, pcm: np.ndarray) -> list[InputEvent]:
        """Resample and run the VAD (and the wake word gate, if any) on one frame."""
        if self.wake is None:
            audio = self._resampler.process(int16_to_float32(pcm))
            return list(self.vad.feed(audio)) if len(audio) else []
        return self.hear(self.listen(pcm))

    def hold(self, pcm: np.ndarray, seconds: float) -> np.ndarray | None:
        """Frames kept until `seconds` of them are here, then all of them (bounded: a batch is
        at most `seconds` plus one frame)."""
        self._held.append(pcm)
        self._held_samples += len(pcm)
        if self._held_samples < seconds * self.start.sample_rate:
            return None
        batch = np.concatenate(self._held)
        self._held, self._held_samples = [], 0
        return batch

    def listen(self, pcm: np.ndarray) -> GateStep:
        """With a wake word, first: resample, and the gate's detector (on the wake thread)."""
        assert self.wake is not None
        audio = self._resampler.process(int16_to_float32(pcm))
        return self.wake.feed(audio) if len(audio) else GateStep()

    def hear(self, step: GateStep) -> list[InputEvent]:
        """With a wake word, then: what the gate let through, to the VAD (on the VAD thread)."""
        gate = self.wake
        assert gate is not None
        events: list[InputEvent] = []
        if step.heard is not None:
            events.append(step.heard)
        if step.skip:
            self.vad.skip(step.skip)
        if step.for_vad.size:
            for event in self.vad.feed(step.for_vad):
                events.append(event)
                if isinstance(event, SpeechStarted):
                    gate.turn_began()
                elif isinstance(event, SpeechStopped) and (again := gate.turn_ended()):
                    events.append(again)
                    # Waiting again: the rest of the chunk was not meant for the VAD.
                    if self.vad.in_speech:
                        self.vad.force_end()
                    break
        if again := gate.check_deadline(self.vad.in_speech):
            events.append(again)
        return events

    def finish(self) -> SpeechStopped | None:
        """The stream ended: what is left of an utterance (push-to-talk: all of it)."""
        tail = self._resampler.flush()
        if self.wake is not None and self.wake.waiting:
            return None  # nothing was heard
        events = self.vad.feed(tail) if len(tail) else []
        stopped = [e for e in events if isinstance(e, SpeechStopped)]
        if stopped:
            return stopped[-1]
        return self.vad.force_end(since_audio_start=self.start.mode == "push_to_talk")
