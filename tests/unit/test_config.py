from pathlib import Path

import pytest

from server.config import ConfigError, load_settings, settings_as_toml


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
