"""The intent stage end to end: the real models, a real Mosquitto, the demo home
(prompts/devices.example.toml). Typed and spoken commands are published on MQTT (Hermes and
chinwag topics) with the right slots, the spoken confirmation transcribes back, an unknown
device is refused and published nowhere, chit-chat still reaches the model, and a timer fires
and is announced."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import connect

from bench.intent_accuracy import espeak
from clients.talk import talk_turn
from server import PROJECT_ROOT
from server.app import Engines
from tests.conftest import Client
from tests.e2e.test_mqtt import (
    Bridged,
    Recorder,
    body,
    bridge_settings,
    bridged_server,
    device,
    wait_online,
)
from tests.mqtt_broker import MosquittoBroker, running_broker
from tests.speech import normalise, to_16k_float, wer

pytestmark = pytest.mark.models

SMART_HOME = {"type": "session.start", "persona": "smart_home", "site": "kitchen"}


@pytest.fixture(scope="module")
async def broker(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MosquittoBroker]:
    async with running_broker(tmp_path_factory.mktemp("mosquitto")) as started:
        yield started


@pytest.fixture(scope="module")
async def bridged(broker: MosquittoBroker, engines: Engines) -> AsyncIterator[Bridged]:
    settings = bridge_settings(broker.url, PROJECT_ROOT / "prompts", reconnect_max_s=2.0)
    async with bridged_server(engines, settings) as served, device(broker.port) as watcher:
        await wait_online(watcher)
        yield served


@pytest.fixture
async def home(bridged: Bridged, broker: MosquittoBroker) -> AsyncIterator[Recorder]:
    """A device of the home: records hermes/# and chinwag/#."""
    async with device(broker.port) as recorder:
        yield recorder


@contextlib.asynccontextmanager
async def native(bridged: Bridged, start: dict[str, Any] = SMART_HOME) -> AsyncIterator[Client]:
    async with connect(bridged.running.url, max_size=None) as ws:
        client = Client(ws)
        assert (await client.event())["type"] == "session.started"
        await client.send(start)
        await client.until("session.started")
        yield client


async def transcribed(engines: Engines, pcm: bytes, rate: int) -> str:
    samples = np.frombuffer(pcm, dtype="<i2")
    assert len(samples) > 0.3 * rate, "under 0.3 s of audio"
    text = await asyncio.to_thread(engines.transcriber.transcribe, to_16k_float(samples, rate))
    return normalise(text.text)


def piper(engines: Engines, text: str) -> tuple[np.ndarray, int]:
    chunks = list(engines.synthesizer.synthesize(text))
    return np.concatenate([np.asarray(c, dtype=np.int16) for c in chunks]), int(
        engines.synthesizer.sample_rate
    )


async def test_typed_commands_are_published_refused_or_left_to_the_model(
    bridged: Bridged, home: Recorder
) -> None:
    async with native(bridged) as client:
        since = home.mark()
        events = await client.ask("Turn off the kitchen light.")
        intent = next(e for e in events if e["type"] == "intent")
        assert intent["name"] == "HassTurnOff" and intent["handled_by"] == "home"
        assert events[-1]["text"] == "Turned off the kitchen light"
        assert events[-1]["finish_reason"] == "intent"

        hermes = body(await home.wait_for("hermes/intent/HassTurnOff", since, timeout=30))
        assert hermes["intent"] == {"intentName": "HassTurnOff", "confidenceScore": 1.0}
        assert hermes["siteId"] == "kitchen" and hermes["input"] == "Turn off the kitchen light."
        slots = {s["slotName"]: s for s in hermes["slots"]}
        assert slots["name"]["value"] == {"kind": "Custom", "value": "kitchen light"}
        assert slots["entity_id"]["value"]["value"] == "light.kitchen"
        ours = body(await home.wait_for("chinwag/kitchen/intent", since, timeout=30))
        assert ours["intent"] == "HassTurnOff" and ours["slots"] == {"name": "kitchen light"}
        assert [t["entity_id"] for t in ours["targets"]] == ["light.kitchen"]

        since = home.mark()
        refused = await client.ask("Turn off the toaster.")
        assert refused[-1]["text"] == "I don't know a device called toaster."
        assert not any(e["type"] == "intent" for e in refused)

        chat = await client.ask("What is a rainbow?")
        assert not any(e["type"] == "intent" for e in chat)
        done = chat[-1]
        assert done["finish_reason"] != "intent" and done["usage"]["completion_tokens"] > 0
        # The refusal (long before the model's reply) was published nowhere.
        assert not home.all("hermes/intent/#", since) and not home.all("chinwag/+/intent", since)


