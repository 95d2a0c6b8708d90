"""Wake words with openWakeWord's models, run by `pyopen-wakeword` (its own TensorFlow Lite
runtime; numpy only).

openWakeWord works in three stages: a mel spectrogram of each 80 ms of audio, a shared speech
embedding of the last ~775 ms of mels, and one small classifier per wake word over the last
16 or so embeddings (~1.3 s). The first two stages are shared by every wake word a detector
listens for. pyopen-wakeword does the streaming bookkeeping; this module adds what chinwag
needs around it: checked model files, a detector per stream, where in the stream a wake word
fired, and a refractory period so one spoken wake word is one detection.
"""

from __future__ import annotations

import ctypes
import importlib.util
import threading
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pyopen_wakeword import OpenWakeWord, OpenWakeWordFeatures
from pyopen_wakeword.openwakeword import MEL_SAMPLES, SAMPLES_PER_CHUNK

from server import MANIFEST
from server.engines.base import (
    EngineError,
    Int16Audio,
    UnknownWakeWord,
    WakeDetection,
)
from server.models import sha256_of

SAMPLE_RATE = 16_000
WAKE_WORDS_MANIFEST = MANIFEST.with_name("wake-words.toml")
DEFAULT_THRESHOLD = 0.5  # openWakeWord's own default
# One wake word said once scores above the threshold for several 80 ms steps in a row; the
# same word is not reported again within this time (Home Assistant's wyoming-openwakeword
# uses 2 s too).
DEFAULT_REFRACTORY_S = 2.0
PRIME_S = 3.0  # silence analysed when a detector is made (see OpenWakeWordDetector._prime)


class _OneThreadLib:
    """pyopen-wakeword's TFLite library, but every interpreter made with one thread.

    pyopen-wakeword creates its interpreters without options, and TFLite then gives each one
    a pool of worker threads that spin between calls: one detector had 8 threads using twice
    the CPU of the thread doing the work (160 against 67 ticks for 30 s of audio, 2 cores).
    The models are tiny; one thread is all they need, and the server has other work."""

    _options: ClassVar[dict[str, int]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, lib: Any) -> None:
        self._lib = lib
        with self._lock:
            key = str(lib._name)
            if key not in self._options:
                lib.TfLiteInterpreterOptionsCreate.argtypes = []
                lib.TfLiteInterpreterOptionsCreate.restype = ctypes.c_void_p
                lib.TfLiteInterpreterOptionsSetNumThreads.argtypes = [
                    ctypes.c_void_p,
                    ctypes.c_int32,
                ]
                lib.TfLiteInterpreterOptionsSetNumThreads.restype = None
                options = lib.TfLiteInterpreterOptionsCreate()
                lib.TfLiteInterpreterOptionsSetNumThreads(options, 1)
                # Kept for the life of the process: one small object shared by every
                # interpreter (TFLite copies what it needs from it).
                self._options[key] = options
            self._options_ptr = self._options[key]

    def __getattr__(self, name: str) -> Any:
        if name == "TfLiteInterpreterCreate":
            return _CreateWithOptions(self._lib.TfLiteInterpreterCreate, self._options_ptr)
        return getattr(self._lib, name)


class _CreateWithOptions:
    """TfLiteInterpreterCreate with our options when given none; pyopen-wakeword also sets
    its argtypes and restype, which go to the C function."""

    _function: Any
    _options: int

    def __init__(self, function: Any, options: int) -> None:
        object.__setattr__(self, "_function", function)
        object.__setattr__(self, "_options", options)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._function, name, value)

    def __call__(self, model: Any, options: Any) -> Any:
        return self._function(model, options or self._options)


class _OneThread:
    """pyopen-wakeword's models with their TFLite library (`lib`, set in their __init__)
    wrapped in _OneThreadLib."""

    @property
    def lib(self) -> Any:
        return self._one_thread_lib

    @lib.setter
    def lib(self, value: Any) -> None:
        self._one_thread_lib = _OneThreadLib(value)


class _OneThreadFeatures(_OneThread, OpenWakeWordFeatures):
    pass


class _OneThreadWakeWord(_OneThread, OpenWakeWord):
    pass


def package_models_dir() -> Path:
    """The models directory inside the installed pyopen-wakeword package."""
    spec = importlib.util.find_spec("pyopen_wakeword")
    if spec is None or not spec.submodule_search_locations:
        raise EngineError("pyopen-wakeword is not installed")
    for location in spec.submodule_search_locations:
        path = Path(location) / "models"
        if path.is_dir():
            return path
    raise EngineError("the pyopen-wakeword package has no models directory")


