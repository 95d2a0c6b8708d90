from server.pipeline.playback import SpokenPhrase, SpokenReply, heard_text

PHRASES = [
    SpokenPhrase("Sure!", 0, 400),
    SpokenPhrase("The library opens at nine.", 400, 1600),
    SpokenPhrase("It closes at five.", 2000, 1000),
]


def test_nothing_played() -> None:
    assert heard_text(PHRASES, 0) == ""


def test_whole_phrases_then_a_share_of_the_current_one() -> None:
    assert heard_text(PHRASES, 400) == "Sure!"
    assert heard_text(PHRASES, 1200) == "Sure! The library"
    assert heard_text(PHRASES, 5000) == "Sure! The library opens at nine. It closes at five."


def test_reply_estimates_from_first_frame_and_reports() -> None:
    reply = SpokenReply("r1")
    reply.add("Sure!", 400)
    reply.add("The library opens at nine.", 1600)
    assert reply.played_ms(now=10.0) == 0.0 and not reply.still_playing(10.0)
    reply.first_sent_at = 10.0
    assert reply.played_ms(now=10.5) == 500.0
    assert reply.still_playing(now=10.5)
    assert reply.played_ms(now=99.0) == 2000.0  # capped at what was sent
    assert not reply.still_playing(now=99.0)
    reply.report(100.0)  # the client is behind the clock estimate (it buffered)
    assert reply.reported_at is not None
    assert reply.played_ms(now=reply.reported_at) == 100.0
    assert reply.heard(now=reply.reported_at) == ""


def test_stop_freezes_the_estimate() -> None:
    reply = SpokenReply("r2")
    reply.add("One two three four.", 2000)
    reply.first_sent_at = 0.0
    reply.stopped_at = 1.0
    assert reply.played_ms(now=5.0) == 1000.0
    assert reply.heard(now=5.0) == "One two"
    assert not reply.still_playing(now=0.5)  # the client was told to drop the rest


def test_a_phrase_sent_in_pieces_spans_all_of_them() -> None:
    """A streamed phrase (Piper's decoder in windows): its first piece adds it, the next ones
    lengthen it, so what was heard counts its words over all of its audio."""
    reply = SpokenReply("s")
    reply.add("one two three four", 250.0)
    reply.extend(750.0)
    reply.add("five six", 400.0)
    reply.extend(100.0)
    assert reply.phrases == [
        SpokenPhrase("one two three four", 0.0, 1000.0),
        SpokenPhrase("five six", 1000.0, 500.0),
    ]
    assert reply.sent_ms == 1500.0
    assert heard_text(reply.phrases, 500.0) == "one two"
    assert heard_text(reply.phrases, 1250.0) == "one two three four five"