@pytest.mark.parametrize("voice", ["piper", "espeak-ng"])
async def test_spoken_commands_are_confirmed_aloud(
    bridged: Bridged, home: Recorder, engines: Engines, voice: str
) -> None:
    said, intent_name, entity, confirmation = {
        "piper": (
            "Turn off the kitchen light.",
            "HassTurnOff",
            "light.kitchen",
            "off",
        ),
        "espeak-ng": ("Open the garage door.", "HassTurnOn", "cover.garage_door", "opening"),
    }[voice]
    pcm, rate = piper(engines, said) if voice == "piper" else espeak(said)
    since = home.mark()
    async with native(bridged) as client:
        result = await talk_turn(client.ws, pcm, rate, timeout=180)
    intents = [e for e in result.events if e["type"] == "intent"]
    assert [i["name"] for i in intents] == [intent_name], result.transcript
    assert [t["entity_id"] for t in intents[0]["targets"]] == [entity]
    # The confirmation said is the one sent, within Whisper tiny's slips ("garage" heard as
    # "brush", "turned" as "purned" now and then), and its action word is heard.
    heard = await transcribed(engines, bytes(result.audio), result.audio_rate)
    assert wer([result.reply], [heard]) <= 0.4 and confirmation in heard.split(), (
        result.reply,
        heard,
    )
    hermes = body(await home.wait_for(f"hermes/intent/{intent_name}", since, timeout=30))
    assert any(s["value"]["value"] == entity for s in hermes["slots"])


async def test_a_command_one_word_off_is_repaired(
    bridged: Bridged, home: Recorder, engines: Engines
) -> None:
    """Typed with a stray first word, and spoken: Whisper tiny hears Piper's "Start a 3 minute
    timer" as "Start at 3 minute timer" more often than not (bench/results-intents-hearing.json);
    either way it is the timer."""
    async with native(bridged) as client:
        since = home.mark()
        events = await client.ask("Place turn off the kitchen light.")
        intent = next(e for e in events if e["type"] == "intent")
        assert intent["name"] == "HassTurnOff"
        assert [t["entity_id"] for t in intent["targets"]] == ["light.kitchen"]
        assert events[-1]["text"] == "Turned off the kitchen light"
        hermes = body(await home.wait_for("hermes/intent/HassTurnOff", since, timeout=30))
        assert hermes["input"] == "Place turn off the kitchen light."

        pcm, rate = piper(engines, "Start a 3 minute timer.")
        result = await talk_turn(client.ws, pcm, rate, timeout=180)
    intents = [e for e in result.events if e["type"] == "intent"]
    assert [i["name"] for i in intents] == ["HassStartTimer"], result.transcript
    assert {s["name"]: s["value"] for s in intents[0]["slots"]}["minutes"] == 3


MISHEARD = "Set the temperature to 21 degrees."  # espeak-ng: "At the temperature ..." here


async def test_a_command_misheard_at_first_is_acted_on_from_another_reading(
    bridged: Bridged, home: Recorder, engines: Engines
) -> None:
    """Whisper tiny.en (greedy, with the home's prompt) hears espeak-ng's MISHEARD as "At the
    temperature to 21 degrees." on the development machine: no command; the likeliest of its
    five readings is the command (server/intents/hearing.py). Another CPU may hear it right
    the first time; either way the thermostat is set to 21, and what was heard is close."""
    pcm, rate = espeak(MISHEARD)
    since = home.mark()
    async with native(bridged) as client:
        result = await talk_turn(client.ws, pcm, rate, timeout=180)
    intents = [e for e in result.events if e["type"] == "intent"]
    assert [i["name"] for i in intents] == ["HassClimateSetTemperature"], result.transcript
    assert {s["name"]: s["value"] for s in intents[0]["slots"]}["temperature"] == 21
    assert [t["entity_id"] for t in intents[0]["targets"]] == ["climate.thermostat"]
    assert wer([MISHEARD], [result.transcript]) <= 0.34, result.transcript
    hermes = body(await home.wait_for("hermes/intent/HassClimateSetTemperature", since, timeout=30))
    assert hermes["input"] == intents[0]["text"]


async def test_whispers_readings_of_a_command(engines: Engines) -> None:
    """The readings themselves (the real model, the same encoder pass): at most five, the
    likeliest first, each close to what was said, and together one command."""
    from server.engines.base import Hypothesis, MoreReadings, Reconsiders, Transcript
    from server.intents.hearing import choose
    from server.intents.home import load_home
    from server.intents.recognizer import IntentRecognizer

    transcriber = engines.transcriber
    assert isinstance(transcriber, Reconsiders)
    home = load_home(PROJECT_ROOT / "prompts" / "devices.example.toml")
    prompt = home.asr_prompt()
    pcm, rate = espeak(MISHEARD)
    found: list[Hypothesis] = []

    def reconsider(first: Transcript, more: MoreReadings) -> Transcript:
        found.extend(more(5, prompt))
        return first

    first = await asyncio.to_thread(
        transcriber.transcribe_reconsidered,
        to_16k_float(pcm, rate),
        prompt=prompt,
        reconsider=reconsider,
    )
    assert wer([MISHEARD], [first.text]) <= 0.4, first.text
    assert 1 <= len(found) <= 5
    scores = [r.avg_logprob for r in found]
    assert scores == sorted(scores, reverse=True) and all(s < 0 for s in scores)
    assert all(wer([MISHEARD], [r.text]) <= 0.4 for r in found), found
    strict = IntentRecognizer(home, repair=False)
    chosen = choose("", found, lambda text: strict.understand(text, "kitchen"))
    assert chosen is not None, found
    assert chosen.understood.intent == "HassClimateSetTemperature"
    assert {s.name: s.value for s in chosen.understood.slots}["temperature"] == 21


