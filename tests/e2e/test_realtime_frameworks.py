"""The Realtime frameworks people build voice agents with, as clients of a real chinwag server.

Each framework runs with its default settings and only the URL changed, in its own venv
(`.venv-frameworks/<name>`, built by `make frameworks`: their pins conflict with chinwag's,
e.g. openai-agents pins websockets 16), as a script in tests/e2e/realtime_frameworks/ that
prints one JSON report. Each does a typed turn, a spoken turn (a recording from tests/data)
and an interruption; none may see an error event, and every reply must be matched to its
request."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from server.app import Engines
from tests.conftest import RunningServer, make_settings, start_server
from tests.speech import recording, wer

pytestmark = [pytest.mark.slow, pytest.mark.models]

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).with_name("realtime_frameworks")
QUESTION = recording("spk1_snt3.wav")
INTERRUPTION = recording("spk2_snt2.wav")


@pytest.fixture(scope="module")
async def served(engines: Engines) -> AsyncIterator[RunningServer]:
    # The frameworks send audio in chunks of up to 100 ms and more: the default frame limit.
    settings = make_settings(limits={"max_message_bytes": 256 * 1024})
    running = await start_server(settings, engines)
    yield running
    await running.web.close()


async def run_client(name: str, server: RunningServer) -> dict[str, Any]:
    python = ROOT / ".venv-frameworks" / name / "bin" / "python"
    if not python.exists():
        pytest.fail(f"{python} is missing: `make frameworks` builds the framework venvs")
    process = await asyncio.create_subprocess_exec(
        str(python),
        str(SCRIPTS / f"{name}_client.py"),
        "--url",
        server.http,
        "--question",
        str(QUESTION.path),
        "--interruption",
        str(INTERRUPTION.path),
        cwd=SCRIPTS,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(600):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        sys.stderr.write(err.decode(errors="replace")[-6000:])
    assert process.returncode == 0, f"{name} client exited {process.returncode}"
    report: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return report


def reply_text(response: dict[str, Any]) -> str:
    content = response["output"][0]["content"][0]
    return str(content.get("transcript") or content.get("text") or "")


async def test_openai_agents_sdk(served: RunningServer) -> None:
    report = await run_client("agents", served)
    assert report["errors"] == []
    session = report["session"]
    # Its whole first session.update applied: instructions, semantic_vad, transcription.
    assert session["instructions"].startswith("You are a friendly assistant.")
    assert session["audio"]["input"]["turn_detection"]["type"] == "semantic_vad"
    assert session["audio"]["input"]["transcription"]["model"] == "gpt-4o-mini-transcribe"
    assert report["typed"]["status"] == "completed" and reply_text(report["typed"]).strip()
    spoken = report["spoken"]
    assert wer([QUESTION.text], [spoken["transcript"]]) <= 0.2
    assert spoken["response"]["status"] == "completed" and reply_text(spoken["response"])
    first, second = report["interrupted"][:2]
    assert first["status"] == "cancelled" and second["status"] == "completed"
    assert "conversation.item.retrieved" in report["events"]


async def test_livekit_agents(served: RunningServer) -> None:
    report = await run_client("livekit", served)
    assert report["errors"] == []
    # The one server error allowed: an AgentSession's response.cancel racing the server's own
    # cancel on barge-in, which LiveKit ignores by its message (OpenAI's own wording).
    for error in report["server_errors"]:
        assert error["message"].startswith("Cancellation failed"), error
    session = report["session"]
    assert session["audio"]["input"]["turn_detection"]["type"] == "semantic_vad"
    assert session["audio"]["input"]["turn_detection"]["eagerness"] == "medium"
    assert session["audio"]["input"]["transcription"]["model"] == "gpt-4o-mini-transcribe"
    # generate_reply matched its reply (response.metadata echoed): no 10 s timeout.
    assert report["typed"]["user_initiated"] and report["typed"]["reply"]["text"].strip()
    assert report["typed"]["reply"]["audio_ms"] > 0
    spoken = report["spoken"]
    assert wer([QUESTION.text], [spoken["transcript"]]) <= 0.2
    assert spoken["reply"]["text"].strip() and not spoken["reply"]["user_initiated"]
    assert report["interrupt_user_initiated"]
    first, second = report["interrupted"][:2]
    assert first["status"] == "cancelled" and second["status"] == "completed"
    assert first["metadata"]["client_event_id"].startswith("response_create_")


async def test_pipecat(served: RunningServer) -> None:
    report = await run_client("pipecat", served)
    assert report["server_errors"] == []
    assert report["typed"]["status"] == "completed" and reply_text(report["typed"]).strip()
    spoken = report["spoken"]
    assert wer([QUESTION.text], [spoken["transcript"]]) <= 0.2
    assert spoken["response"]["status"] == "completed" and reply_text(spoken["response"])
    first, second = report["interrupted"][:2]
    # Talking over the answer cancels it while it is still being written; an answer the model
    # finished before the person spoke (its audio still playing) ends completed, as on
    # OpenAI's server, and Pipecat truncates it itself. Which one depends on the machine.
    assert first["status"] in {"cancelled", "completed"} and second["status"] == "completed"
    assert "input_audio_buffer.speech_started" in report["events"]
