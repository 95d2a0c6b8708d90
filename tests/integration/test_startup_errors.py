"""`chinwag serve` that cannot start says why in one line naming the setting, and exits non-zero
(issue 17 item 11): no traceback, no pydantic dump with a web link. Each case runs the real
command as a process and reads its stderr; none gets as far as loading models."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from server import PROJECT_ROOT


def serve(*args: str, env: dict[str, str] | None = None) -> tuple[int, list[str]]:
    """Run `chinwag serve ARGS`; its exit code and the lines of its stderr."""
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CHINWAG_") and k != "PYTHONASYNCIODEBUG"  # its slow-step warnings
    }
    done = subprocess.run(
        [sys.executable, "-m", "server", "serve", *args],
        env={**environ, **(env or {})},
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.returncode, [line for line in done.stderr.splitlines() if line.strip()]


def assert_one_clear_line(lines: list[str], *needles: str) -> str:
    """The last line says what is wrong; no traceback, no other error, no pydantic dump.
    (Log lines of what started before, at INFO, may come first.)"""
    assert lines, "nothing on stderr"
    line = lines[-1]
    assert line.startswith("chinwag: "), lines
    text = "\n".join(lines)
    assert "Traceback" not in text and "pydantic.dev" not in text, text
    assert not [x for x in lines[:-1] if " ERROR " in x or x.startswith("chinwag: ")], lines
    for needle in needles:
        assert needle in line, (needle, line)
    return line


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_port_in_use(busy_port: int) -> None:
    code, lines = serve("--port", str(busy_port))
    assert code == 1
    assert_one_clear_line(lines, "[server] port", f"127.0.0.1:{busy_port}", "already in use")


def test_unresolvable_host() -> None:
    code, lines = serve("--host", "no-such-host.invalid", "--port", "0")
    assert code == 1
    assert_one_clear_line(lines, "[server] host", "'no-such-host.invalid'", "does not resolve")


def test_address_not_on_this_machine() -> None:
    code, lines = serve("--host", "192.0.2.1", "--port", "0")  # TEST-NET-1: never local
    assert code == 1
    assert_one_clear_line(lines, "[server] host", "192.0.2.1")


def test_empty_prompts_folder(tmp_path: Path) -> None:
    code, lines = serve("--port", "0", env={"CHINWAG_PROMPTS__DIRECTORY": str(tmp_path)})
    assert code == 2
    assert_one_clear_line(lines, "[prompts] directory", str(tmp_path), "no persona files")


def test_missing_prompts_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    code, lines = serve("--port", "0", env={"CHINWAG_PROMPTS__DIRECTORY": str(missing)})
    assert code == 2
    assert_one_clear_line(lines, "[prompts] directory", str(missing), "no such folder")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("system_prompt = [unclosed\n", "line 1"),
        ('system_prompt = "x"\n[generation]\ntemperature = 9.0\n', "temperature"),
        ('description = "no prompt"\n', "system_prompt"),
    ],
)
def test_broken_persona_file(tmp_path: Path, text: str, needle: str) -> None:
    (tmp_path / "assistant.toml").write_text(text, encoding="utf-8")
    code, lines = serve("--port", "0", env={"CHINWAG_PROMPTS__DIRECTORY": str(tmp_path)})
    assert code == 2
    assert_one_clear_line(lines, "[prompts] directory", "assistant.toml", needle)


def test_unknown_default_persona() -> None:
    code, lines = serve("--port", "0", env={"CHINWAG_PROMPTS__DEFAULT_PERSONA": "pirate"})
    assert code == 2
    assert_one_clear_line(lines, "[prompts] default_persona 'pirate'", "assistant")


def test_unknown_setting_from_the_environment() -> None:
    code, lines = serve("--port", "0", env={"CHINWAG_SERVER__PROT": "9000"})
    assert code == 2
    assert_one_clear_line(lines, "[server] prot", "CHINWAG_SERVER__PROT", "unknown setting", "port")


def test_bad_value_from_the_environment() -> None:
    code, lines = serve("--port", "0", env={"CHINWAG_LIMITS__MAX_SESSIONS": "many"})
    assert code == 2
    assert_one_clear_line(lines, "[limits] max_sessions = 'many'", "CHINWAG_LIMITS__MAX_SESSIONS")


def test_config_file_with_unknown_key_and_bad_value(tmp_path: Path) -> None:
    config = tmp_path / "chinwag.toml"
    config.write_text('[server]\nhots = "x"\n[llm]\ncontext_size = 5\n[servr]\na = 1\n')
    code, lines = serve("--config", str(config), "--port", "0")
    assert code == 2
    assert_one_clear_line(
        lines,
        "[server] hots",
        "unknown setting",
        "[llm] context_size = 5",
        "256",
        "[servr]",
        "unknown section",
        str(config),
    )


def test_bad_flag_value() -> None:
    code, lines = serve("--port", "99999")
    assert code == 2
    assert_one_clear_line(lines, "[server] port = 99999", "65535")