async def test_a_timer_set_over_mqtt_fires_and_is_announced(home: Recorder) -> None:
    since = home.mark()
    answer = await home.ask("hall", "Set a timer for 2 seconds.", "t-1")
    assert answer["text"] == "Timer set for 2 seconds" and answer["status"] == "completed"
    started = body(await home.wait_for("chinwag/hall/intent", since, timeout=30))
    assert started["intent"] == "HassStartTimer" and started["handled_by"] == "chinwag"
    assert started["slots"] == {"seconds": 2}
    hermes = body(await home.wait_for("hermes/intent/HassStartTimer", since, timeout=30))
    assert hermes["slots"][0]["value"] == {"kind": "Number", "value": 2}
    finished = body(await home.wait_for("chinwag/hall/event/timer_finished", since, timeout=30))
    assert finished["seconds"] == 2.0 and finished["site"] == "hall"
    announced = await home.wait_for(
        "chinwag/hall/reply", since, lambda b: "timer is done" in b["text"], timeout=30
    )
    assert body(announced)["text"] == "Your 2 second timer is done."


async def test_a_timer_is_announced_aloud_to_a_listening_session(
    bridged: Bridged, engines: Engines
) -> None:
    async with native(bridged) as client:
        await client.send({"type": "audio.start", "sample_rate": 16000})
        events = await client.ask("set a timer for 1 second")
        assert any(e["type"] == "intent" and e["name"] == "HassStartTimer" for e in events)
        pcm = bytearray()
        rate = 0
        async with asyncio.timeout(60):
            finished = False
            while True:
                frame = await client.ws.recv()
                if isinstance(frame, bytes):
                    pcm.extend(frame)
                    continue
                event = json.loads(frame)
                finished = finished or event["type"] == "timer.finished"
                if event["type"] == "output_audio.start":
                    rate = event["sample_rate"]
                if event["type"] == "output_audio.done" and finished:
                    break
    assert "timer is done" in await transcribed(engines, bytes(pcm), rate)


async def test_wyoming_handle_answers_with_the_confirmation(engines: Engines) -> None:
    """Home Assistant's conversation agent (persona smart_home): the command's confirmation is
    the `handled` text, and the command was recognised, not generated."""
    from wyoming.handle import Handled

    from tests.e2e.test_wyoming import ha_converse, serve, stop

    served = await serve(engines)
    try:
        event = await ha_converse(served, "Turn off the kitchen light.", "01JINTENT")
        assert Handled.is_type(event.type), event
        assert Handled.from_event(event).text == "Turned off the kitchen light"
        conversation = served.wyoming.conversations.get("01JINTENT")
        assert conversation is not None
        assert conversation.session.history[-1].content == "Turned off the kitchen light"
    finally:
        await stop(served)


async def test_an_everyday_phrasing_spoken_acts(
    bridged: Bridged, home: Recorder, engines: Engines
) -> None:
    """One of chinwag's own sentence templates (server/intents/sentences/en.yaml), not Home
    Assistant's: "kill the lights in <area>", spoken by Piper, is published as HassTurnOff for
    the room's lights."""
    pcm, rate = piper(engines, "Kill the lights in the living room.")
    since = home.mark()
    async with native(bridged) as client:
        result = await talk_turn(client.ws, pcm, rate, timeout=180)
    intents = [e for e in result.events if e["type"] == "intent"]
    assert [i["name"] for i in intents] == ["HassTurnOff"], result.transcript
    slots = {s["name"]: s["value"] for s in intents[0]["slots"]}
    assert slots["area"] == "living room" and slots["domain"] == "light", slots
    assert {t["entity_id"] for t in intents[0]["targets"]} == {
        "light.living_room_ceiling",
        "light.living_room_floor_lamp",
    }
    hermes = body(await home.wait_for("hermes/intent/HassTurnOff", since, timeout=30))
    assert {s["slotName"]: s["value"]["value"] for s in hermes["slots"]}["area"] == "living room"


RESCORED = "Set the heating to 22 degrees."  # espeak-ng: "And the heating to 22 degrees." here


