"""Site knowledge: parsing, retrieval, extractive answers, the honesty checks and the reply plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from server import PROMPTS_DIR
from server.pipeline.grounding import CORRECTION, plan_reply
from server.pipeline.honesty import claims_action, is_command
from server.pipeline.knowledge import (
    KnowledgeBase,
    KnowledgeFileError,
    Passage,
    extract_answer,
    load_knowledge,
    parse_markdown,
    words,
)
from server.prompts import KnowledgeSettings, PersonaFileError, load_persona_file

VENUE = PROMPTS_DIR / "receptionist" / "venue.md"
SETTINGS = KnowledgeSettings()


@pytest.fixture(scope="module")
def venue():  # type: ignore[no-untyped-def]
    return load_knowledge(VENUE)


def test_markdown_sections_and_faq_become_passages() -> None:
    title, passages = parse_markdown(
        "# The Hall\n<!-- a note -->\n## Opening hours\n- Mon: 9 to 5\n\n## FAQ\n"
        "### Can I park?\nYes, behind the hall.\n### Tickets\nAt the door.\n"
    )
    assert title == "The Hall"
    assert [(p.title, p.kind) for p in passages] == [
        ("Opening hours", "fact"),
        ("Can I park?", "faq"),
        ("FAQ, Tickets", "fact"),
    ]
    assert passages[1].text == "Yes, behind the hall."


def test_toml_knowledge(tmp_path: Path) -> None:
    file = tmp_path / "site.toml"
    file.write_text(
        'name = "Depot"\nask = "Ring 555 0100."\n'
        '[[facts]]\ntitle = "Toilets"\ntext = "Upstairs on the left."\n'
        '[[faq]]\nquestion = "Is there Wi-Fi?"\nanswer = "Yes, network Depot-Free."\n'
        '[parking]\ncars = "Free after 6 pm."\n'
    )
    kb = load_knowledge(file)
    assert kb.name == "Depot" and kb.ask == "Ring 555 0100."
    assert kb.search("where is the restroom?").best.passage.title == "Toilets"  # type: ignore[union-attr]
    hit = kb.search("can I get on the wifi").best
    assert hit is not None and extract_answer("wifi?", hit.passage) == "Yes, network Depot-Free."
    assert "6 pm" in kb.search("where do I park the car").hits[0].passage.text


def test_bad_knowledge_files_are_start_up_errors(tmp_path: Path) -> None:
    with pytest.raises(KnowledgeFileError):
        load_knowledge(tmp_path / "missing.md")
    (tmp_path / "bad.toml").write_text("[[faq]]\nquestion = 'x'\n")
    with pytest.raises(KnowledgeFileError):
        load_knowledge(tmp_path / "bad.toml")
    persona = tmp_path / "p.toml"
    persona.write_text('system_prompt = "hi"\n[knowledge]\npath = "nowhere.md"\n')
    with pytest.raises(PersonaFileError):
        load_persona_file(persona)


@pytest.mark.parametrize(
    ("question", "title"),
    [
        ("Where are the toilets?", "Toilets"),
        ("Is there a bathroom?", "Toilets"),
        ("Where's the elevator?", "Lifts and stairs"),
        ("What's the wifi password?", "Wi-Fi"),
        ("What time do you open on Saturday?", "Opening hours"),
        ("Where can I get a coffee?", "Café"),
        ("Can I bring my dog?", "Can I bring my dog?"),
        ("Where can I leave my bicycle?", "Parking"),
    ],
)
def test_the_passage_that_answers_comes_first(venue, question: str, title: str) -> None:  # type: ignore[no-untyped-def]
    search = venue.search(question)
    assert search.best is not None and search.best.passage.title == title
    assert search.best.coverage >= SETTINGS.min_coverage
    assert search.elapsed_ms < 50


@pytest.mark.parametrize(
    "question",
    ["Is there a swimming pool?", "Who is the manager?", "Can I charge my electric car?"],
)
def test_questions_the_facts_do_not_cover(venue, question: str) -> None:  # type: ignore[no-untyped-def]
    best = venue.search(question).best
    assert best is None or best.coverage < SETTINGS.min_coverage


def test_extractive_answers_keep_the_files_words(venue) -> None:  # type: ignore[no-untyped-def]
    hours = venue.search("When do you open on Saturday?").best.passage
    assert extract_answer("When do you open on Saturday?", hours) == (
        "Opening hours: Saturday: 9 am to 5 pm."
    )
    everything = extract_answer("What are your opening hours?", hours)
    assert everything is not None and "Monday to Friday" in everything and "Sunday" in everything
    assert venue.ask.startswith("Ask at the front desk")


def test_plan_answers_facts_refuses_unknowns_and_commands(venue) -> None:  # type: ignore[no-untyped-def]
    fact = plan_reply("persona", "Where is the lift?", venue, SETTINGS)
    assert fact.route == "fact" and fact.answer is not None and "front desk" in fact.answer
    assert fact.retrieval_ms is not None

    unknown = plan_reply("persona", "Is there a swimming pool?", venue, SETTINGS)
    assert unknown.route == "unknown"
    assert unknown.answer is not None and "don't know" in unknown.answer
    assert "01632 960 412" in unknown.answer

    command = plan_reply("persona", "Turn off the lights in the hall.", venue, SETTINGS)
    assert command.route == "refused" and "can't" in (command.answer or "")

    chat = plan_reply("persona", "Hello!", venue, SETTINGS)
    assert chat.route == "model" and chat.answer is None and chat.system_prompt == "persona"

    grounded = plan_reply(
        "persona", "Where is the lift?", venue, SETTINGS.model_copy(update={"answer": "model"})
    )
    assert grounded.route == "grounded" and grounded.answer is None
    assert "Lifts and stairs:" in grounded.system_prompt

    custom = SETTINGS.model_copy(update={"unknown": "No idea, ask Sam."})
    assert plan_reply("p", "Is there a gym here?", venue, custom).answer == "No idea, ask Sam."


def test_without_knowledge_only_commands_are_planned() -> None:
    assert plan_reply("p", "What is a rainbow?", None, SETTINGS).route == "model"
    refused = plan_reply("p", "Set a timer for ten minutes", None, SETTINGS)
    assert refused.route == "refused" and refused.answer is not None
    assert plan_reply("p", "Set a timer", None, SETTINGS, guard=False).answer is None
    assert plan_reply("p", None, None, SETTINGS).route == "model"


@pytest.mark.parametrize(
    "reply",
    [
        "I am going to turn off the lights.",
        "I have turned off the lights in the living room.",
        "Sure! I'll set a timer for ten minutes.",
        "Your alarm is set for 7 am.",
        "Done! The heating is now on.",
        "I've booked the meeting room for 3 pm.",
    ],
)
def test_claimed_actions_are_caught(reply: str) -> None:
    assert claims_action(reply)
    assert plan_reply("p", "hi", None, SETTINGS).correction(reply) == CORRECTION


@pytest.mark.parametrize(
    "reply",
    [
        "I can't turn off the lights, sorry.",
        "The toilets are on the ground floor.",
        "Let me know if you need anything else.",
        "I'm sorry, but I have a busy schedule.",
    ],
)
def test_honest_replies_pass_the_guard(reply: str) -> None:
    assert not claims_action(reply)
    assert plan_reply("p", "hi", None, SETTINGS).correction(reply) is None


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("Turn off the lights in the living room", True),
        ("set a timer for ten minutes", True),
        ("Could you call me a taxi?", True),
        ("lights off please", True),
        ("Can I book a room?", False),
        ("How do I set a timer?", False),
        ("Are you open on Sunday?", False),
        ("Where are the toilets?", False),
    ],
)
def test_commands(text: str, command: bool) -> None:
    assert is_command(text) is command


def test_the_receptionist_persona_has_the_example_venue() -> None:
    persona = load_persona_file(PROMPTS_DIR / "receptionist.toml")
    assert persona.knowledge is not None
    assert persona.knowledge.name == "Riverside Community Centre"
    assert persona.knowledge_settings.answer == "extract"


@pytest.mark.parametrize(
    ("question", "said"),
    [
        # Spoken phrasings said in the facts' words (general English, not one venue's).
        ("What time do you kick everyone out on a Saturday?", ["time", "close", "saturday"]),
        ("Will you still let me in?", ["entry"]),
        ("Can I charge my phone?", ["recharge", "phone"]),
        ("How long do you keep stuff people leave behind?", ["long", "keep", "people", "lost"]),
        ("Is there a way in without steps?", ["entrance", "without", "steps"]),
        ("Which buses come past you?", ["buses", "stop"]),
        # What is left of "won't", "don't", "didn't" names no topic; nor do fillers.
        (
            "My knees won't do stairs, I don't know, I didn't bring stuff",
            ["knees", "stairs", "bring"],
        ),
    ],
)
def test_spoken_phrasings_become_the_facts_words(question: str, said: list[str]) -> None:
    assert words(question) == said


@pytest.mark.parametrize(
    ("question", "fact"),
    [
        ("Do I have to pay anything?", "Entry is free."),
        ("Can I take pics?", "Photography is allowed."),
        ("Is there a train nearby?", "The station is a 10-minute walk."),
    ],
)
def test_everyday_synonyms_match(question: str, fact: str) -> None:
    base = KnowledgeBase("v", [Passage("Info", fact), Passage("Other", "Nothing here.")])
    best = base.search(question).best
    assert best is not None and best.passage.text == fact and best.coverage == 1.0


def test_a_relative_mentioned_in_passing_is_not_a_missing_topic() -> None:
    # "My dad", "my daughter": who is asking, not what about; like an everyday verb, such a
    # word counts only when the facts hold it.
    base = KnowledgeBase("v", [Passage("Lift", "The lift is next to the shop.")])
    best = base.search("Where is the lift for my dad?").best
    assert best is not None and best.coverage == 1.0


def test_a_street_address_answers_what_is_your_address() -> None:
    base = KnowledgeBase(
        "v",
        [
            Passage("How to find us", "We are at 14 Mill Lane, Kestonbury, KB4 2RT."),
            Passage("Contact", "Ring 01632 960 000."),
        ],
    )
    best = base.search("What's your address?").best
    assert best is not None and best.passage.title == "How to find us" and best.coverage == 1.0
