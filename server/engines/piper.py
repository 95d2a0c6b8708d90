"""Text to speech with Piper (VITS voices on onnxruntime, espeak-ng phonemes)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime  # type: ignore[import-untyped]
from piper import PiperVoice
from piper.config import PiperConfig, SynthesisConfig

from server.engines.base import Int16Audio
from server.engines.piper_stream import StreamingVits, split_vits
from server.memory import release_memory

log = logging.getLogger(__name__)
_MAX_INT16 = 32767.0  # Piper's own int16 scale

# Sentences whose loudest sample sets the streamed path's gain (see PiperSynthesizer).
GAIN_CALIBRATION = (
    "Glue the sheet to the dark blue background.",
    "Today will be cloudy with a light breeze.",
    "Paris is the capital of France.",
    "Hello.",
)


def _session_options() -> onnxruntime.SessionOptions:
    """onnxruntime's worker threads spin for a while after each run by default, which on two
    cores takes them from llama.cpp: it wrote 27 instead of 56 tokens/s while Piper synthesized
    now and then, and Piper itself took 73 instead of 63 ms a phrase (docs/performance.md)."""
    options = onnxruntime.SessionOptions()
    # onnxruntime's CPU arena keeps every block it ever allocated, sized by the longest phrase
    # and the variety of phrase lengths: one 3,900-character `say` left 260 MB held for good,
    # which malloc_trim cannot return. Without it Piper allocates from malloc, as fast (a phrase
    # took 1.39-1.57 s against 1.53-1.59 s with it, on a loaded machine), and the Speaker
    # trims the heap after long speech
    # (docs/security.md, "Load and fairness").
    options.enable_cpu_mem_arena = False
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


class PiperSynthesizer:
    """A Piper voice, loaded once; blocking, call from worker threads.

    Safe from several threads: Piper serialises espeak-ng behind a lock and an onnxruntime
    session may run concurrently.
    """

    def __init__(
        self,
        voice_path: Path,
        *,
        length_scale: float | None = None,
        stream_decoder: bool = False,
    ) -> None:
        config_path = voice_path.with_name(voice_path.name + ".json")
        for path in (voice_path, config_path):
            if not path.is_file():
                raise FileNotFoundError(f"Piper voice file not found: {path}")
        self._voice_path = voice_path
        config = PiperConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8")))
        split = split_vits(voice_path) if stream_decoder else None
        if stream_decoder and split is None:
            log.warning("%s: not a graph chinwag can split; sentences come whole", voice_path)
        # The whole graph only when it speaks: a streamed voice's parts hold its weights already
        # (about 100 MB less).
        self._voice = PiperVoice(config=config, session=None if split else self._whole_graph())
        self.sample_rate: int = self._voice.config.sample_rate
        # None keeps the voice's own speed. Piper peak-normalises each sentence (its default).
        self._config = SynthesisConfig(length_scale=length_scale)
        # With stream_decoder, each sentence's audio comes a window at a time
        # (engines/piper_stream.py). Such a sentence cannot be peak-normalised (its peak is
        # known only at its end), so it gets one gain for the voice instead: full scale for
        # the loudest of a few calibration sentences (docs/performance.md).
        self._streaming: StreamingVits | None = None
        self.stream_gain = 1.0
        if split is not None:
            self._streaming = StreamingVits.load(split, _session_options(), config.hop_length)
            del split
            # The graph was loaded, shape-inferred and copied to split it: about 60 MB of heap
            # the process would keep otherwise.
            release_memory()
            self.stream_gain = self._calibrate_gain()

    def _whole_graph(self) -> onnxruntime.InferenceSession:
        return onnxruntime.InferenceSession(
            str(self._voice_path),
            sess_options=_session_options(),
            providers=["CPUExecutionProvider"],
        )

    @property
    def streams_decoder(self) -> bool:
        """Each sentence's audio comes in several chunks as it is decoded."""
        return self._streaming is not None

    def _scales(self, config: SynthesisConfig, *, noise: bool = True) -> tuple[float, float, float]:
        voice = self._voice.config
        noise_scale = config.noise_scale if config.noise_scale is not None else voice.noise_scale
        noise_w = config.noise_w_scale if config.noise_w_scale is not None else voice.noise_w_scale
        length = config.length_scale if config.length_scale is not None else voice.length_scale
        return (noise_scale, length, noise_w) if noise else (0.0, length, 0.0)

    def _calibrate_gain(self) -> float:
        assert self._streaming is not None
        scales = self._scales(self._config, noise=False)  # no random draw: the same each load
        peak = 0.0
        for text in GAIN_CALIBRATION:
            for phonemes in self._voice.phonemize(text):
                prior = self._streaming.prior(self._voice.phonemes_to_ids(phonemes), scales)
                audio = self._streaming.decode(self._streaming.latent(*prior))
                peak = max(peak, float(np.abs(audio).max(initial=0.0)))
        return 1.0 / peak if peak > 1e-4 else 1.0

    def stream_float(
        self, text: str, *, noise: bool = True
    ) -> Iterator[tuple[int, npt.NDArray[np.float32]]]:
        """(sentence index, float audio as the graph makes it) a window at a time, for the
        streamed path and its tests; `noise=False` leaves out VITS's random draws."""
        return self._stream(text, self._config, noise=noise)

    def _stream(
        self, text: str, config: SynthesisConfig, *, noise: bool = True
    ) -> Iterator[tuple[int, npt.NDArray[np.float32]]]:
        if self._streaming is None:
            raise RuntimeError("the voice was loaded without stream_decoder")
        scales = self._scales(config, noise=noise)
        for index, phonemes in enumerate(p for p in self._voice.phonemize(text) if p):
            prior = self._streaming.prior(self._voice.phonemes_to_ids(phonemes), scales)
            for audio in self._streaming.windows(*prior):
                yield index, audio

    def whole_float(self, text: str, *, noise: bool = True) -> list[npt.NDArray[np.float32]]:
        """Each sentence's float audio from the unsplit graph, not normalised (for tests)."""
        if self._voice.session is None:
            self._voice.session = self._whole_graph()
        config = (
            self._config
            if noise
            else SynthesisConfig(
                length_scale=self._config.length_scale, noise_scale=0.0, noise_w_scale=0.0
            )
        )
        return [
            np.asarray(self._voice.phoneme_ids_to_audio(self._voice.phonemes_to_ids(p), config))
            .astype(np.float32)
            .reshape(-1)
            for p in self._voice.phonemize(text)
            if p
        ]

    def synthesize(self, text: str) -> Iterator[Int16Audio]:
        """Yield mono int16 audio as soon as it is synthesised: a chunk per sentence, or with
        stream_decoder several per sentence (about 0.2 s first, then longer ones)."""
        return self._synthesize(text, self._config)

    def _synthesize(self, text: str, config: SynthesisConfig) -> Iterator[Int16Audio]:
        # "[[...]]" is Piper's raw-phoneme syntax: never take it from LLM text.
        text = text.replace("[[", "[ [").strip()
        if not text:
            return
        if self._streaming is not None:
            gain = self.stream_gain * _MAX_INT16
            for _, window in self._stream(text, config):
                yield np.clip(window * gain, -_MAX_INT16, _MAX_INT16).astype(np.int16)
            return
        for chunk in self._voice.synthesize(text, syn_config=config):
            audio = np.ascontiguousarray(chunk.audio_int16_array, dtype=np.int16).reshape(-1)
            if audio.size:
                yield audio

    def synthesize_paced(self, text: str, speed: float) -> Iterator[Int16Audio]:
        """As synthesize, `speed` times as fast as the voice's own pace (0.25 to 4)."""
        scale = (self._config.length_scale or self._voice.config.length_scale) / speed
        return self._synthesize(text, SynthesisConfig(length_scale=scale))

    def warm_up(self) -> None:
        for _ in self.synthesize("Hello."):
            pass
