"""`chinwag models fetch NAME` against a local mirror of the hub that serves a real GGUF.

No hub is reachable here, so a small HTTP server in the test plays one: it serves the packaged
SmolLM2 file under the hub's URL layout (`/{repo}/resolve/{revision}/{file}`, with the
`X-Repo-Commit`, `ETag` and `Content-Length` headers huggingface_hub reads, and Range requests
for resuming), and `HF_ENDPOINT` points the real `chinwag` command at it.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.models import ModelError, Preset, load_presets, point_config_at, sha256_of
from tests.model_paths import MODELS

LLM_PATH = MODELS / "smollm2-135m-instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"

REPO = "chinwag-test/SmolLM2-135M-Instruct-GGUF"
REVISION = "0123456789abcdef0123456789abcdef01234567"


class Mirror(http.server.ThreadingHTTPServer):
    def __init__(self, files: dict[str, Path]) -> None:
        super().__init__(("127.0.0.1", 0), MirrorHandler)
        self.files = files  # URL path -> file
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, Range


class MirrorHandler(http.server.BaseHTTPRequestHandler):
    server: Mirror

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _head(self) -> tuple[Path, int, int] | None:
        self.server.requests.append((self.command, self.path, self.headers.get("Range")))
        path = self.server.files.get(self.path.split("?")[0])
        if path is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        size = path.stat().st_size
        start = 0
        ranged = self.headers.get("Range")
        if ranged and ranged.startswith("bytes="):
            start = int(ranged[6:].split("-")[0] or 0)
        self.send_response(206 if start else 200)
        etag = sha256_of(path) if not hasattr(self.server, "etag") else self.server.etag
        self.send_header("ETag", f'"{etag}"')
        self.send_header("X-Repo-Commit", REVISION)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.end_headers()
        return path, start, size

    def do_HEAD(self) -> None:
        self._head()

    def do_GET(self) -> None:
        found = self._head()
        if found is None:
            return
        path, start, _size = found
        with path.open("rb") as f:
            f.seek(start)
            while block := f.read(1 << 20):
                self.wfile.write(block)


@pytest.fixture
def mirror() -> Iterator[Mirror]:
    if not LLM_PATH.is_file():
        pytest.skip("the packaged SmolLM2 GGUF is not fetched (make models)")
    server = Mirror({f"/{REPO}/resolve/{REVISION}/{LLM_PATH.name}": LLM_PATH})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _presets_file(tmp_path: Path, sha256: str) -> Path:
    presets = tmp_path / "presets.toml"
    presets.write_text(
        f"""
[presets."test-smollm2"]
description = "the packaged SmolLM2, served by the test's mirror"
repo = "{REPO}"
revision = "{REVISION}"
file = "{LLM_PATH.name}"
sha256 = "{sha256}"
size_mb = 98
ram_gb = 1
licence = "Apache-2.0"
""",
        encoding="utf-8",
    )
    return presets


def _run_fetch(
    tmp_path: Path, mirror: Mirror, presets: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    """The real `chinwag models fetch` in a child process, its presets file swapped in."""
    script = (
        "import sys, server.models as m;"
        f"m.PRESETS = __import__('pathlib').Path({str(presets)!r});"
        "m.find_preset.__defaults__ = (m.PRESETS,);"
        "from server.__main__ import main; sys.exit(main(sys.argv[1:]))"
    )
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("HF_", "CHINWAG_"))
    } | {
        "HF_ENDPOINT": f"http://127.0.0.1:{mirror.server_port}",
        "HF_HOME": str(tmp_path / "hf-home"),
        **env,
    }  # fmt: skip
    config = tmp_path / "chinwag.toml"
    if not config.exists():
        config.write_text("", encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-c", script, "models", "fetch", "test-smollm2",
         "--models-dir", str(tmp_path / "models"), "--config", str(config)],
        capture_output=True, text=True, env=environ, timeout=300, check=False,
    )  # fmt: skip


@pytest.mark.models
def test_fetch_downloads_checks_and_points_the_config(tmp_path: Path, mirror: Mirror) -> None:
    expected = sha256_of(LLM_PATH)
    presets = _presets_file(tmp_path, expected)
    (tmp_path / "chinwag.toml").write_text("[server]\nport = 9000\n\n[llm]\nthreads = 2\n")

    done = _run_fetch(tmp_path, mirror, presets)

    assert done.returncode == 0, done.stderr
    target = tmp_path / "models" / "presets" / "test-smollm2" / LLM_PATH.name
    assert target.is_file() and sha256_of(target) == expected
    assert any(method == "GET" for method, _, _ in mirror.requests)
    config = tomllib.loads((tmp_path / "chinwag.toml").read_text())
    assert config["llm"] == {"threads": 2, "model_path": str(target)}
    assert config["server"] == {"port": 9000}
    assert "verified" in done.stdout

    # Present and verified: a second fetch downloads nothing.
    mirror.requests.clear()
    again = _run_fetch(tmp_path, mirror, presets)
    assert again.returncode == 0, again.stderr
    assert mirror.requests == []


@pytest.mark.models
def test_fetch_refuses_a_file_whose_checksum_differs(tmp_path: Path, mirror: Mirror) -> None:
    presets = _presets_file(tmp_path, "0" * 64)
    done = _run_fetch(tmp_path, mirror, presets)
    assert done.returncode == 1
    assert "does not match" in done.stderr
    assert not (tmp_path / "models" / "presets" / "test-smollm2" / LLM_PATH.name).exists()


@pytest.mark.models
def test_a_users_own_offline_mode_is_honoured(tmp_path: Path, mirror: Mirror) -> None:
    presets = _presets_file(tmp_path, sha256_of(LLM_PATH))
    done = _run_fetch(tmp_path, mirror, presets, HF_HUB_OFFLINE="1")
    assert done.returncode == 1
    assert "HF_HUB_OFFLINE" in done.stderr
    assert mirror.requests == []


def test_every_shipped_preset_is_pinned() -> None:
    presets = load_presets()
    assert len(presets) >= 5
    for preset in presets:
        assert isinstance(preset, Preset)
        assert len(preset.revision) == 40 and len(preset.sha256) == 64, preset.name
        assert preset.file.endswith(".gguf") and preset.licence and preset.size_mb > 0


def test_point_config_at_without_a_config_file_prints_the_setting(tmp_path: Path) -> None:
    said = point_config_at(tmp_path / "m.gguf", None)
    assert "[llm]" in said and "CHINWAG_LLM__MODEL_PATH" in said
    config = tmp_path / "new" / "chinwag.toml"
    point_config_at(tmp_path / "m.gguf", config)
    assert tomllib.loads(config.read_text())["llm"]["model_path"] == str(tmp_path / "m.gguf")
    with pytest.raises(ModelError):
        from server.models import find_preset

        find_preset("no-such-preset")
