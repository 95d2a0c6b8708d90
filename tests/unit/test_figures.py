"""Figures the model may not invent: a persona with site knowledge stops a reply at a number
that neither the question nor the facts it was given hold, and says it does not know."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from server import PROMPTS_DIR
from server.pipeline.figures import FigureCheck, digit_runs
from server.pipeline.grounding import plan_reply
from server.pipeline.knowledge import load_knowledge
from server.prompts import KnowledgeSettings
from server.protocol import native as proto
from tests.unit.test_session_turns import Harness, make  # noqa: F401 (a fixture)

VENUE = PROMPTS_DIR / "receptionist" / "venue.md"
ALLOWED = digit_runs(["What time do you open?", "Open 9am to 5:30pm. Parking £1.20 an hour."])


def streamed(chunks: list[str], allowed: frozenset[str] = ALLOWED) -> tuple[str, bool]:
    check = FigureCheck(allowed)
    said = "".join(check.feed(c) for c in chunks) + check.flush()
    if check.stopped:
        said += check.honest_line("Sorry, I don't know that.")
    return said, check.stopped


def test_digit_runs_match_a_figure_written_another_way() -> None:
    assert digit_runs(["10:30 am", "£1,200", "call 01632 960 412"]) == {
        "10", "30", "1", "200", "01632", "960", "412"
    }  # fmt: skip


@pytest.mark.parametrize(
    "chunks",
    [
        ["We open at 9am and close at 5:30pm.", " Parking is £1.20 an hour."],
        ["We open at ", "9", "am. Par", "king is £1.", "20 an hour"],  # held, then said at the end
        ["Hello! How can I help you today?"],
    ],
)
def test_figures_the_facts_hold_are_said_whole(chunks: list[str]) -> None:
    said, stopped = streamed(chunks)
    assert said == "".join(chunks) and not stopped


def test_a_figure_nobody_gave_ends_the_reply_with_the_honest_line() -> None:
    chunks = ["The pool is open. ", "It opens at 6", " am on Sundays. ", "Bring a towel."]
    said, stopped = streamed(chunks)
    assert stopped
    assert said == "The pool is open. It opens at \u2026 Sorry, I don't know that."


def test_text_before_a_figure_goes_out_at_once_and_the_figure_waits_for_its_sentence() -> None:
    check = FigureCheck(ALLOWED)
    assert check.feed("We open at ") == "We open at "  # no digit: not delayed
    assert check.feed("9am, and") == ""  # held until the sentence ends
    assert check.feed(" we close at 5:30pm. Bye") == "9am, and we close at 5:30pm. Bye"
    assert not check.stopped


def test_a_decimal_point_does_not_end_the_sentence() -> None:
    said, stopped = streamed(["Parking costs £1.", "50 an hour."])
    assert stopped and said == "Parking costs \u2026 Sorry, I don't know that."


def test_the_plan_checks_figures_only_where_the_model_answers_with_site_knowledge() -> None:
    venue = load_knowledge(VENUE)
    settings = KnowledgeSettings()
    general = plan_reply("p", "How far away is the moon?", venue, settings)
    assert general.route == "model" and general.figures is not None
    assert "don't know" in general.unknown and "01632 960 412" in general.unknown
    grounded = plan_reply(
        "p", "When do you open on Sunday?", venue, settings.model_copy(update={"answer": "model"})
    )
    assert grounded.route == "grounded" and grounded.figures is not None
    assert {"10", "4"} <= grounded.figures  # "Sunday: 10 am to 4 pm", the facts it was given
    fact = plan_reply("p", "Where is the lift?", venue, settings)
    assert fact.route == "fact" and fact.figure_check() is None  # the file's words: said
    assert plan_reply("p", "How far away is the moon?", None, settings).figure_check() is None
    unguarded = plan_reply("p", "How far away is the moon?", venue, settings, guard=False)
    assert unguarded.figure_check() is None  # honest_actions = false turns it off too


async def test_the_receptionist_stops_at_an_invented_figure(make: Callable[..., Any]) -> None:  # noqa: F811
    h: Harness = await make(reply="The moon is about 2,170,956 miles away. It is big.")
    await h.session.handle(proto.SessionStart(persona="receptionist"))
    await h.session.handle(proto.UserMessage(text="How far away is the moon?"))
    # Generous: the receptionist's first question may embed its venue file (a loaded machine).
    await h.until(lambda: bool(h.sink.of(proto.ReplyDone)), timeout=120)
    (done,) = h.sink.of(proto.ReplyDone)
    assert done.status == "completed"
    assert done.text.startswith("The moon is about \u2026 Sorry, I don't know that.")
    assert "2,170,956" not in done.text and "front desk" in done.text
    said = "".join(d.text for d in h.sink.of(proto.ReplyDelta))
    assert "170" not in said  # the figure never went out, not even as a delta


async def test_a_persona_without_site_knowledge_is_not_checked(make: Callable[..., Any]) -> None:  # noqa: F811
    h: Harness = await make(reply="The moon is about 384,400 km away.")
    await h.session.handle(proto.UserMessage(text="How far away is the moon?"))
    (done,) = await h.reply_done()
    assert done.text == "The moon is about 384,400 km away."
