"""Text to speech with Piper (VITS voices on onnxruntime, espeak-ng phonemes)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime  # type: ignore[import-untyped]
from piper import PiperVoice
from piper.config import PiperConfig, SynthesisConfig

from server.engines.base import Int16Audio


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

    def __init__(self, voice_path: Path, *, length_scale: float | None = None) -> None:
        config_path = voice_path.with_name(voice_path.name + ".json")
        for path in (voice_path, config_path):
            if not path.is_file():
                raise FileNotFoundError(f"Piper voice file not found: {path}")
        self._voice = PiperVoice(
            config=PiperConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8"))),
            session=onnxruntime.InferenceSession(
                str(voice_path), sess_options=_session_options(), providers=["CPUExecutionProvider"]
            ),
        )
        self.sample_rate: int = self._voice.config.sample_rate
        # None keeps the voice's own speed. Piper peak-normalises each sentence (its default).
        self._config = SynthesisConfig(length_scale=length_scale)

    def synthesize(self, text: str) -> Iterator[Int16Audio]:
        """Yield one mono int16 chunk per sentence, each as soon as it is synthesised."""
        return self._synthesize(text, self._config)

    def _synthesize(self, text: str, config: SynthesisConfig) -> Iterator[Int16Audio]:
        # "[[...]]" is Piper's raw-phoneme syntax: never take it from LLM text.
        text = text.replace("[[", "[ [").strip()
        if not text:
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
