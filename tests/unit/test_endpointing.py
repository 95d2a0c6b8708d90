import pytest

from server.config import VadSettings
from server.pipeline.endpointing import end_of_turn_silence_ms, looks_complete


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
