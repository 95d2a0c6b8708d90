"""The speech engines on the real weights (Whisper tiny.en, Piper joe-medium), and the fakes."""

import csv
import re
import threading
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jiwer
import numpy as np
import pytest
import soxr

from server.engines.base import (
    ChatMessage,
    ChatModel,
    Float32Audio,
    Synthesizer,
    Transcriber,
    Transcript,
    UnsupportedAudio,
)
from server.engines.fakes import FakeChatModel, FakeSynthesizer, FakeTranscriber
from server.engines.faster_whisper import WhisperTranscriber, _repeats
from server.engines.piper import PiperSynthesizer
from server.pipeline.transcripts import is_probably_not_speech
from server.prompts import GenerationSettings
from tests.model_paths import piper_voice, whisper_dir
from tests.speech import Recording, piper_recordings, repeated_run, turn_so_far, wer

DATA = Path(__file__).resolve().parents[1] / "data" / "human"
RATE = 16_000
FOX = "The quick brown fox jumps over the lazy dog."


def words(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def load_wav(path: Path) -> Float32Audio:
    with wave.open(str(path)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        rate = w.getframerate()
    audio = pcm.astype(np.float32) / np.float32(32768)
    if rate != RATE:
        audio = np.asarray(soxr.resample(audio, rate, RATE), dtype=np.float32)
    return audio


def reference(name: str) -> str:
    with (DATA / "transcripts.tsv").open(encoding="utf-8") as f:
        return next(row["text"] for row in csv.DictReader(f, delimiter="\t") if row["file"] == name)


def white_noise(seconds: float, dbfs: float) -> Float32Audio:
    rng = np.random.default_rng(42)
    return (rng.standard_normal(int(seconds * RATE)) * 10 ** (dbfs / 20)).astype(np.float32)


@pytest.fixture(scope="module")
def whisper() -> WhisperTranscriber:
    transcriber = WhisperTranscriber(whisper_dir())
    transcriber.warm_up()
    return transcriber


@pytest.fixture(scope="module")
def whisper_short() -> WhisperTranscriber:
    return WhisperTranscriber(whisper_dir(), short_window=True)


@pytest.fixture(scope="module")
def whisper_styled() -> WhisperTranscriber:
    """With a punctuated previous text when none is given (bench/pause_cuts.py
    --style-prompt; measured, not kept)."""
    return WhisperTranscriber(
        whisper_dir(), short_window=True, style_prompt="Hi there. How are you today?"
    )


@pytest.fixture(scope="module")
def piper() -> PiperSynthesizer:
    synthesizer = PiperSynthesizer(piper_voice())
    synthesizer.warm_up()
    return synthesizer


@pytest.mark.models
def test_engines_satisfy_the_protocols(
    whisper: WhisperTranscriber, piper: PiperSynthesizer
) -> None:
    # Checked by mypy as much as at run time.
    transcriber: Transcriber = whisper
    synthesizer: Synthesizer = piper
    chat: ChatModel = FakeChatModel()
    fakes: list[Transcriber | Synthesizer] = [FakeTranscriber(), FakeSynthesizer()]
    assert transcriber.sample_rate == RATE
    assert synthesizer.sample_rate == 22_050
    assert chat.name and fakes


# --- Whisper -------------------------------------------------------------------------------

RECORDINGS = ["spk1_snt1.wav", "spk2_snt4.wav", "birch_canoe.wav"]


@pytest.mark.models
@pytest.mark.parametrize("name", RECORDINGS)
def test_transcribes_recordings(whisper: WhisperTranscriber, name: str) -> None:
    audio = load_wav(DATA / name)
    t = whisper.transcribe(audio)
    assert words(t.text) == words(reference(name))
    assert t.language == "en"
    assert t.audio_s == pytest.approx(len(audio) / RATE)
    assert t.no_speech_prob < 0.2
    assert not is_probably_not_speech(t)


@pytest.mark.models
@pytest.mark.parametrize("name", RECORDINGS)
def test_short_window_gives_the_same_words(
    whisper_short: WhisperTranscriber, whisper_styled: WhisperTranscriber, name: str
) -> None:
    t = whisper_short.transcribe(load_wav(DATA / name))
    assert words(t.text) == words(reference(name))
    assert not is_probably_not_speech(t)
    # The style prompt may move a word ("Men the coat"): a bound, not the words.
    styled = whisper_styled.transcribe(load_wav(DATA / name))
    assert jiwer.wer(words(reference(name)), words(styled.text)) <= 0.2, styled.text
    assert not is_probably_not_speech(styled)


@pytest.mark.models
@pytest.mark.parametrize("rec", piper_recordings(), ids=lambda r: r.path.stem)
def test_short_window_never_says_the_turn_twice(
    whisper_short: WhisperTranscriber, rec: Recording
) -> None:
    """Piper speech at 24 kHz: at the speculative pause, the 10 s window's decoding started
    the sentence over and stopped part-way, which the loop check missed (issue 16). Every
    audio the server transcribes of the turn, through its own resampler and VAD."""
    clips = turn_so_far(rec)
    assert len(clips) >= 2  # at least one pause, and the end
    for clip in clips:
        heard = whisper_short.transcribe(clip).text
        assert repeated_run(heard) is None, heard
        assert wer([rec.text], [heard]) <= 0.2, heard


@pytest.mark.parametrize(
    ("tokens", "loops"),
    [
        ([1, 2, 3, 4, 5, 6, 7, 8, 9], False),
        ([1, 2, 3, 4, 1, 2, 3, 4], True),  # said again at once
        ([1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3, 4, 5, 6, 7], True),  # started over, stopped
        ([1, 2, 3, 4, 5, 9, 2, 3, 4, 5], True),  # the same four words later
        ([1, 2, 3, 1, 2, 3], False),  # three words twice: "no, no, no" is speech
        ([7, 7, 7, 7, 7], False),  # runs that overlap are not said twice
        ([7, 7, 7, 7, 7, 7, 7, 7], True),
        ([], False),
    ],
)
def test_loop_check(tokens: list[int], loops: bool) -> None:
    assert _repeats(tokens) is loops


HOME_PROMPT = "Turn on the kitchen light, ceiling fan, thermostat, front door, living room."


@pytest.mark.models
@pytest.mark.parametrize("name", RECORDINGS)
def test_a_prompt_leaves_other_speech_alone(
    whisper: WhisperTranscriber, whisper_short: WhisperTranscriber, name: str
) -> None:
    """A session's home prompt makes its names likelier; it must not put them (or itself)
    into speech about something else, on either decoding path."""
    for engine in (whisper, whisper_short):
        t = engine.transcribe(load_wav(DATA / name), prompt=HOME_PROMPT)
        assert jiwer.wer(words(reference(name)), words(t.text)) <= 0.2, t.text
        assert "thermostat" not in t.text.lower() and "kitchen" not in t.text.lower()


@pytest.mark.models
def test_a_prompt_helps_a_command_through(
    piper: PiperSynthesizer, whisper_short: WhisperTranscriber
) -> None:
    pcm = np.concatenate(list(piper.synthesize("Turn on the ceiling fan.")))
    audio = soxr.resample(pcm.astype(np.float32) / 32768, piper.sample_rate, RATE)
    t = whisper_short.transcribe(audio.astype(np.float32), prompt=HOME_PROMPT)
    assert words(t.text) == words("turn on the ceiling fan"), t.text


@pytest.mark.models
@pytest.mark.parametrize(
    "audio",
    [np.zeros(2 * RATE, dtype=np.float32), white_noise(2.0, -30.0)],
    ids=["silence", "white-noise-30dBFS"],
)
def test_silence_and_noise_are_not_speech(
    whisper: WhisperTranscriber,
    whisper_short: WhisperTranscriber,
    whisper_styled: WhisperTranscriber,
    audio: Float32Audio,
) -> None:
    for transcriber in (whisper, whisper_short, whisper_styled):
        t = transcriber.transcribe(audio)
        # Whisper does say something here (".", "you"); the guard must catch it.
        assert is_probably_not_speech(t), t


@pytest.mark.models
def test_too_short_and_bad_audio(whisper: WhisperTranscriber) -> None:
    t = whisper.transcribe(np.zeros(100, dtype=np.float32))
    assert t.text == "" and is_probably_not_speech(t)
    with pytest.raises(UnsupportedAudio, match="mono"):
        whisper.transcribe(np.zeros((2, RATE), dtype=np.float32))


@pytest.mark.parametrize(
    ("text", "no_speech", "logprob", "expected"),
    [
        ("Turn on the lights.", 0.01, -0.2, False),
        ("", 0.01, -0.2, True),
        (" . ", 0.01, -0.2, True),
        ("Some words", 0.7, -1.3, True),  # Whisper's own silence rule
        ("Some words", 0.7, -0.5, False),
        ("you", 0.99, -0.6, True),
        ("I'm going to go.", 0.95, -0.6, True),  # near-certain no speech
        ("Thank you.", 0.8, -0.4, True),
        ("Thanks for watching!", 0.6, -0.3, True),
        ("Thank you.", 0.05, -0.1, False),  # a real "thank you"
        ("Bye.", 0.36, -0.4, False),  # a quiet real "bye"
    ],
)
def test_is_probably_not_speech_rules(
    text: str, no_speech: float, logprob: float, expected: bool
) -> None:
    assert is_probably_not_speech(Transcript(text, "en", no_speech, logprob, 1.0)) is expected


# --- Piper ---------------------------------------------------------------------------------


@pytest.mark.models
def test_piper_round_trip_through_whisper(
    piper: PiperSynthesizer, whisper: WhisperTranscriber
) -> None:
    chunks = list(piper.synthesize(FOX))
    assert chunks and all(c.dtype == np.int16 and c.ndim == 1 for c in chunks)
    pcm = np.concatenate(chunks)
    assert 1.5 < len(pcm) / piper.sample_rate < 6.0
    audio = soxr.resample(pcm.astype(np.float32) / 32768, piper.sample_rate, RATE)
    t = whisper.transcribe(audio.astype(np.float32))
    assert jiwer.wer(words(FOX), words(t.text)) <= 0.2, t.text


@pytest.mark.models
def test_piper_yields_a_chunk_per_sentence(piper: PiperSynthesizer) -> None:
    assert len(list(piper.synthesize("Sure!"))) == 1
    assert len(list(piper.synthesize("Hello there. How are you today?"))) == 2


@pytest.mark.models
@pytest.mark.parametrize("text", ["", "   ", "\n"])
def test_piper_empty_text_yields_nothing(piper: PiperSynthesizer, text: str) -> None:
    assert list(piper.synthesize(text)) == []


@pytest.mark.models
def test_piper_from_worker_threads(piper: PiperSynthesizer) -> None:
    def speak(text: str) -> int:
        return sum(len(c) for c in piper.synthesize(text))

    with ThreadPoolExecutor(max_workers=2) as pool:
        lengths = list(pool.map(speak, ["Sure!", "Of course.", "Sure!"]))
    assert all(n > 0.2 * piper.sample_rate for n in lengths)


# --- fakes ---------------------------------------------------------------------------------


def test_fake_transcriber() -> None:
    fake = FakeTranscriber("turn it off", no_speech_prob=0.9, avg_logprob=-2.0)
    t = fake.transcribe(np.zeros(8000, dtype=np.float32))
    assert (t.text, t.audio_s, fake.calls) == ("turn it off", 0.5, [0.5])
    assert is_probably_not_speech(t)


def test_fake_synthesizer() -> None:
    fake = FakeSynthesizer(sample_rate=16_000, seconds_per_char=0.1)
    (chunk,) = fake.synthesize("four")
    assert chunk.dtype == np.int16 and len(chunk) == 6400 and np.abs(chunk).max() > 0
    assert list(fake.synthesize("  ")) == []
    (silent,) = FakeSynthesizer(tone_hz=None).synthesize("hi")
    assert not silent.any()


def test_fake_chat_model_streams_words() -> None:
    deltas: list[str] = []
    model = FakeChatModel(lambda msgs: f"You said {len(msgs)} things.")
    messages = [ChatMessage("system", "Be brief."), ChatMessage("user", "Hi there")]
    stats = model.generate(messages, GenerationSettings(), deltas.append, threading.Event())
    assert deltas == ["You", " said", " 2", " things."]
    assert (stats.finish_reason, stats.completion_tokens) == ("stop", 4)
    assert stats.prompt_tokens == model.count_prompt_tokens(messages) == 2 + 4 + 2 + 4
    assert stats.first_token_s is not None and model.calls == [messages]


def test_fake_chat_model_max_tokens() -> None:
    deltas: list[str] = []
    settings = GenerationSettings(max_tokens=2)
    stats = FakeChatModel("one two three").generate([], settings, deltas.append, threading.Event())
    assert (deltas, stats.finish_reason) == (["one", " two"], "length")


def test_fake_chat_model_cancel_between_words() -> None:
    cancel = threading.Event()
    deltas: list[str] = []

    def on_delta(delta: str) -> None:
        deltas.append(delta)
        if len(deltas) == 3:
            cancel.set()

    stats = FakeChatModel("a b c d e f").generate([], GenerationSettings(), on_delta, cancel)
    assert deltas == ["a", " b", " c"]
    assert (stats.finish_reason, stats.completion_tokens) == ("cancelled", 3)


def test_fake_chat_model_cancel_from_another_thread_wakes_the_delay() -> None:
    cancel = threading.Event()
    model = FakeChatModel("word " * 1000, token_delay_s=0.01)
    timer = threading.Timer(0.05, cancel.set)
    timer.start()
    stats = model.generate([], GenerationSettings(max_tokens=2000), lambda _: None, cancel)
    timer.join()
    assert stats.finish_reason == "cancelled"
    assert 0 < stats.completion_tokens < 50
    assert stats.total_s < 1.0