class OpenWakeWordDetector:
    """One stream's state: the feature extractor and one classifier per wake word.

    The TFLite interpreters hold the stream's state, so a detector is one stream's, used from
    one thread at a time. ~3 MB each (the interpreters' tensors and 10 s of audio history)."""

    def __init__(
        self,
        models: dict[str, Path],
        *,
        threshold: float = DEFAULT_THRESHOLD,
        refractory_s: float = DEFAULT_REFRACTORY_S,
        features_dir: Path | None = None,
    ) -> None:
        if not models:
            raise UnknownWakeWord("a wake word detector needs at least one wake word")
        self.wake_words = tuple(models)
        self.threshold = threshold
        self._refractory = round(refractory_s * SAMPLE_RATE)
        models_dir = features_dir or package_models_dir()
        self._features = _OneThreadFeatures(
            melspectrogram_model=models_dir / "melspectrogram.tflite",
            embedding_model=models_dir / "embedding_model.tflite",
            libtensorflowlite_c_path=next(models_dir.parent.glob("lib/*tensorflowlite_c.*")),
        )
        self._models = {
            word: _OneThreadWakeWord(
                word,
                tflite_model=path,
                libtensorflowlite_c_path=self._features.libtensorflowlite_c_path,
            )
            for word, path in models.items()
        }
        self._prime()

    def _prime(self) -> None:
        """The extractor starts with silence to analyse, so that the classifiers have a full
        history from the first frame: done here, where the detector is made, and not on the
        thread every stream's audio shares. pyopen-wakeword starts with 8 s of it (0.45 s of
        CPU per detector); 3 s fill what the models look at (16 embeddings of 76 mel frames,
        ~2.1 s), for a third of that. 80 ms more silence, then the clock starts."""
        self._features.new_audio_samples = round(PRIME_S * SAMPLE_RATE)
        self._fed = 0
        self.process(np.zeros(SAMPLES_PER_CHUNK, dtype=np.int16))
        self._fed = 0
        self._quiet_until = dict.fromkeys(self._models, 0)

    @property
    def position(self) -> int:
        return self._fed

    def process(self, audio: Int16Audio) -> list[WakeDetection]:
        pcm = np.ascontiguousarray(audio, dtype=np.int16).reshape(-1)
        if pcm.size == 0:
            return []
        detections: list[WakeDetection] = []
        # At most one 80 ms step at a time: the extractor keeps 10 s of audio and drops what
        # overflows it unanalysed, which would shift its windows for chunks over ~2 s.
        for start in range(0, pcm.size, SAMPLES_PER_CHUNK):
            detections += self._step(pcm[start : start + SAMPLES_PER_CHUNK])
        return detections

    def _step(self, pcm: Int16Audio) -> list[WakeDetection]:
        self._fed += pcm.size
        detections: list[WakeDetection] = []
        # Lazy generators: each embedding is computed as the loop asks for it, and the
        # extractor's count of unprocessed samples says where in the stream it is.
        for embedding in self._features.process_streaming(pcm.tobytes()):
            # The mel window just analysed ends here (its start moved on by one 80 ms step).
            end = self._fed - self._features.new_audio_samples + MEL_SAMPLES - SAMPLES_PER_CHUNK
            end = max(0, min(end, self._fed))
            for word, model in self._models.items():
                for probability in model.process_streaming(embedding):
                    if probability >= self.threshold and end >= self._quiet_until[word]:
                        detections.append(WakeDetection(word, float(probability), end))
                        self._quiet_until[word] = end + self._refractory
        return detections

    def reset(self) -> None:
        self._features.reset()
        for model in self._models.values():
            model.reset()
        self._prime()

    def close(self) -> None:
        """Free the interpreters now rather than when garbage-collected."""
        self._features.close()
        for model in self._models.values():
            model.close()


class OpenWakeWordEngine:
    """The wake words this server knows: openWakeWord's five built in (checked against
    models/wake-words.toml) plus any .tflite models named in the config. Loaded once."""

    _checked: ClassVar[set[Path]] = set()
    _checked_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        model_paths: Sequence[Path] = (),
        *,
        threshold: float = DEFAULT_THRESHOLD,
        refractory_s: float = DEFAULT_REFRACTORY_S,
        manifest: Path = WAKE_WORDS_MANIFEST,
    ) -> None:
        self.threshold = threshold
        self.refractory_s = refractory_s
        self._dir = package_models_dir()
        recorded = tomllib.loads(manifest.read_text(encoding="utf-8"))
        self._check(
            {
                **{name: digest for name, digest in recorded["features"].items()},
                **{f"{word}.tflite": digest for word, digest in recorded["wake_words"].items()},
            }
        )
        self._paths: dict[str, Path] = {
            word: self._dir / f"{word}.tflite" for word in recorded["wake_words"]
        }
        for path in model_paths:
            path = Path(path)
            if not path.is_file():
                raise EngineError(f"wake word model not found: {path}")
            self._paths[path.name.removesuffix(".tflite")] = path
        self.available = tuple(self._paths)

    def _check(self, digests: dict[str, str]) -> None:
        with self._checked_lock:
            for name, digest in digests.items():
                path = self._dir / name
                if path in self._checked:
                    continue
                if not path.is_file():
                    raise EngineError(f"wake word model missing from pyopen-wakeword: {path}")
                if sha256_of(path) != digest:
                    raise EngineError(
                        f"{path} does not match its sha256 in models/wake-words.toml "
                        "(a different pyopen-wakeword version?)"
                    )
                self._checked.add(path)

    def new_detector(self, wake_words: Sequence[str]) -> OpenWakeWordDetector:
        unknown = [w for w in wake_words if w not in self._paths]
        if unknown:
            raise UnknownWakeWord(
                f"unknown wake word {', '.join(map(repr, unknown))}; "
                f"available: {', '.join(self.available)}"
            )
        return OpenWakeWordDetector(
            {w: self._paths[w] for w in dict.fromkeys(wake_words)},
            threshold=self.threshold,
            refractory_s=self.refractory_s,
            features_dir=self._dir,
        )
