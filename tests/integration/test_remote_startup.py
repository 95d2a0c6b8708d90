"""`chinwag serve` with every stage remote (--llm-url, --asr-url, --tts-url) loads none of
the local models, starts although the remote server is not up, and answers a turn with an
`error` naming the problem; a bad URL is refused at start-up in one line."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path

import aiohttp
from websockets.asyncio.client import connect

from server import PROJECT_ROOT
from tests.integration.test_startup_errors import assert_one_clear_line, serve

# Libraries that only the local engines load: llama.cpp, CTranslate2 (Whisper), espeak-ng's
# bridge (Piper); and the weights mapped into memory (llama.cpp maps the GGUF).
LOCAL_ENGINE_FILES = ("libllama", "libctranslate2", "espeakbridge", ".gguf")


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_all_stages_remote_loads_no_local_model(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    ready = tmp_path / "ready"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHINWAG_")}
    env.pop("PYTHONASYNCIODEBUG", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server", "serve", "--port", "0", "--ready-file", str(ready),
        "--llm-url", url, "--asr-url", url, "--tts-url", url,
        cwd=PROJECT_ROOT, env=env, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(120):
            while not (port := await asyncio.to_thread(_ready_port, ready)):
                assert process.returncode is None, "chinwag serve exited"
                await asyncio.sleep(0.1)
        maps = await asyncio.to_thread(Path(f"/proc/{process.pid}/maps").read_text)
        loaded = [name for name in LOCAL_ENGINE_FILES if name in maps]
        assert not loaded, loaded
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/healthz") as answer,
        ):
            health = await answer.json()
        assert health["status"] == "ready" and health["llm"]["model"] == "remote"
        async with connect(f"ws://127.0.0.1:{port}/") as ws:
            assert json.loads(await ws.recv())["type"] == "session.started"
            await ws.send(json.dumps({"type": "user.message", "text": "Hello?"}))
            async with asyncio.timeout(60):
                while (event := json.loads(await ws.recv()))["type"] != "error":
                    pass
            assert event["code"] == "remote_unavailable", event
            assert "cannot reach the LLM server" in event["message"]
    finally:
        if process.returncode is None:
            process.terminate()
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    # Said once at start-up, in one line, as a warning (the server still serves).
    assert b"LLM server not ready: cannot reach the LLM server" in stderr, stderr


def _ready_port(ready: Path) -> int:
    text = ready.read_text().strip() if ready.exists() else ""
    return int(text) if text else 0


def test_bad_remote_url_is_one_line() -> None:
    code, lines = serve("--port", "0", "--llm-url", "gpu-box:8080")
    assert code == 2
    assert_one_clear_line(lines, "[llm]", "base_url", "expected http://HOST[:PORT]/v1")
