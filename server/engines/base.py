"""The engine interfaces. Blocking, thread-confined, no asyncio."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from server.errors import ChinwagError, ChinwagException
from server.prompts import GenerationSettings

Role = Literal["system", "user", "assistant"]


class EngineError(ChinwagException):
    """An engine cannot do what it was asked; the pipeline says what that means to a client."""


class PromptTooLong(EngineError):
    """The prompt leaves no room in the model's context for a reply."""


class UnsupportedAudio(EngineError):
    """Audio in a shape the engine does not take (e.g. more than one channel)."""


class RemoteFailure(ChinwagError, EngineError):
    """A remote engine's server failed (down, refused the key, an error status, too slow).

    Not the client's doing, but the client must learn it: as a ChinwagError it becomes an
    `error` event with its `code` (remote_unavailable, ...) wherever a turn fails, and the
    session goes on."""


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str
    # The conversation item this is (message, utterance or reply id); engines ignore it.
    id: str | None = None


@dataclass(frozen=True)
class GenerationStats:
    prompt_tokens: int
    cached_prompt_tokens: int  # prompt tokens reused from the KV cache
    completion_tokens: int
    finish_reason: Literal["stop", "length", "cancelled"]
    first_token_s: float | None  # from the call to the first delta
    total_s: float


class Generation(Protocol):
    """One reply under way in a ChatModel (the handle `begin` returns)."""

    @property
    def done(self) -> bool: ...


class ChatModel(Protocol):
    """A chat LLM. Small on purpose, so an OpenAI-compatible HTTP backend can implement it.

    Replies run through `begin` / `step` / `end`, so that one worker can interleave several
    (ChatRunner); `generate` runs one on its own."""

    name: str
    context_size: int
    parallel: int  # replies that may be under way at once

    def begin(
        self,
        messages: Sequence[ChatMessage],
        settings: GenerationSettings,
        on_delta: Callable[[str], None],
    ) -> Generation:
        """Start a reply (cheap: nothing is evaluated yet); raises PromptTooLong."""
        ...

    def step(self, generations: Sequence[Generation]) -> None:
        """Advance each unfinished reply by about one token (or a chunk of its prompt),
        calling its on_delta with any text."""
        ...

    def end(self, generation: Generation, *, cancelled: bool = False) -> GenerationStats:
        """Release a reply, finished or not; `cancelled` when it was stopped early."""
        ...

    def count_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """Tokens the prompt for these messages takes, chat template included."""
        ...

    def count_text_tokens(self, text: str) -> int:
        """Tokens this text takes on its own, no chat template: the length of a reply."""
        ...

    def generate(
        self,
        messages: Sequence[ChatMessage],
        settings: GenerationSettings,
        on_delta: Callable[[str], None],
        cancel: threading.Event,
    ) -> GenerationStats:
        """Stream the reply through on_delta; return early when cancel is set."""
        ...

    def prefill(self, messages: Sequence[ChatMessage]) -> int:
        """Prepare for a reply to a message still being written (the last one, partial),
        e.g. by evaluating its prompt so far into a cache. Returns the tokens evaluated;
        a model with nothing to prepare returns 0."""
        ...


def generate_alone(
    model: ChatModel,
    messages: Sequence[ChatMessage],
    settings: GenerationSettings,
    on_delta: Callable[[str], None],
    cancel: threading.Event,
) -> GenerationStats:
    """`generate` of a model that steps its replies in batches: this one begun, stepped on
    its own until it is done or cancelled, and ended."""
    generation = model.begin(messages, settings, on_delta)
    try:
        while not generation.done and not cancel.is_set():
            model.step([generation])
    finally:
        stats = model.end(generation, cancelled=cancel.is_set())
    return stats


@runtime_checkable
class CountsAhead(Protocol):
    """A ChatModel whose token counting is slow (a remote tokenizer): ChatRunner has it count
    a reply's messages on another thread before the reply reaches the model's worker, so
    that `count_prompt_tokens` there finds them counted and holds up no other reply."""

    def count_ahead(self, messages: Sequence[ChatMessage]) -> None: ...


@runtime_checkable
class SharesCores(Protocol):
    """A ChatModel on this machine's cores whose thread count may change between two steps:
    ChatRunner gives a core back while speech work runs beside it (pipeline/priority.py)."""

    threads: int  # as configured

    def use_threads(self, n: int) -> None: ...


Float32Audio = npt.NDArray[np.float32]
Int16Audio = npt.NDArray[np.int16]


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    # Whisper's own confidence figures, used to refuse transcripts of non-speech.
    no_speech_prob: float
    avg_logprob: float
    audio_s: float


