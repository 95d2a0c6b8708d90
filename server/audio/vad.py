"""Voice activity detection: the Silero VAD model, streamed, plus a pure turn-taking state machine.

Everything here is blocking compute for worker threads; nothing touches asyncio.

- SileroVad: one shared ONNX session (the model faster-whisper ships).
- VadStream: one audio stream's recurrent state; gives a speech probability per 32 ms window.
- TurnDetector: turns per-window probabilities into SpeechStarted / SpeechStopped events.
- StreamingVad: VadStream + TurnDetector for 16 kHz chunks of any length.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 16000
WINDOW_SAMPLES = 512  # 32 ms; the model only accepts this size at 16 kHz
CONTEXT_SAMPLES = 64  # tail of the previous window, prepended to each input row
MODEL_FILE = "silero_vad_v6.onnx"
_STATE_SHAPE = (1, 1, 128)  # LSTM h and c, fed and returned as separate tensors

Float32Audio = npt.NDArray[np.float32]


def default_model_path() -> Path:
    """Where faster-whisper keeps the Silero model, found without importing faster-whisper.

    Importing faster_whisper would pull in ctranslate2 and friends just to read a path.
    """
    spec = importlib.util.find_spec("faster_whisper")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("faster-whisper is not installed; it ships the Silero VAD model")
    for location in spec.submodule_search_locations:
        path = Path(location) / "assets" / MODEL_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(f"{MODEL_FILE} not found in the faster-whisper package")


class SpeechProbabilities(Protocol):
    """One audio stream's speech detector: a probability per 512-sample window."""

    def probabilities(self, audio: Float32Audio) -> Float32Audio: ...

    def reset(self) -> None: ...


class VadModel(Protocol):
    """A shared voice-activity model that gives each audio stream its own state."""

    def new_stream(self) -> SpeechProbabilities: ...


