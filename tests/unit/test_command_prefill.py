"""While someone speaks, words that begin like a command are not evaluated into the chat
model's cache (it will not answer them), on fake engines; other words still are."""

from __future__ import annotations

import pytest

from server import PROJECT_ROOT
from server.engines.fakes import FakeChatModel, FakeTranscriber
from server.intents.home import load_home
from server.intents.recognizer import IntentRecognizer
from tests.conftest import fake_engines
from tests.unit.test_asr_prompt import speak_in_the_demo_home

DEMO = PROJECT_ROOT / "prompts" / "devices.example.toml"


async def prefills_while_speaking(words: str, persona: str, **intents: object) -> int:
    """Speak 2.5 s that Whisper (a fake) hears as `words`; how many prefills the model got."""
    model = FakeChatModel("It is noon.")
    engines = fake_engines(model, transcriber=FakeTranscriber(words))
    await speak_in_the_demo_home(persona, engines, speech_s=2.5, prefill=True, **intents)
    return len(model.prefills)


async def test_a_command_is_not_prefilled_while_it_is_spoken() -> None:
    assert await prefills_while_speaking("Turn off the kitchen light.", "smart_home") == 0


async def test_chit_chat_and_other_sessions_still_are() -> None:
    assert await prefills_while_speaking("Why do doors squeak at night?", "smart_home") > 0
    # A persona that takes no commands, and the setting that keeps prefilling them:
    assert await prefills_while_speaking("Turn off the kitchen light.", "assistant") > 0
    spoken = await prefills_while_speaking(
        "Turn off the kitchen light.", "smart_home", prefill_commands=True
    )
    assert spoken > 0


@pytest.mark.parametrize(
    ("said", "command"),
    [
        ("Turn off the", True),
        ("please set a", True),
        ("Can you switch", True),
        ("Add milk to", True),
        ("What time is", False),
        ("Why do doors", False),
        ("I think the", False),
        ("", False),
    ],
)
def test_words_that_begin_a_command(said: str, command: bool) -> None:
    assert IntentRecognizer(load_home(DEMO)).begins_command(said) is command
