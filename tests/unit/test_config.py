from pathlib import Path

import pytest

import server.config as config_module
from server import PROJECT_ROOT
from server.config import (
    DEFAULT_ASR,
    DEFAULT_LLM,
    ConfigError,
    default_models_dir,
    load_settings,
    settings_as_toml,
)


def test_defaults_bind_loopback() -> None:
    settings = load_settings(environ={})
    assert settings.server.host == "127.0.0.1"
    assert settings.server.port == 8765


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    config = tmp_path / "chinwag.toml"
    config.write_text('[server]\nport = 9001\nhost = "0.0.0.0"\n[llm]\ncontext_size = 1024\n')
    env = {"CHINWAG_SERVER__PORT": "9002", "CHINWAG_LLM__THREADS": "1"}
    settings = load_settings(config, {"server": {"port": 9003}}, environ=env)
    assert settings.server.port == 9003  # flag beats env beats file
    assert settings.server.host == "0.0.0.0"  # from the file
    assert settings.llm.threads == 1  # from env
    assert settings.llm.context_size == 1024  # from the file
    assert load_settings(config, environ=env).server.port == 9002


def test_config_path_from_env(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[limits]\nmax_sessions = 3\n")
    settings = load_settings(environ={"CHINWAG_CONFIG": str(config)})
    assert settings.limits.max_sessions == 3


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[llm]\nmodel_path = "weights/m.gguf"\n')
    assert load_settings(config, environ={}).llm.model_path == tmp_path / "weights" / "m.gguf"


@pytest.mark.parametrize(
    ("text", "env"),
    [
        ("[server]\nport = 70000\n", {}),
        ("[server]\nnonsense = 1\n", {}),
        ("[nope]\nx = 1\n", {}),
        ("this is not toml", {}),
        ("", {"CHINWAG_SERVER__PORT": "eighty"}),
        ("", {"CHINWAG_PORT": "80"}),
    ],
)
def test_invalid_config_is_a_clear_error(tmp_path: Path, text: str, env: dict[str, str]) -> None:
    config = tmp_path / "c.toml"
    config.write_text(text)
    with pytest.raises(ConfigError):
        load_settings(config, environ=env)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(Path("/nonexistent/chinwag.toml"), environ={})


def test_print_config_round_trips_and_hides_token(tmp_path: Path) -> None:
    settings = load_settings(overrides={"server": {"token": "s3cret", "port": 1234}}, environ={})
    text = settings_as_toml(settings)
    assert "s3cret" not in text
    dumped = tmp_path / "dump.toml"
    dumped.write_text(text.replace('token = "***"', ""))
    assert load_settings(dumped, environ={}).server.port == 1234


def test_models_folder_of_a_checkout_is_its_models_dir() -> None:
    settings = load_settings(environ={})
    assert settings.models.directory == PROJECT_ROOT / "models"
    assert settings.llm.model_path == PROJECT_ROOT / "models" / DEFAULT_LLM


def test_models_folder_moves_the_default_weights_not_explicit_ones(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[models]\ndirectory = "weights"\n[tts]\nvoice_path = "/v/voice.onnx"\n')
    settings = load_settings(config, environ={})
    assert settings.models.directory == tmp_path / "weights"  # relative to the file
    assert settings.llm.model_path == tmp_path / "weights" / DEFAULT_LLM
    assert settings.asr.model_path == tmp_path / "weights" / DEFAULT_ASR
    assert settings.tts.voice_path == Path("/v/voice.onnx")
    env = {"CHINWAG_MODELS__DIRECTORY": "/env/models"}
    assert load_settings(config, environ=env).asr.model_path == Path("/env/models") / DEFAULT_ASR


def test_installed_models_folder_is_per_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config_module, "IS_CHECKOUT", False)
    assert default_models_dir({"XDG_DATA_HOME": "/data"}) == Path("/data/chinwag/models")
    home = Path.home() / ".local" / "share" / "chinwag" / "models"
    assert default_models_dir({}) == home
    assert default_models_dir({"XDG_DATA_HOME": "relative/ignored"}) == home
    settings = load_settings(environ={"XDG_DATA_HOME": "/data"})
    assert settings.llm.model_path == Path("/data/chinwag/models") / DEFAULT_LLM


def test_first_phrase_bounds_build_the_splitter() -> None:
    settings = load_settings(
        overrides={"tts": {"first_phrase_min_words": 2, "first_phrase_max_words": 2}}, environ={}
    )
    assert settings.tts.phrase_splitter().feed("Turned on the kitchen light now.") == ["Turned on"]
    with pytest.raises(ConfigError, match="first_phrase_max_words"):
        load_settings(
            overrides={"tts": {"first_phrase_min_words": 5, "first_phrase_max_words": 3}},
            environ={},
        )
