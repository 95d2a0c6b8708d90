"""`pip install .` gives a `chinwag` that serves from any directory, not only from a checkout.

The test builds a wheel of the working tree as `pip install .` does, installs it into a fresh
virtual environment and runs the installed `chinwag` with a temporary directory as the working
directory: it must serve the widget, find the personas and the model manifest inside the
package, and answer a text turn. The fresh environment borrows the heavy dependencies of the
running one through a .pth file, so nothing compiles and nothing is downloaded besides the
build backend pip's build isolation installs (from the pip cache or the configured index).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import tomllib
import urllib.request
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

from server import PROJECT_ROOT
from server.prompts import PersonaLibrary

pytestmark = pytest.mark.models

WEB = PROJECT_ROOT / "clients" / "web"
PROMPTS = PROJECT_ROOT / "prompts"
MODELS = PROJECT_ROOT / "models"
# Not part of the distribution; left out of the copy that the wheel is built from.
NOT_BUILT = ("tests/", "docs/", "bench/", ".ci/")


class Installed:
    """chinwag installed from a wheel into a fresh venv, run from an unrelated directory."""

    def __init__(self, root: Path, env_dir: Path, site_packages: Path) -> None:
        self.cwd = root / "elsewhere"
        self.cwd.mkdir()
        self.xdg = root / "xdg"
        self.env_dir = env_dir
        self.site_packages = site_packages
        self.chinwag = env_dir / "bin" / "chinwag"
        self.python = env_dir / "bin" / "python"
        self.environ = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("CHINWAG_", "PYTHON", "VIRTUAL_ENV"))
        }
        self.environ |= {"XDG_DATA_HOME": str(self.xdg), "CHINWAG_MODELS__DIRECTORY": str(MODELS)}

    def run(self, *args: str, environ: dict[str, str] | None = None) -> str:
        result = subprocess.run(
            args, cwd=self.cwd, env=environ or self.environ, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
        return result.stdout


def _source_copy(target: Path) -> Path:
    """The working tree's files as git sees them (tracked or new, not ignored), in `target`.

    Building from a copy keeps build/ and *.egg-info out of the shared checkout and stale
    files from an earlier build out of the wheel.
    """
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT_ROOT, capture_output=True, check=True, text=True,
    ).stdout.split("\0")  # fmt: skip
    for name in listed:
        source = PROJECT_ROOT / name
        if name and not name.startswith(NOT_BUILT) and source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("install")
    source = _source_copy(root / "source")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir",
         str(root / "dist"), str(source)],
        check=True, timeout=300,
    )  # fmt: skip
    (wheel,) = (root / "dist").glob("chinwag-*.whl")
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    # Installed before the .pth below exists: pip must not see (and replace) the running
    # environment's editable chinwag.
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
         "--no-index", str(wheel)],
        check=True, timeout=120,
    )  # fmt: skip
    site_packages = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, check=True, text=True,
        ).stdout.strip()
    )  # fmt: skip
    # The dependencies (llama-cpp-python, faster-whisper, piper, ...) of the running
    # environment, after the fresh one's own site-packages on sys.path. The directory is
    # only added to the path, so its editable-install hook (a .pth file) does not run.
    borrowed = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site_packages / "borrowed-dependencies.pth").write_text("\n".join(sorted(borrowed)) + "\n")
    return Installed(root, env_dir, site_packages)


def persona_files(folder: Path) -> list[str]:
    """The persona, devices and knowledge files under a prompts folder, relative to it."""
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and p.suffix in {".toml", ".md"}
    )


def test_installed_package_is_not_the_checkout(installed: Installed) -> None:
    where = installed.run(
        str(installed.python),
        "-c",
        "import server, clients; print(server.__file__, clients.__file__)",
    ).split()
    for path in where:
        assert Path(path).is_relative_to(installed.site_packages), where
    data = installed.site_packages / "server" / "_data"
    assert persona_files(data / "prompts") == persona_files(PROMPTS)
    manifest = (data / "models" / "manifest.toml").read_bytes()
    assert manifest == (MODELS / "manifest.toml").read_bytes()
    sentences = installed.site_packages / "server" / "intents" / "sentences" / "en.yaml"
    assert (
        sentences.read_bytes() == (PROJECT_ROOT / "server/intents/sentences/en.yaml").read_bytes()
    )
    assert not (installed.site_packages / "prompts").exists()
    assert not (installed.site_packages / "models").exists()


def test_models_folder_defaults_to_the_user_data_dir(installed: Installed) -> None:
    default = installed.xdg / "chinwag" / "models"
    environ = dict(installed.environ)
    del environ["CHINWAG_MODELS__DIRECTORY"]
    listing = installed.run(str(installed.chinwag), "models", "list", environ=environ)
    assert f"models folder: {default}" in listing
    # Every model of the manifest, none of them in the empty user folder.
    listed = len(tomllib.loads((MODELS / "manifest.toml").read_text(encoding="utf-8"))["models"])
    assert listing.count(" missing ") == listed
    flagged = installed.run(
        str(installed.chinwag), "models", "list", "--models-dir", str(MODELS), environ=environ
    )
    assert f"models folder: {MODELS}" in flagged
    assert flagged.count(" ok ") == listed, flagged


def test_settings_point_into_the_package_and_the_models_folder(installed: Installed) -> None:
    config = tomllib.loads(installed.run(str(installed.chinwag), "serve", "--print-config"))
    assert Path(config["prompts"]["directory"]) == installed.site_packages / "server/_data/prompts"
    assert Path(config["models"]["directory"]) == MODELS
    assert Path(config["llm"]["model_path"]).is_relative_to(MODELS)
    assert Path(config["asr"]["model_path"]).is_relative_to(MODELS)
    assert Path(config["tts"]["voice_path"]).is_relative_to(MODELS)


@pytest.fixture(scope="module")
def served(installed: Installed) -> Iterator[str]:
    ready = installed.cwd / "port"
    log = (installed.cwd / "serve.log").open("w")
    process = subprocess.Popen(
        [str(installed.chinwag), "serve", "--port", "0", "--ready-file", str(ready)],
        cwd=installed.cwd, env=installed.environ, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while not (ready.is_file() and ready.read_text()):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"chinwag serve did not get ready:\n{(installed.cwd / 'serve.log').read_text()}"
                )
            time.sleep(0.2)
        yield f"127.0.0.1:{int(ready.read_text())}"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read()


def test_installed_chinwag_serves_the_widget(served: str) -> None:
    status, body = _get(f"http://{served}/healthz")
    assert status == 200 and json.loads(body)
    assert _get(f"http://{served}/") == (200, (WEB / "index.html").read_bytes())
    for asset in sorted(WEB.iterdir()):
        assert _get(f"http://{served}/{asset.name}") == (200, asset.read_bytes()), asset.name


def test_installed_chinwag_answers_a_text_turn(served: str) -> None:
    with connect(f"ws://{served}/") as ws:
        started = json.loads(ws.recv(timeout=10))
        assert started["type"] == "session.started"
        assert started["personas"] == PersonaLibrary.load(PROMPTS, "assistant").names()
        ws.send(json.dumps({"type": "session.update", "generation": {"max_tokens": 24}}))
        ws.send(json.dumps({"type": "user.message", "text": "Say hello."}))
        while (event := json.loads(ws.recv(timeout=60)))["type"] != "reply.done":
            assert event["type"] != "error", event
        assert event["status"] == "completed" and event["text"].strip()
