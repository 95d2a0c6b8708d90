"""Prefilling the LLM with the words said so far: faster, and never a different reply."""

from __future__ import annotations

import asyncio
import threading

import pytest

from server.app import Engines
from server.engines.base import ChatMessage
from server.engines.llama_cpp import LlamaCppChatModel
from server.prompts import GenerationSettings

SYSTEM = "You are a helpful voice assistant. Answer in one short sentence."
GREEDY = GenerationSettings(max_tokens=24, temperature=0.0)


def cold(engines: Engines, messages: list[ChatMessage]) -> None:
    """A cache that holds this conversation only."""
    model = engines.chat
    assert isinstance(model, LlamaCppChatModel)
    model.clear_cache()
    reply(engines, messages)


def reply(engines: Engines, messages: list[ChatMessage]) -> tuple[str, int]:
    parts: list[str] = []
    stats = engines.chat.generate(messages, GREEDY, parts.append, threading.Event())
    return "".join(parts), stats.cached_prompt_tokens


async def test_prefill_caches_the_words_so_far_and_changes_nothing(engines: Engines) -> None:
    system = ChatMessage("system", SYSTEM)
    final = [system, ChatMessage("user", "What is the capital city of France?")]
    other = [system, ChatMessage("user", "Name a colour.")]

    # Without prefill: the cache holds another conversation, so the new message is evaluated.
    # (The model keeps several conversations cached: start from a cache that holds only it.)
    await asyncio.to_thread(cold, engines, other)
    plain, plain_cached = await asyncio.to_thread(reply, engines, final)

    await asyncio.to_thread(cold, engines, other)
    partial = [system, ChatMessage("user", "What is the capital city")]
    evaluated = await asyncio.to_thread(engines.chat.prefill, partial)
    assert evaluated > 0
    # A second prefill of the same words has nothing left to do.
    assert await asyncio.to_thread(engines.chat.prefill, partial) == 0
    prefilled, prefilled_cached = await asyncio.to_thread(reply, engines, final)

    assert prefilled == plain, "prefilling must not change the reply"
    assert prefilled_cached >= plain_cached + 4, "the words said so far came from the cache"
    total = engines.chat.count_prompt_tokens(final)
    assert total - prefilled_cached <= 12


async def test_prefill_of_words_that_were_then_revised(engines: Engines) -> None:
    system = ChatMessage("system", SYSTEM)
    await asyncio.to_thread(
        engines.chat.prefill, [system, ChatMessage("user", "Tell me a joke about cats")]
    )
    revised = [system, ChatMessage("user", "Tell me a story about dogs.")]
    text, cached = await asyncio.to_thread(reply, engines, revised)
    await asyncio.to_thread(cold, engines, [system, ChatMessage("user", "Name a colour.")])
    fresh, _ = await asyncio.to_thread(reply, engines, revised)
    assert text == fresh and text.strip()
    # "Tell me a" came from the cache; the revised words after it were evaluated again.
    assert 0 < cached <= engines.chat.count_prompt_tokens(revised) - 4


async def test_a_voice_turn_finds_the_words_said_so_far_in_the_cache(engines: Engines) -> None:
    """The same recording with and without prefill (speculation off, so that only prefill can
    have evaluated the message early): the same transcript and reply, fewer new tokens."""
    from clients.talk import read_wav, talk_turn
    from tests.conftest import make_settings, start_server
    from tests.e2e.test_voice import SHORT_REPLIES, open_session
    from tests.speech import recording

    pcm, rate = read_wav(recording("birch_canoe.wav").path)
    other = [ChatMessage("system", SYSTEM), ChatMessage("user", "Name a colour.")]
    done: dict[bool, dict[str, object]] = {}
    for prefill in (False, True):
        settings = make_settings(
            vad={"speculate": False}, llm={"prefill_while_speaking": prefill, "seed": 7}
        )
        running = await start_server(settings, engines)
        try:
            await asyncio.to_thread(cold, engines, other)  # the cache holds something else
            ws = await open_session(running, SHORT_REPLIES)
            result = await talk_turn(ws, pcm, rate, timeout=240)
            await ws.close()
        finally:
            await running.web.close()
        assert result.status == "completed", result.events
        kinds = [e["type"] for e in result.events]
        assert kinds.count("transcript") == kinds.count("reply.done") == 1, kinds
        done[prefill] = next(e for e in result.events if e["type"] == "reply.done")
        done[prefill]["transcript"] = result.transcript

    def new_tokens(event: dict[str, object]) -> int:
        usage = event["usage"]
        assert isinstance(usage, dict)
        return int(usage["prompt_tokens"]) - int(usage["cached_prompt_tokens"])

    assert done[True]["transcript"] == done[False]["transcript"]
    assert done[True]["text"] == done[False]["text"], "prefill must not change the reply"
    assert new_tokens(done[True]) + 4 <= new_tokens(done[False])


async def test_the_model_says_a_whole_question_ends_a_sentence_more_than_its_first_half(
    engines: Engines,
) -> None:
    """The probability that the words end a sentence (bench/pause_cuts.py --chat-model). Only
    the order is asserted (the figures differ between CPUs); the pairs are far apart here
    (docs/performance.md). Whisper's trailing punctuation is set aside either way."""
    system = ChatMessage("system", SYSTEM)
    model = engines.chat
    assert isinstance(model, LlamaCppChatModel)

    def probability(text: str) -> float:
        found = model.sentence_end_probability([system, ChatMessage("user", text)])
        assert found is not None and 0.0 <= found <= 1.0
        return found

    for first, whole in [
        ("Can you tell me.", "Can you tell me what the weather will be tomorrow?"),
        ("What is the capital?", "What is the capital of Australia?"),
    ]:
        assert await asyncio.to_thread(probability, first) < await asyncio.to_thread(
            probability, whole
        )
    # Asked twice, the same answer (the words are in the cache; their logits are recomputed).
    again = await asyncio.to_thread(probability, "What is the capital of Australia?")
    assert again == pytest.approx(
        await asyncio.to_thread(probability, "What is the capital of Australia")
    )


async def test_asking_whether_the_sentence_ended_leaves_the_words_cached(
    engines: Engines,
) -> None:
    system = ChatMessage("system", SYSTEM)
    model = engines.chat
    assert isinstance(model, LlamaCppChatModel)
    text = "Please remind me to call my sister tonight."
    other = [system, ChatMessage("user", "Name a colour.")]
    await asyncio.to_thread(cold, engines, other)
    asked = [system, ChatMessage("user", text)]
    assert await asyncio.to_thread(model.sentence_end_probability, asked) is not None
    _, cached = await asyncio.to_thread(reply, engines, [system, ChatMessage("user", text)])
    total = engines.chat.count_prompt_tokens([system, ChatMessage("user", text)])
    assert total - cached <= 8, "the reply evaluated the words again"
