import threading
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from server.audio.pcm import StreamResampler, decode_pcm16, int16_to_float32
from server.audio.vad import (
    SAMPLE_RATE,
    WINDOW_SAMPLES,
    SileroVad,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    SpeechStopped,
    StreamingVad,
    TurnDetector,
    VadConfig,
    VadEvent,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "human"
SPEECH_16K = sorted(p.name for p in DATA.glob("*.wav") if p.name != "lj050_0131.wav")
W = WINDOW_SAMPLES
W_S = W / SAMPLE_RATE  # 32 ms

Audio = npt.NDArray[np.float32]


# --- TurnDetector with synthetic probabilities ----------------------------------------------


class Driver:
    """Feeds a TurnDetector windows whose samples are their own stream index, so every
    returned utterance shows exactly where it starts and ends."""

    def __init__(self, config: VadConfig | None = None) -> None:
        self.detector = TurnDetector(config)
        self.pos = 0
        self.events: list[VadEvent] = []

    def feed(self, probability: float, windows: int = 1) -> list[VadEvent]:
        new: list[VadEvent] = []
        for _ in range(windows):
            window = np.arange(self.pos, self.pos + W, dtype=np.float32)
            self.pos += W
            new.extend(self.detector.feed(window, probability))
        self.events.extend(new)
        return new

    def seconds(self, probability: float, seconds: float) -> list[VadEvent]:
        return self.feed(probability, round(seconds * SAMPLE_RATE / W))

    def starts(self) -> list[SpeechStarted]:
        return [e for e in self.events if isinstance(e, SpeechStarted)]

    def stops(self) -> list[SpeechStopped]:
        return [e for e in self.events if isinstance(e, SpeechStopped)]


def first_sample(stop: SpeechStopped) -> int:
    return int(stop.audio[0])


def test_config_defaults() -> None:
    config = VadConfig()
    assert config.threshold == 0.5
    assert config.stop_threshold == pytest.approx(0.35)
    assert (config.min_speech_ms, config.silence_ms, config.prefix_padding_ms) == (250, 500, 300)
    assert config.max_utterance_s == 30.0
    assert VadConfig(threshold=0.1).stop_threshold == pytest.approx(0.01)
    for bad in (
        {"threshold": 0.0},
        {"threshold": 0.5, "negative_threshold": 0.6},
        {"silence_ms": 0},
        {"min_speech_ms": -1},
        {"max_utterance_s": 0.5},
    ):
        with pytest.raises(ValueError):
            VadConfig(**bad)


def test_noise_blip_shorter_than_min_speech_never_starts_a_turn() -> None:
    d = Driver()
    d.seconds(0.0, 1.0)
    for _ in range(5):
        d.feed(0.99, 7)  # 224 ms < 250 ms
        d.feed(0.1, 3)
    d.seconds(0.0, 2.0)
    assert d.events == []
    assert not d.detector.in_speech
    assert d.detector.force_end() is None


def test_speech_starts_after_min_speech() -> None:
    d = Driver()
    d.seconds(0.0, 1.0)  # 31 windows
    assert d.feed(0.9, 7) == []
    [started] = d.feed(0.9)  # the 8th window reaches 256 ms >= 250 ms
    assert isinstance(started, SpeechStarted)
    assert started.at_s == pytest.approx(31 * W_S)
    assert started.detected_at_s == pytest.approx(39 * W_S)
    assert d.detector.in_speech


def test_uncertain_window_does_not_restart_the_run() -> None:
    # 0.45 lies between the thresholds: it neither counts as speech nor breaks the run.
    d = Driver()
    d.seconds(0.0, 1.0)
    d.feed(0.9, 4)
    d.feed(0.45, 2)
    d.feed(0.9, 3)
    assert d.events == []
    d.feed(0.9)
    [started] = d.starts()
    assert started.at_s == pytest.approx(31 * W_S)


def test_300ms_pause_keeps_one_turn_and_silence_ends_it() -> None:
    d = Driver()
    d.seconds(0.0, 1.0)
    d.seconds(0.95, 1.0)
    d.feed(0.05, 10)  # a 320 ms mid-sentence pause
    d.seconds(0.95, 1.0)
    assert len(d.starts()) == 1 and d.stops() == []
    last_voiced_end = d.pos
    assert d.feed(0.05, 15) == []  # 480 ms of silence: not yet
    [stopped] = d.feed(0.05)  # 512 ms >= 500 ms
    assert isinstance(stopped, SpeechStopped)
    assert stopped.reason == "silence" and not stopped.truncated
    # The audio ends suffix_padding_ms after the last voiced window, and is contiguous.
    assert stopped.at_s * SAMPLE_RATE == pytest.approx(last_voiced_end + 4800)
    assert int(stopped.audio[-1]) == last_voiced_end + 4800 - 1
    assert np.array_equal(
        stopped.audio, np.arange(first_sample(stopped), last_voiced_end + 4800, dtype=np.float32)
    )
    assert stopped.duration_s == pytest.approx(stopped.at_s - stopped.start_s)
    assert not d.detector.in_speech
    d.seconds(0.05, 2.0)
    assert len(d.starts()) == 1 and len(d.stops()) == 1


def test_uncertain_windows_do_not_end_a_turn() -> None:
    d = Driver()
    d.seconds(0.95, 1.0)
    d.seconds(0.4, 1.0)  # above negative_threshold: still the turn
    assert d.stops() == []
    d.seconds(0.1, 0.6)
    assert len(d.stops()) == 1


def feed_level(
    detector: TurnDetector, probability: float, rms: float, windows: int = 1
) -> list[VadEvent]:
    """Windows of a given RMS (a constant signal) and speech probability."""
    events: list[VadEvent] = []
    for _ in range(windows):
        events.extend(detector.feed(np.full(W, rms, dtype=np.float32), probability))
    return events


def pause_of(config: VadConfig, onset_rms: float, floor_rms: float = 1e-4) -> list[VadEvent]:
    """Speech at RMS 0.1, a 288 ms pause at floor_rms whose last two windows are a soft onset
    (onset_rms) that Silero calls silent, then speech again."""
    detector = TurnDetector(config)
    events = feed_level(detector, 0.95, 0.1, 20)
    events += feed_level(detector, 0.05, floor_rms, 7)
    events += feed_level(detector, 0.1, onset_rms, 2)
    events += feed_level(detector, 0.95, 0.1, 5)
    return events


def test_onset_rule_ends_a_pause_at_a_soft_onset_silero_misses() -> None:
    config = VadConfig(report_pauses=True, onset_rise_db=10.0, onset_level_db=35.0)
    events = pause_of(config, onset_rms=0.005)  # 26 dB below the speech, 34 dB over the pause
    paused = [e for e in events if isinstance(e, SpeechPaused)]
    resumed = [e for e in events if isinstance(e, SpeechResumed)]
    assert len(paused) == 1 and len(resumed) == 1
    # The pause ends at the onset (after 7 windows), not when Silero hears speech (9).
    assert resumed[0].at_s - paused[0].at_s == pytest.approx(7 * W_S)
    # Without the rule, Silero's count: 9 windows.
    plain = pause_of(VadConfig(report_pauses=True), onset_rms=0.005)
    [plain_paused] = [e for e in plain if isinstance(e, SpeechPaused)]
    [plain_resumed] = [e for e in plain if isinstance(e, SpeechResumed)]
    assert plain_resumed.at_s - plain_paused.at_s == pytest.approx(9 * W_S)


def test_onset_rule_ignores_sounds_far_below_the_speech_and_steady_noise() -> None:
    config = VadConfig(report_pauses=True, onset_rise_db=10.0, onset_level_db=35.0)
    # A breath 46 dB below the speech: not an onset.
    quiet = pause_of(config, onset_rms=0.0005)
    [paused] = [e for e in quiet if isinstance(e, SpeechPaused)]
    [resumed] = [e for e in quiet if isinstance(e, SpeechResumed)]
    assert resumed.at_s - paused.at_s == pytest.approx(9 * W_S)
    # Steady noise 6 dB over the pause's first windows: no rise of 10 dB.
    noisy = pause_of(config, onset_rms=0.02, floor_rms=0.01)
    [paused] = [e for e in noisy if isinstance(e, SpeechPaused)]
    [resumed] = [e for e in noisy if isinstance(e, SpeechResumed)]
    assert resumed.at_s - paused.at_s == pytest.approx(9 * W_S)


@pytest.mark.parametrize("every", [2, 3, 4, 6])
def test_knocks_silero_never_hears_as_speech_delay_the_end_by_at_most_the_confirmation(
    every: int,
) -> None:
    """A knock (one loud window Silero calls silent) every few windows after the speech, as
    music with a beat or dishes would give: each looks like an onset, none is confirmed, so
    the turn ends at most onset_confirm_ms (3 windows) after it would without the rule."""

    def ends_after(config: VadConfig) -> int:
        detector = TurnDetector(config)
        feed_level(detector, 0.95, 0.1, 20)
        for windows in range(1, 200):
            knock = windows % every == 0
            stopped = feed_level(detector, 0.1, 0.02 if knock else 1e-4)
            if any(isinstance(e, SpeechStopped) for e in stopped):
                return windows
        raise AssertionError("the turn never ended")

    plain = ends_after(VadConfig())
    assert plain == 16  # 512 ms
    assert plain <= ends_after(VadConfig(onset_rise_db=10.0)) <= plain + 3


def test_an_onset_silero_does_not_confirm_is_counted_as_silence() -> None:
    config = VadConfig(report_pauses=True, onset_rise_db=10.0)
    detector = TurnDetector(config)
    events = feed_level(detector, 0.95, 0.1, 20)
    events += feed_level(detector, 0.05, 1e-4, 5)
    events += feed_level(detector, 0.05, 0.01, 4)  # loud, never speech to Silero
    events += feed_level(detector, 0.05, 1e-4, 2)
    events += feed_level(detector, 0.95, 0.1, 3)
    [paused] = [e for e in events if isinstance(e, SpeechPaused)]
    [resumed] = [e for e in events if isinstance(e, SpeechResumed)]
    assert resumed.at_s - paused.at_s == pytest.approx(11 * W_S)


def test_onset_rule_never_shortens_the_silence_that_ends_a_turn() -> None:
    config = VadConfig(onset_rise_db=10.0, silence_ms=320)
    detector = TurnDetector(config)
    feed_level(detector, 0.95, 0.1, 20)
    assert feed_level(detector, 0.05, 1e-4, 9) == []
    [stopped] = feed_level(detector, 0.05, 1e-4)
    assert isinstance(stopped, SpeechStopped)
    with pytest.raises(ValueError):
        VadConfig(onset_rise_db=0.0)


def test_pre_roll_precedes_first_voiced_window() -> None:
    d = Driver()
    d.seconds(0.0, 2.0)  # 62 windows
    first_voiced = d.pos
    d.seconds(0.95, 1.0)
    d.seconds(0.0, 1.0)
    [stopped] = d.stops()
    assert first_sample(stopped) == first_voiced - 4800  # exactly prefix_padding_ms
    assert stopped.start_s == pytest.approx(first_voiced / SAMPLE_RATE - 0.3)
    assert d.starts()[0].at_s == pytest.approx(first_voiced / SAMPLE_RATE)


def test_pre_roll_is_limited_by_the_audio_there_is() -> None:
    d = Driver()
    d.feed(0.0, 3)  # 96 ms
    d.seconds(0.95, 1.0)
    d.seconds(0.0, 1.0)
    [stopped] = d.stops()
    assert first_sample(stopped) == 0


def test_next_turn_pre_roll_does_not_overlap_previous_turn() -> None:
    d = Driver(VadConfig(silence_ms=300, suffix_padding_ms=100))
    d.seconds(0.95, 1.0)
    d.feed(0.0, 10)  # 320 ms: ends the turn
    d.seconds(0.95, 1.0)
    d.seconds(0.0, 1.0)
    first, second = d.stops()
    assert first_sample(second) == int(first.audio[-1]) + 1


def test_max_utterance_cap() -> None:
    d = Driver(VadConfig(max_utterance_s=2.0))
    d.seconds(0.0, 1.0)
    d.seconds(0.95, 3.0)
    [first, *_] = d.stops()
    assert first.reason == "max_length" and first.truncated
    assert first.audio.size == 2 * SAMPLE_RATE
    assert first.at_s - first.start_s == pytest.approx(2.0)
    # Speech goes on: a new turn starts, from where the cut turn ended.
    assert len(d.starts()) == 2 and d.detector.in_speech
    d.seconds(0.0, 1.0)
    second = d.stops()[1]
    assert second.reason == "silence"
    assert first_sample(second) == int(first.audio[-1]) + 1


def test_utterance_progress_for_partial_transcripts() -> None:
    d = Driver()
    assert d.detector.utterance_s == 0.0 and d.detector.current_utterance().size == 0
    d.seconds(0.0, 1.0)
    d.seconds(0.95, 1.0)
    so_far = d.detector.current_utterance()
    assert so_far.size == d.pos - (31 * W - 4800)
    assert d.detector.utterance_s == pytest.approx(so_far.size / SAMPLE_RATE)
    assert d.detector.position_s == pytest.approx(d.pos / SAMPLE_RATE)


def test_push_to_talk_force_end_since_speech_started() -> None:
    d = Driver()
    d.seconds(0.0, 1.0)
    d.seconds(0.95, 1.0)
    stopped = d.detector.force_end()
    assert stopped is not None and stopped.reason == "forced" and not stopped.truncated
    assert first_sample(stopped) == 31 * W - 4800
    assert int(stopped.audio[-1]) == d.pos - 1  # nothing held back
    assert not d.detector.in_speech
    assert d.detector.force_end() is None


def test_push_to_talk_force_end_since_audio_start() -> None:
    d = Driver()
    d.seconds(0.1, 0.5)  # quiet speech the VAD never counts as a turn
    tail = np.arange(d.pos, d.pos + 100, dtype=np.float32)
    stopped = d.detector.force_end(since_audio_start=True, tail=tail)
    assert stopped is not None and stopped.reason == "forced"
    assert np.array_equal(stopped.audio, np.arange(0, d.pos + 100, dtype=np.float32))
    assert stopped.start_s == 0.0
    assert d.detector.position_s == pytest.approx((d.pos + 100) / SAMPLE_RATE)
    # The next push starts empty.
    assert d.detector.force_end(since_audio_start=True) is None


def test_buffers_are_bounded_by_max_utterance() -> None:
    d = Driver(VadConfig(max_utterance_s=2.0))
    d.seconds(0.0, 60.0)
    stopped = d.detector.force_end(since_audio_start=True)
    assert stopped is not None and stopped.truncated
    assert stopped.audio.size == 2 * SAMPLE_RATE
    assert int(stopped.audio[-1]) == d.pos - 1


def test_reset() -> None:
    d = Driver()
    d.seconds(0.95, 1.0)
    assert d.detector.in_speech
    d.detector.reset()
    assert not d.detector.in_speech and d.detector.position_s == 0.0
    assert d.detector.force_end(since_audio_start=True) is None


def test_windows_of_any_length() -> None:
    detector = TurnDetector(VadConfig(min_speech_ms=100, prefix_padding_ms=0))
    events: list[VadEvent] = []
    for _ in range(20):
        events += detector.feed(np.zeros(160, dtype=np.float32), 0.9)  # 10 ms each
    [started] = events
    assert isinstance(started, SpeechStarted) and started.detected_at_s == pytest.approx(0.1)
    assert detector.feed(np.zeros(0, dtype=np.float32), 0.9) == []


# --- The real Silero model ------------------------------------------------------------------


@pytest.fixture(scope="module")
def model() -> SileroVad:
    return SileroVad.load()


def read_wav(name: str) -> tuple[Audio, int]:
    with wave.open(str(DATA / name), "rb") as wav:
        assert wav.getnchannels() == 1 and wav.getsampwidth() == 2
        rate = wav.getframerate()
        audio = int16_to_float32(decode_pcm16(wav.readframes(wav.getnframes())))
    return audio, rate


def energy_span(audio: Audio, rate: int, floor_dbfs: float = -45.0) -> tuple[float, float]:
    """First and last 10 ms frame above floor_dbfs: where the speech is."""
    hop = rate // 100
    frames = audio[: audio.size // hop * hop].reshape(-1, hop)
    level = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(level > floor_dbfs)
    return loud[0] / 100, (loud[-1] + 1) / 100


def run_vad(vad: StreamingVad, audio: Audio, chunk: int = 320) -> list[VadEvent]:
    events: list[VadEvent] = []
    for i in range(0, audio.size, chunk):
        events += vad.feed(audio[i : i + chunk])
    return events


def pad(audio: Audio, seconds: float = 1.0) -> Audio:
    silence = np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32)
    return np.concatenate([silence, audio, silence])


def test_model_is_shared(model: SileroVad) -> None:
    assert SileroVad.load() is model
    assert model.path.name == "silero_vad_v6.onnx"


def test_streaming_matches_faster_whispers_batched_vad(model: SileroVad) -> None:
    from faster_whisper.vad import SileroVADModel

    audio, _ = read_wav("spk1_snt1.wav")
    audio = audio[: audio.size // W * W]
    # faster-whisper zeroes the last 64 samples of its input in place; an extra silent window
    # keeps that off the speech.
    audio = np.concatenate([audio, np.zeros(W, dtype=np.float32)])
    expected = SileroVADModel(str(model.path))(audio.copy()).reshape(-1)
    stream = model.new_stream()
    one_by_one = np.array([stream.probability(audio[i : i + W]) for i in range(0, audio.size, W)])
    assert np.max(np.abs(one_by_one - expected)) < 1e-4
    stream.reset()
    batched = stream.probabilities(audio)
    assert np.max(np.abs(batched - expected)) < 1e-4


def test_streams_sharing_one_model_keep_their_own_state(model: SileroVad) -> None:
    speech, _ = read_wav("spk1_snt1.wav")
    speech = speech[: speech.size // W * W]
    alone = model.new_stream().probabilities(speech)
    a, b = model.new_stream(), model.new_stream()
    rng = np.random.default_rng(3)
    interleaved = []
    for i in range(0, speech.size, W):
        interleaved.append(a.probability(speech[i : i + W]))
        b.probability((rng.standard_normal(W) * 0.1).astype(np.float32))
    assert np.allclose(interleaved, alone, atol=1e-5)


def test_streams_in_worker_threads(model: SileroVad) -> None:
    names = SPEECH_16K[:4]
    expected = {
        name: model.new_stream().probabilities(read_wav(name)[0][: 20 * W]) for name in names
    }
    results: dict[str, npt.NDArray[np.float32]] = {}

    def work(name: str) -> None:
        audio = read_wav(name)[0][: 20 * W]
        stream = model.new_stream()
        results[name] = np.array(
            [stream.probability(audio[i : i + W]) for i in range(0, audio.size, W)]
        )

    threads = [threading.Thread(target=work, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name in names:
        assert np.allclose(results[name], expected[name], atol=1e-5)


def test_window_size_is_checked(model: SileroVad) -> None:
    stream = model.new_stream()
    with pytest.raises(ValueError):
        stream.probability(np.zeros(480, dtype=np.float32))
    with pytest.raises(ValueError):
        stream.probabilities(np.zeros(700, dtype=np.float32))


@pytest.mark.parametrize("name", SPEECH_16K)
def test_real_speech_is_exactly_one_turn_covering_the_speech(model: SileroVad, name: str) -> None:
    audio, rate = read_wav(name)
    assert rate == SAMPLE_RATE
    onset, offset = energy_span(audio, rate)
    events = run_vad(StreamingVad(model), pad(audio, 1.0))
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped], events
    started, stopped = events
    assert isinstance(started, SpeechStarted) and isinstance(stopped, SpeechStopped)
    assert stopped.reason == "silence"
    # The utterance covers the speech, pre-roll and all, and not much more.
    assert stopped.start_s <= 1.0 + onset
    assert stopped.at_s >= 1.0 + offset
    assert stopped.start_s >= 0.5
    assert stopped.at_s <= 1.0 + audio.size / rate + 0.5
    assert stopped.audio.size == round((stopped.at_s - stopped.start_s) * SAMPLE_RATE)


def test_chunk_size_does_not_change_the_events(model: SileroVad) -> None:
    audio = pad(read_wav("spk1_snt1.wav")[0])
    by_window = run_vad(StreamingVad(model), audio, chunk=W)
    by_odd_chunk = run_vad(StreamingVad(model), audio, chunk=321)
    assert by_window == by_odd_chunk  # audio is excluded from the comparison
    stops = [e for e in by_window + by_odd_chunk if isinstance(e, SpeechStopped)]
    assert np.array_equal(stops[0].audio, stops[1].audio)


def test_resampled_22k_speech_through_the_stream_resampler(model: SileroVad) -> None:
    audio, rate = read_wav("lj050_0131.wav")
    onset, offset = energy_span(audio, rate)
    resampler = StreamResampler(rate, SAMPLE_RATE)
    vad = StreamingVad(model)
    events: list[VadEvent] = []
    chunk = rate // 50  # 20 ms frames, as a client would send
    for i in range(0, audio.size, chunk):
        events += vad.feed(resampler.process(audio[i : i + chunk]))
    events += vad.feed(resampler.flush())
    events += run_vad(vad, np.zeros(SAMPLE_RATE, dtype=np.float32))
    stops = [e for e in events if isinstance(e, SpeechStopped)]
    # Two sentences; the pause between them may end a turn.
    assert 1 <= len(stops) <= 2
    assert stops[0].start_s <= onset and stops[-1].at_s >= offset


@pytest.mark.parametrize("kind", ["white_noise_-30dBFS", "silence"])
def test_noise_and_silence_never_start_a_turn(model: SileroVad, kind: str) -> None:
    if kind == "silence":
        audio = np.zeros(3 * SAMPLE_RATE, dtype=np.float32)
    else:
        rng = np.random.default_rng(0)
        audio = (rng.standard_normal(3 * SAMPLE_RATE) * 10 ** (-30 / 20)).astype(np.float32)
        level = 10 * np.log10(np.mean(audio.astype(np.float64) ** 2))
        assert level == pytest.approx(-30, abs=0.2)
    vad = StreamingVad(model)
    assert run_vad(vad, audio) == []
    assert not vad.in_speech
    assert vad.force_end() is None


def test_streaming_vad_force_end_includes_the_partial_window(model: SileroVad) -> None:
    vad = StreamingVad(model)
    audio = np.zeros(1000, dtype=np.float32)  # one window and 488 samples
    assert vad.feed(audio) == []
    stopped = vad.force_end(since_audio_start=True)
    assert stopped is not None and stopped.audio.size == 1000
    vad.reset()
    assert vad.position_s == 0.0


# --- pauses inside a turn (speculative replies) ----------------------------------------------


def _feed_probs(detector: TurnDetector, probs: list[float]) -> list[object]:
    events: list[object] = []
    for p in probs:
        events += detector.feed(np.full(512, 0.1 if p >= 0.5 else 0.0, dtype=np.float32), p)
    return events


def test_pauses_are_reported_and_resumed_when_asked_for() -> None:
    from server.audio.vad import SpeechPaused, SpeechResumed

    detector = TurnDetector(VadConfig(report_pauses=True, silence_ms=500))
    events = _feed_probs(detector, [0.9] * 12 + [0.0] * 5 + [0.9] * 5 + [0.0] * 20)
    kinds = [type(e).__name__ for e in events]
    assert kinds == [
        "SpeechStarted",
        "SpeechPaused",
        "SpeechResumed",
        "SpeechPaused",
        "SpeechStopped",
    ]
    paused = [e for e in events if isinstance(e, SpeechPaused)]
    resumed = next(e for e in events if isinstance(e, SpeechResumed))
    assert resumed.pause_id == paused[0].pause_id != paused[1].pause_id
    assert paused[0].audio.size > 0  # the turn so far, for speculative work


def test_pauses_are_silent_by_default() -> None:
    detector = TurnDetector(VadConfig(silence_ms=500))
    kinds = [type(e).__name__ for e in _feed_probs(detector, [0.9] * 12 + [0.0] * 20)]
    assert kinds == ["SpeechStarted", "SpeechStopped"]


def test_shorten_pause_ends_the_turn_sooner_for_that_pause_only() -> None:
    from server.audio.vad import SpeechPaused, SpeechStopped

    detector = TurnDetector(VadConfig(report_pauses=True, silence_ms=800))
    events = _feed_probs(detector, [0.9] * 12 + [0.0])
    paused = next(e for e in events if isinstance(e, SpeechPaused))
    detector.shorten_pause(paused.pause_id + 1, 100)  # a stale pause id changes nothing
    assert not any(isinstance(e, SpeechStopped) for e in _feed_probs(detector, [0.0] * 8))
    detector.shorten_pause(paused.pause_id, 350)
    stopped = [e for e in _feed_probs(detector, [0.0] * 3) if isinstance(e, SpeechStopped)]
    assert stopped and stopped[0].reason == "silence"
    # The next turn waits the full silence again.
    events = _feed_probs(detector, [0.9] * 12 + [0.0] * 20)
    assert not any(isinstance(e, SpeechStopped) for e in events)


def test_pausing_is_a_silent_stretch_inside_a_turn() -> None:
    detector = TurnDetector(VadConfig(silence_ms=500))
    _feed_probs(detector, [0.0] * 3)
    assert not detector.pausing  # silence outside a turn is no pause
    _feed_probs(detector, [0.9] * 12)
    assert detector.in_speech and not detector.pausing
    _feed_probs(detector, [0.0] * 3)
    assert detector.pausing
    _feed_probs(detector, [0.9])
    assert not detector.pausing
    _feed_probs(detector, [0.0] * 20)  # the turn ends
    assert not detector.in_speech and not detector.pausing


def test_the_server_settings_turn_the_onset_rule_on_and_off() -> None:
    from server.config import VadSettings
    from server.pipeline.audio_input import vad_config
    from server.protocol.native import AudioStart

    start = AudioStart(sample_rate=16000)
    assert vad_config(VadSettings(), start).onset_rise_db == 10.0
    assert vad_config(VadSettings(onset_rise_db=0.0), start).onset_rise_db is None
