"""Speech to text with faster-whisper (Whisper on CTranslate2)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_suppressed_tokens

from server.engines.base import (
    FileTranscription,
    Float32Audio,
    Hypothesis,
    Reconsider,
    Rereading,
    Segment,
    Transcript,
    UnsupportedAudio,
)

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
_HOP = 160  # samples per mel frame
_MIN_SAMPLES = SAMPLE_RATE // 10  # shorter than this is not an utterance
# More tokens than this for the audio is a decoding loop, not speech (people say ~4/s).
_MAX_TOKENS_BASE = 12
_MAX_TOKENS_PER_S = 8
_MAX_DECODER_TOKENS = 448  # Whisper's text context, prompt included
# Short encoder windows (mel frames) and the silence the audio must leave in them. With
# windows under 10 s tiny.en often repeats itself in a loop, so 10 s is the smallest.
_SHORT_WINDOWS = (1000, 2000)
_SHORT_WINDOW_MIN_PAD = 200


class WhisperTranscriber:
    """Whisper via faster-whisper, loaded once; blocking, call from worker threads.

    Calls from several threads are safe; CTranslate2 runs up to `workers` of them at once.
    With `short_window` the encoder sees a 10 s or 20 s window instead of 30 s (on 2 cores a
    3 s utterance takes ~120 ms instead of ~430 ms, same WER on our recordings); a decoding
    that looks like a loop is redone on the next longer window, the standard one last.
    """

    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        model_dir: Path,
        *,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 0,
        beam_size: int = 1,
        language: str | None = "en",
        short_window: bool = False,
        workers: int = 1,
        style_prompt: str = "",
    ) -> None:
        if not (model_dir / "model.bin").is_file():
            raise FileNotFoundError(f"no Whisper CTranslate2 model (model.bin) in {model_dir}")
        # A directory path never reaches the model hub; local_files_only makes sure.
        self._model = WhisperModel(
            str(model_dir),
            device=device,
            compute_type=compute_type,
            cpu_threads=cpu_threads,
            num_workers=workers,
            local_files_only=True,
        )
        self._beam_size = beam_size
        self._language = language
        self._short_window = short_window
        # The previous text when the caller gives none: Whisper writes in its style.
        self._style_prompt = style_prompt or None
        self._tokenizer = Tokenizer(
            self._model.hf_tokenizer,
            self._model.model.is_multilingual,
            task="transcribe",
            language=language or "en",
        )
        self._prompt = [*self._tokenizer.sot_sequence, self._tokenizer.no_timestamps]
        self._suppress = get_suppressed_tokens(self._tokenizer, [-1])

    def _utterance(self, audio: Float32Audio) -> tuple[Float32Audio, float, Transcript | None]:
        """The utterance as mono float32, its length in seconds, and the empty transcript when
        it is too short to hear (None: transcribe it)."""
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1:
            raise UnsupportedAudio("audio must be mono")
        audio_s = audio.size / SAMPLE_RATE
        if audio.size < _MIN_SAMPLES:
            return audio, audio_s, Transcript("", self._language or "en", 1.0, 0.0, audio_s)
        return audio, audio_s, None

    def transcribe(self, audio: Float32Audio, *, prompt: str | None = None) -> Transcript:
        """Transcribe one utterance of mono 16 kHz float32 audio; `prompt` is given to Whisper
        as the text said before it, which makes its words likelier (None: the style prompt)."""
        prompt = prompt or self._style_prompt
        audio, audio_s, empty = self._utterance(audio)
        if empty is not None:
            return empty
        if self._short_window:
            short = self._transcribe_short(audio, audio_s, prompt)
            if short is not None:
                return short
        return self._transcribe_standard(audio, audio_s, prompt)

    def transcribe_file(
        self, audio: Float32Audio, *, language: str | None, prompt: str | None
    ) -> FileTranscription:
        """A whole file, any length, with segment timestamps (OpenAI's transcription API).

        Whisper's own long-form decoding: 30 s windows, each conditioned on its prompt; the
        segments are decoded as they are pulled, one window per pull."""
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1:
            raise UnsupportedAudio("audio must be mono")
        segments, info = self._model.transcribe(
            audio,
            language=language or self._language,
            initial_prompt=prompt or None,
            beam_size=self._beam_size,
            best_of=1,
            temperature=0.0,
            vad_filter=False,
            condition_on_previous_text=False,
            without_timestamps=False,
        )

        def pieces() -> Iterator[Segment]:
            for seg in segments:
                text = " ".join(seg.text.split())
                if text:
                    yield Segment(
                        float(seg.start),
                        float(seg.end),
                        text,
                        tuple(seg.tokens),
                        float(seg.avg_logprob),
                        float(seg.compression_ratio),
                        float(seg.no_speech_prob),
                    )

        return FileTranscription(info.language, audio.size / SAMPLE_RATE, pieces())

    def warm_up(self) -> None:
        self.transcribe(np.zeros(SAMPLE_RATE, dtype=np.float32))

    def _max_new_tokens(self, audio_s: float, prompt_tokens: int) -> int:
        limit = _MAX_DECODER_TOKENS - prompt_tokens - 1
        return min(limit, int(_MAX_TOKENS_BASE + _MAX_TOKENS_PER_S * min(audio_s, 30.0)))

    @functools.lru_cache(maxsize=16)  # noqa: B019 (one transcriber per server, a few prompts)
    def _decoder_prompt(self, prompt: str | None) -> tuple[int, ...]:
        """The decoder's start: the previous-text prompt (its last half-context of tokens, as
        Whisper does), then start of transcript, language, task, no timestamps."""
        if not prompt:
            return tuple(self._prompt)
        previous = self._tokenizer.encode(" " + prompt.strip())[-(_MAX_DECODER_TOKENS // 2 - 1) :]
        return (self._tokenizer.sot_prev, *previous, *self._prompt)

    def _transcribe_standard(
        self, audio: Float32Audio, audio_s: float, prompt: str | None = None
    ) -> Transcript:
        segments, info = self._model.transcribe(
            audio,
            language=self._language,
            initial_prompt=prompt or None,
            beam_size=self._beam_size,
            best_of=1,
            temperature=0.0,
            # The server has its own VAD and non-speech guard; Whisper's would drop the
            # no_speech_prob the guard needs.
            vad_filter=False,
            no_speech_threshold=None,
            log_prob_threshold=None,
            compression_ratio_threshold=None,
            condition_on_previous_text=False,
            without_timestamps=True,
            max_new_tokens=self._max_new_tokens(audio_s, len(self._decoder_prompt(prompt))),
        )
        segs = list(segments)  # the generator does the decoding: run it inside this call
        if not segs:
            return Transcript("", info.language, 1.0, 0.0, audio_s)
        text = " ".join("".join(s.text for s in segs).split())
        weights = [len(s.tokens) + 1 for s in segs]
        avg_logprob = sum(s.avg_logprob * w for s, w in zip(segs, weights, strict=True))
        return Transcript(
            text=text,
            language=info.language,
            # The most speech-like window speaks for the utterance.
            no_speech_prob=min(s.no_speech_prob for s in segs),
            avg_logprob=avg_logprob / sum(weights),
            audio_s=audio_s,
        )

    def transcribe_reconsidered(
        self, audio: Float32Audio, *, prompt: str | None, reconsider: Reconsider
    ) -> Transcript:
        """`transcribe`, then `reconsider(first, more)`: `more(n, prompt)` reads the same
        utterance again, n readings by beam search, from the same encoder pass (a short
        window's; the standard path encodes again and gives one reading). On a short window
        `more` is a Rereading: `more.score(sentences, prompt)` scores given sentences
        against the same encoder output."""
        audio, audio_s, empty = self._utterance(audio)
        if empty is not None:
            return empty
        encoded, first = (
            self._first_short(audio, audio_s, prompt) if self._short_window else (None, None)
        )
        if encoded is None:

            def again(n: int, other: str | None) -> list[Hypothesis]:
                heard = self._transcribe_standard(audio, audio_s, other)
                return [Hypothesis(heard.text, heard.avg_logprob)] if heard.text else []

            return reconsider(self._transcribe_standard(audio, audio_s, prompt), again)

        window: ctranslate2.StorageView = encoded

        def more(n: int, other: str | None) -> list[Hypothesis]:
            # Beam search on the short window even when its greedy decoding looped (then the
            # standard path made the first transcript): looping readings are left out.
            return self._readings(window, audio_s, other, n)

        def score(texts: Sequence[str], other: str | None) -> list[float]:
            return self.score_sentences(window, audio.size // _HOP, other, texts)

        if first is None:
            first = self._transcribe_standard(audio, audio_s, prompt)
        return reconsider(first, Rereading(more, score))

    def _transcribe_short(
        self, audio: Float32Audio, audio_s: float, prompt: str | None = None
    ) -> Transcript | None:
        """One decoding on the shortest encoder window that fits, a longer one if it loops;
        None when the standard 30 s path must do it."""
        return self._first_short(audio, audio_s, prompt)[1]

    def _first_short(
        self, audio: Float32Audio, audio_s: float, prompt: str | None
    ) -> tuple[ctranslate2.StorageView | None, Transcript | None]:
        """The transcript of the shortest window whose decoding does not loop, with that
        window's encoder output (the first window's when all loop; None when none fits)."""
        frames = audio.size // _HOP
        kept: ctranslate2.StorageView | None = None
        for window in _SHORT_WINDOWS:
            if frames + _SHORT_WINDOW_MIN_PAD > window:
                continue
            encoded = self._encode_window(audio, window)
            kept = kept if kept is not None else encoded
            transcript = self._decode_short(encoded, audio_s, prompt)
            if transcript is not None:
                return encoded, transcript
            log.debug("a %d s window's decoding looks like a loop", window // 100)
        return kept, None

    def _encode_window(self, audio: Float32Audio, window: int) -> ctranslate2.StorageView:
        """The encoder's output for the audio in a window of `window` mel frames."""
        # Pad the audio, not the mel: padded frames then get the log-mel floor of silence,
        # as in OpenAI's Whisper. faster-whisper's zero mel frames made 10 s windows loop.
        padded = np.pad(audio, (0, window * _HOP - audio.size))
        mel = self._model.feature_extractor(padded, padding=0)[:, :window]
        mel = np.ascontiguousarray(mel[None])
        return self._model.model.encode(ctranslate2.StorageView.from_array(mel))

    def _decode_short(
        self, encoded: ctranslate2.StorageView, audio_s: float, prompt: str | None
    ) -> Transcript | None:
        """Greedy (or [asr] beam_size) decoding of an encoder output; None if it loops."""
        start = list(self._decoder_prompt(prompt))
        max_new = self._max_new_tokens(audio_s, len(start))
        result = self._model.model.generate(
            encoded,
            [start],
            beam_size=self._beam_size,
            max_length=len(start) + max_new,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self._suppress,
        )[0]
        tokens: list[int] = result.sequences_ids[0]
        if len(tokens) >= max_new or _repeats(tokens):
            return None
        return Transcript(
            text=" ".join(self._tokenizer.decode(tokens).split()),
            language=self._language or "en",
            no_speech_prob=float(result.no_speech_prob),
            avg_logprob=_avg_logprob(float(result.scores[0]), len(tokens)),
            audio_s=audio_s,
        )

    def _readings(
        self, encoded: ctranslate2.StorageView, audio_s: float, prompt: str | None, n: int
    ) -> list[Hypothesis]:
        """Up to n readings by beam search (beam n), likeliest first (by the score per token,
        which is not CTranslate2's order); loops left out."""
        start = list(self._decoder_prompt(prompt))
        max_new = self._max_new_tokens(audio_s, len(start))
        result = self._model.model.generate(
            encoded,
            [start],
            beam_size=max(n, self._beam_size),
            num_hypotheses=n,
            max_length=len(start) + max_new,
            return_scores=True,
            suppress_blank=True,
            suppress_tokens=self._suppress,
        )[0]
        found = []
        for tokens, score in zip(result.sequences_ids, result.scores, strict=True):
            if len(tokens) >= max_new or _repeats(tokens):
                continue
            text = " ".join(self._tokenizer.decode(tokens).split())
            found.append(Hypothesis(text, _avg_logprob(float(score), len(tokens))))
        return sorted(found, key=lambda h: -h.avg_logprob)

    def score_sentences(
        self,
        encoded: ctranslate2.StorageView,
        frames: int,
        prompt: str | None,
        texts: Sequence[str],
    ) -> list[float]:
        """The log-probability of each sentence's tokens given the audio's encoder output and
        the prompt, teacher-forced: Whisper's `align`, as faster-whisper uses it for word
        timestamps, one sentence at a time (its batch must match the encoder's, and copying
        the encoder output costs more than it saves). Its probabilities leave out Whisper's
        special tokens (OpenAI's timing code), so the end of text is not scored: a sentence's
        final full stop stands for it."""
        start = list(self._decoder_prompt(prompt))
        scores = []
        for text in texts:
            tokens = self._tokenizer.encode(" " + text.strip())
            result = self._model.model.align(encoded, start, [tokens], frames)[0]
            probs = np.asarray(result.text_token_probs, dtype=np.float64)
            scores.append(float(np.log(np.maximum(probs, 1e-30)).sum()))
        return scores


def _avg_logprob(score: float, tokens: int) -> float:
    """As faster-whisper: CTranslate2's scores are length-normalised; the end token counts."""
    return score * tokens / (tokens + 1)


def _repeats(tokens: Sequence[int], min_span: int = 4) -> bool:
    """Whether some run of min_span tokens comes again later in the decoding: a loop, either
    at once ("a b c d a b c d") or starting the utterance over after its end and stopping
    part-way ("Tell me about octopuses. Tell me about octopuses"), which a short window gives
    too. Real speech of a few seconds rarely says four words twice; if it does, the longer
    window's decoding costs time, not words."""
    first: dict[tuple[int, ...], int] = {}
    for start in range(len(tokens) - min_span + 1):
        run = tuple(tokens[start : start + min_span])
        if start - first.setdefault(run, start) >= min_span:
            return True
    return False
