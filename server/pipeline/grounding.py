"""How a reply is asked for: the persona, the site's facts that match the question, and the
honest answers that need no model.

`plan_reply` runs once per reply, before the model is asked (docs/personas.md):

1. A command ("turn off the lights", "book me a room") that nothing acted on is refused at once:
   the persona cannot act, and saying so beats a model promising it did.
2. For a persona with site knowledge, a question about the site is searched in the facts. When a
   passage covers it, the answer is the passage's own words (`answer = "extract"`, the default)
   or the model's, with the passages put in its prompt (`answer = "model"`). When nothing covers
   it, the answer is an honest "I don't know" and where to ask.
3. Anything else (small talk, general questions) goes to the model, with the best passages in
   the system prompt when they match.

After the model has answered, `correction` appends an honest line when the reply claims an
action that was not taken.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from server.engines.base import ChatMessage
from server.pipeline.figures import FigureCheck, digit_runs
from server.pipeline.honesty import (
    claims_action,
    has_site_cue,
    is_command,
    is_question,
    is_small_talk,
)
from server.pipeline.knowledge import KnowledgeBase, Search
from server.prompts import GenerationSettings, KnowledgeSettings
from server.protocol import native as proto

if TYPE_CHECKING:
    from server.engines.base import ChatModel
    from server.pipeline.chat import ChatOutcome

Route = Literal["model", "grounded", "fact", "unknown", "refused"]

CANNOT_ACT = "Sorry, I can't do that: I'm not connected to any devices or services."
CANNOT_ACT_SITE = "Sorry, I can't do that myself."
CORRECTION = " (To be clear: I can't do that myself, and nothing was changed.)"
DONT_KNOW = "Sorry, I don't know that."
# How long reply.done waits for the token count of a reply said without the model: counting
# takes milliseconds (a remote model's, a round trip).
COUNT_WAIT_S = 2.0


@dataclass(frozen=True)
class ReplyPlan:
    """What a reply is asked with, or said instead of asking the model."""

    system_prompt: str
    answer: str | None = None  # said as it is; the model is not asked
    route: Route = "model"
    search: Search | None = None
    guard: bool = True  # check the model's reply for claimed actions
    # With site knowledge, the runs of digits the model's reply may state (those of the
    # question and of the passages it was given); a figure outside them ends the reply with
    # `unknown` instead (figures.py). None: no check (no knowledge, or the answer is said).
    figures: frozenset[str] | None = None
    unknown: str = DONT_KNOW

    @property
    def retrieval_ms(self) -> float | None:
        return self.search.elapsed_ms if self.search is not None else None

    def correction(self, reply: str) -> str | None:
        """An honest line to add to the model's reply, if it claims an action not taken."""
        if self.guard and claims_action(reply):
            return CORRECTION
        return None

    def figure_check(self) -> FigureCheck | None:
        """A fresh check of the model's figures for one reply, when this plan asks for one."""
        return FigureCheck(self.figures) if self.figures is not None else None


async def count_said(
    model: ChatModel, system_prompt: str, history: Sequence[ChatMessage], text: str
) -> tuple[int, int]:
    """Prompt and completion tokens of a reply said without the model (site facts, a
    command's confirmation), counted as a generated one's: the prompt the model would have
    read and the text said, with the model's tokenizer. Off the event loop: a remote model's
    tokenizer is a round trip to its server."""
    messages = [ChatMessage("system", system_prompt), *history]
    return await asyncio.to_thread(
        lambda: (model.count_prompt_tokens(messages), model.count_text_tokens(text))
    )


async def counted(
    counting: asyncio.Task[proto.Usage | None] | None, log: logging.LoggerAdapter[logging.Logger]
) -> proto.Usage | None:
    """A said reply's usage (Session.said_usage), or None: no count, or it failed or took
    longer than COUNT_WAIT_S (a remote tokenizer that does not answer)."""
    if counting is None:
        return None
    try:
        return await asyncio.wait_for(counting, COUNT_WAIT_S)
    except TimeoutError:
        log.warning("counting a said reply's tokens took over %.0f s: left out", COUNT_WAIT_S)
    except Exception as exc:
        log.warning("counting a said reply's tokens failed: %s", exc)
    return None