@dataclass(frozen=True)
class Hypothesis:
    """One reading of an utterance, with Whisper's score: the mean log-probability per token
    (as Transcript.avg_logprob; closer to 0 is likelier)."""

    text: str
    avg_logprob: float


# More readings of the utterance being transcribed: (how many at most, the prompt) -> the
# readings, likeliest first (beam search, on the same encoder pass where the engine can).
MoreReadings = Callable[[int, str | None], list[Hypothesis]]
# Whisper's score of given sentences against the utterance being transcribed, with a prompt:
# the log-probability of each one's tokens, teacher-forced on the same encoder output.
ScoreSentences = Callable[[Sequence[str], str | None], list[float]]


@dataclass(frozen=True)
class Rereading:
    """MoreReadings from an engine that can also score given sentences against the same
    utterance (WhisperTranscriber on a short window): the closed-vocabulary rescoring of
    server/intents/rescore.py uses `score`."""

    readings: MoreReadings
    score: ScoreSentences

    def __call__(self, n: int, prompt: str | None) -> list[Hypothesis]:
        return self.readings(n, prompt)


# Given the first transcript and a way to ask for more readings: the transcript to keep.
Reconsider = Callable[[Transcript, MoreReadings], Transcript]


class Transcriber(Protocol):
    sample_rate: int  # what transcribe() expects (16 kHz for Whisper)

    def transcribe(self, audio: Float32Audio, *, prompt: str | None = None) -> Transcript:
        """Transcribe one utterance of mono float32 audio in [-1, 1]; `prompt`: words the
        speech is likely to hold (Whisper's previous-text prompt), or None."""
        ...


@runtime_checkable
class Reconsiders(Protocol):
    """A Transcriber that reads an utterance again without encoding its audio again
    (WhisperTranscriber): `reconsider` runs on the transcriber's thread, inside the call."""

    def transcribe_reconsidered(
        self, audio: Float32Audio, *, prompt: str | None, reconsider: Reconsider
    ) -> Transcript: ...


class Synthesizer(Protocol):
    sample_rate: int  # the voice's native rate

    def synthesize(self, text: str) -> Iterator[Int16Audio]:
        """Speak text; yields mono int16 chunks at sample_rate as they are ready."""
        ...


class UnknownWakeWord(EngineError):
    """A wake word id the engine has no model for."""


@dataclass(frozen=True)
class WakeDetection:
    wake_word_id: str  # e.g. "hey_jarvis"
    probability: float  # the model's score that crossed the threshold
    # The stream sample (16 kHz, counted from the detector's start or reset) where the audio
    # window that fired ends. The wake word itself ends a little before: up to ~0.5 s.
    end_sample: int


class WakeWordDetector(Protocol):
    """One audio stream's wake word detector: 16 kHz mono int16 PCM in, detections out.

    Holds the stream's state; use from one thread at a time."""

    wake_words: tuple[str, ...]  # the ids it listens for

    @property
    def position(self) -> int:
        """Samples fed since the start or the last reset()."""
        ...

    def process(self, audio: Int16Audio) -> list[WakeDetection]:
        """Analyse the next chunk (any length) of the stream."""
        ...

    def reset(self) -> None:
        """Forget the audio so far; the clock restarts at zero."""
        ...


class WakeWordEngine(Protocol):
    """Loaded once, shared: gives each stream its own detector."""

    available: tuple[str, ...]  # the wake word ids it has models for

    def new_detector(self, wake_words: Sequence[str]) -> WakeWordDetector:
        """A detector for these ids (raises UnknownWakeWord)."""
        ...


@dataclass(frozen=True)
class Segment:
    """A stretch of a transcribed file, with its time in the audio."""

    start_s: float
    end_s: float
    text: str
    # Whisper's figures for the segment, where the engine has them.
    tokens: tuple[int, ...] = ()
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0


@dataclass
class FileTranscription:
    """A whole file's transcription under way: the language is known at once, the segments
    come as each window is decoded (pull them one by one, on a worker thread)."""

    language: str
    duration_s: float
    segments: Iterator[Segment]


@runtime_checkable
class FileTranscriber(Protocol):
    """A Transcriber that also transcribes whole files of any length, with timestamps, a
    language and a prompt (OpenAI's /v1/audio/transcriptions). Optional: for a transcriber
    without it, a file is one `transcribe` call and one segment."""

    def transcribe_file(
        self, audio: Float32Audio, *, language: str | None, prompt: str | None
    ) -> FileTranscription: ...


@runtime_checkable
class PacedSynthesizer(Protocol):
    """A Synthesizer that also speaks faster or slower (OpenAI's `speed`, 1.0 = the voice's
    own pace). Optional: a synthesizer without it speaks only at its own pace."""

    def synthesize_paced(self, text: str, speed: float) -> Iterator[Int16Audio]: ...