async def test_a_command_misheard_is_acted_on_from_the_homes_sentences(
    bridged: Bridged, home: Recorder
) -> None:
    """Whisper tiny.en (greedy, with the home's prompt) hears espeak-ng's RESCORED as "And the
    heating to 22 degrees." on the development machine, sure of it (no readings asked): no
    command; the home's sentence "Set the heating to 22 degrees.", scored against the same
    audio, is taken (server/intents/rescore.py). Another CPU may hear it right the first
    time; either way the thermostat is set to 22."""
    pcm, rate = espeak(RESCORED)
    since = home.mark()
    async with native(bridged) as client:
        result = await talk_turn(client.ws, pcm, rate, timeout=180)
    intents = [e for e in result.events if e["type"] == "intent"]
    assert [i["name"] for i in intents] == ["HassClimateSetTemperature"], result.transcript
    assert {s["name"]: s["value"] for s in intents[0]["slots"]}["temperature"] == 22
    assert [t["entity_id"] for t in intents[0]["targets"]] == ["climate.thermostat"]
    assert wer([RESCORED], [result.transcript]) <= 0.34, result.transcript
    hermes = body(await home.wait_for("hermes/intent/HassClimateSetTemperature", since, timeout=30))
    assert hermes["input"] == intents[0]["text"]


FORTY = "set the kitchen light to 40 percent"  # espeak-ng: "Set the kitchen light to 4%." here


async def test_a_number_the_audio_does_not_settle_is_asked_about(bridged: Bridged) -> None:
    """Whisper tiny.en hears espeak-ng's FORTY as "... to 4%." on the development machine, a
    whole command with the wrong number; "40%" scores within number_doubt.MAX_DOUBT of it
    against the same audio, so the speaker is asked instead. Another CPU may hear "40%" (then
    set, or asked about 40 against 14 or 4): never set to another number. Asked, the answer
    "Forty percent." sets it to 40."""
    pcm, rate = espeak(FORTY)
    async with native(bridged) as client:
        result = await talk_turn(client.ws, pcm, rate, timeout=180)
        intents = [e for e in result.events if e["type"] == "intent"]
        if not intents:
            assert result.reply.startswith("Sorry, did you say "), (result.transcript, result.reply)
            assert "40" in result.reply, result.reply
            intents = [e for e in await client.ask("Forty percent.") if e["type"] == "intent"]
    assert [i["name"] for i in intents] == ["HassLightSet"], result.transcript
    assert {s["name"]: s["value"] for s in intents[0]["slots"]}["brightness"] == 40
    assert [t["entity_id"] for t in intents[0]["targets"]] == ["light.kitchen"]


async def test_whisper_scores_the_homes_sentences_against_the_audio(engines: Engines) -> None:
    """The scores themselves (the real model, the same encoder output): the sentence said is
    clearly likelier than the opposite command and than the same one with another number,
    and a mishearing of it is rescored into it."""
    from server.engines.base import MoreReadings, Reconsiders, Rereading, Transcript
    from server.intents import rescore
    from server.intents.home import load_home
    from server.intents.recognizer import IntentRecognizer, Recognized

    transcriber = engines.transcriber
    assert isinstance(transcriber, Reconsiders)
    demo = load_home(PROJECT_ROOT / "prompts" / "devices.example.toml")
    prompt = demo.asr_prompt()
    strict = IntentRecognizer(demo, repair=False)

    def scored(said: str, texts: list[str]) -> tuple[list[float], rescore.Rescored | None]:
        found: list[float] = []
        taken: list[rescore.Rescored | None] = []

        def reconsider(first: Transcript, more: MoreReadings) -> Transcript:
            assert isinstance(more, Rereading)
            found.extend(more.score(texts, prompt))
            taken.append(
                rescore.rescored(
                    texts[0],
                    demo,
                    lambda text: strict.understand(text, "kitchen"),
                    lambda sentences: more.score(sentences, prompt),
                )
            )
            return first

        pcm, rate = espeak(said)
        transcriber.transcribe_reconsidered(
            to_16k_float(pcm, rate), prompt=prompt, reconsider=reconsider
        )
        return found, taken[0]

    misheard = "And the heating to 22 degrees."
    scores, taken = await asyncio.to_thread(
        scored, RESCORED, [misheard, RESCORED, "Set the heating to 18 degrees."]
    )
    assert len(scores) == 3 and all(s < 0 for s in scores)
    assert scores[1] > scores[2] + 2.0, scores
    assert taken is not None, scores
    assert isinstance(taken.understood, Recognized) and taken.text == RESCORED
    assert {s.name: s.value for s in taken.understood.slots}["temperature"] == 22
    unlock = "Unlock the front door."
    scores, _ = await asyncio.to_thread(scored, unlock, [unlock, "Lock the front door."])
    assert scores[0] > scores[1] + 2.0, scores
