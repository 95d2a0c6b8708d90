"""Instant stand-ins for the engines, for fast unit tests only."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import numpy as np

from server.engines.base import (
    ChatMessage,
    Float32Audio,
    Generation,
    GenerationStats,
    Int16Audio,
    Transcript,
    UnknownWakeWord,
    WakeDetection,
)
from server.prompts import GenerationSettings


class FakeTranscriber:
    """Returns the configured text for any audio; records the length of each call's audio."""

    def __init__(
        self,
        text: str = "hello",
        *,
        sample_rate: int = 16_000,
        no_speech_prob: float = 0.01,
        avg_logprob: float = -0.1,
        language: str = "en",
    ) -> None:
        self.sample_rate = sample_rate
        self.text = text
        self.no_speech_prob = no_speech_prob
        self.avg_logprob = avg_logprob
        self.language = language
        self.calls: list[float] = []  # seconds of audio per call
        self.prompts: list[str | None] = []  # the prompt of each call

    def transcribe(self, audio: Float32Audio, *, prompt: str | None = None) -> Transcript:
        audio_s = len(audio) / self.sample_rate
        self.calls.append(audio_s)
        self.prompts.append(prompt)
        return Transcript(self.text, self.language, self.no_speech_prob, self.avg_logprob, audio_s)


class FakeSynthesizer:
    """Yields `seconds_per_char` of a tone (or silence) per character, in one chunk per call.

    `delay_s` sleeps before the chunk, to stand in for synthesis time; `on_phrase` is called
    with each text as its synthesis begins (on the TTS worker: tests note what runs beside it).
    """

    def __init__(
        self,
        *,
        sample_rate: int = 22_050,
        seconds_per_char: float = 0.01,
        tone_hz: float | None = 440.0,
        delay_s: float = 0.0,
        on_phrase: Callable[[str], None] | None = None,
    ) -> None:
        self.sample_rate = sample_rate
        self.seconds_per_char = seconds_per_char
        self.tone_hz = tone_hz
        self.delay_s = delay_s
        self.on_phrase = on_phrase
        self.texts: list[str] = []

    def synthesize(self, text: str) -> Iterator[Int16Audio]:
        self.texts.append(text)
        if self.on_phrase is not None:
            self.on_phrase(text)
        text = text.strip()
        if not text:
            return
        if self.delay_s:
            time.sleep(self.delay_s)
        n = max(1, round(len(text) * self.seconds_per_char * self.sample_rate))
        if self.tone_hz is None:
            yield np.zeros(n, dtype=np.int16)
            return
        t = np.arange(n) / self.sample_rate
        yield (8000 * np.sin(2 * np.pi * self.tone_hz * t)).astype(np.int16)


Reply = str | Callable[[Sequence[ChatMessage]], str]


class FakeGeneration:
    """A FakeChatModel reply under way."""

    def __init__(
        self, tokens: list[str], max_tokens: int, on_delta: Callable[[str], None], prompt: int
    ) -> None:
        self.tokens = tokens
        self.max_tokens = max_tokens
        self.on_delta = on_delta
        self.prompt_tokens = prompt
        self.start = time.perf_counter()
        self.sent = 0
        self.first_token_s: float | None = None
        self.finish: Literal["stop", "length", "cancelled"] | None = None

    @property
    def done(self) -> bool:
        return self.finish is not None


class FakeChatModel:
    """Streams a fixed (or computed) reply word by word; honours cancel and max_tokens.

    Each word with its leading space is one token. `token_delay_s` waits before each token,
    waking at once when cancel is set. Through begin/step, up to `parallel` replies advance
    together, one token each per step of `token_delay_s` (like a batched decode).
    """

    def __init__(
        self,
        reply: Reply = "Hello! How can I help you today?",
        *,
        name: str = "fake",
        context_size: int = 2048,
        token_delay_s: float = 0.0,
        parallel: int = 4,
    ) -> None:
        self.name = name
        self.context_size = context_size
        self.reply = reply
        self.token_delay_s = token_delay_s
        self.parallel = parallel
        self.calls: list[list[ChatMessage]] = []
        self.prefills: list[list[ChatMessage]] = []
        self.steps: list[int] = []  # replies advanced by each step

    def begin(
        self,
        messages: Sequence[ChatMessage],
        settings: GenerationSettings,
        on_delta: Callable[[str], None],
    ) -> FakeGeneration:
        self.calls.append(list(messages))
        text = self.reply if isinstance(self.reply, str) else self.reply(messages)
        return FakeGeneration(
            re.findall(r"\s*\S+", text),
            settings.max_tokens,
            on_delta,
            self.count_prompt_tokens(messages),
        )

    def step(self, generations: Sequence[Generation]) -> None:
        running = [g for g in generations if isinstance(g, FakeGeneration) and not g.done]
        self.steps.append(len(running))
        if self.token_delay_s:
            time.sleep(self.token_delay_s)
        for gen in running:
            if gen.sent == len(gen.tokens):
                gen.finish = "stop"
            elif gen.sent == gen.max_tokens:
                gen.finish = "length"
            else:
                gen.on_delta(gen.tokens[gen.sent])
                gen.sent += 1
                if gen.first_token_s is None:
                    gen.first_token_s = time.perf_counter() - gen.start
                if gen.sent == len(gen.tokens):
                    gen.finish = "stop"

    def end(self, generation: Generation, *, cancelled: bool = False) -> GenerationStats:
        assert isinstance(generation, FakeGeneration)
        if cancelled and not generation.done:
            generation.finish = "cancelled"
        return GenerationStats(
            prompt_tokens=generation.prompt_tokens,
            cached_prompt_tokens=0,
            completion_tokens=generation.sent,
            finish_reason=generation.finish or "length",
            first_token_s=generation.first_token_s,
            total_s=time.perf_counter() - generation.start,
        )

    def count_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return sum(len(m.content.split()) + 4 for m in messages)

    def count_text_tokens(self, text: str) -> int:
        return len(text.split())  # a word a token, as the fake generates them

    def prefill(self, messages: Sequence[ChatMessage]) -> int:
        self.prefills.append(list(messages))
        return 0

    def generate(
        self,
        messages: Sequence[ChatMessage],
        settings: GenerationSettings,
        on_delta: Callable[[str], None],
        cancel: threading.Event,
    ) -> GenerationStats:
        start = time.perf_counter()
        self.calls.append(list(messages))
        text = self.reply if isinstance(self.reply, str) else self.reply(messages)
        tokens = re.findall(r"\s*\S+", text)
        first_token_s: float | None = None
        finish: Literal["stop", "length", "cancelled"] = "stop"
        sent = 0
        for token in tokens:
            if sent == settings.max_tokens:
                finish = "length"
                break
            if cancel.is_set() or (self.token_delay_s and cancel.wait(self.token_delay_s)):
                finish = "cancelled"
                break
            on_delta(token)
            sent += 1
            if first_token_s is None:
                first_token_s = time.perf_counter() - start
        return GenerationStats(
            prompt_tokens=self.count_prompt_tokens(messages),
            cached_prompt_tokens=0,
            completion_tokens=sent,
            finish_reason=finish,
            first_token_s=first_token_s,
            total_s=time.perf_counter() - start,
        )


