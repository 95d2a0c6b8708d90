import pytest

from server.pipeline.endpointing import looks_complete


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
