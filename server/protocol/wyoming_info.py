"""What chinwag tells a Wyoming client about itself: the `info` answer and its voices.

`build_info` builds the answer to `describe` from the settings (not the loaded engines), so it
can be given at once while the models load; `voice_of` describes a Piper voice from its
.onnx.json without loading it, and `pick_voice` finds the voice a request names. Kept apart
from the requests (server/protocol/wyoming.py): this is a description of the server, read
once at start-up, and most of it is the `wyoming` package's info records filled in.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from wyoming.info import (
    AsrModel,
    AsrProgram,
    Attribution,
    HandleModel,
    HandleProgram,
    Info,
    TtsProgram,
    TtsVoice,
)

from server.errors import ChinwagError, ErrorCode

if TYPE_CHECKING:
    from server.config import Settings

# Whisper's languages, for a model not limited to one by [asr] language.
_WHISPER_LANGUAGES = (
    "af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu ha "
    "haw he hi hr ht hu hy id is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr "
    "ms mt my ne nl nn no oc pa pl ps pt ro ru sa sd si sk sl sn so sq sr su sv sw ta te tg "
    "th tk tl tr tt uk ur uz vi yi yo yue zh"
)
WHISPER_LANGUAGES: tuple[str, ...] = tuple(_WHISPER_LANGUAGES.split(" "))

CHINWAG = "chinwag"


@dataclass(frozen=True)
class Voice:
    """A voice chinwag can speak with: its Wyoming name and languages."""

    name: str
    path: Path
    languages: tuple[str, ...]
    description: str
    sample_rate: int | None


def voice_of(path: Path) -> Voice:
    """A Piper voice described from its .onnx.json (read only; the model is not loaded)."""
    name = path.name.removesuffix(".onnx")
    languages: tuple[str, ...] = ()
    rate: int | None = None
    quality = ""
    try:
        config = json.loads(Path(f"{path}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    if isinstance(config, dict):
        language = config.get("language")
        if isinstance(language, dict) and isinstance(language.get("code"), str):
            languages = (language["code"],)
        audio = config.get("audio")
        if isinstance(audio, dict):
            if isinstance(audio.get("sample_rate"), int):
                rate = audio["sample_rate"]
            if isinstance(audio.get("quality"), str):
                quality = audio["quality"]
    if not languages:
        # Piper voice files are named LANG_REGION-NAME-QUALITY.
        first = name.split("-", 1)[0]
        languages = (first,) if re.fullmatch(r"[a-z]{2,3}(_[A-Z]{2})?", first) else ("en",)
    parts = name.split("-")
    speaker = parts[1] if len(parts) >= 2 else name
    description = f"{speaker} ({languages[0]}{', ' + quality if quality else ''})"
    return Voice(name, path, languages, description, rate)


def asr_languages(settings: Settings) -> list[str]:
    language = settings.asr.language
    if language:
        return [language]
    model = settings.asr.model_path.name.lower()
    return ["en"] if model.endswith((".en", "-en", "_en")) else list(WHISPER_LANGUAGES)


def conversation_languages(settings: Settings) -> list[str]:
    return [settings.asr.language or "en"]


def build_info(settings: Settings, persona: str, version: str) -> Info:
    """What `describe` answers: an ASR, a TTS and a handle program, every field filled.

    Home Assistant creates a speech-to-text entity (named after the first ASR program), a
    text-to-speech entity (the first installed TTS program) and a conversation agent (the
    first installed handle program) from it; programs and models must be `installed`."""
    asr_model = settings.asr.model_path
    llm_model = settings.llm.model_path
    voice = voice_of(settings.tts.voice_path)
    whisper = Attribution(name="OpenAI", url="https://github.com/openai/whisper")
    piper = Attribution(name="Open Home Foundation", url="https://github.com/OHF-Voice/piper1-gpl")
    llama = Attribution(name="llama.cpp", url="https://github.com/ggml-org/llama.cpp")
    return Info(
        asr=[
            AsrProgram(
                name=CHINWAG,
                attribution=Attribution(
                    name="faster-whisper", url="https://github.com/SYSTRAN/faster-whisper"
                ),
                installed=True,
                description=f"chinwag speech-to-text (Whisper {asr_model.name})",
                version=version,
                models=[
                    AsrModel(
                        name=asr_model.name,
                        attribution=whisper,
                        installed=True,
                        description=f"Whisper {asr_model.name} (CTranslate2)",
                        version=version,
                        languages=asr_languages(settings),
                    )
                ],
                supports_transcript_streaming=False,
                requires_external_vad=not settings.wyoming.use_vad,
            )
        ],
        tts=[
            TtsProgram(
                name=CHINWAG,
                attribution=piper,
                installed=True,
                description="chinwag text-to-speech (Piper)",
                version=version,
                voices=[
                    TtsVoice(
                        name=voice.name,
                        attribution=piper,
                        installed=True,
                        description=voice.description,
                        version=version,
                        languages=list(voice.languages),
                        speakers=None,
                    )
                ],
                supports_synthesize_streaming=True,
            )
        ],
        handle=[
            HandleProgram(
                name=CHINWAG,
                attribution=llama,
                installed=True,
                description=f"chinwag assistant ({persona} persona, {llm_model.stem})",
                version=version,
                models=[
                    HandleModel(
                        name=llm_model.stem,
                        attribution=llama,
                        installed=True,
                        description=f"{llm_model.name} with the {persona} persona",
                        version=version,
                        languages=conversation_languages(settings),
                    )
                ],
                supports_handled_streaming=False,
                supports_home_control=False,
            )
        ],
    )


def pick_voice(voices: Sequence[Voice], name: str | None, language: str | None) -> Voice:
    """The voice a request asks for (by name, else by language, else the first)."""
    if name is not None:
        for voice in voices:
            if voice.name == name:
                return voice
        known = ", ".join(v.name for v in voices)
        raise ChinwagError(ErrorCode.UNKNOWN_VOICE, f"no voice {name!r}; this server has {known}")
    if language is not None:
        wanted = language.replace("-", "_").lower()
        for voice in voices:
            for lang in voice.languages:
                have = lang.lower()
                if have == wanted or have.split("_")[0] == wanted:
                    return voice
        raise ChinwagError(ErrorCode.UNKNOWN_VOICE, f"no voice for language {language!r}")
    return voices[0]
