"""Long `say` requests do not keep the server's memory (issue 17 item 14): a real
`chinwag serve` process with the real Piper voice, its RSS read from /proc."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from tests.e2e.test_shutdown import start_serve

pytestmark = [pytest.mark.models, pytest.mark.slow]
SENTENCE = (
    "The quick brown fox jumps over the lazy dog near the river bank, while the children "
    "play happily in the warm afternoon sun. "
)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def say(port: int, text: str) -> int:
    """Speak text through the server; the bytes of audio received."""
    async with connect(f"ws://127.0.0.1:{port}/", max_size=None) as ws:
        await ws.recv()  # session.started
        await ws.send(json.dumps({"type": "say", "text": text}))
        received = 0
        while True:
            frame = await ws.recv()
            if isinstance(frame, bytes):
                received += len(frame)
            elif json.loads(frame)["type"] == "output_audio.done":
                return received


async def test_long_says_give_their_memory_back(tmp_path: Path) -> None:
    proc, port = await asyncio.to_thread(start_serve, tmp_path)
    try:
        await say(port, "Hello there.")  # the voice's first use
        before = rss_mb(proc.pid)
        text = (SENTENCE * 20)[:2000]
        for _ in range(3):
            assert await say(port, text) > 1_000_000  # about a minute of speech each time
        await asyncio.sleep(1.0)  # the heap is trimmed just after the stream ends
        grown = rss_mb(proc.pid) - before
        # Before: onnxruntime's arena kept about 260 MB after such requests, for good.
        assert grown < 100, f"RSS grew by {grown:.0f} MB over three long says"
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 30)
        if proc.returncode is None:
            proc.kill()
        await asyncio.to_thread(proc.communicate)