class FakeVadStream:
    """Speech wherever a 512-sample window is louder than `threshold_rms`: a tone is speech,
    zeros are silence. No model, no state."""

    def __init__(self, threshold_rms: float) -> None:
        self.threshold_rms = threshold_rms

    def probabilities(self, audio: Float32Audio) -> Float32Audio:
        windows = audio.reshape(-1, 512).astype(np.float64)
        rms = np.sqrt(np.mean(windows**2, axis=1))
        return np.where(rms > self.threshold_rms, 0.95, 0.02).astype(np.float32)

    def reset(self) -> None:
        pass


class FakeVad:
    """A stand-in for Silero VAD: loud is speech (see FakeVadStream)."""

    def __init__(self, threshold_rms: float = 0.01) -> None:
        self.threshold_rms = threshold_rms

    def new_stream(self) -> FakeVadStream:
        return FakeVadStream(self.threshold_rms)


class FakeWakeWordDetector:
    """A wake word is a steady tone: `min_s` of 80 ms frames whose strongest frequency is within
    30 Hz of the word's tone (and louder than -40 dBFS) is one detection, at the end of the
    frame that completed it. The tone must stop before the word is detected again."""

    FRAME = 1280  # 80 ms, as openWakeWord steps

    def __init__(self, tones: dict[str, float], min_s: float) -> None:
        self.wake_words = tuple(tones)
        self._tones = tones
        self._min_frames = max(1, round(min_s * 16_000 / self.FRAME))
        self.reset()

    @property
    def position(self) -> int:
        return self._fed

    def reset(self) -> None:
        self._fed = 0
        self._pending = np.zeros(0, dtype=np.int16)
        self._run = dict.fromkeys(self._tones, 0)

    def process(self, audio: Int16Audio) -> list[WakeDetection]:
        audio = np.concatenate([self._pending, np.asarray(audio, dtype=np.int16).reshape(-1)])
        whole = audio.size - audio.size % self.FRAME
        self._pending = audio[whole:].copy()
        detections: list[WakeDetection] = []
        for start in range(0, whole, self.FRAME):
            frame = audio[start : start + self.FRAME].astype(np.float64) / 32768
            self._fed += self.FRAME
            loud = float(np.sqrt(np.mean(frame**2))) > 0.01
            peak_hz = float(np.argmax(np.abs(np.fft.rfft(frame)))) * 16_000 / self.FRAME
            for word, tone in self._tones.items():
                if loud and abs(peak_hz - tone) <= 30:
                    self._run[word] += 1
                    if self._run[word] == self._min_frames:
                        detections.append(WakeDetection(word, 0.99, self._fed))
                else:
                    self._run[word] = 0
        return detections


class FakeWakeWordEngine:
    """Wake words as tones (see FakeWakeWordDetector); records the detectors it made."""

    def __init__(self, tones: dict[str, float] | None = None, min_s: float = 0.4) -> None:
        self.tones = tones if tones is not None else {"hey_jarvis": 1000.0, "alexa": 1500.0}
        self.min_s = min_s
        self.available = tuple(self.tones)
        self.detectors: list[FakeWakeWordDetector] = []

    def new_detector(self, wake_words: Sequence[str]) -> FakeWakeWordDetector:
        unknown = [w for w in wake_words if w not in self.tones]
        if unknown or not wake_words:
            raise UnknownWakeWord(f"unknown wake word {unknown}; available: {self.available}")
        detector = FakeWakeWordDetector({w: self.tones[w] for w in wake_words}, self.min_s)
        self.detectors.append(detector)
        return detector