class SaidAnswer:
    """Stands in for the ChatRunner when the plan has the answer: one delta, no model."""

    def __init__(self, answer: str) -> None:
        self.answer = answer

    async def reply(
        self,
        system_prompt: str,
        history: Sequence[ChatMessage],
        settings: GenerationSettings,
        on_delta: Callable[[str], Awaitable[None]],
        outcome: ChatOutcome,
        *,
        urgent: bool = False,
    ) -> None:
        await on_delta(self.answer)


def facts_prompt(system_prompt: str, knowledge: KnowledgeBase, search: Search, k: int) -> str:
    """The persona's prompt with the passages that match, right at its end."""
    passages = [hit.passage.render() for hit in search.hits[:k]]
    if not passages:
        return system_prompt
    where = f" {knowledge.ask}" if knowledge.ask else ""
    return (
        f"{system_prompt}\n\nFacts about {knowledge.name}:\n"
        + "\n".join(f"- {p}" for p in passages)
        + "\n\nAnswer from these facts only, in one or two short sentences. If they do not "
        f"answer the question, say you don't know.{where}"
    )


def unknown_reply(knowledge: KnowledgeBase, settings: KnowledgeSettings) -> str:
    if settings.unknown:
        return settings.unknown
    return f"{DONT_KNOW} {knowledge.ask}" if knowledge.ask else DONT_KNOW


def plan_reply(
    system_prompt: str,
    question: str | None,
    knowledge: KnowledgeBase | None,
    settings: KnowledgeSettings,
    *,
    guard: bool = True,
) -> ReplyPlan:
    """Decide how to answer `question` (None: the conversation as it stands, no question)."""
    if question is None or not question.strip():
        return ReplyPlan(system_prompt, guard=guard)
    if guard and is_command(question) and not is_question_about_doing(question):
        refusal = CANNOT_ACT
        if knowledge is not None and knowledge.ask:
            refusal = f"{CANNOT_ACT_SITE} {knowledge.ask}"
        return ReplyPlan(system_prompt, refusal, "refused", guard=guard)
    if knowledge is None:
        return ReplyPlan(system_prompt, guard=guard)
    search = knowledge.search_turn(question, settings.min_coverage, k=settings.passages)
    best = search.best
    covered = best is not None and knowledge.covers(best, settings.min_coverage)
    small_talk = is_small_talk(question)
    about_site = (
        not small_talk
        and is_question(question)
        and (has_site_cue(question) or any(knowledge.known(t) for t in search.question_terms))
    )
    if about_site and best is not None and covered:
        # None: the question asks for a price, a time... that the passage does not state.
        answer = knowledge.extract(question, search, best.passage)
        if answer is not None and settings.answer == "extract":
            return ReplyPlan(system_prompt, answer, "fact", search, guard)
        if answer is not None:
            prompt = facts_prompt(system_prompt, knowledge, search, settings.passages)
            plan = ReplyPlan(prompt, None, "grounded", search, guard)
            return _checked(plan, question, knowledge, settings)
    if about_site:
        unknown = unknown_reply(knowledge, settings)
        return ReplyPlan(system_prompt, unknown, "unknown", search, guard)
    if covered and not small_talk:
        prompt = facts_prompt(system_prompt, knowledge, search, settings.passages)
        plan = ReplyPlan(prompt, None, "grounded", search, guard)
        return _checked(plan, question, knowledge, settings)
    plan = ReplyPlan(system_prompt, None, "model", search, guard)
    return _checked(plan, question, knowledge, settings)


def _checked(
    plan: ReplyPlan, question: str, knowledge: KnowledgeBase, settings: KnowledgeSettings
) -> ReplyPlan:
    """The plan with its figures checked: a persona with site knowledge does not let the
    model state a number that neither the question nor the passages it was given hold."""
    if not plan.guard or plan.search is None:
        return plan
    given = [hit.passage.render() for hit in plan.search.hits[: settings.passages]]
    return replace(
        plan, figures=digit_runs([question, *given]), unknown=unknown_reply(knowledge, settings)
    )


def is_question_about_doing(text: str) -> bool:
    """ "How do I set a timer?" asks about an action; it does not ask for one."""
    lowered = text.strip().lower()
    return lowered.startswith(("how ", "what ", "why ", "when ", "where ", "who "))
