"""The receptionist with its example venue file, on a real server with the real model, over the
native protocol: a site fact comes from the file, an unanswerable site question gets an honest
"I don't know" and where to ask, a command is not claimed, and small talk still reaches the
model."""

from __future__ import annotations

import pytest

from server.pipeline.honesty import claims_action
from tests.conftest import Client

pytestmark = pytest.mark.models


async def _receptionist(client: Client) -> None:
    await client.send({"type": "session.start", "persona": "receptionist"})
    started = await client.until("session.started")
    assert started[-1]["persona"] == "receptionist"


def _reply(events: list[dict[str, object]]) -> str:
    done = events[-1]
    assert done["type"] == "reply.done" and done["status"] == "completed"
    deltas = "".join(str(e["text"]) for e in events if e["type"] == "reply.delta")
    assert deltas == done["text"]
    return deltas


async def test_site_facts_come_from_the_venue_file(client: Client) -> None:
    await _receptionist(client)
    assert "mill-lane-12" in _reply(await client.ask("What's the wifi password?"))
    toilets = _reply(await client.ask("Excuse me, where is the restroom?"))
    assert "ground floor" in toilets
    assert "9 am to 5 pm" in _reply(await client.ask("What time do you open on Saturday?"))


async def test_unanswerable_site_questions_get_an_honest_answer(client: Client) -> None:
    await _receptionist(client)
    said = _reply(await client.ask("Is there a swimming pool in the building?"))
    assert "don't know" in said and "01632 960 412" in said
    command = _reply(await client.ask("Turn off the lights in the main hall."))
    assert "can't" in command and not claims_action(command)


async def test_small_talk_still_reaches_the_model(client: Client) -> None:
    await _receptionist(client)
    events = await client.ask("Hello!")
    done = events[-1]
    assert done["status"] == "completed" and done["usage"] is not None
    # The model answered: a said answer has usage too, but no finish_reason nor timings.
    assert done["finish_reason"] in ("stop", "length") and done["timings"] is not None