class SileroVad:
    """The Silero VAD v6 ONNX model: one CPU session, single-threaded, shareable.

    This export (faster-whisper's) takes `input` [seq_len, 576], `h` and `c` [1, 1, 128] and
    returns (`speech_probs` [seq_len], `hn`, `cn`). seq_len is TIME, not a batch: the rows are
    consecutive windows of one stream and the LSTM runs across them. There is no `sr` input;
    16 kHz only. onnxruntime sessions are thread-safe, so many VadStreams may share one.
    """

    _shared: ClassVar[dict[Path, SileroVad]] = {}
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: Path | str | None = None) -> None:
        # Imported here and untyped (no stubs); importlib keeps mypy quiet either way.
        ort: Any = importlib.import_module("onnxruntime")
        self.path = Path(path) if path is not None else default_model_path()
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session: Any = ort.InferenceSession(
            str(self.path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        names = {i.name for i in self._session.get_inputs()}
        if names != {"input", "h", "c"}:
            # Upstream Silero exports take (input, state, sr); this wrapper does not speak that.
            raise RuntimeError(
                f"{self.path}: unexpected Silero VAD inputs {sorted(names)}; "
                "expected the faster-whisper export with inputs input, h, c"
            )

    @classmethod
    def load(cls, path: Path | str | None = None) -> SileroVad:
        """The process-wide model for this path, created on first use."""
        key = Path(path) if path is not None else default_model_path()
        with cls._shared_lock:
            model = cls._shared.get(key)
            if model is None:
                model = cls(key)
                cls._shared[key] = model
            return model

    def new_stream(self) -> VadStream:
        return VadStream(self)

    def infer(
        self, rows: Float32Audio, h: Float32Audio, c: Float32Audio
    ) -> tuple[Float32Audio, Float32Audio, Float32Audio]:
        """One raw model call: rows [n, 576] (context + window), state in, (probs, h, c) out."""
        probs, hn, cn = self._session.run(None, {"input": rows, "h": h, "c": c})
        return probs.reshape(-1), hn, cn


class VadStream:
    """One audio stream's model state (LSTM h/c and the 64-sample context), ~1 KB.

    Use from one thread at a time; different streams may run concurrently on one model.
    """

    def __init__(self, model: SileroVad) -> None:
        self.model = model
        self.reset()

    def reset(self) -> None:
        """Forget the audio so far (a new, unrelated stream)."""
        self._h = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._c = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)

    def probability(self, window: Float32Audio) -> float:
        """Speech probability of the next 512-sample (32 ms) window of 16 kHz float32 audio."""
        if window.shape != (WINDOW_SAMPLES,):
            raise ValueError(f"expected {WINDOW_SAMPLES} samples, got shape {window.shape}")
        return float(self.probabilities(window)[0])

    def probabilities(self, audio: Float32Audio) -> Float32Audio:
        """Probabilities for several consecutive windows in one model call (len % 512 == 0).

        Gives the same values as calling probability() window by window, a little cheaper.
        """
        if audio.ndim != 1 or audio.size % WINDOW_SAMPLES:
            raise ValueError(
                f"expected 1-D audio of a multiple of {WINDOW_SAMPLES} samples, "
                f"got shape {audio.shape}"
            )
        count = audio.size // WINDOW_SAMPLES
        if count == 0:
            return np.zeros(0, dtype=np.float32)
        windows = audio.astype(np.float32, copy=False).reshape(count, WINDOW_SAMPLES)
        rows = np.empty((count, CONTEXT_SAMPLES + WINDOW_SAMPLES), dtype=np.float32)
        rows[:, CONTEXT_SAMPLES:] = windows
        rows[0, :CONTEXT_SAMPLES] = self._context
        rows[1:, :CONTEXT_SAMPLES] = windows[:-1, -CONTEXT_SAMPLES:]
        probs, self._h, self._c = self.model.infer(rows, self._h, self._c)
        self._context = windows[-1, -CONTEXT_SAMPLES:].copy()
        return probs.astype(np.float32, copy=False)


@dataclass(frozen=True)
class VadConfig:
    """Turn-taking settings. Durations are rounded up to whole windows by the detector's input."""

    threshold: float = 0.5  # probability at or above which a window is speech
    # Below this a window is silence; in between it keeps the current state (hysteresis).
    # None means threshold - 0.15 (at least 0.01), as Silero does.
    negative_threshold: float | None = None
    min_speech_ms: int = 250  # speech (windows >= threshold) needed before a turn starts
    silence_ms: int = 500  # continuous silence that ends a turn
    prefix_padding_ms: int = 300  # audio kept before the first voiced window
    suffix_padding_ms: int = 300  # audio kept after the last voiced window (at most silence_ms)
    max_utterance_s: float = 30.0  # longer turns are cut here
    report_pauses: bool = False  # emit SpeechPaused / SpeechResumed inside a turn
    # Inside a pause, a window this many dB louder than the pause so far (and no more than
    # onset_level_db below the turn's loudest voiced window) ends the pause, whatever Silero
    # says: a soft onset ("for", "that") is heard late by the model. None: off.
    onset_rise_db: float | None = None
    onset_level_db: float = 35.0
    # The onset is only tentative until Silero hears speech within this time; while it is, the
    # turn does not end (so at most this much later than without the rule, whatever the noise).
    onset_confirm_ms: int = 96

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.negative_threshold is not None and not (
            0.0 <= self.negative_threshold <= self.threshold
        ):
            raise ValueError(
                f"negative_threshold must be in [0, threshold], got {self.negative_threshold}"
            )
        for name in ("min_speech_ms", "silence_ms", "prefix_padding_ms", "suffix_padding_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.silence_ms == 0:
            raise ValueError("silence_ms must be positive")
        if self.onset_rise_db is not None and self.onset_rise_db <= 0:
            raise ValueError(f"onset_rise_db must be positive, got {self.onset_rise_db}")
        if self.max_utterance_s * 1000 <= self.prefix_padding_ms + self.min_speech_ms:
            raise ValueError("max_utterance_s must exceed prefix_padding_ms + min_speech_ms")

    @property
    def stop_threshold(self) -> float:
        """negative_threshold with its default applied."""
        if self.negative_threshold is not None:
            return self.negative_threshold
        return max(self.threshold - 0.15, 0.01)


@dataclass(frozen=True)
class SpeechStarted:
    at_s: float  # stream time of the first voiced window (the turn's audio starts earlier)
    detected_at_s: float  # stream time when min_speech_ms was reached and this was emitted


StopReason = Literal["silence", "max_length", "forced"]


@dataclass(frozen=True)
class SpeechStopped:
    at_s: float  # stream time where `audio` ends
    start_s: float  # stream time where `audio` starts (pre-roll included)
    audio: Float32Audio = field(repr=False, compare=False)  # 16 kHz mono float32
    reason: StopReason = "silence"
    # Audio was cut by max_utterance_s; the caller should report UTTERANCE_TOO_LONG.
    truncated: bool = False

    @property
    def duration_s(self) -> float:
        return self.audio.size / SAMPLE_RATE


@dataclass(frozen=True)
class SpeechPaused:
    """The person went quiet inside a turn; the turn may end after enough silence, or go on.

    Emitted only when VadConfig.report_pauses is set: a caller can start work on `audio`
    speculatively, and shorten the wait with TurnDetector.shorten_pause(pause_id, ...)."""

    pause_id: int  # stream sample where the silence began
    at_s: float
    audio: Float32Audio = field(repr=False, compare=False)  # the turn so far, pre-roll included


@dataclass(frozen=True)
class SpeechResumed:
    pause_id: int
    at_s: float


VadEvent = SpeechStarted | SpeechStopped | SpeechPaused | SpeechResumed


def _samples(ms: float) -> int:
    return math.ceil(ms * SAMPLE_RATE / 1000)


class TurnDetector:
    """A pure state machine from (window, speech probability) to turn events.

    No model inside, so tests can drive it with synthetic probabilities. Windows may have any
    length (512 samples in practice); time is counted in samples at 16 kHz.

    - Start: min_speech_ms of windows at or above threshold, so short noise blips never start
      a turn. Windows between the two thresholds neither count nor break the run (hysteresis,
      so one 0.48 window in a word does not restart it); a window below negative_threshold
      does. SpeechStarted is emitted then; the turn's audio begins prefix_padding_ms before
      the run's first voiced window so the first syllable is kept.
    - Stop: probability < negative_threshold continuously for silence_ms. Windows in between
      the two thresholds count as speech here, so a soft tail never cuts a turn short.
    - A turn reaching max_utterance_s ends at once with reason "max_length", truncated=True.

    All audio since reset() (or the last force_end()) is kept, bounded to max_utterance_s, so
    push-to-talk can take it all with force_end(since_audio_start=True). Not thread-safe.
    """

    def __init__(self, config: VadConfig | None = None) -> None:
        self.config = config if config is not None else VadConfig()
        c = self.config
        self._min_speech = _samples(c.min_speech_ms)
        self._silence = _samples(c.silence_ms)
        self._prefix = _samples(c.prefix_padding_ms)
        self._suffix = min(_samples(c.suffix_padding_ms), self._silence)
        self._max = int(c.max_utterance_s * SAMPLE_RATE)
        self._stop_threshold = c.stop_threshold
        self._onset_rise = None if c.onset_rise_db is None else 10 ** (c.onset_rise_db / 20)
        self._onset_level = 10 ** (-c.onset_level_db / 20)
        self._onset_confirm = _samples(c.onset_confirm_ms)
        self.reset()

    def reset(self) -> None:
        """Back to idle with no audio and the clock at zero."""
        self._pos = 0  # samples fed so far
        self._history: deque[tuple[int, Float32Audio]] = deque()  # (first sample, window)
        self._history_start = 0  # first sample still held in _history
        self._audio_start = 0  # start of the audio force_end(since_audio_start=True) returns
        self._floor = 0  # no turn may start before audio an earlier turn returned
        self._candidate: int | None = None  # first voiced sample of a possible turn
        self._voiced = 0  # samples at or above threshold since _candidate
        self._in_speech = False
        self._utterance_start = 0  # pre-roll included
        self._last_voiced_end = 0  # end of the last window at or above negative_threshold
        self._silent = 0  # samples of continuous silence in the current turn
        self._pause_id: int | None = None  # the pause reported by SpeechPaused, if any
        self._pause_silence: int | None = None  # shorter silence for this pause only
        self._speech_level = 0.0  # RMS of the turn's loudest voiced window
        self._pause_levels: list[float] = []  # RMS of the current pause's windows
        self._onset_at: int | None = None  # a tentative onset in the pause, not yet confirmed
        self._level = 0.0  # RMS of the last window

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    @property
    def pausing(self) -> bool:
        """In a turn, and the last window was silent."""
        return self._in_speech and self._silent > 0

    @property
    def position_s(self) -> float:
        """Stream time: audio fed since reset()."""
        return self._pos / SAMPLE_RATE

    @property
    def utterance_s(self) -> float:
        """Length of the current turn's audio so far (pre-roll included); 0 when idle."""
        return (self._pos - self._utterance_start) / SAMPLE_RATE if self._in_speech else 0.0

    def skip(self, samples: int) -> None:
        """Audio that went by unheard (waiting for a wake word): the clock moves on, and no
        turn may include anything before it. Only between turns."""
        if self._in_speech:
            raise RuntimeError("cannot skip audio in the middle of a turn")
        self._pos += max(samples, 0)
        self._history.clear()
        self._history_start = self._audio_start = self._floor = self._pos
        self._candidate = None
        self._voiced = 0

    def current_utterance(self) -> Float32Audio:
        """A copy of the current turn's audio so far, e.g. for a partial transcript."""
        if not self._in_speech:
            return np.zeros(0, dtype=np.float32)
        return self._slice(self._utterance_start, self._pos)

    def feed(self, window: Float32Audio, probability: float) -> list[VadEvent]:
        """Advance by one window with its speech probability; returns at most one event."""
        if window.ndim != 1:
            raise ValueError(f"expected 1-D audio, got shape {window.shape}")
        if window.size == 0:
            return []
        start = self._pos
        self._pos += window.size
        # A copy: callers often reuse their buffers.
        self._history.append((start, window.astype(np.float32, copy=True)))
        events: list[VadEvent] = []
        if not self._in_speech:
            if probability >= self.config.threshold:
                if self._candidate is None:
                    self._candidate = start
                    self._voiced = 0
                self._voiced += window.size
                if self._voiced >= self._min_speech:
                    events.append(self._start_turn())
            elif probability < self._stop_threshold:
                self._candidate = None
        else:
            if self._onset_rise is not None:
                self._measure(window, probability)
            if probability >= self._stop_threshold:
                # Speech. If the energy rule heard it begin a few windows before Silero did,
                # the pause ended there.
                resumed_at = self._onset_at if self._onset_at is not None else start
                if self._pause_id is not None:
                    events.append(SpeechResumed(self._pause_id, resumed_at / SAMPLE_RATE))
                    self._pause_id = self._pause_silence = None
                self._silent = 0
                self._last_voiced_end = self._pos
                self._onset_at = None
                self._pause_levels.clear()
            else:
                if self._silent == 0 and self.config.report_pauses:
                    self._pause_id = start
                    audio = self._slice(self._utterance_start, self._pos)
                    events.append(SpeechPaused(start, start / SAMPLE_RATE, audio))
                self._silent += window.size
                if self._onset_rise is not None:
                    self._tentative_onset(start)
            if self._silent >= (self._pause_silence or self._silence) and self._onset_at is None:
                end = min(self._last_voiced_end + self._suffix, self._pos)
                events.append(self._end_turn(end, "silence", truncated=False))
            elif self._pos - self._utterance_start >= self._max:
                end = self._utterance_start + self._max
                events.append(self._end_turn(end, "max_length", truncated=True))
        self._trim()
        return events

    def _measure(self, window: Float32Audio, probability: float) -> None:
        self._level = float(np.sqrt(np.mean(np.square(window, dtype=np.float64))))
        if probability >= self.config.threshold:
            self._speech_level = max(self._speech_level, self._level)

    def _tentative_onset(self, start: int) -> None:
        """The onset rule (VadConfig.onset_rise_db) on a window Silero calls silent, inside a
        pause: a sudden rise of energy may be a soft onset that Silero will hear late. It is
        only tentative: if Silero hears speech within onset_confirm_ms, the pause ended at the
        onset; if not (a knock, a beat), the windows stay silence. While one is tentative the
        turn does not end, so the end waits at most onset_confirm_ms, and no new one begins
        once the silence has reached the end of the turn: whatever the noise, a turn ends at
        most onset_confirm_ms later than without the rule."""
        if self._onset_at is not None:
            if start - self._onset_at >= self._onset_confirm:
                self._onset_at = None  # not speech after all
            return
        floor = float(np.median(self._pause_levels)) if len(self._pause_levels) >= 2 else None
        if (
            floor is not None
            and self._silent < (self._pause_silence or self._silence)
            and self._level > floor * (self._onset_rise or 1.0)
            and self._level > self._speech_level * self._onset_level
        ):
            self._onset_at = start
            return
        self._pause_levels.append(self._level)

    def shorten_pause(self, pause_id: int, silence_ms: float) -> None:
        """End the turn after only silence_ms of this pause (e.g. the sentence is complete).

        Ignored if that pause is over; never lengthens the configured silence."""
        if pause_id == self._pause_id:
            self._pause_silence = min(_samples(silence_ms), self._silence)

    def force_end(
        self, since_audio_start: bool = False, tail: Float32Audio | None = None
    ) -> SpeechStopped | None:
        """End the turn now, e.g. the push-to-talk button was released.

        since_audio_start=False: the current turn's audio, or None when no turn is open.
        since_audio_start=True: everything fed since reset() or the last force_end(),
        whatever the VAD thought of it (the last max_utterance_s of it, truncated=True if more).
        `tail` is audio past the last whole window (StreamingVad's remainder): it is appended
        and counted in the clock. Afterwards the detector is idle with empty buffers.
        """
        if tail is not None and tail.size:
            self._history.append((self._pos, tail.astype(np.float32, copy=True)))
            self._pos += tail.size
        result: SpeechStopped | None = None
        if since_audio_start:
            start = max(self._audio_start, self._history_start, self._pos - self._max)
            if self._pos > start:
                result = self._stopped(start, self._pos, "forced", start > self._audio_start)
        elif self._in_speech:
            result = self._stopped(self._utterance_start, self._pos, "forced", truncated=False)
        self._history.clear()
        self._history_start = self._audio_start = self._floor = self._pos
        self._candidate = None
        self._in_speech = False
        self._silent = 0
        self._pause_id = self._pause_silence = None
        return result

    def _start_turn(self) -> SpeechStarted:
        assert self._candidate is not None
        self._in_speech = True
        self._utterance_start = max(
            self._candidate - self._prefix, self._history_start, self._floor
        )
        self._last_voiced_end = self._pos
        self._silent = 0
        self._speech_level = 0.0
        self._pause_levels.clear()
        self._onset_at = None
        event = SpeechStarted(
            at_s=self._candidate / SAMPLE_RATE, detected_at_s=self._pos / SAMPLE_RATE
        )
        self._candidate = None
        return event

    def _end_turn(self, end: int, reason: StopReason, truncated: bool) -> SpeechStopped:
        event = self._stopped(self._utterance_start, end, reason, truncated)
        self._in_speech = False
        self._silent = 0
        self._pause_id = self._pause_silence = None
        self._floor = end
        return event

    def _stopped(self, start: int, end: int, reason: StopReason, truncated: bool) -> SpeechStopped:
        return SpeechStopped(
            at_s=end / SAMPLE_RATE,
            start_s=start / SAMPLE_RATE,
            audio=self._slice(start, end),
            reason=reason,
            truncated=truncated,
        )

    def _slice(self, start: int, end: int) -> Float32Audio:
        parts = [
            window[max(start - first, 0) : end - first]
            for first, window in self._history
            if first < end and first + window.size > start
        ]
        if not parts:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(parts)

    def _trim(self) -> None:
        # Keep max_utterance_s of audio (which covers any pre-roll), and the whole open turn.
        keep_from = self._pos - self._max
        if self._in_speech:
            keep_from = min(keep_from, self._utterance_start)
        while self._history:
            first, window = self._history[0]
            if first + window.size > keep_from:
                break
            self._history.popleft()
            self._history_start = first + window.size


class StreamingVad:
    """Silero VAD plus turn detection over 16 kHz float32 chunks of any length.

    Cuts chunks into 512-sample windows and keeps the remainder for the next call.
    Blocking compute: call it from a worker thread, one thread at a time.
    """

    def __init__(self, model: VadModel | None = None, config: VadConfig | None = None) -> None:
        self.stream: SpeechProbabilities = (
            model if model is not None else SileroVad.load()
        ).new_stream()
        self.detector = TurnDetector(config)
        self._pending = np.zeros(0, dtype=np.float32)
        self.last_probability = 0.0

    @property
    def in_speech(self) -> bool:
        return self.detector.in_speech

    @property
    def utterance_s(self) -> float:
        return self.detector.utterance_s

    @property
    def position_s(self) -> float:
        """Stream time of the audio analysed so far (the partial window excluded)."""
        return self.detector.position_s

    def feed(self, chunk: Float32Audio) -> list[VadEvent]:
        """Analyse the next chunk of 16 kHz mono float32 audio; returns the events it caused."""
        if chunk.ndim != 1:
            raise ValueError(f"expected 1-D audio, got shape {chunk.shape}")
        audio = np.concatenate([self._pending, chunk.astype(np.float32, copy=False)])
        whole = audio.size - audio.size % WINDOW_SAMPLES
        self._pending = audio[whole:].copy()
        if whole == 0:
            return []
        probs = self.stream.probabilities(audio[:whole])
        events: list[VadEvent] = []
        for i, probability in enumerate(probs.tolist()):
            window = audio[i * WINDOW_SAMPLES : (i + 1) * WINDOW_SAMPLES]
            events.extend(self.detector.feed(window, probability))
        self.last_probability = float(probs[-1])
        return events

    def skip(self, samples: int) -> None:
        """`samples` of the stream went by unheard (see TurnDetector.skip); the model starts
        afresh on what comes next, and a partial window held counts as unheard."""
        self.detector.skip(self._pending.size + samples)
        self._pending = np.zeros(0, dtype=np.float32)
        self.stream.reset()
        self.last_probability = 0.0

    def force_end(self, since_audio_start: bool = False) -> SpeechStopped | None:
        """End the turn now (see TurnDetector.force_end); the partial window is included."""
        tail, self._pending = self._pending, np.zeros(0, dtype=np.float32)
        return self.detector.force_end(since_audio_start, tail=tail)

    def reset(self) -> None:
        """Forget everything: model state, buffers and the clock."""
        self.stream.reset()
        self.detector.reset()
        self._pending = np.zeros(0, dtype=np.float32)
        self.last_probability = 0.0
