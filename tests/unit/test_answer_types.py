"""What kind of value a question asks for, whether a fact states one, and how the extractive
answer uses it: a price question about a line that names no price is "I don't know"."""

from __future__ import annotations

import pytest

from server.pipeline.answer_types import AnswerType, expected_type, holds
from server.pipeline.grounding import plan_reply
from server.pipeline.knowledge import Passage, extract_answer, load_knowledge
from server.prompts import KnowledgeSettings


@pytest.mark.parametrize(
    ("question", "kind"),
    [
        ("How much does it cost to hire the hall?", AnswerType.PRICE),
        ("My lad's twelve, what's it cost for him to have a swim?", AnswerType.PRICE),
        ("What are the prices for the gym?", AnswerType.PRICE),
        ("What time do you open on Saturday?", AnswerType.TIME),
        ("Um, how late are you open on a Tuesday?", AnswerType.TIME),
        ("When's the next yoga class?", AnswerType.TIME),
        ("So when does the café close?", AnswerType.TIME),
        ("What are your opening hours?", AnswerType.TIME),
        ("How long can I keep a DVD?", AnswerType.DURATION),
        ("How many books can I take out?", AnswerType.COUNT),
        ("How deep is the pool?", AnswerType.DEPTH),
        ("How far is the station?", AnswerType.DISTANCE),
        ("What temperature is the water?", AnswerType.TEMPERATURE),
        ("What's your website address?", AnswerType.WEBSITE),
        ("What's your phone number?", AnswerType.PHONE),
        ("What is your email address?", AnswerType.EMAIL),
        # No value asked for: yes/no, where, which.
        ("Where are the toilets?", None),
        ("Can I bring my dog?", None),
        ("Can I drop my books back when you're closed?", None),
        ("Which floor is the gym on?", None),
        ("How much time do I need for a swim?", None),
        # How far ahead, how much notice: how long before, not a distance or a price.
        ("How far ahead do we need to book our visit?", AnswerType.DURATION),
        ("How far in advance should schools book?", AnswerType.DURATION),
        ("How much notice do you need for a party?", AnswerType.DURATION),
        ("When does the exhibition finish?", AnswerType.TIME),
    ],
)
def test_the_kind_of_value_a_question_asks_for(question: str, kind: AnswerType | None) -> None:
    assert expected_type(question) is kind


@pytest.mark.parametrize(
    ("kind", "text", "stated"),
    [
        (AnswerType.PRICE, "Adult swim £5.20.", True),
        (AnswerType.PRICE, "A4 colour is 50p a page.", True),
        (AnswerType.PRICE, "Parking is free after 6pm.", True),
        (AnswerType.PRICE, "The Riverside Room can be hired by the hour.", False),
        (AnswerType.TIME, "Monday to Friday: 6.30 am to 10 pm.", True),
        (AnswerType.TIME, "Studio 1: fitness classes, first floor.", False),
        # A date answers "when" too; "may" is the verb far more often than the month.
        (AnswerType.TIME, "It runs from 3 October to 28 February.", True),
        (AnswerType.TIME, "You may bring a guest.", False),
        (AnswerType.DURATION, "Lost property is kept for 30 days.", True),
        (AnswerType.DURATION, "Main pool: 25 metres long.", True),
        (AnswerType.DURATION, "Lost property is kept at reception.", False),
        (AnswerType.COUNT, "You can borrow up to 12 items.", True),
        (AnswerType.DEPTH, "Main pool: 25 metres long with six lanes.", False),
        (AnswerType.DEPTH, "The diving pit is 4 metres deep.", True),
        (AnswerType.WEBSITE, "Book at www.example.org or at the desk.", True),
        (AnswerType.WEBSITE, "Email hello@pool.example.", False),
        (AnswerType.WEBSITE, "You can book online up to 7 days ahead.", False),
        (AnswerType.PHONE, "Call 01632 960 583.", True),
        (AnswerType.EMAIL, "Email hello@pool.example.", True),
        (AnswerType.TEMPERATURE, "The pool is kept at 29 °C.", True),
    ],
)
def test_whether_a_fact_states_such_a_value(kind: AnswerType, text: str, stated: bool) -> None:
    assert holds(kind, text) is stated


WHERE = Passage(
    "What's where",
    "Sports hall: ground floor.\n"
    "Crèche: ground floor, weekdays 9 am to 12 noon.\n"
    "The Harbour Room: meeting room, available to hire by the hour.",
)
PRICES = Passage("Prices", "Adult swim £5.\nChild swim £3.\nWe are card only.")


def test_an_answer_must_state_the_value_asked_for() -> None:
    question = "How much is a child swim?"
    expect = expected_type(question)
    assert extract_answer(question, PRICES, expect=expect) == "Prices: Child swim £3."
    # Without the check, the same question about a list with no price got a line anyway.
    assert extract_answer("How much is the sports hall?", WHERE) is not None
    assert extract_answer("How much is the sports hall?", WHERE, expect=AnswerType.PRICE) is None


def test_a_value_on_another_line_does_not_answer() -> None:
    # The words point at the Harbour Room's line, which has no time; the crèche's hours are
    # about something else.
    question = "What time can I use the Harbour Room?"
    assert extract_answer(question, WHERE, expect=expected_type(question)) is None
    question = "What time is the crèche open?"
    answer = extract_answer(question, WHERE, expect=expected_type(question))
    assert answer is not None and "9 am" in answer


def test_an_faq_answer_is_checked_too() -> None:
    faq = Passage("Can I hire a lane?", "Yes, ask at reception.", "faq")
    assert extract_answer("How much is it to hire a lane?", faq, expect=AnswerType.PRICE) is None
    assert extract_answer("Can I hire a lane?", faq) == "Yes, ask at reception."


def test_the_plan_says_it_does_not_know_a_value_the_facts_lack(tmp_path: object) -> None:
    from pathlib import Path

    venue = Path(str(tmp_path)) / "venue.md"
    venue.write_text(
        "# Pool\n## Rooms\nThe Harbour Room is on the first floor and can be hired.\n"
        "## Contact\nAsk at reception.\n",
        encoding="utf-8",
    )
    knowledge = load_knowledge(venue)
    settings = KnowledgeSettings()
    hired = plan_reply("p", "Where is the Harbour Room?", knowledge, settings)
    assert hired.route == "fact" and "first floor" in (hired.answer or "")
    price = plan_reply("p", "How much does it cost to hire the Harbour Room?", knowledge, settings)
    assert price.route == "unknown" and "Ask at reception" in (price.answer or "")
    grounded = plan_reply(
        "p",
        "How much does it cost to hire the Harbour Room?",
        knowledge,
        settings.model_copy(update={"answer": "model"}),
    )
    assert grounded.route == "unknown"  # the model is not asked to find a price that is not there
