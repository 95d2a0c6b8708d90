"""Personas: a system prompt plus generation settings, one TOML file each in prompts/."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from server.errors import ChinwagError, ChinwagException, ErrorCode

if TYPE_CHECKING:
    from server.pipeline.knowledge import KnowledgeBase

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class GenerationSettings(BaseModel):
    """Sampling settings for one reply; a persona sets defaults, a session may override."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(0.6, ge=0.0, le=2.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    top_k: int = Field(40, ge=0)
    repeat_penalty: float = Field(1.1, ge=0.5, le=2.0)
    max_tokens: int = Field(200, ge=1, le=4096)
    # llama.cpp takes a 32-bit seed; -1 asks for a random one.
    seed: int | None = Field(None, ge=-1, le=2**32 - 1)


class KnowledgeSettings(BaseModel):
    """A persona's site knowledge (`[knowledge]` in its file; docs/personas.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # A Markdown or TOML file, or a folder of them; relative to the persona file's folder.
    path: Path | None = None
    # "extract": a question the facts answer is answered with the facts' own words;
    # "model": the model answers with the matching passages in its prompt.
    answer: Literal["extract", "model"] = "extract"
    passages: int = Field(3, ge=1, le=10)  # passages searched (and given to the model)
    # Share of the question's words a passage must hold to count as answering it.
    min_coverage: float = Field(0.6, gt=0.0, le=1.0)
    # Match words by meaning too (sentence embeddings, models/all-minilm-l6-v2), when the
    # model is installed; without it, or with false, words match by stem and synonym only.
    semantic: bool = True
    # Said when a question about the site is not in the facts; default: "Sorry, I don't
    # know that." and the facts' contact section.
    unknown: str | None = None


@dataclass(frozen=True)
class Persona:
    name: str
    description: str
    system_prompt: str
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    # The local intent stage answers commands first (docs/intents.md).
    intents: bool = False
    knowledge_settings: KnowledgeSettings = field(default_factory=KnowledgeSettings)
    knowledge: KnowledgeBase | None = None
    # Commands nothing acted on are refused, and a reply claiming an action says it was not.
    honest_actions: bool = True
    # The wake words its audio sessions wait for (docs/wake-word.md); None: [wake] wake_words.
    wake_words: tuple[str, ...] | None = None


class PersonaFileError(ChinwagException):
    """A persona file is malformed (a deployment error, reported at start-up)."""


def _flag(data: dict[str, object], key: str, path: Path) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise PersonaFileError(f"{path}: {key} must be true or false")
    return value


def load_persona_file(path: Path, models_dir: Path | None = None) -> Persona:
    """A persona file; its knowledge embedded with the sentence encoder in `models_dir`
    (default: the models folder) when the persona asks for it and the model is there."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        system_prompt = data.get("system_prompt")
        if not isinstance(system_prompt, str) or not system_prompt.strip():
            raise PersonaFileError(f"{path}: system_prompt must be a non-empty string")
        knowledge_settings = KnowledgeSettings.model_validate(data.get("knowledge", {}))
        honest_actions = data.get("honest_actions", True)
        if not isinstance(honest_actions, bool):
            raise PersonaFileError(f"{path}: honest_actions must be true or false")
        wake_words = data.get("wake_words")
        if wake_words is not None and not (
            isinstance(wake_words, list) and all(isinstance(w, str) and w for w in wake_words)
        ):
            raise PersonaFileError(f"{path}: wake_words must be a list of wake word ids")
        knowledge = None
        if knowledge_settings.path is not None:
            from server.pipeline.embedding import EMBEDDING_MODEL, load_encoder
            from server.pipeline.knowledge import KnowledgeFileError, load_knowledge

            encoder = None
            if knowledge_settings.semantic:
                encoder = load_encoder(models_dir / EMBEDDING_MODEL if models_dir else None)
            try:
                knowledge = load_knowledge(path.parent / knowledge_settings.path, encoder=encoder)
            except KnowledgeFileError as exc:
                raise PersonaFileError(f"{path}: {exc}") from exc
        return Persona(
            name=path.stem,
            description=str(data.get("description", "")),
            system_prompt=system_prompt.strip(),
            generation=GenerationSettings.model_validate(data.get("generation", {})),
            intents=_flag(data, "intents", path),
            knowledge_settings=knowledge_settings,
            knowledge=knowledge,
            honest_actions=honest_actions,
            wake_words=tuple(wake_words) if wake_words is not None else None,
        )
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise PersonaFileError(f"{path}: {exc}") from exc


class PersonaLibrary:
    """All personas of a prompts directory, loaded once at start-up."""

    def __init__(self, personas: dict[str, Persona], default: str) -> None:
        if default not in personas:
            raise PersonaFileError(f"default persona {default!r} not found in {sorted(personas)}")
        self._personas = personas
        self.default = default

    @classmethod
    def load(cls, directory: Path, default: str, models_dir: Path | None = None) -> PersonaLibrary:
        personas = {
            path.stem: load_persona_file(path, models_dir)
            for path in sorted(directory.glob("*.toml"))
            if _NAME.match(path.stem)
        }
        if not personas:
            raise PersonaFileError(f"no persona files (*.toml) in {directory}")
        return cls(personas, default)

    def names(self) -> list[str]:
        return sorted(self._personas)

    def get(self, name: str | None) -> Persona:
        persona = self._personas.get(name or self.default)
        if persona is None:
            raise ChinwagError(
                ErrorCode.UNKNOWN_PERSONA,
                f"unknown persona {name!r}; available: {', '.join(self.names())}",
            )
        return persona
