from pathlib import Path

import pytest

from server import PROJECT_ROOT
from server.errors import ChinwagError, ErrorCode
from server.prompts import PersonaFileError, PersonaLibrary, load_persona_file


def test_shipped_personas_load() -> None:
    library = PersonaLibrary.load(PROJECT_ROOT / "prompts", "assistant")
    assert {"assistant", "receptionist", "smart_home"} <= set(library.names())
    for name in library.names():
        persona = library.get(name)
        assert persona.system_prompt
        assert persona.generation.max_tokens > 0
    assert library.get(None).name == "assistant"


def test_unknown_persona_is_a_client_error() -> None:
    library = PersonaLibrary.load(PROJECT_ROOT / "prompts", "assistant")
    with pytest.raises(ChinwagError) as info:
        library.get("pirate")
    assert info.value.code == ErrorCode.UNKNOWN_PERSONA
    assert "assistant" in info.value.message


def test_generation_settings_are_validated(tmp_path: Path) -> None:
    path = tmp_path / "hot.toml"
    path.write_text('system_prompt = "x"\n[generation]\ntemperature = 9.0\n')
    with pytest.raises(PersonaFileError, match="temperature"):
        load_persona_file(path)


def test_missing_system_prompt(tmp_path: Path) -> None:
    path = tmp_path / "empty.toml"
    path.write_text('description = "nothing"\n')
    with pytest.raises(PersonaFileError, match="system_prompt"):
        load_persona_file(path)


def test_default_must_exist(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text('system_prompt = "x"\n')
    with pytest.raises(PersonaFileError, match="default"):
        PersonaLibrary.load(tmp_path, "b")


def test_generation_seed_fits_llama_cpp() -> None:
    from pydantic import ValidationError

    from server.prompts import GenerationSettings

    assert GenerationSettings(seed=2**32 - 1).seed == 2**32 - 1
    for seed in (-2, 2**32, int("9" * 4096)):
        with pytest.raises(ValidationError):
            GenerationSettings(seed=seed)
