import pytest

from server.config import VadSettings
from server.pipeline.endpointing import end_of_turn_silence_ms, looks_complete, wants_sentence_end


@pytest.mark.parametrize(
    "text",
    [
        " The child almost hurt the small dog.",
        "What joy there is in living.",
        "Can you turn on the lights?",
        "Sunday is the best part of the week.",
    ],
)
def test_complete_sentences(text: str) -> None:
    assert looks_complete(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "The child almost",
        "I went to the.",  # Whisper often puts a period on a cut-off sentence
        "Turn on the lights and",
        "Well...",
        "Yes.",  # one word: too little to be sure
        "Drop the two when you add the figures, because",
    ],
)
def test_sentences_that_go_on(text: str) -> None:
    assert not looks_complete(text)


def test_the_silence_that_ends_a_turn_is_shorter_only_for_a_complete_sentence() -> None:
    settings = VadSettings(silence_ms=500, complete_silence_ms=350)
    assert end_of_turn_silence_ms("What is the capital of Australia?", settings) == 350
    assert end_of_turn_silence_ms("What is the capital of", settings) == 500
    assert end_of_turn_silence_ms("Set a timer.", settings) == 350  # why 300 ms pauses matter
    # Never longer than the plain silence, whatever is configured.
    short = VadSettings(silence_ms=300, complete_silence_ms=350)
    assert end_of_turn_silence_ms("Set a timer.", short) == 300


def test_the_chat_model_shortens_only_a_complete_sentence_it_agrees_ends() -> None:
    on = VadSettings(
        silence_ms=500,
        complete_silence_ms=350,
        sentence_end_model=True,
        sentence_end_threshold=0.3,
        sentence_end_silence_ms=250,
    )
    question = "What is the capital of Australia?"
    assert end_of_turn_silence_ms(question, on, 0.7) == 250  # both agree
    assert end_of_turn_silence_ms(question, on, 0.3) == 250  # the threshold itself counts
    assert end_of_turn_silence_ms(question, on, 0.1) == 350  # the model doubts: text rule
    assert end_of_turn_silence_ms(question, on, None) == 350  # not asked (busy model)
    # The model cannot shorten what the text rule does not call complete.
    assert end_of_turn_silence_ms("What is the capital of", on, 0.99) == 500
    # Off (the default), its answer changes nothing.
    off = VadSettings(silence_ms=500, complete_silence_ms=350)
    assert not off.sentence_end_model
    assert end_of_turn_silence_ms(question, off, 0.99) == 350
    # Never longer than the other silences, whatever is configured.
    odd = on.model_copy(update={"sentence_end_silence_ms": 400})
    assert end_of_turn_silence_ms(question, odd, 0.9) == 350


def test_the_chat_model_is_asked_only_when_its_answer_could_matter() -> None:
    on = VadSettings(sentence_end_model=True)
    assert wants_sentence_end("Set a timer for ten minutes.", on)
    assert not wants_sentence_end("Remind me to", on)  # 500 ms whatever it says
    assert not wants_sentence_end("Set a timer for ten minutes.", VadSettings())
